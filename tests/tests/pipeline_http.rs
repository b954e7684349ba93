//! Acceptance 5-6: a pipeline flows batches between stages in the host; a standard
//! wasi:http component is served unchanged.
use quiver_tests::{read_sample, Server};
use serde_json::Value;

/// A two-stage pipeline (ingest-json -> txn-features) named `fraud-pipeline`, so
/// these tests see the features themselves; `inference.rs` runs the first-party
/// three-stage one.
fn deploy_pipeline(server: &Server) {
    server.deploy("ingest-json");
    server.deploy("txn-features");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("quiver.toml"),
        "[function]\nname = \"fraud-pipeline\"\nversion = \"1.0.0\"\nkind = \"pipeline\"\n\
         [pipeline]\nstages = [\"ingest-json\", \"txn-features\"]\n",
    )
    .unwrap();
    let out = server.cli_ok(&["deploy", dir.path().to_str().unwrap()]);
    assert!(out.contains("fraud-pipeline@1.0.0"), "{out}");
}

#[test]
fn pipeline_runs_ingest_then_transform_and_reports_rejects() {
    let server = Server::start();
    deploy_pipeline(&server);
    let resp = server.post(
        "/fn/default/fraud-pipeline",
        "application/json",
        read_sample("fraud-pipeline"),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-quiver-version"], "1.0.0");
    let body: Value = resp.json().unwrap();
    let rows = body["rows"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["txn_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["t-1001", "t-1002", "t-1004"]);
    assert!((rows[2]["log_amount"].as_f64().unwrap() - 12.75f64.ln_1p()).abs() < 1e-12);
    let rejected = body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{body}");
    assert_eq!(rejected[0]["row"], 3);
    assert!(
        rejected[0]["reason"].as_str().unwrap().contains("amount"),
        "{body}"
    );
}

#[test]
fn pipeline_accepts_csv_and_json_lines() {
    let server = Server::start();
    deploy_pipeline(&server);
    let csv = "txn_id,amount,ts,merchant\nc-1,10.5,1763812800,bakery-42\nc-2,oops,1763812800,bakery-42\nc-3,7,1763816400,unknown-shop\n";
    let body: Value = server
        .post("/fn/default/fraud-pipeline", "text/csv", csv)
        .json()
        .unwrap();
    assert_eq!(body["rows"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["rows"][1]["merchant_known"], false);
    assert_eq!(body["rejected"][0]["row"], 2);

    let lines = "{\"txn_id\":\"j-1\",\"amount\":1,\"ts\":0,\"merchant\":\"m\"}\nnot json\n{\"txn_id\":\"j-3\",\"amount\":2,\"ts\":3600,\"merchant\":\"m\"}\n";
    let body: Value = server
        .post("/fn/default/fraud-pipeline", "application/x-ndjson", lines)
        .json()
        .unwrap();
    assert_eq!(body["rows"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(body["rows"][1]["hour_of_day"], 1);
    assert_eq!(body["rejected"][0]["row"], 2);
    assert!(body["rejected"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
}

#[test]
fn pipeline_needs_its_stages_deployed_first() {
    let server = Server::start();
    let err = server.cli_err(&["deploy", "functions/fraud-pipeline"]);
    assert!(
        err.contains("ingest-json") && err.contains("not found"),
        "{err}"
    );
    server.deploy("txn-features");
    server.deploy("ingest-json");
    // A transform cannot come before... an ingest stage must be first.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("quiver.toml"),
        "[function]\nname='backwards'\nversion='1.0.0'\nkind='pipeline'\n[pipeline]\nstages=['txn-features','ingest-json']\n",
    )
    .unwrap();
    let err = server.cli_err(&["deploy", dir.path().to_str().unwrap()]);
    assert!(
        err.contains("ingest-json") && err.contains("`ingest`"),
        "{err}"
    );
}

#[test]
fn wasi_http_component_is_served_unchanged() {
    let server = Server::start();
    let out = server.deploy("hello-http");
    assert!(out.contains("(http)"), "{out}");
    let resp = server.get("/http/default/hello-http/some/path?x=1");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-quiver-version"], "1.2.0");
    assert_eq!(resp.headers()["content-type"], "text/plain");
    assert_eq!(
        resp.text().unwrap(),
        "hello from Quiver: GET /some/path?x=1\n"
    );

    let resp = server.post("/http/default/hello-http", "text/plain", "ping");
    assert_eq!(
        resp.text().unwrap(),
        "hello from Quiver: POST / (4 bytes)\nping"
    );

    // A typed function is not an http component, and vice versa.
    server.deploy("txn-features");
    let (status, code, _) = quiver_tests::error_of(server.get("/http/default/txn-features/"));
    assert_eq!((status, code.as_str()), (400, "wrong_kind"));
    let (status, code, _) =
        quiver_tests::error_of(server.post("/fn/default/hello-http", "application/json", "{}"));
    assert_eq!((status, code.as_str()), (400, "wrong_kind"));
}

#[test]
fn wasi_http_instances_are_fresh_unless_the_function_opts_in_to_reuse() {
    let server = Server::start();
    server.deploy("hello-http");
    server.cli_ok(&[
        "deploy",
        "functions/hello-http",
        "--name",
        "hello-reuse",
        "--set",
        "scaling.instance_reuse=true",
    ]);
    let instantiations = || server.metric("quiver_instantiations_total").unwrap();
    let serve = |name: &str| {
        for i in 0..5 {
            let resp = server.post(&format!("/http/default/{name}/n"), "text/plain", "abc");
            assert_eq!(resp.status(), 200);
            assert_eq!(
                resp.text().unwrap(),
                "hello from Quiver: POST /n (3 bytes)\nabc",
                "request {i} to {name}"
            );
        }
    };
    let before = instantiations();
    serve("hello-http");
    assert_eq!(instantiations(), before + 5.0, "one instance per request");
    let before = instantiations();
    serve("hello-reuse");
    assert_eq!(
        instantiations(),
        before + 1.0,
        "one instance serves all five, each request answered correctly"
    );
}
