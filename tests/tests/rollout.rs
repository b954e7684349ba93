//! Model rollouts driven by the automatic analysis: a candidate model version is
//! shadowed, then served to a growing share of the calls that bind
//! `fraud-model@champion`, each step judged (error rate, p99, a KS test of the
//! scores), and promoted (champion moves) or rolled back, by the host itself;
//! a restarted host resumes a rollout it finds running; every step is in the
//! rollout's history, the audit log and on the bus.

use quiver_tests::Server;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// fraud-pipeline, its fraud-score binding `fraud-model@champion` (1.0.0), and a
/// second version of the model, `candidate` (a file under the repository).
fn pipeline_in(server: &Server, candidate: &str) {
    server.push_model(
        "functions/fraud-score/model/fraud.onnx",
        "fraud-model",
        "1.0.0",
    );
    server.push_model(candidate, "fraud-model", "1.1.0");
    server.cli_ok(&["models", "alias", "fraud-model", "champion", "1.0.0"]);
    server.deploy_with(
        "fraud-score",
        &["--set", "models.fraud=fraud-model@champion"],
    );
    server.deploy("ingest-json");
    server.deploy("txn-features");
    server.deploy("fraud-pipeline");
}

/// One call of the pipeline on 10 transactions; its status.
fn call(server: &Server, i: u64) -> u16 {
    let rows: Vec<Value> = (0..10)
        .map(|k| {
            let n = i * 10 + k;
            json!({"txn_id": format!("t-{n}"), "amount": 5.0 + (n % 97) as f64 * 13.0,
                   "ts": 1_763_812_800 + (n % 24) * 3600, "merchant": "coffee-corner"})
        })
        .collect();
    server
        .post(
            "/fn/default/fraud-pipeline",
            "application/json",
            Value::Array(rows).to_string(),
        )
        .status()
        .as_u16()
}

fn start(server: &Server, analysis: Value) -> Value {
    let r = server.post(
        "/admin/v1/tenants/default/models/fraud-model/rollouts",
        "application/json",
        json!({"version": "1.1.0", "reason": "test", "analysis": analysis}).to_string(),
    );
    let status = r.status();
    let text = r.text().unwrap();
    assert_eq!(status, 201, "{text}");
    json_of(&text)
}

fn newest(server: &Server) -> Value {
    let r = server.get("/admin/v1/tenants/default/models/fraud-model/rollouts");
    assert_eq!(r.status(), 200);
    let all = json_of(&r.text().unwrap());
    all["rollouts"][0].clone()
}

