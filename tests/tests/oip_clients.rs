//! The Open Inference Protocol with the clients users of Triton and KServe have:
//! `tritonclient[http]` (tests/py/triton_http.py) against `fraud-score`, JSON and
//! the binary tensor data extension in both directions, scores checked against
//! scikit-learn's; and the extension's framing errors as raw requests.

use quiver_tests::{py_env, repo, Server};
use serde_json::{json, Value};
use std::process::Command;

fn invoke_token(server: &Server) -> String {
    let out: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "tokens", "create", "--scope", "invoke"]))
            .unwrap();
    out["token"].as_str().unwrap().to_string()
}

/// Run a client script of tests/py against `addr` as `fraud-score`'s caller;
/// what it printed (it exits non-zero when a check of its own fails).
fn run_client(script: &str, addr: &str, token: &str, admin: &str) -> Value {
    let out = Command::new(py_env())
        .arg(repo().join("tests/py").join(script))
        .arg(addr)
        .arg("fraud-score")
        .arg(token)
        .arg(repo().join("functions/fraud-score/model/reference.json"))
        .arg(admin)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{script}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// The (status, message) a script recorded for the refused call `case`.
fn refusal(r: &Value, case: &str) -> (String, String) {
    let text = |k: &str| {
        r["errors"][case][k]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (text("status"), text("message"))
}

#[test]
fn tritonclient_http_infers_with_json_and_binary_tensors() {
    let server = Server::start();
    server.deploy_fraud_score();
    let token = invoke_token(&server);
    let r = run_client(
        "triton_http.py",
        server.url.trim_start_matches("http://"),
        &token,
        &server.admin_token,
    );
    let cases = r["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4, "{r}");
    for c in cases {
        assert!(c["max_abs_err"].as_f64().unwrap() < 1e-4, "{c}");
    }
    let err = |k: &str| refusal(&r, k);
    let (status, message) = err("unknown_model");
    assert_eq!(status, "404", "{message}");
    let (status, message) = err("bad_shape");
    assert_eq!(status, "400", "{message}");
    assert!(message.contains("[1, "), "{message}");
    let (status, message) = err("unknown_output");
    assert_eq!(status, "400", "{message}");
    assert!(message.contains("no output `nope`"), "{message}");
    let (status, message) = err("compressed");
    assert_eq!(status, "415", "{message}");
    assert!(message.contains("uncompressed"), "{message}");
    let (status, message) = err("no_token");
    assert_eq!(status, "401");
    assert!(
        message.contains("missing `Authorization: Bearer"),
        "{message}"
    );
    server.assert_healthy();
}

/// A binary request: `json` as the header, then `binary`.
fn binary_request(
    server: &Server,
    json: &Value,
    binary: &[u8],
    header_len: Option<String>,
) -> (u16, Value) {
    let head = json.to_string();
    let mut body = head.clone().into_bytes();
    body.extend_from_slice(binary);
    let resp = server
        .http()
        .post(format!(
            "{}/v2/tenants/default/models/fraud-score/infer",
            server.url
        ))
        .header(
            "inference-header-content-length",
            header_len.unwrap_or(head.len().to_string()),
        )
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().unwrap();
    (status, v)
}

#[test]
fn binary_framing_that_lies_is_a_400_that_says_why() {
    let server = Server::start();
    server.deploy_fraud_score();
    let tensor = |name: &str, dt: &str, size: u64| json!({"name": name, "shape": [1], "datatype": dt, "parameters": {"binary_data_size": size}});
    let four = |size_of_first: u64| {
        json!({"inputs": [
            tensor("log_amount", "FP64", size_of_first),
            tensor("hour_of_day", "INT64", 8),
            tensor("merchant_z", "FP64", 8),
            tensor("merchant_known", "BOOL", 1),
        ]})
    };
    let mut good = Vec::new();
    good.extend(3.5f64.to_le_bytes());
    good.extend(12i64.to_le_bytes());
    good.extend(0.25f64.to_le_bytes());
    good.push(1);
    let (status, v) = binary_request(&server, &four(8), &good, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outputs"][0]["shape"], json!([1]), "{v}");

    for (body, binary, header, says) in [
        (four(8), &good[..good.len() - 1], None, "only 0 bytes"),
        (four(4), &good[..], None, "needs 1×8 bytes"),
        (
            four(8),
            &[good.clone(), vec![0; 3]].concat()[..],
            None,
            "3 bytes of binary data after",
        ),
        (
            four(8),
            &good[..],
            Some("100000".to_string()),
            "the body has",
        ),
        (
            four(8),
            &good[..],
            Some("ten".to_string()),
            "not a byte count",
        ),
        (four(u64::MAX), &good[..], None, "only 25 bytes"),
    ] {
        let (status, v) = binary_request(&server, &body, binary, header);
        assert_eq!(status, 400, "{v}");
        let message = v["error"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert!(message.contains(says), "{message:?} does not say {says:?}");
    }
    server.assert_healthy();
}

#[test]
fn tritonclient_grpc_infers_with_raw_tensors() {
    let port = quiver_tests::free_port();
    let grpc = format!("127.0.0.1:{port}");
    let server = Server::start_with(&["--grpc-listen", &grpc]);
    server.deploy_fraud_score();
    let token = invoke_token(&server);
    let r = run_client("triton_grpc.py", &grpc, &token, &server.admin_token);
    assert!(r["max_abs_err"].as_f64().unwrap() < 1e-4, "{r}");
    assert!(r["typed_max_abs_err"].as_f64().unwrap() < 1e-4, "{r}");
    let err = |k: &str| refusal(&r, k);
    // gRPC status codes, with the REST routes' messages.
    for (case, status, says) in [
        ("unknown_model", "StatusCode.NOT_FOUND", "no-such-model"),
        ("bad_shape", "StatusCode.INVALID_ARGUMENT", "[1, "),
        (
            "unknown_output",
            "StatusCode.INVALID_ARGUMENT",
            "no output `nope`",
        ),
        (
            "no_token",
            "StatusCode.UNAUTHENTICATED",
            "missing `Authorization: Bearer",
        ),
        // A platform token must name the tenant; a tenant's token sees no other.
        (
            "admin_without_tenant",
            "StatusCode.INVALID_ARGUMENT",
            "names the tenant",
        ),
        (
            "other_tenant",
            "StatusCode.NOT_FOUND",
            "no tenant `someone-else` that this token can see",
        ),
        (
            "path_escape",
            "StatusCode.INVALID_ARGUMENT",
            "function `../../admin/v1/gc` must be",
        ),
    ] {
        let (got, message) = err(case);
        assert_eq!(got, status, "{case}: {message}");
        assert!(
            message.contains(says),
            "{case}: {message:?} does not say {says:?}"
        );
    }
    // The same call path: its calls are counted like the REST route's.
    let calls = server.metric(
        r#"quiver_invocations_total{function="fraud-score",status="200",tenant="default",version="1.3.0"}"#,
    );
    assert!(calls.unwrap_or(0.0) >= 2.0, "{calls:?}");
    server.assert_healthy();
}

#[test]
fn grpc_with_tls_is_refused_at_start() {
    let message = quiver_tests::serve_refused(&[
        "--grpc-listen",
        "127.0.0.1:0",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ]);
    assert!(message.contains("--grpc-listen"), "{message}");
}
