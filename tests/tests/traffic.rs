//! Traffic splits: `quiver traffic NAME 1.0.0=50 1.1.0=50` sends each unpinned call
//! to one of the versions by weight (`x-quiver-version` says which); a pinned call
//! is untouched; `--clear` and `rollback` return every call to one version.

use quiver_tests::{error_of, read_sample, Server};
use serde_json::Value;

fn versions_of(server: &Server, calls: usize) -> (usize, usize) {
    let sample = read_sample("txn-features");
    let mut counts = (0, 0);
    for _ in 0..calls {
        let r = server.post(
            "/fn/default/txn-features",
            "application/json",
            sample.clone(),
        );
        assert_eq!(r.status(), 200);
        match r.headers()["x-quiver-version"].to_str().unwrap() {
            "1.0.0" => counts.0 += 1,
            "1.1.0" => counts.1 += 1,
            other => panic!("served by {other}"),
        }
    }
    counts
}

#[test]
fn a_split_sends_calls_to_versions_by_weight_until_cleared() {
    let server = Server::start();
    server.deploy("txn-features");
    server.deploy_with("txn-features", &["--version", "1.1.0"]);
    assert_eq!(versions_of(&server, 20), (0, 20), "stable serves all");

    let out = server.cli_ok(&["traffic", "txn-features", "1.0.0=50", "1.1.0=50"]);
    assert!(out.contains("txn-features@1.0.0\t50\t50.0 %"), "{out}");
    let (a, b) = versions_of(&server, 200);
    // Binomial(200, 0.5): outside [60, 140] has a probability under 1e-8.
    assert!((60..=140).contains(&a) && a + b == 200, "{a} / {b}");
    // A pinned call is not split.
    let r = server.post(
        "/fn/default/txn-features@1.1.0",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(r.headers()["x-quiver-version"], "1.1.0");
    let shown: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "traffic", "txn-features"])).unwrap();
    assert_eq!(shown["split"]["1.0.0"], 50);
    // The canary comparison: each version's calls and latency on this host.
    let compare = &shown["compare"]["versions"];
    assert_eq!(compare["1.0.0"]["calls"], a as u64, "{shown}");
    assert_eq!(compare["1.1.0"]["calls"], (b + 20 + 1) as u64, "{shown}");
    assert_eq!(compare["1.1.0"]["errors"], 0);
    for v in ["1.0.0", "1.1.0"] {
        let p50 = compare[v]["p50_ms"].as_f64().unwrap();
        let p99 = compare[v]["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{v}: {p50} {p99}");
    }

    // All to one version, then cleared: stable again.
    server.cli_ok(&["traffic", "txn-features", "1.0.0=1"]);
    assert_eq!(versions_of(&server, 20), (20, 0));
    server.cli_ok(&["traffic", "txn-features", "--clear"]);
    assert_eq!(versions_of(&server, 20), (0, 20));

    // A rollback ends a split: one version serves.
    server.cli_ok(&["traffic", "txn-features", "1.0.0=10", "1.1.0=90"]);
    server.cli_ok(&["rollback", "txn-features"]);
    assert_eq!(versions_of(&server, 20), (20, 0));
    let text = server.cli_ok(&["traffic", "txn-features"]);
    assert!(text.contains("no split"), "{text}");

    // Bad splits are refused and change nothing.
    server.cli_ok(&["traffic", "txn-features", "1.0.0=1"]);
    let path = format!(
        "{}/admin/v1/tenants/default/functions/txn-features/traffic",
        server.url
    );
    let many: serde_json::Map<String, Value> = (0..17)
        .map(|i| (format!("1.0.{i}"), Value::from(1)))
        .collect();
    let many = serde_json::json!({ "split": many }).to_string();
    for (body, status, code) in [
        (r#"{"split": {"9.9.9": 1}}"#, 404, "not_found"),
        (r#"{"split": {"1.0.0": 0}}"#, 400, "invalid_split"),
        (r#"{"split": {"1.0.0": -1}}"#, 400, "invalid_body"),
        (r#"{"split": {"one": 1}}"#, 400, "invalid_version"),
        (r#"{"weights": {}}"#, 400, "invalid_body"),
        ("[1", 400, "invalid_body"),
        (many.as_str(), 400, "invalid_split"),
        ("{}", 400, "invalid_body"),
        (r#"{"shadow": 5}"#, 400, "invalid_body"),
        (r#"{"shadow": "nine"}"#, 400, "invalid_version"),
        (r#"{"shadow": "9.9.9"}"#, 404, "not_found"),
    ] {
        let r = server
            .http()
            .put(&path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let (s, c, m) = error_of(r);
        assert_eq!((s, c.as_str()), (status, code), "{body:.60}: {m}");
    }
    assert_eq!(versions_of(&server, 10), (10, 0), "the split stands");
    let err = server.cli_err(&["traffic", "txn-features", "1.0.0"]);
    assert!(err.contains("VERSION=WEIGHT"), "{err}");
    let (s, _, _) = error_of(server.get("/admin/v1/tenants/default/functions/nobody/traffic"));
    assert_eq!(s, 404);
    let audit = server.cli_ok(&["audit"]);
    assert!(audit.contains("traffic"), "{audit}");
    server.assert_healthy();
}

/// Calls of `txn-features` with `key` as their route key: the versions that served.
fn versions_for_key(server: &Server, key: &str, calls: usize) -> Vec<String> {
    (0..calls)
        .map(|_| {
            let r = server
                .http()
                .post(format!("{}/fn/default/txn-features", server.url))
                .header("content-type", "application/json")
                .header("x-quiver-route-key", key)
                .body(read_sample("txn-features"))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["x-quiver-version"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_route_key_sticks_to_one_version_and_a_shadow_sees_a_copy_of_each_call() {
    let server = Server::start();
    server.deploy("txn-features");
    server.deploy_with("txn-features", &["--version", "1.1.0"]);
    server.cli_ok(&["traffic", "txn-features", "1.0.0=50", "1.1.0=50"]);
    // Each key keeps to one version; over many keys both versions serve.
    let mut seen = std::collections::BTreeSet::new();
    for k in 0..16 {
        let got = versions_for_key(&server, &format!("user-{k}"), 5);
        assert!(got.iter().all(|v| *v == got[0]), "user-{k}: {got:?}");
        seen.insert(got[0].clone());
    }
    assert_eq!(
        seen.len(),
        2,
        "16 keys at 50/50 all on one version: {seen:?}"
    );
    // A key past 256 bytes is no key: the call is served (at random), not refused.
    let long = "k".repeat(4096);
    let got = versions_for_key(&server, &long, 3);
    assert!(got.iter().all(|v| v == "1.0.0" || v == "1.1.0"), "{got:?}");

    // Shadow: 1.1.0 serves, 1.0.0 gets a copy of each unpinned call.
    server.cli_ok(&["traffic", "txn-features", "1.1.0=1"]);
    let out = server.cli_ok(&["traffic", "txn-features", "--shadow", "1.0.0"]);
    assert!(out.contains("txn-features@1.0.0\tshadow"), "{out}");
    assert!(
        out.contains("txn-features@1.1.0\t1"),
        "the split stays: {out}"
    );
    let shadow_calls = |server: &Server| {
        server
            .metric(&quiver_tests::series(
                "quiver_invocations_total",
                &[
                    ("function", "txn-features"),
                    ("version", "1.0.0"),
                    ("status", "200"),
                ],
            ))
            .unwrap_or(0.0)
    };
    let before = shadow_calls(&server);
    let served = versions_of(&server, 10);
    assert_eq!(
        served,
        (0, 10),
        "callers are answered by the split, not the shadow"
    );
    let after = server.wait_metric(
        &quiver_tests::series(
            "quiver_invocations_total",
            &[
                ("function", "txn-features"),
                ("version", "1.0.0"),
                ("status", "200"),
            ],
        ),
        before + 10.0,
        30,
    );
    assert_eq!(after, before + 10.0, "one copy per call");
    // A pinned call is not mirrored.
    let r = server.post(
        "/fn/default/txn-features@1.1.0",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(r.status(), 200);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(shadow_calls(&server), after);
    let shown: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "traffic", "txn-features"])).unwrap();
    assert_eq!(shown["shadow"], "1.0.0");
    assert!(
        shown["compare"]["versions"]["1.0.0"]["calls"]
            .as_u64()
            .unwrap()
            >= 10
    );

    // One body may change both: an empty split clears it while the shadow stays.
    let path = format!(
        "{}/admin/v1/tenants/default/functions/txn-features/traffic",
        server.url
    );
    let put = |body: &str| -> Value {
        server
            .http()
            .put(&path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let both = put(r#"{"split": {}, "shadow": "1.0.0"}"#);
    assert_eq!(both["split"], serde_json::json!({}), "{both}");
    assert_eq!(both["shadow"], "1.0.0", "{both}");
    let again = put(r#"{"split": {"1.1.0": 1}}"#);
    assert_eq!(
        again["shadow"], "1.0.0",
        "a split alone leaves the shadow: {again}"
    );

    // --no-shadow ends it; so does a rollback.
    server.cli_ok(&["traffic", "txn-features", "--no-shadow"]);
    versions_of(&server, 5);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(shadow_calls(&server), after);
    server.cli_ok(&["traffic", "txn-features", "--shadow", "1.0.0"]);
    server.cli_ok(&["rollback", "txn-features"]);
    let shown: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "traffic", "txn-features"])).unwrap();
    assert_eq!(shown["shadow"], Value::Null, "{shown}");
    server.assert_healthy();
}