/// Call the pipeline until `done` says so of the newest rollout (or `secs` pass);
/// the statuses seen, and the rollout.
fn drive(
    server: &Server,
    from: u64,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> (Vec<u16>, Value) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut statuses = Vec::new();
    let mut i = from;
    loop {
        for _ in 0..5 {
            statuses.push(call(server, i));
            i += 1;
        }
        let r = newest(server);
        if done(&r) {
            return (statuses, r);
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not get there: {r:#}"
        );
    }
}

fn outcomes(r: &Value) -> Vec<String> {
    r["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("{}:{}", h["step"], h["outcome"].as_str().unwrap()))
        .collect()
}

fn champion(server: &Server) -> String {
    let h = json_of(&server.cli_ok(&["--json", "models", "history", "fraud-model"]));
    h["aliases"]["champion"].as_str().unwrap().to_string()
}

#[test]
fn a_candidate_goes_through_shadow_and_canary_steps_and_the_analysis_promotes_it() {
    let server = Server::start();
    // The same model bytes as 1.0.0: every condition holds, so every step passes.
    pipeline_in(&server, "functions/fraud-score/model/fraud.onnx");
    // A subscriber of the rollout's topics that takes each event once and refuses
    // it (chaos without a mode), so each lands, whole, in its dead-letter list.
    server.deploy_with(
        "chaos",
        &[
            "--name",
            "watcher",
            "--set",
            r#"triggers.events=["rollout.started", "rollout.step", "rollout.promoted"]"#,
            "--set",
            "triggers.retry.max_attempts=1",
        ],
    );
    assert_eq!(call(&server, 0), 200);
    let started = start(
        &server,
        json!({"steps": ["shadow", 50, 100], "interval": "1s", "min_calls": 5,
               "deadline": "90s", "alpha": 0.001, "min_shift": 0.1}),
    );
    assert_eq!(
        (started["state"].as_str(), started["baseline"].as_str()),
        (Some("running"), Some("1.0.0")),
        "{started}"
    );
    // A second rollout of the model is refused while this one runs.
    let again = server.post(
        "/admin/v1/tenants/default/models/fraud-model/rollouts",
        "application/json",
        json!({"version": "1.1.0"}).to_string(),
    );
    assert_eq!(again.status(), 409);

    let (statuses, done) = drive(&server, 1, 90, |r| r["state"] != "running");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(done["state"], "promoted", "{done:#}");
    assert_eq!(
        outcomes(&done),
        ["0:passed", "1:passed", "2:promoted"],
        "{done:#}"
    );
    for h in done["history"].as_array().unwrap() {
        let m = &h["detail"]["measured"];
        assert!(m["candidate"]["calls"].as_u64().unwrap() >= 5, "{h}");
        assert!(m["champion"]["calls"].as_u64().unwrap() >= 5, "{h}");
        assert_eq!(m["candidate"]["errors"], 0, "{h}");
        // Same model: the test does not reject "same score distribution" (the
        // arms saw different calls, so D is not 0).
        // A good candidate fails a judged step with probability α (0.001 here).
        let (d, p) = (m["score"]["ks_d"].as_f64(), m["score"]["ks_p"].as_f64());
        assert!(d.is_some() && p.unwrap() >= 0.001, "{h}");
    }
    // The shadow step's candidate calls were copies: the callers were answered by
    // 1.0.0 only (its arm has them all), the copies ran under trigger `shadow`.
    let shadow_calls = done["history"][0]["detail"]["measured"]["candidate"]["calls"]
        .as_u64()
        .unwrap();
    assert!(shadow_calls >= 5);
    assert_eq!(champion(&server), "1.1.0");
    let h = json_of(&server.cli_ok(&["--json", "models", "history", "fraud-model"]));
    let last = h["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["to"].as_str(), last["actor"].as_str()),
        (
            Some("1.1.0"),
            Some(format!("rollout {}", started["id"]).as_str())
        ),
        "{last}"
    );
    // The promoted model serves: champion's calls now bind 1.1.0.
    assert_eq!(call(&server, 10_000), 200);

    // Audit log: every step.
    let audit = json_of(&server.cli_ok(&["--json", "audit", "--all"]));
    let actions: Vec<&str> = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("rollout."))
        .collect();
    assert_eq!(
        actions,
        [
            "rollout.started",
            "rollout.step",
            "rollout.step",
            "rollout.promoted"
        ],
        "{audit:#}"
    );
    // The bus: the promotion event, as the watcher got it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let event = loop {
        let r = server.get("/events/default/rollout.promoted/dlq?function=watcher");
        let dead = json_of(&r.text().unwrap());
        if let Some(e) = dead["dead"].as_array().and_then(|e| e.first()) {
            break e["payload"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "no rollout.promoted event: {dead}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        (event["candidate"].as_str(), event["outcome"].as_str()),
        (Some("1.1.0"), Some("promoted")),
        "{event}"
    );
    assert!(
        event["candidate_calls"].as_u64().is_some_and(|n| n >= 5),
        "{event}"
    );
    assert!(event["ks_p"].is_number(), "{event}");
}

#[test]
fn a_candidate_that_errors_under_canary_is_rolled_back_within_one_interval() {
    let server = Server::start();
    // A model of another input width: fraud-score's calls on it fail.
    pipeline_in(&server, "tests/fixtures/models/wide.onnx");
    let interval = Duration::from_secs(2);
    start(
        &server,
        json!({"steps": [20, 100], "interval": "2s", "min_calls": 5, "deadline": "60s"}),
    );
    let began = Instant::now();
    let (statuses, done) = drive(&server, 1, 60, |r| r["state"] != "running");
    let took = began.elapsed();
    assert_eq!(done["state"], "rolled_back", "{done:#}");
    assert_eq!(outcomes(&done), ["0:rolled_back"], "{done:#}");
    let reason = done["reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    // Judged at the end of the first interval (plus the analysis' tick and one
    // round of calls).
    assert!(
        took < interval * 3,
        "rolled back after {took:?} (interval {interval:?})"
    );
    let failed = statuses.iter().filter(|s| **s >= 500).count();
    assert!(failed > 0, "the candidate's calls failed: {statuses:?}");
    assert_eq!(champion(&server), "1.0.0", "champion untouched");
    // After the rollback every call is the champion's again.
    for i in 0..20 {
        assert_eq!(call(&server, 20_000 + i), 200);
    }
}

#[test]
fn a_host_killed_mid_rollout_resumes_it_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    pipeline_in(&server, "functions/fraud-score/model/fraud.onnx");
    // Serving before the rollout starts (its candidate is loaded beside it).
    assert_eq!(call(&server, 0), 200);
    start(
        &server,
        json!({"steps": [50, 100], "interval": "1s", "min_calls": 5, "deadline": "120s",
               "alpha": 0.001}),
    );
    let (_, mid) = drive(&server, 1, 60, |r| r["step"] == 1);
    assert_eq!(mid["state"], "running", "{mid:#}");
    server.kill();

    let server = Server::start_in(dir.path());
    let (statuses, done) = drive(&server, 1000, 60, |r| r["state"] != "running");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(done["state"], "promoted", "{done:#}");
    assert_eq!(
        outcomes(&done),
        ["0:passed", "1:resumed", "1:promoted"],
        "{done:#}"
    );
    assert_eq!(champion(&server), "1.1.0");
}

#[test]
fn a_rollout_without_enough_traffic_rolls_back_at_its_progress_deadline() {
    let server = Server::start();
    pipeline_in(&server, "functions/fraud-score/model/fraud.onnx");
    start(
        &server,
        json!({"steps": [100], "interval": "200ms", "min_calls": 1000, "deadline": "1s"}),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let done = loop {
        let r = newest(&server);
        if r["state"] != "running" {
            break r;
        }
        assert!(Instant::now() < deadline, "{r:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["state"], "rolled_back");
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("progress deadline"),
        "{done:#}"
    );
    assert_eq!(champion(&server), "1.0.0");
}

#[test]
fn a_bad_rollout_request_is_refused_with_the_reason_and_changes_nothing() {
    let server = Server::start();
    pipeline_in(&server, "functions/fraud-score/model/fraud.onnx");
    for (body, want) in [
        (
            json!({"version": "1.1.0", "analysis": {"steps": [50, 10]}}),
            "rise",
        ),
        (
            json!({"version": "1.1.0", "analysis": {"steps": ["shadow", 50]}}),
            "end at 100",
        ),
        (
            json!({"version": "1.1.0", "analysis": {"alpha": 2}}),
            "alpha",
        ),
        (
            json!({"version": "1.1.0", "analysis": {"interval": "soon"}}),
            "interval",
        ),
        (
            json!({"version": "1.1.0", "analysis": {"bogus": 1}}),
            "bogus",
        ),
        (json!({"version": "9.9.9"}), "not found"),
        (json!({"version": "1.0.0"}), "already"),
        (json!({"version": "not a version"}), "version"),
    ] {
        let r = server.post(
            "/admin/v1/tenants/default/models/fraud-model/rollouts",
            "application/json",
            body.to_string(),
        );
        let status = r.status().as_u16();
        let text = r.text().unwrap();
        assert!((400..500).contains(&status), "{body}: {status} {text}");
        assert!(text.contains(want), "{body}: {text}");
    }
    let r = server.get("/admin/v1/tenants/default/models/fraud-model/rollouts");
    assert_eq!(json_of(&r.text().unwrap())["rollouts"], json!([]));
    // And through the CLI: a started rollout can be aborted; the alias stays.
    let out = server.cli_ok(&["models", "rollout", "fraud-model@1.1.0", "--interval", "1h"]);
    assert!(out.contains("rollout"), "{out}");
    server.cli_ok(&["models", "rollout-abort", "fraud-model", "--reason", "test"]);
    let r = newest(&server);
    assert_eq!(r["state"], "aborted", "{r:#}");
    assert_eq!(champion(&server), "1.0.0");
}
