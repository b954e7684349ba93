//! Every way in for bad input gets a clear error, and the server stays healthy.
use quiver_tests::{error_of, Server};
use serde_json::json;
use std::time::{Duration, Instant};

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p.to_str().unwrap().to_string()
}

fn deploy_file_err(server: &Server, path: &str, kind: &str) -> String {
    let err = server.cli_err(&[
        "deploy",
        path,
        "--kind",
        kind,
        "--version",
        "1.0.0",
        "--name",
        "bad",
    ]);
    server.assert_healthy();
    err
}

#[test]
fn malformed_uploads_are_rejected_with_the_reason() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();

    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = deploy_file_err(&server, &write(&dir, "random.wasm", &random), "transform");
    assert!(err.contains("not a WebAssembly binary"), "{err}");

    let err = deploy_file_err(&server, &write(&dir, "empty.wasm", b""), "transform");
    assert!(err.contains("empty"), "{err}");

    let core = wat::parse_str("(module (func (export \"transform\")))").unwrap();
    let err = deploy_file_err(&server, &write(&dir, "core.wasm", &core), "transform");
    assert!(err.contains("core Wasm module, not a component"), "{err}");

    let truncated = &wat::parse_str("(component (core module (func)))").unwrap()[..20];
    let err = deploy_file_err(
        &server,
        &write(&dir, "truncated.wasm", truncated),
        "transform",
    );
    assert!(
        err.contains("malformed") || err.contains("invalid"),
        "{err}"
    );

    let sneaky = wat::parse_str(
        r#"(component
             (import "acme:secrets/vault@1.0.0" (instance))
             (core module $m (func (export "f")))
             (core instance $i (instantiate $m))
             (func $f (canon lift (core func $i "f")))
             (export "transform" (func $f)))"#,
    )
    .unwrap();
    let err = deploy_file_err(&server, &write(&dir, "sneaky.wasm", &sneaky), "transform");
    assert!(
        err.contains("imports `acme:secrets/vault@1.0.0`") && err.contains("does not provide"),
        "{err}"
    );

    // Exports the right name with the wrong type: caught when linking, before publishing.
    let wrong_type = wat::parse_str(
        r#"(component
             (core module $m (func (export "f")))
             (core instance $i (instantiate $m))
             (func $f (canon lift (core func $i "f")))
             (export "transform" (func $f)))"#,
    )
    .unwrap();
    let err = deploy_file_err(
        &server,
        &write(&dir, "wrongtype.wasm", &wrong_type),
        "transform",
    );
    assert!(
        err.contains("does not match the `transform` world"),
        "{err}"
    );

    // A real component deployed as the wrong kind.
    let err = server.cli_err(&["deploy", "functions/hello-http", "--kind", "transform"]);
    assert!(err.contains("must export `transform`"), "{err}");
    let err = server.cli_err(&["deploy", "functions/txn-features", "--kind", "sculpture"]);
    assert!(err.contains("unknown kind `sculpture`"), "{err}");

    // Nothing of the rejected uploads was published.
    let ls: serde_json::Value = serde_json::from_str(&server.cli_ok(&["ls", "--json"])).unwrap();
    assert_eq!(ls["functions"], json!([]));
    server.assert_healthy();
}

#[test]
fn duplicate_version_with_another_digest_is_a_conflict() {
    let server = Server::start();
    server.deploy("txn-features");
    let err = server.cli_err(&[
        "deploy",
        "functions/chaos",
        "--name",
        "txn-features",
        "--version",
        "1.0.0",
    ]);
    assert!(err.contains("409") && err.contains("immutable"), "{err}");
    // The original still serves.
    let r = server.post(
        "/fn/default/txn-features",
        "application/json",
        quiver_tests::read_sample("txn-features"),
    );
    assert_eq!(r.status(), 200);
}

#[test]
fn manifest_with_unknown_key_names_the_key() {
    let server = Server::start();
    // Through the CLI (parsed before anything is built)...
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("quiver.toml"),
        "[function]\nname='x'\nversion='1.0.0'\nkind='transform'\nreplicas=3\n",
    )
    .unwrap();
    let err = server.cli_err(&["deploy", dir.path().to_str().unwrap()]);
    assert!(err.contains("replicas"), "{err}");
    // ...and by the server for a raw upload.
    let form = reqwest::blocking::multipart::Form::new().text(
        "manifest",
        "[function]\nname='x'\nversion='1.0.0'\nkind='transform'\n[scaling]\nmax_instancez=3\n",
    );
    let resp = server
        .http()
        .post(format!("{}/admin/v1/tenants/default/functions", server.url))
        .multipart(form)
        .send()
        .unwrap();
    let (status, code, message) = error_of(resp);
    assert_eq!((status, code.as_str()), (422, "invalid_manifest"));
    assert!(message.contains("max_instancez"), "{message}");
    // Not multipart at all.
    let resp = server.post(
        "/admin/v1/tenants/default/functions",
        "application/json",
        "{}",
    );
    assert_eq!(error_of(resp).0, 400);
    server.assert_healthy();
}

