//! Publishing events (issue 15, first part): `quiver events publish` and
//! `POST /events/{tenant}/{topic}` append to the tenant's topic in the embedded
//! log, durably; bad input is refused with a clear error and keeps nothing.

use quiver_tests::{error_of, Server};
use serde_json::Value;

fn invoke_token(server: &Server, tenant: &str) -> String {
    let out: Value = serde_json::from_str(&server.cli_ok(&[
        "--tenant", tenant, "--json", "tokens", "create", "--scope", "invoke",
    ]))
    .unwrap();
    out["token"].as_str().unwrap().to_string()
}

#[test]
fn events_are_published_durably_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    server.ensure_tenant("acme");
    server.ensure_tenant("beta");
    let acme = invoke_token(&server, "acme");

    let out: Value = serde_json::from_str(&server.cli_ok(&[
        "--tenant",
        "acme",
        "--json",
        "events",
        "publish",
        "drift.detected",
        r#"{"feature": "amount", "psi": 0.31}"#,
    ]))
    .unwrap();
    assert_eq!(out["topic"], "drift.detected", "{out}");
    let first = out["id"].as_u64().expect("an id");

    let c = server.http_as(Some(&acme));
    let publish = |topic: &str, content_type: &str, body: Vec<u8>| {
        c.post(format!("{}/events/acme/{topic}", server.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .unwrap()
    };
    let r = publish("new-data", "text/csv", b"id,amount\n1,9.5\n".to_vec());
    assert_eq!(r.status(), 202);
    let v: Value = r.json().unwrap();
    assert_eq!(v["id"].as_u64(), Some(first + 1), "{v}");

    let cases: Vec<(&str, reqwest::blocking::Response, u16, &str)> = vec![
        (
            "upper case topic",
            publish("Drift", "application/json", b"{}".to_vec()),
            400,
            "invalid_topic",
        ),
        (
            "a topic with an encoded slash",
            publish("a%2Fb", "application/json", b"{}".to_vec()),
            400,
            "invalid_topic",
        ),
        (
            "a topic starting with a dot",
            publish(".hidden", "application/json", b"{}".to_vec()),
            400,
            "invalid_topic",
        ),
        (
            "declared JSON, is not",
            publish("drift.detected", "application/json", b"{nope".to_vec()),
            400,
            "invalid_json",
        ),
        (
            // On a client of its own: the host answers 413 before reading the body
            // and closes that connection, which a pooled client would reuse.
            "over the payload limit",
            server
                .http_as(Some(&acme))
                .post(format!("{}/events/acme/drift.detected", server.url))
                .header("content-type", "text/plain")
                .body(vec![b'x'; (1 << 20) + 1])
                .send()
                .unwrap(),
            413,
            "payload_too_large",
        ),
        (
            "acme's token on beta's topic",
            c.post(format!("{}/events/beta/drift.detected", server.url))
                .body("{}")
                .send()
                .unwrap(),
            404,
            "not_found",
        ),
        (
            "no token",
            server
                .http_as(None)
                .post(format!("{}/events/acme/drift.detected", server.url))
                .body("{}")
                .send()
                .unwrap(),
            401,
            "unauthorized",
        ),
    ];
    for (what, resp, status, code) in cases {
        let (got, got_code, message) = error_of(resp);
        assert_eq!(
            (got, got_code.as_str()),
            (status, code),
            "{what}: {message}"
        );
    }
    server.assert_running();

    // Durable: after a kill -9 the log goes on from where it was (nothing refused
    // above took an id).
    server.kill();
    let server = Server::start_in(dir.path());
    let c = server.http_as(Some(&acme));
    let r = c
        .post(format!("{}/events/acme/drift.detected", server.url))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().unwrap();
    assert_eq!(v["id"].as_u64(), Some(first + 2), "{v}");
}
