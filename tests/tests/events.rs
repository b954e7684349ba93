//! Events on the embedded bus: `quiver events publish` and `POST
//! /events/{tenant}/{topic}` append to the tenant's topic durably, bad input is
//! refused and keeps nothing; `[triggers] events` invokes the subscriber through
//! the call path, failures retry into the dead-letter set, `quiver events dlq` and
//! `replay` show and return them; a host killed while an event's function runs
//! processes it once more after restart; `[triggers] schedule` runs on its ticks.

use quiver_tests::{error_of, series, Server};
use serde_json::Value;
use std::time::{Duration, Instant};

fn id_of(v: &Value) -> u64 {
    v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("an event id")
}

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
    let first = id_of(&out);

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
    assert_eq!(id_of(&v), first + 1, "{v}");

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
    assert_eq!(id_of(&v), first + 2, "{v}");
}

fn publish(server: &Server, topic: &str, json: &str) -> Value {
    serde_json::from_str(&server.cli_ok(&["--json", "events", "publish", topic, json])).unwrap()
}

#[test]
fn events_invoke_their_subscriber_and_failures_retry_into_the_dead_letters() {
    let server = Server::start();
    server.deploy_with(
        "chaos",
        &[
            "--name",
            "worker",
            "--set",
            r#"triggers.events=["jobs"]"#,
            "--set",
            "triggers.http=false",
            "--set",
            "triggers.retry.max_attempts=3",
            "--set",
            "triggers.retry.backoff=50ms",
            "--set",
            "triggers.retry.max_backoff=200ms",
        ],
    );
    let ok = series(
        "quiver_event_deliveries_total",
        &[("function", "worker"), ("topic", "jobs"), ("outcome", "ok")],
    );
    let retry = series(
        "quiver_event_deliveries_total",
        &[
            ("function", "worker"),
            ("topic", "jobs"),
            ("outcome", "retry"),
        ],
    );
    let dead = series(
        "quiver_event_deliveries_total",
        &[
            ("function", "worker"),
            ("topic", "jobs"),
            ("outcome", "dead"),
        ],
    );
    let calls = |status: &str| {
        series(
            "quiver_invocations_total",
            &[
                ("function", "worker"),
                ("version", "1.2.0"),
                ("status", status),
            ],
        )
    };

    // Published after the deploy answered: delivered, through the call path (the
    // invocation is counted like an HTTP one).
    publish(&server, "jobs", r#"{"mode": "echo"}"#);
    server.wait_metric(&ok, 1.0, 30);
    assert_eq!(server.metric(&calls("200")), Some(1.0));
    // `http = false` really turns the HTTP route off; the events trigger still runs it.
    let (status, code, _) = error_of(server.post("/fn/default/worker", "application/json", "{}"));
    assert_eq!((status, code.as_str()), (404, "not_exposed"));

    let lag = series(
        "quiver_event_lag_seconds_count",
        &[("function", "worker"), ("topic", "jobs")],
    );
    assert_eq!(
        server.metric(&lag),
        Some(1.0),
        "publication to delivery, once an event"
    );

    // A function that always fails: 3 attempts (2 retries), then dead with the reason.
    let failing = publish(&server, "jobs", r#"{"mode": "fail"}"#);
    server.wait_metric(&dead, 1.0, 30);
    // Only first deliveries count in the lag (a retry's includes its backoff).
    assert_eq!(server.metric(&lag), Some(2.0));
    assert_eq!(server.metric(&retry), Some(2.0));
    assert_eq!(server.metric(&calls("400")), Some(3.0));
    let dlq: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "events", "dlq", "jobs"])).unwrap();
    let list = dlq["dead"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{dlq}");
    assert_eq!(list[0]["id"], failing["id"]);
    assert_eq!(list[0]["function"], "worker");
    assert_eq!(list[0]["attempts"], 3);
    assert_eq!(list[0]["payload"]["mode"], "fail");
    let reason = list[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("invalid_input") && reason.contains("chaos asked to fail"),
        "{reason}"
    );
    let text = server.cli_ok(&["events", "dlq", "jobs"]);
    assert!(text.contains("attempts 3"), "{text}");

    // A topic nobody subscribes to keeps its event; it is not an error.
    let kept = publish(&server, "nobody-listens", r#"{"mode": "echo"}"#);
    assert!(kept["id"].is_string(), "{kept}");

    // Replay: back to the subscriber with a fresh set of attempts (it fails again).
    let out: Value = serde_json::from_str(&server.cli_ok(&[
        "--json",
        "events",
        "replay",
        "jobs",
        "--id",
        failing["id"].as_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(out["replayed"], 1, "{out}");
    server.wait_metric(&dead, 2.0, 30);
    assert_eq!(server.metric(&calls("400")), Some(6.0));
    let out: Value = serde_json::from_str(
        &server.cli_ok(&["--json", "events", "replay", "jobs", "--id", "999999"]),
    )
    .unwrap();
    assert_eq!(
        out["replayed"], 0,
        "an id that is not dead replays nothing: {out}"
    );

    // Bad input on the dead-letter routes.
    let (status, code, _) = error_of(server.get("/events/default/Bad/dlq"));
    assert_eq!((status, code.as_str()), (400, "invalid_topic"));
    let (status, code, _) = error_of(server.get("/events/default/jobs/dlq?limit=x"));
    assert_eq!((status, code.as_str()), (400, "invalid_query"));
    let (status, code, _) =
        error_of(server.post("/events/default/jobs/replay", "application/json", "[1]"));
    assert_eq!((status, code.as_str()), (400, "invalid_json"));
    let (status, _, _) = error_of(server.post(
        "/events/default/jobs/replay",
        "application/json",
        r#"{"function": "A B"}"#,
    ));
    assert_eq!(status, 400);
    server.assert_healthy();
}

#[test]
fn a_host_killed_while_an_event_runs_processes_it_once_more_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    server.deploy_with(
        "chaos",
        &[
            "--name",
            "slow",
            "--set",
            r#"triggers.events=["jobs"]"#,
            "--set",
            "limits.timeout=30s",
        ],
    );
    publish(&server, "jobs", r#"{"mode": "sleep", "ms": 3000}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.function_state("slow")["in_flight"] != 1 {
        assert!(
            Instant::now() < deadline,
            "the event's function never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill();

    let server = Server::start_in(dir.path());
    let ok = series(
        "quiver_event_deliveries_total",
        &[("function", "slow"), ("topic", "jobs"), ("outcome", "ok")],
    );
    server.wait_metric(&ok, 1.0, 30);
    let again = series(
        "quiver_event_redelivered_total",
        &[("function", "slow"), ("topic", "jobs")],
    );
    assert_eq!(server.metric(&again), Some(1.0), "its second attempt");
    // Exactly once more: no further run of it on this host.
    std::thread::sleep(Duration::from_secs(2));
    let runs = series(
        "quiver_invocations_total",
        &[
            ("function", "slow"),
            ("version", "1.2.0"),
            ("status", "200"),
        ],
    );
    assert_eq!(server.metric(&runs), Some(1.0));
    assert_eq!(server.metric(&ok), Some(1.0));
}

#[test]
fn a_schedule_runs_its_function_on_every_tick() {
    let server = Server::start();
    // The function gets one JSON row per tick, `{"scheduled_at", "tick_ms"}`.
    server.deploy_with(
        "ingest-json",
        &[
            "--name",
            "ticker",
            "--set",
            r#"triggers.schedule="*/1 * * * * *""#,
            "--set",
            "config.schema=scheduled_at:text,tick_ms:int64",
        ],
    );
    let ok = series(
        "quiver_schedule_runs_total",
        &[("function", "ticker"), ("outcome", "ok")],
    );
    let started = Instant::now();
    server.wait_metric(&ok, 3.0, 30);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "one run per second, no faster"
    );
    // A schedule on a kind that takes no body is refused at deploy.
    let out = server.cli(&[
        "deploy",
        "functions/hello-http",
        "--set",
        r#"triggers.schedule="0 3 * * *""#,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not `http`"), "{err}");
}

#[test]
fn a_function_publishes_only_to_the_topics_its_manifest_declares() {
    let server = Server::start();
    // The subscriber tries to publish too, and declares no topics: it fails, once,
    // and its dead letter shows who published the event and in which trace.
    server.deploy_emitter_and_sink();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let call = |body: &str| {
        server
            .http()
            .post(format!("{}/fn/default/emitter", server.url))
            .header("content-type", "application/json")
            .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let r = call(r#"{"mode": "publish", "topic": "scored", "score": 0.25}"#);
    assert_eq!(r.status(), 200);
    let out: Value = r.json().unwrap();
    let id = out["rows"][0]["event_id"].as_str().unwrap().to_string();

    let dead = series(
        "quiver_event_deliveries_total",
        &[
            ("function", "sink"),
            ("topic", "scored"),
            ("outcome", "dead"),
        ],
    );
    server.wait_metric(&dead, 1.0, 30);
    let dlq: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "events", "dlq", "scored"])).unwrap();
    let e = &dlq["dead"][0];
    assert_eq!(e["id"], id.as_str(), "{dlq}");
    assert_eq!(e["source"], "emitter@1.2.0");
    assert_eq!(e["payload"][0]["score"], 0.25);
    let tp = e["traceparent"].as_str().unwrap_or_else(|| panic!("{dlq}"));
    assert!(
        tp.starts_with(&format!("00-{trace}-")),
        "the client's trace: {tp}"
    );
    assert!(
        !tp.contains("00f067aa0ba902b7"),
        "the call's own span: {tp}"
    );
    let reason = e["reason"].as_str().unwrap();
    assert!(
        reason.contains("declares no [events] publish topics"),
        "{reason}"
    );

    // A topic it does not declare: refused, nothing published.
    let (status, code, msg) = error_of(call(r#"{"mode": "publish", "topic": "other"}"#));
    assert_eq!((status, code.as_str()), (400, "invalid_input"), "{msg}");
    assert!(msg.contains("may not publish to `other`"), "{msg}");
    let (status, code, _) = error_of(call(r#"{"mode": "publish", "topic": "Bad Topic"}"#));
    assert_eq!((status, code.as_str()), (400, "invalid_input"));
    // More than 100 events in one call: the 101st is refused.
    let (status, code, msg) = error_of(call(
        r#"{"mode": "publish", "topic": "scored", "count": 101}"#,
    ));
    assert_eq!((status, code.as_str()), (429, "limit_exceeded"), "{msg}");
    server.assert_healthy();
}
