//! Capacity: `max_instances` / `max_concurrency` bound what runs at once; past that a
//! bounded queue with a deadline, then 429 (queue full) or 503 (waited too long),
//! both with `Retry-After`. Never a pile-up, never a crash.
use quiver_tests::{error_of, Server};
use serde_json::Value;
use std::time::{Duration, Instant};

const LOOP: &str = r#"[{"mode": "loop"}]"#;
const ECHO: &str = r#"[{"mode": "echo", "x": 1}]"#;

fn call(server: &Server, name: &str, body: &'static str) -> reqwest::blocking::Response {
    server.post(&format!("/fn/default/{name}"), "application/json", body)
}

fn live(server: &Server, name: &str) -> Value {
    server.function_state(name)
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn deploy_chaos(server: &Server, name: &str, sets: &[&str]) {
    let mut args = vec!["deploy", "functions/chaos", "--name", name];
    for s in sets {
        args.extend(["--set", s]);
    }
    server.cli_ok(&args);
}

#[test]
fn past_capacity_requests_queue_then_get_429() {
    let server = Server::start();
    // chaos `loop` holds its only instance for its 500 ms timeout.
    deploy_chaos(
        &server,
        "one-at-a-time",
        &[
            "scaling.max_instances=1",
            "scaling.max_queue=1",
            "scaling.queue_timeout=5s",
        ],
    );
    std::thread::scope(|s| {
        let busy = s.spawn(|| call(&server, "one-at-a-time", LOOP).status());
        wait_until("the loop to hold the instance", || {
            live(&server, "one-at-a-time")["busy_instances"] == 1
        });
        let queued = s.spawn(|| call(&server, "one-at-a-time", ECHO));
        wait_until("a queued request", || {
            live(&server, "one-at-a-time")["queued"] == 1
        });
        let metrics = server.get("/metrics").text().unwrap();
        assert!(
            metrics.contains(
                r#"quiver_queue_depth{function="one-at-a-time",tenant="default",version="1.2.0"} 1"#
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains(
                r#"quiver_instances{function="one-at-a-time",state="busy",tenant="default",version="1.2.0"} 1"#
            ),
            "{metrics}"
        );

        // The queue (1) is full: the next one is turned away at once.
        let full = call(&server, "one-at-a-time", ECHO);
        assert_eq!(full.headers()["retry-after"], "1");
        assert_eq!(full.headers()["x-quiver-version"], "1.2.0");
        let (status, code, message) = error_of(full);
        assert_eq!((status, code.as_str()), (429, "queue_full"), "{message}");

        assert_eq!(busy.join().unwrap(), 504, "the loop hits its timeout");
        let queued = queued.join().unwrap();
        assert_eq!(queued.status(), 200, "the queued request ran after it");
    });
    assert_eq!(live(&server, "one-at-a-time")["queued"], 0);
    assert_eq!(call(&server, "one-at-a-time", ECHO).status(), 200);
}

#[test]
fn a_request_that_waits_past_the_queue_timeout_gets_503() {
    let server = Server::start();
    deploy_chaos(
        &server,
        "short-wait",
        &[
            "scaling.max_concurrency=1",
            "scaling.max_queue=8",
            "scaling.queue_timeout=100ms",
        ],
    );
    std::thread::scope(|s| {
        let busy = s.spawn(|| call(&server, "short-wait", LOOP).status());
        wait_until("the loop to run", || {
            live(&server, "short-wait")["in_flight"] == 1
        });
        // The loop holds the only slot for 500 ms; this one may wait only 100 ms.
        let waited = call(&server, "short-wait", ECHO);
        assert_eq!(waited.headers()["retry-after"], "1");
        let (status, code, message) = error_of(waited);
        assert_eq!((status, code.as_str()), (503, "queue_timeout"), "{message}");
        assert!(message.contains("100ms"), "{message}");
        assert_eq!(busy.join().unwrap(), 504);
    });
    assert_eq!(call(&server, "short-wait", ECHO).status(), 200);
}

#[test]
fn a_burst_far_past_capacity_is_bounded_and_the_host_survives() {
    let server = Server::start();
    deploy_chaos(
        &server,
        "burst",
        &[
            "scaling.max_instances=2",
            "scaling.max_queue=4",
            "scaling.queue_timeout=100ms",
        ],
    );
    let statuses: Vec<(u16, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..48)
            .map(|_| {
                s.spawn(|| {
                    let r = call(&server, "burst", LOOP);
                    (r.status().as_u16(), r.headers().contains_key("retry-after"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let count = |code| statuses.iter().filter(|(s, _)| *s == code).count();
    assert_eq!(
        count(504) + count(503) + count(429),
        48,
        "every request ran (and timed out), waited too long, or was turned away: {statuses:?}"
    );
    assert!(
        count(429) > 0,
        "the queue bound turned some away: {statuses:?}"
    );
    assert!(count(504) >= 2, "both instances ran loops: {statuses:?}");
    assert!(
        statuses
            .iter()
            .filter(|(s, _)| *s == 429 || *s == 503)
            .all(|(_, retry)| *retry),
        "every 429 and 503 says when to retry"
    );
    server.assert_healthy();
    assert_eq!(call(&server, "burst", ECHO).status(), 200);
    let f = live(&server, "burst");
    assert_eq!(
        (f["queued"].as_u64(), f["in_flight"].as_u64()),
        (Some(0), Some(0)),
        "{f}"
    );
    assert!(
        f["idle_instances"].as_u64().unwrap() <= 2,
        "max_instances holds: {f}"
    );
}

#[test]
fn a_pipeline_stage_keeps_its_own_limit() {
    let server = Server::start();
    deploy_chaos(
        &server,
        "stage",
        &["scaling.max_instances=1", "scaling.max_queue=0"],
    );
    let pipeline = "[function]\nname = \"wrapped\"\nversion = \"1.0.0\"\nkind = \"pipeline\"\n[pipeline]\nstages = [\"stage\"]\n";
    let form = reqwest::blocking::multipart::Form::new().text("manifest", pipeline);
    let r = server
        .http()
        .post(format!("{}/admin/v1/tenants/default/functions", server.url))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().unwrap());
    std::thread::scope(|s| {
        let busy = s.spawn(|| call(&server, "stage", LOOP).status());
        wait_until("the stage to be busy", || {
            live(&server, "stage")["busy_instances"] == 1
        });
        let (status, code, _) = error_of(call(&server, "wrapped", ECHO));
        assert_eq!((status, code.as_str()), (429, "queue_full"));
        assert_eq!(busy.join().unwrap(), 504);
    });
    assert_eq!(call(&server, "wrapped", ECHO).status(), 200);
}
