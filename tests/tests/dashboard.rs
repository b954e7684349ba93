//! The web dashboard at `/ui`, loaded in a real headless Chromium (Debian's
//! `chromium`; scripts/test.sh installs it): the deployed functions and drawn
//! charts are in the page it renders, and a screenshot is kept as
//! `tests/artifacts/dashboard.png`. Its data routes need a token and answer a
//! tenant's token with its own tenant only; its page and assets are open.

use quiver_tests::{read_sample, repo, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The browser: `CHROMIUM`, else `chromium` on the PATH. Missing is a failure that
/// says how to get it, never a skip.
fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "the dashboard test needs a headless Chromium and `chromium` is not on the PATH: \
             apt-get install chromium (scripts/test.sh installs it), or set CHROMIUM"
        )
    })
}

/// Run Chromium headless on `url` with `extra` flags; its stdout. Killed past 90 s.
fn browse(url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("a browser profile dir");
    let out_path = profile.path().join("stdout");
    let err_path = profile.path().join("stderr");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--virtual-time-budget=8000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within 90 s:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success(),
        "chromium failed ({status}):\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    stdout
}

/// The `data-points` of the chart element `data-chart="<id>"` in a dumped DOM.
fn points_of(dom: &str, id: &str) -> Option<u64> {
    let at = dom.find(&format!("data-chart=\"{id}\""))?;
    let open = dom[..at].rfind('<')?;
    let close = at + dom[at..].find('>')?;
    let tag = &dom[open..close];
    let v = tag.split("data-points=\"").nth(1)?;
    v.split('"').next()?.parse().ok()
}

fn get_as(server: &Server, token: Option<&str>, path: &str) -> reqwest::blocking::Response {
    server
        .http_as(token)
        .get(format!("{}{path}", server.url))
        .send()
        .expect("request")
}

fn json_as(server: &Server, token: Option<&str>, path: &str) -> Value {
    let r = get_as(server, token, path);
    assert_eq!(r.status(), 200, "{path}");
    r.json().expect("JSON")
}

fn token(server: &Server, tenant: &str, scope: &str) -> String {
    let out = server.cli_ok(&[
        "--tenant", tenant, "--json", "tokens", "create", "--scope", scope,
    ]);
    let v: Value = serde_json::from_str(&out).expect("tokens create --json");
    v["token"].as_str().expect("token").to_string()
}

