//! Retraining inside Wasm: `retrain-fraud` (world `trainer`) is called on the
//! labelled window of `fraud-pipeline`'s logged predictions; the host recomputes
//! the features with the same `txn-features` component the online path runs
//! (offline), the guest trains a seeded logistic regression and returns ONNX, and
//! the host gates it against `champion` on a held-out slice, registers it with its
//! lineage and moves `challenger` when it passed.

use quiver_tests::Server;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

const MERCHANTS: [&str; 3] = ["coffee-corner", "electro-mart", "bakery-42"];

/// Transaction `i` of a fixed stream, its amount multiplied by `scale` (drift),
/// and whether it is fraud (a rule the features can express: large, or at night
/// and not small).
fn txn(i: u64, scale: f64) -> (Value, bool) {
    // splitmix64: a fixed stream, no dependency.
    let mut z = i.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let u = (z >> 11) as f64 / (1u64 << 53) as f64;
    let amount = ((u * 7.5).exp() * scale).round();
    let hour = (z % 24) as i64;
    let merchant = MERCHANTS[(z >> 8) as usize % 3];
    let fraud = amount > 900.0 || (hour < 5 && amount > 150.0);
    let row = json!({
        "txn_id": format!("t-{i}"),
        "amount": amount,
        "ts": 1_763_812_800 + hour * 3600 + (i as i64 % 60) * 60,
        "merchant": merchant,
    });
    (row, fraud)
}

/// The fraud pipeline, logging its predictions, on features computed without
/// online state (so a training run recomputes exactly what was served).
fn pipeline() -> Server {
    let server = Server::start();
    server.deploy_fraud_score();
    server.cli_ok(&[
        "models",
        "alias",
        "fraud-model",
        "champion",
        "1.0.0",
        "--reason",
        "first model",
    ]);
    server.deploy("ingest-json");
    server.deploy_with("txn-features", &["--set", "config.online_stats=false"]);
    server.deploy_with("fraud-pipeline", &["--set", "datasets.log=true"]);
    server
}

/// Score `calls` batches of 50 transactions and label every row.
fn traffic(server: &Server, calls: u64) {
    traffic_from(server, 0, calls, 1.0)
}

/// `calls` batches of 50, from transaction `first`, amounts scaled by `scale`.
fn traffic_from(server: &Server, first: u64, calls: u64, scale: f64) {
    let mut labels = Vec::new();
    for c in 0..calls {
        let (rows, truth): (Vec<Value>, Vec<bool>) = (first + c * 50..first + (c + 1) * 50)
            .map(|i| txn(i, scale))
            .unzip();
        let r = server.post(
            "/fn/default/fraud-pipeline",
            "application/json",
            Value::Array(rows.clone()).to_string(),
        );
        assert_eq!(r.status(), 200);
        let id = r.headers()["x-quiver-request-id"]
            .to_str()
            .unwrap()
            .to_string();
        for (row, t) in truth.iter().enumerate() {
            labels.push(json!({"request_id": id, "row": row, "label": t}));
        }
    }
    let r = server.post(
        "/fn/default/fraud-pipeline/feedback",
        "application/json",
        Value::Array(labels).to_string(),
    );
    assert_eq!(r.status(), 200, "{}", r.text().unwrap());
    let n = (first + calls * 50) as f64;
    server.wait_metric(
        "quiver_dataset_logged_rows_total{function=\"fraud-pipeline\",tenant=\"default\"}",
        n,
        30,
    );
}

fn train(server: &Server, body: Value) -> Value {
    let r = server.post(
        "/fn/default/retrain-fraud",
        "application/json",
        body.to_string(),
    );
    let status = r.status();
    let text = r.text().unwrap();
    assert_eq!(status, 200, "{text}");
    json_of(&text)
}

