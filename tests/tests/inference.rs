//! Issue 4: inference through wasi-nn, models in the registry, the Open Inference
//! Protocol v2, the model cache, the inference pool and dynamic batching.
use quiver_tests::{fraud_input_rows, fraud_reference, read_sample, repo, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FRAUD: &str = "functions/fraud-score/model/fraud.onnx";
const SLOW: &str = "tests/fixtures/models/slow.onnx";
const WIDE: &str = "tests/fixtures/models/wide.onnx";

fn reference() -> Value {
    let text =
        std::fs::read_to_string(repo().join("functions/fraud-score/model/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The reference rows as fraud-score's input rows (with txn ids), and the fraud
/// probabilities scikit-learn gave them.
fn reference_rows() -> (Value, Vec<f64>) {
    let (rows, want) = fraud_reference();
    let mut body = fraud_input_rows(&rows);
    for (i, row) in body.as_array_mut().unwrap().iter_mut().enumerate() {
        row["txn_id"] = json!(format!("r-{i}"));
    }
    (body, want)
}

fn with_fraud_score(server: &Server) {
    server.deploy_fraud_score();
}

fn post_json(server: &Server, path: &str, body: &Value) -> reqwest::blocking::Response {
    server.post(path, "application/json", body.to_string())
}

#[test]
fn models_push_reads_metadata_and_keeps_versions_immutable() {
    let server = Server::start();
    let out = server.cli_ok(&[
        "models",
        "push",
        FRAUD,
        "--name",
        "fraud-model",
        "--version",
        "1.0.0",
        "--dataset-digest",
        "sha256:abc",
        "--trainer",
        "trainer@0.1.0",
        "--metric",
        "auc=0.915",
    ]);
    assert!(out.contains("pushed model fraud-model@1.0.0"), "{out}");
    assert!(out.contains("X:FP32[-1,4]"), "{out}");
    assert!(out.contains("probabilities:FP32[-1,2]"), "{out}");

    let v: Value =
        serde_json::from_str(&server.cli_ok(&["models", "versions", "fraud-model", "--json"]))
            .unwrap();
    let m = &v["versions"][0];
    assert_eq!(m["version"], "1.0.0");
    assert_eq!(m["format"], "onnx");
    assert!(m["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        m["size"].as_u64().unwrap(),
        std::fs::metadata(repo().join(FRAUD)).unwrap().len()
    );
    assert!(!m["created_at"].as_str().unwrap().is_empty());
    assert_eq!(m["lineage"]["dataset_digest"], "sha256:abc");
    assert_eq!(m["lineage"]["trainer"], "trainer@0.1.0");
    assert_eq!(m["lineage"]["metrics"]["auc"], 0.915);

    // The same bytes again: unchanged. Other bytes under the same version: refused.
    let again = server.push_model(FRAUD, "fraud-model", "1.0.0");
    assert!(again.contains("unchanged"), "{again}");
    let err = server.cli_err(&[
        "models",
        "push",
        WIDE,
        "--name",
        "fraud-model",
        "--version",
        "1.0.0",
    ]);
    assert!(err.contains("immutable"), "{err}");
    // Not a model at all.
    let err = server.cli_err(&[
        "models",
        "push",
        "functions/fraud-pipeline/sample.json",
        "--name",
        "junk",
        "--version",
        "1.0.0",
    ]);
    assert!(err.contains("not a loadable ONNX model"), "{err}");
    let ls = server.cli_ok(&["models", "ls"]);
    assert!(ls.contains("fraud-model") && !ls.contains("junk"), "{ls}");
    server.assert_healthy();
}

#[test]
fn deploy_resolves_the_model_range_and_records_the_version() {
    let server = Server::start();
    // No model yet: the deploy names the model and the range.
    let err = server.cli_err(&["deploy", "functions/fraud-score"]);
    assert!(
        err.contains("fraud-model") && err.contains("quiver models push"),
        "{err}"
    );
    server.push_model(FRAUD, "fraud-model", "2.0.0");
    let err = server.cli_err(&["deploy", "functions/fraud-score"]);
    assert!(err.contains("^1") && err.contains("2.0.0"), "{err}");

    server.push_model(FRAUD, "fraud-model", "1.0.0");
    server.push_model(FRAUD, "fraud-model", "1.1.0");
    server.deploy("fraud-score");
    let meta: Value = server
        .get("/v2/tenants/default/models/fraud-score")
        .json()
        .unwrap();
    assert_eq!(meta["parameters"]["models"]["fraud"], "fraud-model@=1.1.0");

    // A newer model does not change what a deployed version bound; a new deploy binds it.
    server.push_model(FRAUD, "fraud-model", "1.2.0");
    let meta: Value = server
        .get("/v2/tenants/default/models/fraud-score")
        .json()
        .unwrap();
    assert_eq!(meta["parameters"]["models"]["fraud"], "fraud-model@=1.1.0");
    server.deploy_with("fraud-score", &["--version", "1.3.1"]);
    let meta: Value = server
        .get("/v2/tenants/default/models/fraud-score")
        .json()
        .unwrap();
    assert_eq!(meta["parameters"]["models"]["fraud"], "fraud-model@=1.2.0");
    assert_eq!(meta["versions"], json!(["1.3.0", "1.3.1"]));

    // A GPU target on this CPU-only host is an explicit error at deploy.
    let err = server.cli_err(&[
        "deploy",
        "functions/fraud-score",
        "--name",
        "fraud-gpu",
        "--set",
        "inference.target=gpu",
    ]);
    assert!(
        err.contains("gpu") && err.contains("not available"),
        "{err}"
    );
}

#[test]
fn fraud_score_runs_the_real_model() {
    let server = Server::start();
    with_fraud_score(&server);
    let (rows, want) = reference_rows();
    let resp = post_json(&server, "/fn/default/fraud-score", &rows);
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().unwrap();
    let got = out["rows"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (row, p) in got.iter().zip(&want) {
        let score = row["score"].as_f64().unwrap();
        assert!(
            (score - p).abs() < 1e-5,
            "tract {score} vs scikit-learn {p}"
        );
        assert_eq!(row["label"], json!(score >= 0.5));
    }
    assert_eq!(got[3]["txn_id"], "r-3");
    // Missing a feature: a clear invalid-input error.
    let resp = post_json(
        &server,
        "/fn/default/fraud-score",
        &json!([{"log_amount": 1.0}]),
    );
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("hour_of_day"));
}

/// `nn-probe` runs the bound model from inside a guest, once per `[config] calls`,
/// and reports each run's latency next to the model's first output.
#[test]
fn nn_probe_times_the_model_from_a_guest() {
    let server = Server::start();
    server.push_model(FRAUD, "fraud-model", "1.0.0");
    server.deploy_with("nn-probe", &["--set", "config.calls=3"]);
    let (rows, p_fraud) = fraud_reference();
    let x: Value = rows[..1]
        .iter()
        .map(|r| json!({"x0": r[0], "x1": r[1], "x2": r[2], "x3": r[3]}))
        .collect();
    let resp = post_json(&server, "/fn/default/nn-probe", &x);
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().unwrap();
    let runs = out["rows"].as_array().unwrap();
    assert_eq!(runs.len(), 3, "{out}");
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["run"], json!(i));
        assert!(run["nanos"].as_f64().unwrap() > 0.0, "{run}");
        // The model's first output is P(not fraud) of the first row.
        let first = run["first"].as_f64().unwrap();
        assert!(
            (first - (1.0 - p_fraud[0])).abs() < 1e-5,
            "{first} vs {}",
            1.0 - p_fraud[0]
        );
    }
    // Text is not a model input; a run count out of range is named.
    let resp = post_json(&server, "/fn/default/nn-probe", &json!([{"x0": "a"}]));
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("`x0` is text"));
    server.deploy_with(
        "nn-probe",
        &["--name", "nn-probe-0", "--set", "config.calls=0"],
    );
    let resp = post_json(&server, "/fn/default/nn-probe-0", &x);
    assert_eq!(resp.status(), 400);
    assert!(resp.text().unwrap().contains("config `calls` = `0`"));
    server.assert_healthy();
}

#[test]
fn three_stage_pipeline_scores_and_reads_online_features() {
    let server = Server::start();
    server.deploy("ingest-json");
    server.deploy("txn-features");
    with_fraud_score(&server);
    let out = server.deploy("fraud-pipeline");
    assert!(out.contains("fraud-pipeline@2.2.0"), "{out}");
    let call = || -> Value {
        let resp = server.post(
            "/fn/default/fraud-pipeline",
            "application/json",
            read_sample("fraud-pipeline"),
        );
        assert_eq!(resp.status(), 200);
        resp.json().unwrap()
    };
    let first = call();
    let rows = first["rows"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["txn_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["t-1001", "t-1002", "t-1004"]);
    for r in rows {
        let s = r["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s), "{r}");
        // Written by txn-features, read by fraud-score by merchant.
        assert_eq!(r["merchant_txns"], 1, "{r}");
    }
    assert_eq!(first["rejected"][0]["row"], 3);
    let second = call();
    assert_eq!(second["rows"][0]["merchant_txns"], 2, "{second}");
    assert_eq!(second["rows"][0]["score"], first["rows"][0]["score"]);
}

#[test]
fn open_inference_protocol_v2() {
    let server = Server::start();
    with_fraud_score(&server);
    server.deploy("txn-features");
    assert_eq!(
        server.get("/v2/health/live").json::<Value>().unwrap()["live"],
        true
    );
    assert_eq!(
        server.get("/v2/health/ready").json::<Value>().unwrap()["ready"],
        true
    );
    let meta: Value = server
        .get("/v2/tenants/default/models/fraud-score")
        .json()
        .unwrap();
    assert_eq!(meta["name"], "fraud-score");
    assert_eq!(meta["platform"], "quiver-inference");
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "log_amount", "datatype": "FP64", "shape": [-1]})
    );
    assert_eq!(meta["outputs"][1]["name"], "label");
    let ready: Value = server
        .get("/v2/tenants/default/models/fraud-score/ready")
        .json()
        .unwrap();
    assert_eq!(ready["ready"], true);

    let r = reference();
    let rows: Vec<Vec<f64>> = serde_json::from_value(r["rows"].clone()).unwrap();
    let col = |i: usize| rows.iter().map(|x| x[i]).collect::<Vec<f64>>();
    let n = rows.len();
    let request = json!({
        "id": "req-7",
        "inputs": [
            { "name": "log_amount", "shape": [n], "datatype": "FP32", "data": col(0) },
            { "name": "hour_of_day", "shape": [n, 1], "datatype": "INT64",
              "data": col(1).iter().map(|h| vec![*h as i64]).collect::<Vec<_>>() },
            { "name": "merchant_z", "shape": [n], "datatype": "FP64", "data": col(2) },
            { "name": "merchant_known", "shape": [n], "datatype": "BOOL",
              "data": col(3).iter().map(|k| *k == 1.0).collect::<Vec<_>>() },
        ],
        "outputs": [{ "name": "score" }],
    });
    for path in [
        "/v2/tenants/default/models/fraud-score/infer",
        "/v2/tenants/default/models/fraud-score/versions/1.3.0/infer",
    ] {
        let resp = post_json(&server, path, &request);
        assert_eq!(resp.status(), 200);
        let out: Value = resp.json().unwrap();
        assert_eq!(out["model_name"], "fraud-score");
        assert_eq!(out["model_version"], "1.3.0");
        assert_eq!(out["id"], "req-7");
        let outputs = out["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), 1, "only the requested output: {out}");
        assert_eq!(outputs[0]["datatype"], "FP64");
        assert_eq!(outputs[0]["shape"], json!([n]));
        let want = r["probabilities"].as_array().unwrap();
        for (g, w) in outputs[0]["data"].as_array().unwrap().iter().zip(want) {
            assert!((g.as_f64().unwrap() - w[1].as_f64().unwrap()).abs() < 1e-5);
        }
    }

    // Errors, in the protocol's shape: {"error": "..."}.
    let error = |path: &str, body: Value| -> (u16, String) {
        let resp = post_json(&server, path, &body);
        let status = resp.status().as_u16();
        let v: Value = resp.json().unwrap();
        (
            status,
            v["error"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_string(),
        )
    };
    let one = |name: &str, datatype: &str, data: Value| json!({ "inputs": [{ "name": name, "shape": [1], "datatype": datatype, "data": data }] });
    let (s, e) = error(
        "/v2/tenants/default/models/fraud-score/infer",
        one("log_amount", "FP64", json!(["x"])),
    );
    assert_eq!(s, 400);
    assert!(
        e.contains("log_amount") && e.contains("not a number"),
        "{e}"
    );
    let (s, e) = error(
        "/v2/tenants/default/models/fraud-score/infer",
        one("log_amount", "FP64", json!([1, 2])),
    );
    assert!(s == 400 && e.contains("needs 1 values"), "{e}");
    let (s, e) = error(
        "/v2/tenants/default/models/fraud-score/infer",
        one("log_amount", "COMPLEX", json!([1])),
    );
    assert!(s == 400 && e.contains("unknown datatype"), "{e}");
    let (s, e) = error(
        "/v2/tenants/default/models/fraud-score/infer",
        json!({ "inputs": "nope" }),
    );
    assert!(s == 400 && e.contains("not an inference request"), "{e}");
    let (s, e) = error(
        "/v2/tenants/default/models/fraud-score/infer",
        json!({ "inputs": [{ "name": "log_amount", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4] }] }),
    );
    // An n-d input reaches the function as a tensor; this one takes columns.
    assert!(
        s == 400 && e.contains("`log_amount` is tensor") && e.contains("one number per row"),
        "{e}"
    );
    // The function's own validation, passed through.
    let (s, e) = error(
        "/v2/tenants/default/models/fraud-score/infer",
        one("log_amount", "FP64", json!([1.0])),
    );
    assert!(s == 400 && e.contains("hour_of_day"), "{e}");
    let mut wrong_output = request.clone();
    wrong_output["outputs"] = json!([{ "name": "nope" }]);
    let (s, e) = error("/v2/tenants/default/models/fraud-score/infer", wrong_output);
    assert!(s == 400 && e.contains("no output `nope`"), "{e}");
    let (s, e) = error("/v2/tenants/default/models/no-such/infer", request.clone());
    assert!(s == 404 && e.contains("no-such"), "{e}");
    let (s, e) = error(
        "/v2/tenants/default/models/fraud-score/versions/9.9.9/infer",
        request.clone(),
    );
    assert!(s == 404 && e.contains("9.9.9"), "{e}");
    let (s, e) = error(
        "/v2/tenants/default/models/txn-features/infer",
        request.clone(),
    );
    assert!(s == 400 && e.contains("transform"), "{e}");
    let resp = server.get("/v2/tenants/default/models/no-such");
    assert_eq!(resp.status(), 404);
    assert!(resp.json::<Value>().unwrap()["error"].is_string());
    server.assert_healthy();
}

#[test]
fn models_are_parsed_once_and_leave_with_scale_to_zero() {
    let server = Server::start();
    server.push_model(FRAUD, "fraud-model", "1.0.0");
    let idle = ["--set", "scaling.idle_timeout=1s"];
    server.deploy_with("fraud-score", &idle);
    let mut flags = vec!["--name", "fraud-score-b"];
    flags.extend_from_slice(&idle);
    server.deploy_with("fraud-score", &flags);
    assert_eq!(server.metric("quiver_models_resident"), Some(0.0));
    let (rows, _) = reference_rows();
    for name in [
        "fraud-score",
        "fraud-score-b",
        "fraud-score",
        "fraud-score-b",
    ] {
        let resp = post_json(&server, &format!("/fn/default/{name}"), &rows);
        assert_eq!(resp.status(), 200);
    }
    // Two functions, four requests, one parse: the model is shared.
    assert_eq!(server.metric("quiver_model_loads_total"), Some(1.0));
    assert_eq!(server.metric("quiver_models_resident"), Some(1.0));
    // Both go Cold: the model leaves memory with them.
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.metric("quiver_models_resident") != Some(0.0) {
        assert!(Instant::now() < deadline, "model still resident");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.function_state("fraud-score")["state"], "cold");
    // The next request loads it again.
    assert_eq!(
        post_json(&server, "/fn/default/fraud-score", &rows).status(),
        200
    );
    assert_eq!(server.metric("quiver_model_loads_total"), Some(2.0));
}

#[test]
fn bad_models_and_mismatched_inputs_are_clear_errors() {
    let server = Server::start();
    // A model whose input (5 features) does not match what fraud-score sends (4).
    server.push_model(WIDE, "wide-model", "1.0.0");
    server.deploy_with(
        "fraud-score",
        &[
            "--name",
            "wide-score",
            "--set",
            "models.fraud=wide-model@^1",
        ],
    );
    let (rows, _) = reference_rows();
    let resp = post_json(&server, "/fn/default/wide-score", &rows);
    assert_eq!(resp.status(), 500);
    let text = resp.text().unwrap();
    assert!(
        text.contains("compute") && text.contains("FP32 [-1, 5]") && text.contains("[8, 4]"),
        "{text}"
    );
    eprintln!("mismatched model: {text}");
    // A model alias the registry does not have.
    let err = server.cli_err(&[
        "deploy",
        "functions/fraud-score",
        "--name",
        "ghost-score",
        "--set",
        "models.fraud=ghost-model@^3",
    ]);
    assert!(err.contains("ghost-model"), "{err}");
    // A bad range.
    let err = server.cli_err(&[
        "deploy",
        "functions/fraud-score",
        "--set",
        "models.fraud=wide-model@>>1",
    ]);
    assert!(err.contains("neither a semver range nor an alias"), "{err}");
    // A word is an alias: one that is not set is named.
    let err = server.cli_err(&[
        "deploy",
        "functions/fraud-score",
        "--set",
        "models.fraud=wide-model@not-a-range",
    ]);
    assert!(err.contains("no alias `not-a-range`"), "{err}");
    server.assert_healthy();
    // And the right model still works next to it.
    with_fraud_score(&server);
    assert_eq!(
        post_json(&server, "/fn/default/fraud-score", &rows).status(),
        200
    );
}

/// A slow model runs on the inference pool; the runtime's workers keep serving other
/// functions meanwhile.
#[test]
fn a_slow_model_does_not_stall_other_functions() {
    let server = Server::start_with(&["--inference-threads", "1"]);
    server.push_model(SLOW, "slow-model", "1.0.0");
    server.deploy_with(
        "fraud-score",
        &[
            "--name",
            "slow-score",
            "--set",
            "models.fraud=slow-model@^1",
            "--set",
            "limits.timeout=60s",
        ],
    );
    server.deploy("txn-features");
    let (rows, _) = reference_rows();
    let txn = json!([{"amount": 12.5, "ts": 0, "merchant": "m"}]);
    // Warm both (the first call loads the model), then time one slow call alone.
    assert_eq!(
        post_json(&server, "/fn/default/slow-score", &rows).status(),
        200
    );
    let t = Instant::now();
    assert_eq!(
        post_json(&server, "/fn/default/slow-score", &rows).status(),
        200
    );
    let slow = t.elapsed();
    assert_eq!(
        post_json(&server, "/fn/default/txn-features", &txn).status(),
        200
    );

    // Four slow calls queue on the single inference thread...
    let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let slow_calls: Vec<_> = (0..4)
        .map(|_| {
            let url = format!("{}/fn/default/slow-score", server.url);
            let body = rows.to_string();
            let token = server.admin_token.clone();
            std::thread::spawn(move || {
                reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(120))
                    .build()
                    .unwrap()
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    std::thread::sleep(slow / 4);
    // ...while a fast function keeps answering promptly.
    let mut fast = Vec::new();
    while busy.load(std::sync::atomic::Ordering::Relaxed) && fast.len() < 20 {
        let t = Instant::now();
        assert_eq!(
            post_json(&server, "/fn/default/txn-features", &txn).status(),
            200
        );
        fast.push(t.elapsed());
        if slow_calls.iter().all(|h| h.is_finished()) {
            busy.store(false, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let statuses: Vec<u16> = slow_calls.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses, [200; 4]);
    fast.sort();
    let worst = *fast.last().unwrap();
    eprintln!(
        "slow model call {slow:?}; fast function under load: median {:?}, worst {worst:?} ({} calls)",
        fast[fast.len() / 2],
        fast.len()
    );
    assert!(fast.len() >= 5, "too few fast calls while the model ran");
    assert!(
        worst < slow / 2,
        "a fast call took {worst:?} while slow calls of {slow:?} ran"
    );
}

/// Concurrent calls on one graph are stacked into one backend call; each caller gets
/// exactly what it would have got alone.
#[test]
fn dynamic_batching_gives_the_same_answers() {
    let server = Server::start();
    with_fraud_score(&server);
    server.deploy_with(
        "fraud-score",
        &[
            "--name",
            "fraud-batched",
            "--set",
            "inference.max_batch=16",
            "--set",
            "inference.max_wait=50ms",
        ],
    );
    let r = reference();
    let rows: Vec<Vec<f64>> = serde_json::from_value(r["rows"].clone()).unwrap();
    let one = |x: &Vec<f64>| {
        json!([{ "log_amount": x[0], "hour_of_day": x[1] as i64, "merchant_z": x[2],
                 "merchant_known": x[3] == 1.0 }])
    };
    let alone: Vec<Value> = rows
        .iter()
        .map(|x| {
            post_json(&server, "/fn/default/fraud-score", &one(x))
                .json::<Value>()
                .unwrap()["rows"][0]["score"]
                .clone()
        })
        .collect();
    let handles: Vec<_> = rows
        .iter()
        .map(|x| {
            let url = format!("{}/fn/default/fraud-batched", server.url);
            let body = one(x).to_string();
            let token = server.admin_token.clone();
            std::thread::spawn(move || {
                reqwest::blocking::Client::new()
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .unwrap()
                    .json::<Value>()
                    .unwrap()["rows"][0]["score"]
                    .clone()
            })
        })
        .collect();
    let batched: Vec<Value> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(batched, alone, "batched scores differ from unbatched ones");
    let calls = server
        .metric(r#"quiver_inference_computes{function="fraud-batched",tenant="default",version="1.3.0"}"#)
        .unwrap();
    let runs = server
        .metric(r#"quiver_inference_backend_runs{function="fraud-batched",tenant="default",version="1.3.0"}"#)
        .unwrap();
    eprintln!("{calls} compute calls ran as {runs} backend calls");
    assert_eq!(calls, rows.len() as f64);
    assert!(
        runs < calls,
        "no batch formed: {runs} runs for {calls} calls"
    );
    // Unbatched: one run per call.
    let plain = server
        .metric(r#"quiver_inference_backend_runs{function="fraud-score",tenant="default",version="1.3.0"}"#)
        .unwrap();
    assert_eq!(plain, rows.len() as f64);
}
