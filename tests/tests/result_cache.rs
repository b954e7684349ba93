//! `[cache] ttl`: identical inputs within the TTL are answered from the result cache
//! without running the guest (`x-quiver-cache: hit|miss`); a new serving version
//! never sees the old results. Proof that the guest did not run: the cached request
//! is a feature write, and the value it would write does not come back.
use quiver_tests::{Redis, Server};
use serde_json::{json, Value};

fn put(value: f64) -> String {
    // Whitespace and key order vary; the cache key is over the canonical JSON.
    json!([{"op": "put", "group": "merchant", "entity": "m-1", "name": "mean", "value": value, "ttl_ms": 0}])
        .to_string()
}

fn call(server: &Server, body: String) -> (String, Value) {
    let resp = server.post("/fn/default/features-probe", "application/json", body);
    assert_eq!(resp.status(), 200);
    let cache = resp.headers()["x-quiver-cache"]
        .to_str()
        .unwrap()
        .to_string();
    (cache, resp.json().unwrap())
}

fn stored_mean(server: &Server) -> f64 {
    let body = json!([{"op": "get", "group": "merchant", "entity": "m-1", "name": "mean", "value": 0, "ttl_ms": 0}]);
    let (_, out) = call(server, body.to_string());
    out["rows"][0]["value"].as_f64().unwrap()
}

fn exercise(server: &Server) {
    server.cli_ok(&[
        "deploy",
        "functions/features-probe",
        "--set",
        "cache.ttl=1s",
    ]);
    let (first, out) = call(server, put(1.0));
    assert_eq!(first, "miss");
    let (_, _) = call(server, put(2.0)); // another input: runs, writes 2.0
    let reordered = r#"[ {"ttl_ms":0, "value":1.0, "name":"mean", "entity":"m-1", "group":"merchant", "op":"put"} ]"#;
    let (again, cached) = call(server, reordered.to_string());
    assert_eq!(again, "hit", "the same input, reordered");
    assert_eq!(
        cached, out,
        "the cached response, byte for byte the same JSON"
    );
    assert_eq!(stored_mean(server), 2.0, "a hit does not run the guest");

    // After the TTL, the guest runs again.
    std::thread::sleep(std::time::Duration::from_millis(1300));
    assert_eq!(call(server, put(1.0)).0, "miss");
    assert_eq!(stored_mean(server), 1.0);

    // A new serving version starts from an empty cache.
    assert_eq!(call(server, put(3.0)).0, "miss");
    assert_eq!(call(server, put(3.0)).0, "hit");
    server.cli_ok(&[
        "deploy",
        "functions/features-probe",
        "--set",
        "cache.ttl=60s",
        "--set",
        "function.version=1.0.1",
    ]);
    assert_eq!(call(server, put(3.0)).0, "miss", "new version, new results");
}

#[test]
fn embedded_result_cache() {
    let server = Server::start();
    exercise(&server);
    // Without [cache], no header and no caching.
    server.deploy("txn-features");
    let resp = server.post(
        "/fn/default/txn-features",
        "application/json",
        quiver_tests::read_sample("txn-features"),
    );
    assert!(resp.headers().get("x-quiver-cache").is_none());
}

#[test]
fn redis_result_cache() {
    let redis = Redis::start();
    let server = Server::start_with(&["--redis", &redis.url()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.get("/healthz").json::<Value>().unwrap()["features"]["ready"] != true {
        assert!(std::time::Instant::now() < deadline, "redis never ready");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    exercise(&server);
    let keys = redis.cli(&["KEYS", "quiver:feat:default:@cache:*"]);
    assert!(
        keys.lines().count() >= 2,
        "cached results live in Redis: {keys}"
    );
}

#[test]
fn an_http_component_cannot_declare_a_cache() {
    let server = Server::start();
    let err = server.cli_err(&["deploy", "functions/hello-http", "--set", "cache.ttl=1s"]);
    assert!(err.contains("[cache]"), "{err}");
}
