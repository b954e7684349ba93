//! Function logs: a guest's stdout, stderr and `quiver:ml/log` lines are kept per
//! function with the call's trace id (`quiver logs NAME [--follow]`), bounded per
//! call (the rest dropped and counted, the call unharmed) and per function (a ring).

use quiver_tests::{error_of, quiver_bin, repo, Server};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn lines(server: &Server, limit: usize) -> Vec<Value> {
    server
        .cli_ok(&["--json", "logs", "log-probe", "--limit", &limit.to_string()])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Call log-probe on `[{"lines": 2}, {"lines": 1}]` in a client's trace; its id.
fn call_probe(server: &Server) -> &'static str {
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = server
        .http()
        .post(format!("{}/fn/default/log-probe", server.url))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .body(json!([{"lines": 2}, {"lines": 1}]).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    trace
}

/// What log-probe writes for `[{"lines": 2}, {"lines": 1}]`, each line in `trace`.
fn assert_probe_lines(got: &[Value], trace: &str) {
    let mut seen: Vec<(String, String)> = got
        .iter()
        .map(|l| {
            assert_eq!(l["trace_id"], trace, "{l}");
            assert_eq!(l["version"], "log-probe@1.0.0", "{l}");
            (
                l["stream"].as_str().unwrap().to_string(),
                l["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = [
        ("info", "log 0"),
        ("info", "log 1"),
        ("stderr", "err 0"),
        ("stderr", "err 1"),
        ("stdout", "out 0.0"),
        ("stdout", "out 0.1"),
        ("stdout", "out 1.0"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(seen, want);
}

#[test]
fn a_functions_output_is_kept_with_its_trace_and_bounded() {
    let server = Server::start();
    server.deploy("log-probe");
    let trace = call_probe(&server);
    let got = lines(&server, 100);
    assert_probe_lines(&got, trace);
    let text = server.cli_ok(&["logs", "log-probe"]);
    assert!(
        text.contains("log-probe@1.0.0 stdout 4bf92f35 out 0.1"),
        "{text}"
    );

    // A flood past the call's budget is cut, counted, and the call still answers.
    let r = server.post(
        "/fn/default/log-probe",
        "application/json",
        json!([{"lines": 1, "flood": true}]).to_string(),
    );
    assert_eq!(r.status(), 200);
    let dropped = server
        .metric("quiver_log_dropped_bytes_total{function=\"log-probe\",tenant=\"default\"}")
        .unwrap_or(0.0);
    assert!(dropped >= (1 << 20) as f64 - 65536.0, "dropped {dropped}");
    let newest = lines(&server, 3);
    assert!(
        newest
            .iter()
            .all(|l| l["text"].as_str().unwrap().len() <= 4096),
        "lines are cut at 4 KiB"
    );

    // The ring keeps the newest 1000 lines.
    let r = server.post(
        "/fn/default/log-probe",
        "application/json",
        json!([{"lines": 2000}]).to_string(),
    );
    assert_eq!(r.status(), 200);
    let all = lines(&server, 1000);
    assert_eq!(all.len(), 1000);
    assert!(all.iter().any(|l| l["text"] == "out 0.1999"));
    assert!(!all.iter().any(|l| l["text"] == "out 0.0"), "oldest gone");

    // --follow prints what comes after it started.
    let mut child = Command::new(quiver_bin())
        .current_dir(repo())
        .env("QUIVER_SERVER", &server.url)
        .env("QUIVER_TOKEN", &server.admin_token)
        .args(["logs", "log-probe", "--follow", "--limit", "1"])
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The one line it starts with.
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    let r = server.post(
        "/fn/default/log-probe",
        "application/json",
        json!([{"lines": 0}]).to_string(),
    );
    assert_eq!(r.status(), 200);
    let mut followed = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        followed.push(line);
        if followed.len() == 2 {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        followed
            .iter()
            .any(|l| l.contains(" info ") && l.ends_with(" log 0")),
        "{followed:?}"
    );
    assert!(
        followed.iter().any(|l| l.ends_with(" err 0")),
        "{followed:?}"
    );

    for (query, status) in [("limit=0", 400), ("limit=1001", 400), ("after=x", 400)] {
        let (s, c, m) = error_of(server.get(&format!(
            "/admin/v1/tenants/default/functions/log-probe/logs?{query}"
        )));
        assert_eq!((s, c.as_str()), (status, "invalid_query"), "{query}: {m}");
    }
    let (s, _, _) = error_of(server.get("/admin/v1/tenants/default/functions/nobody/logs"));
    assert_eq!(s, 404);
    server.assert_healthy();
}

#[test]
fn the_host_logs_json_lines_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let port = quiver_tests::free_port();
    let mut child = Command::new(quiver_bin())
        .args(["--log-format", "json", "serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut ready = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) {
        if line.contains("runtime ready") {
            ready = Some(line);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = ready.expect("the host said it is ready");
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["level"], "INFO", "{v}");
    assert_eq!(v["fields"]["message"], "runtime ready", "{v}");
    assert!(v["fields"]["pooling"].is_boolean(), "{v}");
}

#[test]
fn function_logs_are_also_written_to_files_when_asked() {
    let logs = tempfile::tempdir().unwrap();
    let dir = logs.path().to_str().unwrap().to_string();
    let server = Server::start_with(&["--function-log-dir", &dir]);
    server.deploy("log-probe");
    let trace = call_probe(&server);
    let path = logs.path().join("default/log-probe.log");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // The same lines the ring holds, in the same shape.
    assert_probe_lines(&lines, trace);
}

#[test]
fn a_log_dir_that_cannot_be_made_is_refused_at_start() {
    let err = quiver_tests::serve_refused(&["--function-log-dir", "/proc/quiver-logs"]);
    assert!(err.contains("creating /proc/quiver-logs"), "{err}");
}