#[test]
fn a_training_run_registers_a_gated_version_with_its_lineage() {
    let server = pipeline();
    traffic(&server, 8);
    server.deploy("retrain-fraud");

    let out = train(&server, json!({"reason": "test"}));
    assert_eq!(out["model"], "fraud-model", "{out}");
    assert_eq!(out["version"], "1.1.0", "the next minor version: {out}");
    let gate = &out["gate"];
    assert_eq!(gate["metric"], "auc", "{out}");
    assert_eq!(gate["champion_version"], "1.0.0", "{out}");
    let (candidate, champion) = (
        gate["candidate"].as_f64().unwrap(),
        gate["champion"].as_f64().unwrap(),
    );
    assert!(candidate > 0.9, "the rule is learnable: {out}");
    assert!(
        candidate >= champion,
        "trained on this window, it beats the old model: {out}"
    );
    assert_eq!(gate["passed"], true, "{out}");
    assert_eq!(out["promoted_to"], "challenger", "{out}");

    // The alias moved, by the trainer, with the gate's numbers as the reason.
    let history = json_of(&server.cli_ok(&["--json", "models", "history", "fraud-model"]));
    let moves = history["history"].as_array().unwrap();
    let last = moves.last().unwrap();
    assert_eq!(
        (last["alias"].as_str(), last["to"].as_str()),
        (Some("challenger"), Some("1.1.0")),
        "{history}"
    );
    assert_eq!(last["actor"], "retrain-fraud@1.1.0", "{history}");
    assert!(
        last["reason"].as_str().unwrap().contains("passed: auc"),
        "{history}"
    );

    // The lineage: dataset digest and window, trainer, parent, metrics, gate and
    // the reference distribution of each input; it walks back to 1.0.0.
    let v = json_of(&server.cli_ok(&["--json", "models", "lineage", "fraud-model@1.1.0"]));
    let chain = v["lineage"].as_array().unwrap();
    assert_eq!(chain.len(), 2, "{v}");
    assert_eq!(chain[1]["version"], "1.0.0", "{v}");
    let meta = json_of(&server.cli_ok(&["--json", "models", "versions", "fraud-model"]));
    let l = meta["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["version"] == "1.1.0")
        .map(|m| m["lineage"].clone())
        .unwrap_or_else(|| panic!("{meta}"));
    assert_eq!(l["trainer"], "retrain-fraud@1.1.0", "{l}");
    assert_eq!(l["parent"], "1.0.0", "{l}");
    assert_eq!(l["features"], "txn-features@1.0.0", "{l}");
    assert_eq!(l["dataset"]["rows"], 400, "{l}");
    let (train_rows, holdout) = (
        l["dataset"]["train_rows"].as_u64().unwrap(),
        l["dataset"]["holdout_rows"].as_u64().unwrap(),
    );
    assert_eq!(train_rows + holdout, 400, "{l}");
    assert!((40..130).contains(&holdout), "about a fifth held out: {l}");
    assert!(
        l["dataset"]["digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{l}"
    );
    assert_eq!(l["metrics"]["train.rows"], json!(train_rows as f64), "{l}");
    let reference = l["reference"]["log_amount"].as_array().unwrap();
    assert_eq!(reference.len() as u64, train_rows, "{l}");
    assert_eq!(l["gate"]["passed"], true, "{l}");
    assert_eq!(l["reason"], json!({"reason": "test"}), "{l}");

    // Online and training feature values are bit-identical for the same records:
    // the online transform over the window's records, in the order the run read
    // them, hashed as the run hashed what it computed.
    let window = json_of(&server.cli_ok(&[
        "--json",
        "datasets",
        "read",
        "fraud-pipeline",
        "--labelled",
        "--since",
        "1h",
    ]));
    let records: Vec<Value> = window["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let o: serde_json::Map<String, Value> = r
                .as_object()
                .unwrap()
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("in.").map(|k| (k.to_string(), v.clone())))
                .collect();
            Value::Object(o)
        })
        .collect();
    assert_eq!(records.len(), 400);
    let r = server.post(
        "/fn/default/txn-features",
        "application/json",
        Value::Array(records).to_string(),
    );
    assert_eq!(r.status(), 200);
    let online: Value = r.json().unwrap();
    let rows = online["rows"].as_array().unwrap();
    let mut h = Sha256::new();
    for col in ["log_amount", "hour_of_day", "merchant_z", "merchant_known"] {
        for row in rows {
            let x = match &row[col] {
                Value::Bool(b) => f64::from(u8::from(*b)),
                v => v.as_f64().unwrap(),
            };
            h.update(x.to_le_bytes());
        }
    }
    let digest = format!("sha256:{}", hex_of(&h.finalize()));
    assert_eq!(l["dataset"]["features_digest"], digest, "{}", l["dataset"]);

    // A passed gate starts the manifest's rollout ([trainer.rollout]), and no
    // training runs while it does; aborted by hand here (tests/tests/rollout.rs
    // drives rollouts to their end).
    assert_eq!(out["rollout"]["state"], "running", "{out}");
    assert_eq!(out["rollout"]["against"], "champion", "{out}");
    let skipped = train(&server, json!({}));
    assert!(
        skipped["skipped"]
            .as_str()
            .unwrap_or_default()
            .contains("rollout"),
        "{skipped}"
    );
    server.cli_ok(&["models", "rollout-abort", "fraud-model"]);

    // The same data gives the same model bytes.
    let again = train(&server, json!({}));
    assert_eq!(again["version"], "1.2.0", "{again}");
    assert_eq!(again["dataset_digest"], out["dataset_digest"], "{again}");
    let digests: Vec<String> = meta_versions(&server)
        .iter()
        .filter(|m| m["version"] == "1.1.0" || m["version"] == "1.2.0")
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(digests.len(), 2);
    assert_eq!(digests[0], digests[1], "a seeded trainer is deterministic");

    // The new version serves: a function bound to `challenger` scores with it.
    server.deploy_with(
        "fraud-score",
        &[
            "--name",
            "fraud-challenger",
            "--set",
            "models.fraud=fraud-model@challenger",
        ],
    );
    let r = server.post(
        "/fn/default/fraud-challenger",
        "application/json",
        json!([{"log_amount": 7.5, "hour_of_day": 3, "merchant_z": 1.0, "merchant_known": true},
               {"log_amount": 2.5, "hour_of_day": 14, "merchant_z": 0.0, "merchant_known": true}])
        .to_string(),
    );
    assert_eq!(r.status(), 200);
    let scored: Value = r.json().unwrap();
    let s: Vec<f64> = scored["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["score"].as_f64().unwrap())
        .collect();
    assert!(s[0] > 0.5 && s[1] < 0.5, "{scored}");
}

fn meta_versions(server: &Server) -> Vec<Value> {
    let meta = json_of(&server.cli_ok(&["--json", "models", "versions", "fraud-model"]));
    meta["versions"].as_array().unwrap().clone()
}

/// The registered `fraud-model@version`, once it is there; `why` says what
/// failed when it is not within `secs`.
fn wait_version(server: &Server, version: &str, secs: u64, why: impl Fn() -> String) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(m) = meta_versions(server)
            .into_iter()
            .find(|m| m["version"] == version)
        {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "{}", why());
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_bad_trainer_is_stopped_by_the_gate_and_the_champion_is_untouched() {
    let server = pipeline();
    traffic(&server, 8);
    server.deploy_with("retrain-fraud", &["--set", "config.flip_labels=true"]);
    let out = train(&server, json!({}));
    assert_eq!(out["gate"]["passed"], false, "{out}");
    assert!(out["promoted_to"].is_null(), "{out}");
    let history = json_of(&server.cli_ok(&["--json", "models", "history", "fraud-model"]));
    let aliases = &history["aliases"];
    assert_eq!(aliases["champion"], "1.0.0", "{history}");
    assert!(aliases.get("challenger").is_none(), "{history}");
    // The failed version is registered, with the decision and both numbers.
    let l = meta_versions(&server)
        .into_iter()
        .find(|m| m["version"] == "1.1.0-rejected")
        .map(|m| m["lineage"].clone())
        .unwrap();
    assert_eq!(l["gate"]["passed"], false, "{l}");
    assert!(
        l["gate"]["candidate"].as_f64().unwrap() < l["gate"]["champion"].as_f64().unwrap(),
        "{l}"
    );
    assert!(
        l["gate"]["decision"]
            .as_str()
            .unwrap()
            .starts_with("failed:"),
        "{l}"
    );
}

#[test]
fn a_training_run_refuses_what_it_cannot_train_on() {
    let server = pipeline();
    server.deploy("retrain-fraud");
    // No labelled rows yet.
    let r = server.post(
        "/fn/default/retrain-fraud",
        "application/json",
        "{}".to_string(),
    );
    let (status, code, message) = quiver_tests::error_of(r);
    assert_eq!(status, 400, "{message}");
    assert_eq!(code, "invalid_input", "{message}");
    assert!(message.contains("min_rows"), "{message}");
    traffic(&server, 8); // enough that both sides of the split hold both classes
    for (body, want) in [
        ("nope", "invalid JSON"),
        (r#"{"params": [1]}"#, "`params` must be an object"),
        (
            r#"{"params": {"epochs": {"a": 1}}}"#,
            "must be a string or a number",
        ),
        (r#"{"params": {"nope": "1"}}"#, "nope"),
    ] {
        let r = server.post(
            "/fn/default/retrain-fraud",
            "application/json",
            body.to_string(),
        );
        let (status, _, message) = quiver_tests::error_of(r);
        assert_eq!(status, 400, "{body}: {message}");
        assert!(message.contains(want), "{body}: {message}");
    }
    // A run registers model versions: an `invoke` token may not start one.
    let out: Value = json_of(&server.cli_ok(&["--json", "tokens", "create", "--scope", "invoke"]));
    let invoke = out["token"].as_str().unwrap();
    let r = server
        .http_as(Some(invoke))
        .post(format!("{}/fn/default/retrain-fraud", server.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .unwrap();
    let (status, code, message) = quiver_tests::error_of(r);
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{message}");
    assert!(message.contains("`deploy` scope"), "{message}");
    // Nothing was registered.
    assert_eq!(meta_versions(&server).len(), 1);
}

#[test]
fn drift_in_live_traffic_retrains_the_model_it_was_measured_against() {
    let server = pipeline();
    traffic(&server, 16);
    server.deploy("retrain-fraud");
    // 1.1.0, trained here, with references; the champion from now on, followed by
    // the pipeline's scorer.
    assert_eq!(train(&server, json!({}))["version"], "1.1.0");
    // Promoted by hand, not by the rollout the gate started.
    server.cli_ok(&["models", "rollout-abort", "fraud-model"]);
    server.cli_ok(&[
        "models",
        "alias",
        "fraud-model",
        "champion",
        "1.1.0",
        "--reason",
        "promoted by the test",
    ]);
    server.deploy_with(
        "fraud-score",
        &[
            "--set",
            "function.version=1.4.0",
            "--set",
            "models.fraud=fraud-model@champion",
        ],
    );
    server.deploy_with(
        "drift-monitor",
        &[
            "--set",
            "config.dataset=fraud-pipeline",
            "--set",
            r#"datasets.read=["fraud-pipeline"]"#,
            "--set",
            "config.window_rows=600",
        ],
    );
    server.deploy_with(
        "fraud-pipeline",
        &[
            "--set",
            "function.version=2.3.0",
            "--set",
            "datasets.log=true",
            "--set",
            r#"pipeline.monitor="drift-monitor""#,
        ],
    );

    // Traffic like the training window's: no drift.
    traffic_from(&server, 800, 12, 1.0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (calm, psi) = loop {
        let calm = reports(&server);
        let last = calm["windows"]
            .as_array()
            .and_then(|w| w.last())
            .cloned()
            .unwrap_or_default();
        let rows = last["metrics"]["window.model_rows"]["last"]
            .as_f64()
            .unwrap_or_default();
        if let (true, Some(psi)) = (
            rows >= 600.0,
            last["metrics"]["in.amount.psi"]["last"].as_f64(),
        ) {
            break (calm, psi);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no full window reported: {calm}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert!(psi < 0.1, "in-distribution traffic: PSI {psi}: {calm}");
    assert!(meta_versions(&server)
        .iter()
        .all(|m| m["version"] != "1.2.0"));

    // Amounts 20 times larger: the monitor sees it in the window, publishes
    // drift.detected, and the trainer retrains on the (labelled) window.
    traffic_from(&server, 1400, 6, 20.0);
    let retrained = wait_version(&server, "1.2.0", 60, || {
        format!("no retrain after drift: {}", reports(&server))
    });
    let reason = &retrained["lineage"]["reason"];
    assert_eq!(reason["monitor"], "drift-monitor", "{reason}");
    assert_eq!(reason["model_version"], "fraud-model@1.1.0", "{reason}");
    assert_eq!(reason["statistic"], "psi", "{reason}");
    assert!(reason["value"].as_f64().unwrap() >= 0.1, "{reason}");
    assert!(
        reason["feature"].as_str().unwrap().starts_with("in.") || reason["feature"] == "out.score",
        "{reason}"
    );
    assert_eq!(retrained["lineage"]["parent"], "1.1.0", "{retrained}");
    // One alert per cooldown: one retrain, not one per observation.
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(meta_versions(&server)
        .iter()
        .all(|m| m["version"] != "1.3.0"));
}

fn reports(server: &Server) -> Value {
    json_of(&server.cli_ok(&["--json", "monitor", "reports", "drift-monitor"]))
}

#[test]
fn a_trainer_that_fails_is_retried_then_dead_lettered_and_no_alias_moves() {
    let server = pipeline();
    traffic(&server, 1); // 50 labelled rows: fewer than retrain-fraud's min_rows (100)
    server.deploy("retrain-fraud");
    // The trigger subscribes when the deploy answers: this event is delivered.
    let drift =
        r#"{"monitor": "drift-monitor", "feature": "in.amount", "statistic": "psi", "value": 0.5}"#;
    server.cli_ok(&["events", "publish", "drift.detected", drift]);
    let dead = quiver_tests::series(
        "quiver_event_deliveries_total",
        &[
            ("function", "retrain-fraud"),
            ("outcome", "dead"),
            ("topic", "drift.detected"),
        ],
    );
    server.wait_metric(&dead, 1.0, 60);
    let dlq = json_of(&server.cli_ok(&[
        "--json",
        "events",
        "dlq",
        "drift.detected",
        "--function",
        "retrain-fraud",
    ]));
    let list = dlq["dead"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{dlq}");
    assert_eq!(
        list[0]["attempts"], 3,
        "retrain-fraud's retry policy: {dlq}"
    );
    let reason = list[0]["reason"].as_str().unwrap();
    assert!(reason.contains("min_rows"), "{reason}");
    // Nothing was registered and the champion did not move.
    assert_eq!(meta_versions(&server).len(), 1);
    let history = json_of(&server.cli_ok(&["--json", "models", "history", "fraud-model"]));
    assert_eq!(history["aliases"]["champion"], "1.0.0", "{history}");
    assert_eq!(history["history"].as_array().unwrap().len(), 1, "{history}");
}

/// The drift monitor keeps its window between observations and reads only the
/// rows logged since (plus `window_overlap`, whose rows it already holds are
/// dropped): no row is counted twice.
#[test]
fn the_drift_window_is_kept_and_extended_between_observations() {
    let server = pipeline();
    server.deploy_with(
        "drift-monitor",
        &[
            "--set",
            "config.dataset=fraud-pipeline",
            "--set",
            r#"datasets.read=["fraud-pipeline"]"#,
            "--set",
            "config.window_rows=100000",
            "--set",
            "config.window_overlap=100ms",
        ],
    );
    server.deploy_with(
        "fraud-pipeline",
        &[
            "--set",
            "function.version=2.3.0",
            "--set",
            "datasets.log=true",
            "--set",
            r#"pipeline.monitor="drift-monitor""#,
        ],
    );
    let window = |server: &Server| {
        reports(server)["windows"]
            .as_array()
            .and_then(|w| w.last())
            .map(|w| w["metrics"].clone())
            .unwrap_or_default()
    };
    // 600 rows, observed (calls that queue while the monitor is busy are joined
    // into one observation), in two halves: the second sent 300 ms after the first
    // was observed, so the halves' stamps are further apart than the overlap even
    // when a loaded machine logs a half late and in one go.
    let wait_rows = |at_least: f64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while window(&server)["window.rows"]["last"]
            .as_f64()
            .unwrap_or_default()
            < at_least
        {
            assert!(
                std::time::Instant::now() < deadline,
                "no window of {at_least} rows"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    traffic_from(&server, 0, 6, 1.0);
    wait_rows(300.0);
    std::thread::sleep(std::time::Duration::from_millis(300));
    traffic_from(&server, 300, 6, 1.0);
    wait_rows(600.0);
    // Then one call at a time, until an observation has seen the rows of one of
    // them (a call is observed when it answers, maybe before its rows are logged).
    // Each read takes the 100 ms before the newest row held again (the overlap):
    // those rows are dropped as already held.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut sent = 600;
    let metrics = loop {
        traffic_from(&server, sent, 1, 1.0);
        sent += 50;
        std::thread::sleep(std::time::Duration::from_millis(300));
        let m = window(&server);
        if m["window.rows"]["last"].as_f64().unwrap_or_default() > 600.0 {
            break m;
        }
        assert!(sent < 1000, "no observation saw the later calls: {m}");
    };
    assert!(
        metrics["window.rows"]["count"].as_u64().unwrap() >= 3,
        "{metrics}"
    );
    let (rows, read) = (
        metrics["window.rows"]["last"].as_f64().unwrap(),
        metrics["window.read_rows"]["last"].as_f64().unwrap(),
    );
    assert!(rows <= sent as f64, "rows counted twice: {metrics}");
    assert_eq!(metrics["window.duplicates"]["max"], 0.0, "{metrics}");
    assert_eq!(metrics["window.incremental"]["last"], 1.0, "{metrics}");
    assert!(
        read < rows,
        "the last observation read the whole window: {metrics}"
    );
}

/// `[triggers] schedule` retrains too: the tick is the run's reason, kept in the
/// new version's lineage.
#[test]
fn a_schedule_retrains_the_model() {
    let server = pipeline();
    traffic(&server, 8);
    server.deploy_with(
        "retrain-fraud",
        &["--set", r#"triggers.schedule="*/1 * * * * *""#],
    );
    let trained = wait_version(&server, "1.1.0", 30, || "no scheduled training".into());
    let reason = &trained["lineage"]["reason"];
    assert!(reason["tick_ms"].as_i64().is_some(), "{reason}");
    assert!(reason["scheduled_at"].as_str().is_some(), "{reason}");
    // Later ticks train nothing while the rollout the gate started runs.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(meta_versions(&server)
        .iter()
        .all(|m| m["version"] != "1.2.0"));
}
