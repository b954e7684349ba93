//! Serving and publishing under races: cold loads against deploys and rollbacks,
//! concurrent deploys of one version, identical re-deploys, and an `/http` guest
//! that outlives its client.
use quiver_tests::{built_component, read_sample, Server};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn manifest(version: &str, extra: &str) -> String {
    format!("[function]\nname = 'txn-features'\nversion = '{version}'\nkind = 'transform'\n{extra}")
}

/// The same component with a custom section appended: other bytes, same code.
fn variant(component: &[u8], tag: u8) -> Vec<u8> {
    let mut out = component.to_vec();
    // Custom section (id 0): size 6 = name length byte + "test" + one payload byte.
    out.extend_from_slice(&[0, 6, 4, b't', b'e', b's', b't', tag]);
    out
}

fn serving(server: &Server) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["versions", "txn-features", "--json"])).unwrap();
    v["serving"].as_str().unwrap().to_string()
}

/// Every response's `x-quiver-version` was serving at some moment while that
/// request was in flight, though cold loads (versions go Cold after 50 ms idle)
/// keep racing rollbacks; and once the rollbacks stop, every request gets the last
/// one (a stale load must never stay cached as serving).
#[test]
fn cold_loads_never_install_a_version_older_than_the_latest_rollback() {
    let server = Server::start();
    server.deploy("txn-features");
    let component = built_component("txn-features");
    let versions = ["2.0.0", "2.0.1", "2.0.2", "2.0.3", "2.0.4"];
    for v in versions {
        let status = server.deploy_raw(
            "default",
            &manifest(v, "[scaling]\nidle_timeout = '50ms'\n"),
            component.clone(),
        );
        assert_eq!(status, 201, "deploy {v}");
    }
    let start = Instant::now();
    let t = |i: Instant| i.duration_since(start).as_secs_f64();
    // (version, from, until): when each version may have been serving.
    let log: Arc<Mutex<Vec<(String, f64, f64)>>> =
        Arc::new(Mutex::new(vec![("2.0.4".to_string(), 0.0, f64::INFINITY)]));
    let stop = Arc::new(AtomicBool::new(false));
    let body = read_sample("txn-features");
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, body) = (server.url.clone(), stop.clone(), body.clone());
            let http = server.http();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let resp = http
                        .post(format!("{url}/fn/default/txn-features"))
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .expect("request");
                    let got = Instant::now();
                    assert_eq!(resp.status(), 200);
                    let v = resp.headers()["x-quiver-version"]
                        .to_str()
                        .unwrap()
                        .to_string();
                    seen.push((v, sent, got));
                }
                seen
            })
        })
        .collect();
    let admin = server.http();
    for i in 0..60 {
        let to = versions[(i * 3 + i / 5) % versions.len()];
        let sent = Instant::now();
        let resp = admin
            .post(format!(
                "{}/admin/v1/tenants/default/functions/txn-features/rollback",
                server.url
            ))
            .json(&serde_json::json!({ "to": to }))
            .send()
            .unwrap();
        assert!(resp.status().is_success());
        let done = Instant::now();
        let mut log = log.lock().unwrap();
        if let Some(last) = log.last_mut() {
            last.2 = t(done);
        }
        log.push((to.to_string(), t(sent), f64::INFINITY));
        drop(log);
        std::thread::sleep(Duration::from_millis(10 + (i as u64 * 7) % 60));
    }
    stop.store(true, Ordering::Relaxed);
    let log = log.lock().unwrap().clone();
    let mut checked = 0;
    for c in clients {
        for (v, sent, got) in c.join().unwrap() {
            let (a, b) = (t(sent), t(got));
            let ok = log
                .iter()
                .any(|(lv, from, until)| *lv == v && *from <= b && *until >= a);
            assert!(
                ok,
                "served {v} during [{a:.4}, {b:.4}], when it was not serving: {log:?}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100, "only {checked} requests");
    let last = log.last().unwrap().0.clone();
    assert_eq!(serving(&server), last);
    // At once (before an idle eviction could hide a stale entry).
    for _ in 0..20 {
        let resp = server.post("/fn/default/txn-features", "application/json", body.clone());
        assert_eq!(resp.headers()["x-quiver-version"], last.as_str());
    }
}

/// Eight deploys of one new version at once: exactly one creates it, the rest are
/// told it is unchanged (same bytes) or a conflict (other bytes), never a 500.
#[test]
fn concurrent_deploys_of_one_version_create_it_once() {
    let server = Arc::new(Server::start());
    server.deploy("txn-features");
    let component = built_component("txn-features");
    let race = |version: &'static str, vary: bool| -> Vec<u16> {
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let server = server.clone();
                let bytes = match vary {
                    true => variant(&component, i),
                    false => component.clone(),
                };
                std::thread::spawn(move || {
                    server.deploy_raw("default", &manifest(version, ""), bytes)
                })
            })
            .collect();
        let mut statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        statuses.sort();
        statuses
    };
    assert_eq!(
        race("3.0.0", false),
        vec![200, 200, 200, 200, 200, 200, 200, 201]
    );
    assert_eq!(
        race("3.1.0", true),
        vec![201, 409, 409, 409, 409, 409, 409, 409]
    );
    server.assert_healthy();
}

/// Re-deploying an older version's exact bytes changes nothing: `stable` stays on
/// the newest deploy (a CI job re-running an old deploy does not roll back).
#[test]
fn identical_redeploy_changes_nothing() {
    let server = Server::start();
    server.deploy("txn-features");
    let component = built_component("txn-features");
    assert_eq!(
        server.deploy_raw("default", &manifest("1.1.0", ""), component.clone()),
        201
    );
    assert_eq!(serving(&server), "1.1.0");
    let again = server.deploy("txn-features");
    assert!(again.starts_with("unchanged txn-features@1.0.0"), "{again}");
    assert_eq!(
        serving(&server),
        "1.1.0",
        "an identical re-deploy moved stable"
    );
    let resp = server.post(
        "/fn/default/txn-features",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(resp.headers()["x-quiver-version"], "1.1.0");
}

/// An `/http` guest keeps its admission slot for its whole run, also when its
/// client hangs up: with one instance and no queue, a second request is turned
/// away while the first guest still spins, and served once it is done.
#[test]
fn an_http_guest_holds_its_slot_after_the_client_leaves() {
    let server = Server::start();
    server.deploy_with(
        "hello-http",
        &[
            "--set",
            "scaling.max_instances=1",
            "--set",
            "scaling.max_queue=0",
            "--set",
            "limits.timeout=10s",
        ],
    );
    let url = format!("{}/http/default/hello-http", server.url);
    // Warm it, so the spin below is the guest's own time.
    assert_eq!(
        server
            .http()
            .get(format!("{url}/hi"))
            .send()
            .unwrap()
            .status(),
        200
    );
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(
        "authorization",
        format!("Bearer {}", server.admin_token).parse().unwrap(),
    );
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(300))
        .default_headers(auth)
        .build()
        .unwrap();
    let started = Instant::now();
    assert!(
        impatient.get(format!("{url}/spin/2500")).send().is_err(),
        "the client should have given up"
    );
    let resp = server.http().get(format!("{url}/hi")).send().unwrap();
    assert_eq!(
        resp.status(),
        429,
        "the abandoned guest no longer counted against capacity"
    );
    assert!(started.elapsed() < Duration::from_millis(2000));
    std::thread::sleep(
        Duration::from_millis(2500).saturating_sub(started.elapsed()) + Duration::from_millis(500),
    );
    let resp = server.http().get(format!("{url}/hi")).send().unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the slot came back when the guest finished"
    );
}
