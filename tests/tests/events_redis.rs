//! Events on Redis Streams (`--redis`): hosts that point at one Redis share each
//! topic through consumer groups; a host that dies holding events gives them to
//! another (`XAUTOCLAIM` after the visibility timeout); a Redis killed and
//! restarted (AOF, `appendfsync always`) loses no acknowledged publish; failures
//! go to the dead-letter stream and come back with replay; a schedule runs once
//! per tick across hosts; trimming never drops what a group has not acknowledged.

use quiver_tests::{free_port, series, Redis, Server};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

fn delivered(function: &str, outcome: &str) -> String {
    series(
        "quiver_event_deliveries_total",
        &[
            ("function", function),
            ("topic", "jobs"),
            ("outcome", outcome),
        ],
    )
}

fn host(dir: &Path, redis: &Redis, id: &str, extra: &[&str]) -> Server {
    let url = redis.url();
    let mut flags = vec!["--redis", url.as_str(), "--host-id", id];
    flags.extend_from_slice(extra);
    Server::start_in_with(dir, &flags)
}

fn publish(server: &Server, topic: &str, json: &str) -> Value {
    serde_json::from_str(&server.cli_ok(&["--json", "events", "publish", topic, json])).unwrap()
}

fn worker(server: &Server, name: &str, extra: &[&str]) {
    let mut flags = vec!["--name", name, "--set", r#"triggers.events=["jobs"]"#];
    flags.extend_from_slice(extra);
    server.deploy_with("chaos", &flags);
}

fn sum(servers: &[&Server], series: &str) -> f64 {
    servers
        .iter()
        .map(|s| s.metric(series).unwrap_or(0.0))
        .sum()
}

fn wait_sum(servers: &[&Server], series: &str, want: f64, secs: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = sum(servers, series);
        if got >= want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{series}: {got} after {secs} s, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn hosts_on_one_redis_share_a_topic_and_process_each_event_once() {
    let redis = Redis::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(da.path(), &redis, "host-a", &[]);
    let b = host(db.path(), &redis, "host-b", &[]);
    for s in [&a, &b] {
        worker(s, "worker", &[]);
    }
    for i in 0..40 {
        let via = if i % 2 == 0 { &a } else { &b };
        publish(
            via,
            "jobs",
            &format!(r#"{{"mode": "sleep", "ms": 20, "i": {i}}}"#),
        );
    }
    wait_sum(&[&a, &b], &delivered("worker", "ok"), 40.0, 60);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sum(&[&a, &b], &delivered("worker", "ok")), 40.0);
    let runs = series(
        "quiver_invocations_total",
        &[
            ("function", "worker"),
            ("version", "1.2.0"),
            ("status", "200"),
        ],
    );
    assert_eq!(sum(&[&a, &b], &runs), 40.0, "each event ran once");
    // One stream per tenant and topic; one group per subscribing function.
    assert_eq!(redis.cli(&["XLEN", "quiver:ev:default:jobs"]).trim(), "40");
    let groups = redis.cli(&["XINFO", "GROUPS", "quiver:ev:default:jobs"]);
    assert!(groups.contains("worker"), "{groups}");
}

#[test]
fn a_host_that_dies_holding_an_event_gives_it_to_another() {
    let redis = Redis::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let visibility = ["--event-visibility", "2s"];
    let mut a = host(da.path(), &redis, "host-a", &visibility);
    worker(&a, "slow", &["--set", "limits.timeout=30s"]);
    publish(&a, "jobs", r#"{"mode": "sleep", "ms": 5000}"#);
    let deadline = Instant::now() + Duration::from_secs(30);
    while a.function_state("slow")["in_flight"] != 1 {
        assert!(Instant::now() < deadline, "host-a never started the event");
        std::thread::sleep(Duration::from_millis(20));
    }
    a.kill();
    let pending = redis.cli(&["XPENDING", "quiver:ev:default:jobs", "slow"]);
    assert!(pending.contains("host-a"), "host-a holds it: {pending}");

    let b = host(db.path(), &redis, "host-b", &visibility);
    worker(&b, "slow", &["--set", "limits.timeout=30s"]);
    b.wait_metric(&delivered("slow", "ok"), 1.0, 60);
    let again = series(
        "quiver_event_redelivered_total",
        &[("function", "slow"), ("topic", "jobs")],
    );
    assert_eq!(b.metric(&again), Some(1.0), "its second attempt");
    let pending = redis.cli(&["XPENDING", "quiver:ev:default:jobs", "slow"]);
    assert!(
        pending.trim().starts_with('0'),
        "nothing left pending: {pending}"
    );
}

#[test]
fn a_redis_killed_mid_stream_loses_no_published_event() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = Redis::start_durable(port, dir.path());
    let data = tempfile::tempdir().unwrap();
    let server = host(data.path(), &redis, "host-a", &["--event-visibility", "2s"]);
    worker(&server, "worker", &[]);
    let mut published = Vec::new();
    for i in 0..10 {
        let v = publish(
            &server,
            "jobs",
            &format!(r#"{{"mode": "sleep", "ms": 200, "i": {i}}}"#),
        );
        published.push(v["id"].as_str().unwrap().to_string());
    }
    // Killed while most of them wait or run: every publish that was answered is on disk.
    redis.kill();
    let out = server.cli(&["events", "publish", "jobs", r#"{"mode": "echo"}"#]);
    assert!(
        !out.status.success(),
        "a publish while Redis is down is refused"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unavailable"), "{err}");
    std::thread::sleep(Duration::from_secs(1));
    let redis = Redis::start_durable(port, dir.path());
    assert_eq!(redis.cli(&["XLEN", "quiver:ev:default:jobs"]).trim(), "10");
    server.wait_metric(&delivered("worker", "ok"), 10.0, 60);
    let late = publish(&server, "jobs", r#"{"mode": "echo"}"#);
    assert!(!published.contains(&late["id"].as_str().unwrap().to_string()));
    server.wait_metric(&delivered("worker", "ok"), 11.0, 30);
    std::thread::sleep(Duration::from_millis(500));
    // Each acknowledged once (a second delivery of one may run, but its ack would fail).
    assert_eq!(server.metric(&delivered("worker", "ok")), Some(11.0));
    let pending = redis.cli(&["XPENDING", "quiver:ev:default:jobs", "worker"]);
    assert!(pending.trim().starts_with('0'), "{pending}");
}

#[test]
fn failures_go_to_the_dead_letter_stream_and_replay_brings_them_back() {
    let redis = Redis::start();
    let data = tempfile::tempdir().unwrap();
    let server = host(data.path(), &redis, "host-a", &[]);
    worker(
        &server,
        "worker",
        &[
            "--set",
            "triggers.retry.max_attempts=2",
            "--set",
            "triggers.retry.backoff=50ms",
        ],
    );
    let failing = publish(&server, "jobs", r#"{"mode": "fail"}"#);
    server.wait_metric(&delivered("worker", "dead"), 1.0, 30);
    assert_eq!(server.metric(&delivered("worker", "retry")), Some(1.0));
    let dlq: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "events", "dlq", "jobs"])).unwrap();
    let list = dlq["dead"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{dlq}");
    assert_eq!(list[0]["id"], failing["id"]);
    assert_eq!(list[0]["attempts"], 2);
    assert!(list[0]["reason"]
        .as_str()
        .unwrap()
        .contains("chaos asked to fail"));
    assert_eq!(
        redis
            .cli(&["XLEN", "quiver:ev:default:jobs:g:worker:dlq"])
            .trim(),
        "1"
    );
    let out: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "events", "replay", "jobs"])).unwrap();
    assert_eq!(out["replayed"], 1);
    server.wait_metric(&delivered("worker", "dead"), 2.0, 30);
    assert_eq!(
        redis
            .cli(&["XLEN", "quiver:ev:default:jobs:g:worker:dlq"])
            .trim(),
        "1"
    );
}

#[test]
fn a_schedule_runs_once_per_tick_across_hosts() {
    let redis = Redis::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(da.path(), &redis, "host-a", &[]);
    let b = host(db.path(), &redis, "host-b", &[]);
    for s in [&a, &b] {
        s.deploy_with(
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
    }
    let ok = series(
        "quiver_schedule_runs_total",
        &[("function", "ticker"), ("outcome", "ok")],
    );
    wait_sum(&[&a, &b], &ok, 4.0, 30);
    let leases = || {
        let keys = redis.cli(&["--scan", "--pattern", "quiver:tick:default/ticker:*"]);
        keys.lines().filter(|l| !l.trim().is_empty()).count() as f64
    };
    // Every run took its tick's lease; a tick run by both hosts would make runs
    // outnumber leases. (A lease taken after the runs were read, or a run still
    // in flight, makes at most a tick or two of difference the other way.)
    let runs = sum(&[&a, &b], &ok);
    let taken = leases();
    assert!(
        runs <= taken && taken <= runs + 2.0,
        "runs {runs}, leases {taken}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let more = sum(&[&a, &b], &ok) - runs;
    assert!(
        (1.0..=4.0).contains(&more),
        "one run a second across both hosts, not one per host: {more} in 3 s"
    );
}

#[test]
fn trimming_keeps_what_a_group_has_not_acknowledged() {
    let redis = Redis::start();
    let data = tempfile::tempdir().unwrap();
    let server = host(
        data.path(),
        &redis,
        "host-a",
        &["--events-max-len", "3", "--events-trim-interval", "100ms"],
    );
    // Failing with a long backoff: its events stay unacknowledged.
    worker(
        &server,
        "worker",
        &[
            "--set",
            "triggers.retry.backoff=1h",
            "--set",
            "triggers.retry.max_backoff=1h",
        ],
    );
    for _ in 0..8 {
        publish(&server, "jobs", r#"{"mode": "fail"}"#);
        publish(&server, "orphan", r#"{"nobody": "listens"}"#);
    }
    server.wait_metric(&delivered("worker", "retry"), 8.0, 30);
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.cli(&["XLEN", "quiver:ev:default:orphan"]).trim() != "3" {
        assert!(
            Instant::now() < deadline,
            "the orphan topic was not trimmed to 3"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(redis.cli(&["XLEN", "quiver:ev:default:jobs"]).trim(), "8");
}