#[test]
fn bad_requests_get_json_errors() {
    let server = Server::start();
    server.deploy("txn-features");

    let (status, code, message) =
        error_of(server.post("/fn/default/txn-features", "application/json", "{not json"));
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    assert!(message.contains("invalid JSON"), "{message}");

    let (status, code, message) = error_of(server.post(
        "/fn/default/txn-features",
        "application/json",
        r#"[{"amount": 1}]"#,
    ));
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    assert!(message.contains("missing field `ts`"), "{message}");

    let (status, code, _) = error_of(server.post(
        "/fn/default/txn-features",
        "application/json",
        r#"[{"amount": -5, "ts": 0, "merchant": "m"}]"#,
    ));
    assert_eq!((status, code.as_str()), (400, "invalid_input"));

    // Over the 1 MiB limit the server was started with, announced or streamed.
    // Announced: the server answers 413 from the headers alone, without waiting for
    // (or reading) the body, so send only the headers.
    let big = vec![b' '; 2 << 20];
    let addr = server.url.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    std::io::Write::write_all(
        &mut conn,
        format!(
            "POST /fn/default/txn-features HTTP/1.1\r\nhost: quiver\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            server.admin_token,
            big.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = std::io::Read::read_to_end(&mut conn, &mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    // Streamed without a length: the server answers 413 as soon as the limit is
    // passed and may close the connection while the client is still sending.
    let streamed = reqwest::blocking::Body::new(std::io::Cursor::new(big));
    match server
        .http()
        .post(format!("{}/fn/default/txn-features", server.url))
        .body(streamed)
        .send()
    {
        Ok(resp) => assert_eq!(resp.status(), 413),
        Err(e) => assert!(e.is_body() || e.is_request(), "{e}"),
    }
    let metrics = server.get("/metrics").text().unwrap();
    assert!(metrics.contains(r#"quiver_errors_total{code="payload_too_large",function="txn-features",tenant="default"} 2"#), "{metrics}");
    let (status, code, _) = error_of(server.post("/fn/default/nope", "application/json", "[]"));
    assert_eq!((status, code.as_str()), (404, "not_found"));
    let (status, _, _) =
        error_of(server.post("/fn/default/txn-features@7.7.7", "application/json", "[]"));
    assert_eq!(status, 404);
    let (status, code, _) = error_of(server.post("/fn/Not_A_Tenant/x", "application/json", "[]"));
    assert_eq!((status, code.as_str()), (400, "invalid_name"));
    let (status, _, _) = error_of(server.get("/no/such/route"));
    assert_eq!(status, 404);
    server.assert_healthy();
}

#[test]
fn misbehaving_guests_are_contained() {
    let server = Server::start();
    assert_misbehaving_guests_are_contained(&server);
}

/// The same containment when the pooling allocator is off (as where its probe fails).
#[test]
fn misbehaving_guests_are_contained_with_the_on_demand_allocator() {
    let server = Server::start_with(&["--allocator", "on-demand"]);
    let health: serde_json::Value = server.get("/healthz").json().unwrap();
    assert_eq!(health["allocator"], "on-demand");
    assert_misbehaving_guests_are_contained(&server);
}

fn assert_misbehaving_guests_are_contained(server: &Server) {
    let out = server.deploy("chaos");
    assert!(out.contains("chaos@1.2.0"), "{out}");
    let call = |mode: &str| {
        server.post(
            "/fn/default/chaos",
            "application/json",
            json!([{"mode": mode}]).to_string(),
        )
    };

    // Loops forever: stopped at its 500 ms limit with a 504, and the next request is served.
    let started = Instant::now();
    let resp = call("loop");
    assert_eq!(
        resp.headers()["x-quiver-version"],
        "1.2.0",
        "errors say which version failed"
    );
    let (status, code, message) = error_of(resp);
    let took = started.elapsed();
    assert_eq!((status, code.as_str()), (504, "timeout"), "{message}");
    assert!(took < Duration::from_secs(3), "the timeout took {took:?}");
    assert_eq!(call("echo").status(), 200);

    // Grows memory without bound: a clean error at its 32 MiB limit, not a host abort.
    let (status, code, message) = error_of(call("oom"));
    assert_eq!(
        (status, code.as_str()),
        (500, "memory_limit_exceeded"),
        "{message}"
    );
    assert!(message.contains("32"), "{message}");
    assert_eq!(call("echo").status(), 200);

    // Traps.
    let (status, code, _) = error_of(call("trap"));
    assert_eq!((status, code.as_str()), (500, "trap"));

    // Returns its typed error.
    let (status, code, message) = error_of(call("fail"));
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    assert_eq!(message, "chaos asked to fail");

    let body: serde_json::Value = call("echo").json().unwrap();
    assert_eq!(body["rows"][0]["mode"], "echo");
    // Instances that looped, ran out of memory or trapped were discarded, never reused:
    // loop (new, dropped), echo (new, kept), oom (reuses it, dropped), echo (new, kept),
    // trap (reuses it, dropped), fail (new, kept: a typed error is a clean return),
    // echo (reuses it) = 4 instances.
    let metrics = server.get("/metrics").text().unwrap();
    assert!(
        metrics.contains("\nquiver_instantiations_total 4\n"),
        "{metrics}"
    );
    server.assert_healthy();
}
