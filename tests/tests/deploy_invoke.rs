//! Acceptance 2-4: deploy from the CLI, invoke over HTTP, versions and rollback.
use quiver_tests::{read_sample, Server};
use serde_json::Value;

#[test]
fn deploy_prints_name_version_digest_and_invoke_runs_the_transform() {
    let server = Server::start();
    let out = server.deploy("txn-features");
    assert!(out.contains("txn-features@1.0.0"), "{out}");
    assert!(out.contains("sha256:"), "{out}");

    let json: Value =
        serde_json::from_str(&server.cli_ok(&["deploy", "functions/txn-features", "--json"]))
            .unwrap();
    assert_eq!(
        json["unchanged"], true,
        "same digest again is idempotent: {json}"
    );
    let digest = json["digest"].as_str().unwrap();
    assert_eq!(digest.len(), "sha256:".len() + 64);

    let resp = server.post(
        "/fn/default/txn-features",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-quiver-version"], "1.0.0");
    let body: Value = resp.json().unwrap();
    let rows = body["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["txn_id"], "t-1001");
    let log_amount = rows[0]["log_amount"].as_f64().unwrap();
    assert!((log_amount - 42.5f64.ln_1p()).abs() < 1e-12, "{log_amount}");
    // 1763812800 is 12:00 UTC.
    assert_eq!(rows[0]["hour_of_day"], 12);
    let z = rows[0]["merchant_z"].as_f64().unwrap();
    assert!((z - (42.5f64.ln_1p() - 2.9) / 0.6).abs() < 1e-12, "{z}");
    assert_eq!(rows[1]["merchant_known"], true);

    // The CLI invokes too, reading the body from a file.
    let out = server.cli_ok(&[
        "invoke",
        "txn-features",
        "--data",
        "@functions/txn-features/sample.json",
        "--json",
    ]);
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["version"], "1.0.0");
    assert_eq!(out["result"]["rows"][1]["txn_id"], "t-1002");

    // ls shows it.
    let ls: Value = serde_json::from_str(&server.cli_ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls["functions"][0]["name"], "txn-features");
    assert!(server.cli_ok(&["ls"]).contains("txn-features"));
}

#[test]
fn versions_named_invocation_and_rollback() {
    let server = Server::start();
    server.deploy("txn-features");
    server.cli_ok(&["deploy", "functions/txn-features", "--version", "1.1.0"]);
    server.cli_ok(&["deploy", "functions/txn-features", "--version", "2.0.0"]);

    let v: Value =
        serde_json::from_str(&server.cli_ok(&["versions", "txn-features", "--json"])).unwrap();
    assert_eq!(v["serving"], "2.0.0");
    let listed: Vec<&str> = v["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["1.0.0", "1.1.0", "2.0.0"]);
    assert!(server
        .cli_ok(&["versions", "txn-features"])
        .contains("* 2.0.0"));

    let version_of = |path: &str| {
        let r = server.post(path, "application/json", read_sample("txn-features"));
        assert_eq!(r.status(), 200);
        r.headers()["x-quiver-version"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(version_of("/fn/default/txn-features"), "2.0.0");
    assert_eq!(version_of("/fn/default/txn-features@1.0.0"), "1.0.0");

    assert!(server
        .cli_ok(&["rollback", "txn-features"])
        .contains("1.1.0"));
    assert_eq!(version_of("/fn/default/txn-features"), "1.1.0");
    server.cli_ok(&["rollback", "txn-features", "--to", "1.0.0"]);
    assert_eq!(version_of("/fn/default/txn-features"), "1.0.0");
    let err = server.cli_err(&["rollback", "txn-features"]);
    assert!(err.contains("no version older"), "{err}");
    let err = server.cli_err(&["rollback", "txn-features", "--to", "9.9.9"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn a_restarted_host_serves_what_was_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    server.deploy("txn-features");
    server.cli_ok(&["deploy", "functions/txn-features", "--version", "1.1.0"]);
    server.cli_ok(&["rollback", "txn-features"]);
    server.kill();

    let server = Server::start_in(dir.path());
    let r = server.post(
        "/fn/default/txn-features",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-quiver-version"],
        "1.0.0",
        "rollback survives a restart"
    );
}

#[test]
fn metrics_and_health() {
    let server = Server::start();
    server.deploy("txn-features");
    for _ in 0..3 {
        assert_eq!(
            server
                .post(
                    "/fn/default/txn-features",
                    "application/json",
                    read_sample("txn-features")
                )
                .status(),
            200
        );
    }
    assert_eq!(
        server
            .post("/fn/default/txn-features", "application/json", "{")
            .status(),
        400
    );
    let text = server.get("/metrics").text().unwrap();
    assert!(
        text.contains(r#"quiver_invocations_total{function="txn-features",status="200",tenant="default",version="1.0.0"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"quiver_errors_total{code="invalid_input",function="txn-features",tenant="default"} 1"#), "{text}");
    assert!(
        text.contains("quiver_invocation_duration_seconds_bucket"),
        "{text}"
    );
    let health: Value = server.get("/healthz").json().unwrap();
    assert_eq!(health["status"], "ok");
}

#[test]
fn deploy_set_overrides_manifest_fields() {
    let server = Server::start();
    let out = server.cli_ok(&[
        "deploy",
        "functions/chaos",
        "--set",
        "limits.timeout=200ms",
        "--set",
        "function.version=1.0.1",
        "--json",
    ]);
    let out: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(out["version"], "1.0.1");
    let resp = server.post(
        "/fn/default/chaos",
        "application/json",
        r#"[{"mode": "loop"}]"#,
    );
    let (status, _, message) = quiver_tests::error_of(resp);
    assert_eq!(status, 504);
    assert!(
        message.contains("200ms"),
        "the overridden timeout applies: {message}"
    );

    // Config values are strings; an unknown key is named.
    server.cli_ok(&[
        "deploy",
        "functions/txn-features",
        "--set",
        r#"config.merchant_stats={"m": [1.0, 0.5]}"#,
    ]);
    let body: Value = server
        .post(
            "/fn/default/txn-features",
            "application/json",
            r#"[{"amount": 1.718281828, "ts": 0, "merchant": "m"}]"#,
        )
        .json()
        .unwrap();
    let z = body["rows"][0]["merchant_z"].as_f64().unwrap();
    assert!(z.abs() < 1e-6, "ln(1 + e - 1) = 1 = the mean: {z}");
    let err = server.cli_err(&[
        "deploy",
        "functions/txn-features",
        "--set",
        "scaling.replicas=3",
    ]);
    assert!(err.contains("replicas"), "{err}");
}
