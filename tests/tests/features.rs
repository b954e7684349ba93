//! `quiver:ml/features` end to end through a real guest (`functions/features-probe`),
//! on the embedded store and on a real Redis server: values round-trip, missing is
//! `none`, TTLs expire, tenants and undeclared groups are walled off, and a Redis
//! outage is a prompt `unavailable` — never a hang — that heals without a restart.
use quiver_tests::{Redis, Server};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn probe(server: &Server, tenant: &str, ops: Value) -> Vec<Value> {
    let resp = server.post(
        &format!("/fn/{tenant}/features-probe"),
        "application/json",
        ops.to_string(),
    );
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    body["rows"].as_array().unwrap().clone()
}

fn op(op: &str, group: &str, entity: &str, name: &str, value: f64, ttl_ms: i64) -> Value {
    json!({"op": op, "group": group, "entity": entity, "name": name, "value": value, "ttl_ms": ttl_ms})
}

/// Writes `m-1`'s `mean` = 1.0 until the store takes it (Redis coming up): panics
/// with `what` and the last rows if it still fails after `within`.
fn put_until_served(server: &Server, tenant: &str, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let rows = probe(
            server,
            tenant,
            json!([op("put", "merchant", "m-1", "mean", 1.0, 0)]),
        );
        if rows[0]["error"] == "" {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn deploy_probe(server: &Server, tenant: &str) {
    server.ensure_tenant(tenant);
    server.cli_ok(&["--tenant", tenant, "deploy", "functions/features-probe"]);
}

/// The interface's behaviour, the same on every backend.
fn exercise(server: &Server) {
    deploy_probe(server, "acme");
    deploy_probe(server, "globex");
    let rows = probe(
        server,
        "acme",
        json!([
            op("put", "merchant", "m-1", "mean", 3.25, 0),
            op("put", "merchant", "m-1", "std", 0.5, 0),
            op("put", "merchant", "m-2", "mean", -1.0, 0),
            op("get", "merchant", "m-1", "mean,std,missing", 0.0, 0),
            op("get-many", "merchant", "m-1,m-2,m-3", "mean", 0.0, 0),
        ]),
    );
    let got: Vec<(String, String, bool, f64)> = rows
        .iter()
        .skip(3)
        .map(|r| {
            (
                r["entity"].as_str().unwrap().to_string(),
                r["name"].as_str().unwrap().to_string(),
                r["found"].as_bool().unwrap(),
                r["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let expect = |e: &str, n: &str, f: bool, v: f64| (e.to_string(), n.to_string(), f, v);
    assert_eq!(
        got,
        vec![
            expect("m-1", "mean", true, 3.25),
            expect("m-1", "std", true, 0.5),
            expect("m-1", "missing", false, 0.0),
            expect("m-1", "mean", true, 3.25),
            expect("m-2", "mean", true, -1.0),
            expect("m-3", "mean", false, 0.0),
        ]
    );
    assert!(rows.iter().all(|r| r["error"] == ""), "{rows:?}");

    // `time-get`: a row per call with the latency the guest measured; at least one call.
    let timed = probe(
        server,
        "acme",
        json!([
            op("time-get", "merchant", "m-1", "mean,std", 3.0, 0),
            op("time-get", "merchant", "m-1", "mean,missing", 0.0, 0),
        ]),
    );
    let summary: Vec<(String, bool)> = timed
        .iter()
        .map(|r| {
            (
                r["op"].as_str().unwrap().to_string(),
                r["found"].as_bool().unwrap(),
            )
        })
        .collect();
    let t = |found| ("time-get".to_string(), found);
    assert_eq!(
        summary,
        vec![t(true), t(true), t(true), t(false)],
        "{timed:?}"
    );
    assert!(
        timed
            .iter()
            .all(|r| r["value"].as_f64().unwrap() > 0.0 && r["error"] == ""),
        "{timed:?}"
    );

    // Another tenant with the same function and group sees none of it.
    let other = probe(
        server,
        "globex",
        json!([op("get", "merchant", "m-1", "mean", 0.0, 0)]),
    );
    assert_eq!(other[0]["found"], false, "tenant isolation: {other:?}");

    // A group the manifest does not declare is refused, with the reason.
    let refused = probe(
        server,
        "acme",
        json!([op("get", "secrets", "m-1", "mean", 0.0, 0)]),
    );
    let error = refused[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("invalid-input:")
            && error.contains("secrets")
            && error.contains("merchant, user"),
        "{error}"
    );

    // TTL and delete.
    probe(
        server,
        "acme",
        json!([op("put", "user", "u-1", "risk", 0.9, 150)]),
    );
    let fresh = probe(
        server,
        "acme",
        json!([op("get", "user", "u-1", "risk", 0.0, 0)]),
    );
    assert_eq!(fresh[0]["found"], true);
    std::thread::sleep(Duration::from_millis(300));
    let expired = probe(
        server,
        "acme",
        json!([op("get", "user", "u-1", "risk", 0.0, 0)]),
    );
    assert_eq!(expired[0]["found"], false, "expired after its TTL");
    let deleted = probe(
        server,
        "acme",
        json!([
            op("delete", "merchant", "m-1", "", 0.0, 0),
            op("get", "merchant", "m-1", "mean", 0.0, 0)
        ]),
    );
    assert_eq!(deleted[1]["found"], false);

    // Limits are the interface's error, not a trap.
    let many: Vec<String> = (0..5000).map(|i| format!("e{i}")).collect();
    let limited = probe(
        server,
        "acme",
        json!([op("get-many", "merchant", &many.join(","), "mean", 0.0, 0)]),
    );
    assert!(
        limited[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("limit-exceeded:"),
        "{limited:?}"
    );
    server.assert_healthy();
}

#[test]
fn embedded_store() {
    let server = Server::start();
    let health: Value = server.get("/healthz").json().unwrap();
    assert_eq!(
        health["features"],
        json!({"backend": "embedded", "ready": true})
    );
    exercise(&server);
}

#[test]
fn redis_store() {
    let redis = Redis::start();
    let server = Server::start_with(&["--redis", &redis.url()]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let health: Value = server.get("/healthz").json().unwrap();
        if health["features"]["ready"] == true {
            assert_eq!(health["features"]["backend"], "redis");
            break;
        }
        assert!(Instant::now() < deadline, "never ready: {health}");
        std::thread::sleep(Duration::from_millis(50));
    }
    exercise(&server);
    // The data really is in Redis, one hash per (tenant, group, entity), typed.
    assert_eq!(
        redis
            .cli(&["HGET", "quiver:feat:acme:merchant:m-2", "mean"])
            .trim(),
        "f:-1"
    );
    assert_eq!(
        redis
            .cli(&["EXISTS", "quiver:feat:globex:merchant:m-2"])
            .trim(),
        "0"
    );
}

#[test]
fn a_function_without_feature_groups_gets_a_clear_error() {
    let server = Server::start();
    server.deploy("features-probe");
    let component = quiver_tests::built_component("features-probe");
    let manifest = "[function]\nname = \"no-groups\"\nversion = \"1.0.0\"\nkind = \"transform\"\n";
    assert_eq!(server.deploy_raw("default", manifest, component), 201);
    let resp = server.post(
        "/fn/default/no-groups",
        "application/json",
        json!([op("get", "merchant", "m-1", "mean", 0.0, 0)]).to_string(),
    );
    let rows: Value = resp.json().unwrap();
    let error = rows["rows"][0]["error"].as_str().unwrap();
    assert!(error.contains("declares no [features] groups"), "{error}");
}

#[test]
fn redis_down_is_prompt_unavailable_and_heals_without_a_restart() {
    // A port with nothing listening yet.
    let port = quiver_tests::free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let server = Server::start_with(&["--redis", &url, "--features-timeout", "200ms"]);
    let health: Value = server.get("/healthz").json().unwrap();
    assert_eq!(health["status"], "ok", "the server starts without Redis");
    assert_eq!(health["features"]["ready"], false, "{health}");
    assert!(
        health["features"]["detail"]
            .as_str()
            .unwrap()
            .contains(&url),
        "{health}"
    );
    deploy_probe(&server, "acme");

    let get = || {
        probe(
            &server,
            "acme",
            json!([op("get", "merchant", "m-1", "mean", 0.0, 0)]),
        )
    };
    let started = Instant::now();
    let down = get();
    assert!(
        down[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("unavailable:"),
        "{down:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an unreachable Redis must fail fast, not hang: {:?}",
        started.elapsed()
    );

    let until_served =
        |what: &str| put_until_served(&server, "acme", what, Duration::from_secs(15));
    let mut redis = Redis::start_on(port);
    until_served("Redis came up after the server");
    assert_eq!(get()[0]["found"], true);

    // Restart Redis under a live server: calls fail as `unavailable`, then succeed.
    redis.kill();
    let during = get();
    assert!(
        during[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("unavailable:"),
        "{during:?}"
    );
    let _redis = Redis::start_on(port);
    until_served("Redis restarted");
    server.assert_healthy();
}

#[test]
fn features_load_backfills_a_group_from_csv() {
    let server = Server::start();
    deploy_probe(&server, "acme");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("merchants.csv");
    let mut text = String::from("merchant,mean,count,flag,label\n");
    for i in 0..2500 {
        text.push_str(&format!("m-{i},{}.5,{i},true,shop {i}\n", i % 7));
    }
    text.push_str("m-empty,,,,\n");
    std::fs::write(&csv, text).unwrap();
    let out = server.cli_ok(&[
        "--tenant",
        "acme",
        "features",
        "load",
        "--group",
        "merchant",
        "--entity-column",
        "merchant",
        "--batch",
        "1000",
        csv.to_str().unwrap(),
    ]);
    assert!(out.contains("loaded 2501 entities"), "{out}");
    let rows = probe(
        &server,
        "acme",
        json!([op(
            "get",
            "merchant",
            "m-2499",
            "mean,count,flag,label",
            0.0,
            0
        )]),
    );
    let values: Vec<(bool, f64)> = rows
        .iter()
        .map(|r| (r["found"].as_bool().unwrap(), r["value"].as_f64().unwrap()))
        .collect();
    // label is text: found, but the probe reports numbers only.
    assert_eq!(
        values,
        vec![(true, 0.5), (true, 2499.0), (true, 1.0), (true, 0.0)]
    );

    // A file without the entity column is refused before anything is sent.
    let err = server.cli_err(&[
        "features",
        "load",
        "--group",
        "merchant",
        csv.to_str().unwrap(),
    ]);
    assert!(err.contains("no `entity` column"), "{err}");
    // A bad group name is the server's clear error.
    let bad = server.post(
        "/admin/v1/tenants/acme/features/Bad!",
        "application/json",
        r#"{"rows": []}"#,
    );
    assert_eq!(bad.status(), 400);
    let bad = server.post(
        "/admin/v1/tenants/acme/features/merchant",
        "application/json",
        r#"{"rows": [{"entity": "x", "values": {"nested": [1]}}]}"#,
    );
    let (status, code, message) = quiver_tests::error_of(bad);
    assert_eq!(
        (status, code.as_str()),
        (400, "invalid_features"),
        "{message}"
    );
}

#[test]
fn txn_features_keeps_online_merchant_stats() {
    let server = Server::start();
    server.cli_ok(&[
        "deploy",
        "functions/txn-features",
        "--set",
        "config.min_online_count=3",
    ]);
    let txn = |amount: f64| {
        let body = json!([{"amount": amount, "ts": 0, "merchant": "coffee-corner"}]).to_string();
        let out: Value = server
            .post("/fn/default/txn-features", "application/json", body)
            .json()
            .unwrap();
        (
            out["rows"][0]["merchant_txns"].as_i64().unwrap(),
            out["rows"][0]["merchant_z"].as_f64().unwrap(),
        )
    };
    let trained = |amount: f64| (f64::ln_1p(amount) - 2.9) / 0.6;
    let amounts = [10.0, 20.0, 40.0];
    for (i, a) in amounts.iter().enumerate() {
        let (n, z) = txn(*a);
        assert_eq!(n, i as i64 + 1, "the count grows with each transaction");
        assert!(
            (z - trained(*a)).abs() < 1e-9,
            "below min_online_count: trained stats"
        );
    }
    // Now three are known online: z is against their mean and std, not the trained ones.
    let logs: Vec<f64> = amounts.iter().map(|a| f64::ln_1p(*a)).collect();
    let mean = logs.iter().sum::<f64>() / 3.0;
    let std = (logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
    let (n, z) = txn(30.0);
    assert_eq!(n, 4);
    assert!((z - (f64::ln_1p(30.0) - mean) / std).abs() < 1e-9, "{z}");
    // The stats are ordinary features, readable by any function with the group.
    deploy_probe(&server, "default");
    let rows = probe(
        &server,
        "default",
        json!([op("get", "merchant", "coffee-corner", "txn_n", 0.0, 0)]),
    );
    assert_eq!(rows[0]["value"], 4.0);
}

#[test]
fn near_cache_bounds_staleness_by_its_ttl() {
    let redis = Redis::start();
    let server = Server::start_with(&["--redis", &redis.url()]);
    server.cli_ok(&[
        "deploy",
        "functions/features-probe",
        "--set",
        "features.near_cache_ttl.merchant=700ms",
    ]);
    let get = || {
        probe(
            &server,
            "default",
            json!([op("get", "merchant", "m-1", "mean", 0.0, 0)]),
        )[0]["value"]
            .as_f64()
            .unwrap()
    };
    put_until_served(
        &server,
        "default",
        "redis never ready",
        Duration::from_secs(10),
    );
    assert_eq!(get(), 1.0);
    // Another writer changes it in Redis: within the TTL the near cache still serves 1.0.
    redis.cli(&["HSET", "quiver:feat:default:merchant:m-1", "mean", "f:2"]);
    assert_eq!(get(), 1.0, "served from the near cache");
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(get(), 2.0, "past the TTL it reads Redis again");
    // Its own writes are seen at once.
    probe(
        &server,
        "default",
        json!([op("put", "merchant", "m-1", "mean", 3.0, 0)]),
    );
    assert_eq!(get(), 3.0);
    // A near cache for an undeclared group is refused at deploy.
    let err = server.cli_err(&[
        "deploy",
        "functions/features-probe",
        "--set",
        "features.near_cache_ttl.secrets=1s",
    ]);
    assert!(err.contains("secrets"), "{err}");
}