/// The sampled series of `tenant/function`, once one of its points has calls.
fn wait_for_rate(server: &Server, function: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = json_as(server, Some(&server.admin_token), "/ui/api/series");
        let s = v["series"]
            .as_array()
            .and_then(|all| {
                all.iter()
                    .find(|s| s["tenant"] == "default" && s["function"] == function)
            })
            .cloned();
        let busy = s.as_ref().is_some_and(|s| {
            s["rate"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x.as_f64().unwrap_or(0.0) > 0.0))
        });
        if let (true, Some(s)) = (busy, s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no sampled calls of {function} after 30 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_dashboard_shows_functions_and_charts_in_a_real_browser_and_honours_tenancy() {
    let browser = chromium();
    assert!(browser.is_file(), "{} is not a file", browser.display());
    // Samples every 250 ms, so the charts have points within the test.
    std::env::set_var("QUIVER_UI_SAMPLE_MS", "250");
    let server = Server::start();

    // The page and its assets are open; unknown assets are 404; data needs a token.
    let page = get_as(&server, None, "/ui");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.headers().contains_key("content-security-policy"));
    assert!(page.text().unwrap().contains("/ui/assets/app.js"));
    for (asset, kind) in [
        ("app.js", "text/javascript"),
        ("app.css", "text/css"),
        ("uPlot.iife.min.js", "text/javascript"),
        ("uPlot.min.css", "text/css"),
    ] {
        let r = get_as(&server, None, &format!("/ui/assets/{asset}"));
        assert_eq!(r.status(), 200, "{asset}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{asset}: {ct}");
        assert!(r.bytes().unwrap().len() > 100, "{asset}");
    }
    for missing in ["nope.js", "index.html", "..%2Fui.rs", "LICENSE"] {
        let r = get_as(&server, None, &format!("/ui/assets/{missing}"));
        assert_eq!(r.status(), 404, "{missing}");
    }
    for route in ["/ui/api/overview", "/ui/api/series"] {
        let r = get_as(&server, None, route);
        assert_eq!(r.status(), 401, "{route} without a token");
        let r = get_as(&server, Some("qvr_not_a_real_token"), route);
        assert_eq!(r.status(), 401, "{route} with a bad token");
    }
    // Sampling starts with the first call of a data route.
    json_as(&server, Some(&server.admin_token), "/ui/api/series");

    // Two versions of txn-features split 50/50, a monitor with 1 s windows, and a
    // function of another tenant.
    server.deploy("txn-features");
    server.deploy_with("txn-features", &["--version", "1.1.0"]);
    server.cli_ok(&["traffic", "txn-features", "1.0.0=50", "1.1.0=50"]);
    server.deploy_with("drift-monitor", &["--set", r#"monitor.window="1s""#]);
    // Two versions of a model, the second trained from the first.
    let model = "functions/fraud-score/model/fraud.onnx";
    server.push_model(model, "fraud-model", "1.0.0");
    server.cli_ok(&[
        "models",
        "push",
        model,
        "--name",
        "fraud-model",
        "--version",
        "1.1.0",
        "--parent",
        "1.0.0",
        "--trainer",
        "trainer@2.0.0",
        "--metric",
        "auc=0.93",
    ]);
    server.ensure_tenant("acme");
    server.cli_ok(&[
        "--tenant",
        "acme",
        "deploy",
        "functions/txn-features",
        "--name",
        "acme-scorer",
    ]);
    let acme = token(&server, "acme", "invoke");

    let sample = read_sample("txn-features");
    for _ in 0..20 {
        let r = server.post(
            "/fn/default/txn-features",
            "application/json",
            sample.clone(),
        );
        assert_eq!(r.status(), 200);
    }
    // Three report windows of the monitor, amounts drifting away.
    for amount in [120.0, 900.0, 4000.0] {
        let body = json!({"inputs": [{"amount": amount}, {"amount": amount + 10.0}],
                          "outputs": [{"score": 0.1}, {"score": 0.2}]});
        let r = server.post(
            "/fn/default/drift-monitor",
            "application/json",
            body.to_string(),
        );
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
        std::thread::sleep(Duration::from_millis(1100));
    }
    let s = wait_for_rate(&server, "txn-features");
    assert!(
        s["p50_ms"].as_array().unwrap().iter().any(Value::is_number),
        "a latency point: {s}"
    );
    assert!(s["versions"].as_object().unwrap().len() == 2, "{s}");

    // The platform admin's overview: both tenants, the split, the drift windows.
    let ov = json_as(&server, Some(&server.admin_token), "/ui/api/overview");
    let text = ov.to_string();
    assert!(
        text.contains("acme-scorer") && text.contains("txn-features"),
        "{text}"
    );
    let default = ov["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "default")
        .unwrap();
    let f = default["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "txn-features")
        .unwrap();
    assert_eq!(f["split"], json!({"1.0.0": 50, "1.1.0": 50}), "{f}");
    assert_eq!(f["versions"].as_array().unwrap().len(), 2, "{f}");
    let m = &default["models"][0];
    assert_eq!(m["name"], "fraud-model", "{default}");
    assert_eq!(m["versions"][0]["version"], "1.1.0", "{m}");
    assert_eq!(m["versions"][0]["lineage"]["parent"], "1.0.0", "{m}");
    let mon = &default["monitors"][0];
    assert_eq!(mon["name"], "drift-monitor", "{default}");
    let z = mon["features"]["amount"]["z"].as_array().unwrap();
    assert!(z.len() >= 3 && z.iter().all(Value::is_number), "{mon}");
    assert!(ov["activity"].as_array().unwrap().len() >= 3, "audit: {ov}");
    // The monitor's alert went out as an event: the newest events show it.
    let recent = default["events"]["recent"].as_array().unwrap();
    assert!(
        recent
            .iter()
            .any(|e| e["topic"] == "drift.detected" && e["source"] == "drift-monitor@1.2.0"),
        "{recent:?}"
    );

    // A tenant's token sees its own tenant only, in both routes.
    for route in ["/ui/api/overview", "/ui/api/series"] {
        let v = json_as(&server, Some(&acme), route);
        let text = v.to_string();
        assert!(
            !text.contains("txn-features") && !text.contains("\"default\""),
            "{route} shows another tenant to acme: {text}"
        );
    }
    let v = json_as(&server, Some(&acme), "/ui/api/overview");
    assert_eq!(v["tenants"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["tenants"][0]["functions"][0]["name"], "acme-scorer");
    assert_eq!(
        v["activity"],
        Value::Null,
        "an invoke token reads no audit log"
    );

    // The page in a real browser, the token in the URL's fragment.
    let url = format!("{}/ui#token={}", server.url, server.admin_token);
    let dom = browse(&url, &["--dump-dom".to_string()]);
    assert!(
        dom.contains("data-function=\"txn-features\"") && dom.contains("acme-scorer"),
        "the functions are not in the page:\n{dom}"
    );
    assert!(
        dom.contains("fraud-model") && dom.contains("1.1.0 ← 1.0.0"),
        "the model's lineage is not in the page:\n{dom}"
    );
    let rate = points_of(&dom, "rate:default/txn-features");
    assert!(
        rate.is_some_and(|n| n > 0),
        "no drawn request-rate chart with points ({rate:?}):\n{dom}"
    );
    let drift = points_of(&dom, "drift:default/drift-monitor:amount");
    assert!(
        drift.is_some_and(|n| n >= 3),
        "no drawn drift chart with the windows ({drift:?}):\n{dom}"
    );
    assert!(
        dom.contains("Recent events") && dom.contains("drift.detected"),
        "the recent events are not in the page:\n{dom}"
    );
    assert!(
        !dom.contains(&server.admin_token),
        "the token is in the page"
    );

    // A tenant's token in the browser: its function, nothing of the other tenant.
    let dom = browse(
        &format!("{}/ui#token={acme}", server.url),
        &["--dump-dom".to_string()],
    );
    assert!(dom.contains("acme-scorer"), "{dom}");
    assert!(!dom.contains("txn-features"), "{dom}");

    // A screenshot, kept as a test artifact.
    let dir = repo().join("tests/artifacts");
    std::fs::create_dir_all(&dir).expect("tests/artifacts");
    let png = dir.join("dashboard.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &url,
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1400,1800".to_string(),
        ],
    );
    assert_png(&png);
}

fn assert_png(path: &Path) {
    let bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("no screenshot at {}: {e}", path.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );
    assert!(
        bytes.len() > 20_000,
        "{} is {} bytes: a blank page?",
        path.display(),
        bytes.len()
    );
}
