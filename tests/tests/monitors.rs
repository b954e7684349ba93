//! Monitor taps: a pipeline naming `[pipeline] monitor` hands each successful
//! call's (inputs, outputs) to that monitor off the request path; its reports are
//! kept per window (`quiver monitor reports`) and its alerts published as events;
//! a full tap buffer drops and counts (`quiver_monitor_dropped_total`); monitors
//! are invocable with `{"inputs", "outputs"}`.

use quiver_tests::{error_of, series, txns, Server};
use serde_json::{json, Value};

fn reports(server: &Server, monitor: &str) -> Value {
    serde_json::from_str(&server.cli_ok(&["--json", "monitor", "reports", monitor])).unwrap()
}

#[test]
fn a_tapped_pipeline_hands_its_calls_to_its_monitor_which_reports_and_alerts() {
    let server = Server::start();
    server.deploy_fraud_score();
    server.deploy("ingest-json");
    server.deploy("txn-features");
    // A pipeline cannot name a monitor that is not one, or not there.
    let out = server.cli(&[
        "deploy",
        "functions/fraud-pipeline",
        "--set",
        r#"pipeline.monitor="txn-features""#,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("not a `monitor`"),
        "{err}"
    );
    let out = server.cli(&[
        "deploy",
        "functions/fraud-pipeline",
        "--set",
        r#"pipeline.monitor="drift-monitor""#,
    ]);
    assert!(!out.status.success(), "no drift-monitor deployed yet");

    server.deploy("drift-monitor");
    // Its alerts go to `drift.detected`; a subscriber takes them as JSON rows.
    server.deploy_with(
        "ingest-json",
        &[
            "--name",
            "alert-sink",
            "--set",
            r#"triggers.events=["drift.detected"]"#,
            "--set",
            "config.schema=monitor:text,alert:text,alerts:int64",
        ],
    );
    server.deploy_with(
        "fraud-pipeline",
        &["--set", r#"pipeline.monitor="drift-monitor""#],
    );
    let ok = series(
        "quiver_monitor_observations_total",
        &[
            ("pipeline", "fraud-pipeline"),
            ("monitor", "drift-monitor"),
            ("outcome", "ok"),
        ],
    );

    // Amounts like the reference (mean 120, std 400): no alert.
    for _ in 0..3 {
        let r = server.post(
            "/fn/default/fraud-pipeline",
            "application/json",
            txns(&[100.0, 140.0, 90.0, 150.0]),
        );
        assert_eq!(r.status(), 200);
        let body: Value = r.json().unwrap();
        assert_eq!(body["rows"].as_array().unwrap().len(), 4, "{body}");
    }
    // Observations may be joined into fewer calls of the monitor; wait for all rows.
    let mut window = Value::Null;
    for _ in 0..100 {
        let v = reports(&server, "drift-monitor");
        window = v["windows"][0].clone();
        if window["rows"] == 12 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(window["rows"], 12, "{window}");
    assert!(server.metric(&ok).unwrap_or(0.0) >= 1.0);
    let mean = window["metrics"]["amount.mean"]["mean"].as_f64().unwrap();
    assert!((mean - 120.0).abs() < 1e-9, "{window}");
    assert!(
        window["metrics"]["out.score.mean"]["last"].is_number(),
        "outputs observed: {window}"
    );
    assert_eq!(window["alerts"], json!([]), "{window}");
    assert_eq!(window["monitor_version"], "drift-monitor@1.2.0");
    // As Prometheus series: the model version's predictions, the monitor's last metrics.
    let scores = series(
        "quiver_prediction_value_count",
        &[
            ("function", "fraud-score"),
            ("model", "fraud-model@1.0.0"),
            ("output", "score"),
        ],
    );
    assert_eq!(server.metric(&scores), Some(12.0));
    let last_rows = series(
        "quiver_monitor_metric",
        &[("monitor", "drift-monitor"), ("metric", "batch.rows")],
    );
    assert!(server.metric(&last_rows).unwrap_or(0.0) >= 4.0);

    // Amounts far from the reference: an alert in the window, and an event.
    let r = server.post(
        "/fn/default/fraud-pipeline",
        "application/json",
        txns(&[9000.0, 9500.0, 8000.0, 12000.0]),
    );
    assert_eq!(r.status(), 200);
    let delivered = series(
        "quiver_event_deliveries_total",
        &[
            ("function", "alert-sink"),
            ("topic", "drift.detected"),
            ("outcome", "ok"),
        ],
    );
    server.wait_metric(&delivered, 1.0, 30);
    let v = reports(&server, "drift-monitor");
    let alerts = v["windows"][0]["alerts"].as_array().unwrap().clone();
    assert_eq!(alerts.len(), 1, "{v}");
    assert!(
        alerts[0]
            .as_str()
            .unwrap()
            .starts_with("drift: amount mean 9625"),
        "{v}"
    );
    let text = server.cli_ok(&["monitor", "reports", "drift-monitor"]);
    assert!(
        text.contains("amount.z") && text.contains("alert: drift: amount"),
        "{text}"
    );

    // A monitor is invocable: (inputs, outputs) in, its report (and window) out.
    let r = server.post(
        "/fn/default/drift-monitor",
        "application/json",
        json!({"inputs": [{"amount": 120.0}], "outputs": [{"score": 0.1}]}).to_string(),
    );
    assert_eq!(r.status(), 200);
    let v: Value = r.json().unwrap();
    assert_eq!(v["report"]["metrics"]["amount.mean"], 120.0, "{v}");
    assert_eq!(v["report"]["alerts"], json!([]));
    assert!(v["window"]["observations"].as_u64().unwrap() >= 2, "{v}");
    for (body, what) in [
        (r#"{"inputs": []}"#, "`outputs` is missing"),
        (r#"{"inputs": 3, "outputs": []}"#, "`inputs`"),
        ("[1", "invalid JSON"),
    ] {
        let (status, code, msg) =
            error_of(server.post("/fn/default/drift-monitor", "application/json", body));
        assert_eq!(
            (status, code.as_str()),
            (400, "invalid_input"),
            "{body}: {msg}"
        );
        assert!(msg.contains(what), "{body}: {msg}");
    }
    let (status, code, _) = error_of(server.get("/admin/v1/tenants/default/monitors/Bad/reports"));
    assert_eq!((status, code.as_str()), (400, "invalid_name"));
    let (status, code, _) =
        error_of(server.get("/admin/v1/tenants/default/monitors/drift-monitor/reports?limit=x"));
    assert_eq!((status, code.as_str()), (400, "invalid_query"));
    server.assert_healthy();
}

#[test]
fn a_full_tap_drops_and_counts_and_the_pipeline_answers_every_call() {
    let server = Server::start();
    server.deploy("ingest-json");
    server.deploy("slow-monitor");
    let manifest = "[function]\nname = \"ingest-only\"\nversion = \"1.0.0\"\nkind = \"pipeline\"\n\
                    [pipeline]\nstages = [\"ingest-json\"]\nmonitor = \"slow-monitor\"\nmonitor_buffer = 2\n";
    let form = reqwest::blocking::multipart::Form::new().text("manifest", manifest);
    let r = server
        .http()
        .post(format!("{}/admin/v1/tenants/default/functions", server.url))
        .multipart(form)
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    let calls = 200;
    for _ in 0..calls {
        let r = server.post("/fn/default/ingest-only", "application/json", txns(&[1.0]));
        assert_eq!(r.status(), 200);
    }
    let dropped = series(
        "quiver_monitor_dropped_total",
        &[("pipeline", "ingest-only"), ("monitor", "slow-monitor")],
    );
    let lost = server.metric(&dropped).unwrap_or(0.0);
    // The monitor sleeps 300 ms a call (after taking what came in the first
    // 100 ms); 200 calls keep coming while it sleeps, so the buffer of 2 overflows
    // and drops, and every drop is counted: what was not dropped reaches the monitor.
    assert!(lost >= 1.0, "a buffer of 2 overflows: {lost}");
    let mut seen = 0.0;
    for _ in 0..100 {
        let v = reports(&server, "slow-monitor");
        seen = v["windows"][0]["rows"].as_f64().unwrap_or(0.0);
        if seen + lost >= calls as f64 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        seen + lost,
        calls as f64,
        "observed {seen} + dropped {lost}"
    );
    server.assert_healthy();
}
