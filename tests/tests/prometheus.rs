//! `/metrics` scraped by a real Prometheus (Debian's `prometheus`, started here on
//! loopback with a generated config and the admin token as its bearer
//! credentials), then queried through Prometheus' own HTTP API.

use quiver_tests::{free_port, Server};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(target: &str, token: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, token).unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: quiver\n    \
                 authorization:\n      credentials_file: {}\n    static_configs:\n      \
                 - targets: ['{target}']\n",
                token_file.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus; scripts/test.sh does)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// An instant query's result vector (empty until the series is scraped).
    fn query(&self, q: &str) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Ok(r) = reqwest::blocking::Client::new()
            .get(url)
            .query(&[("query", q)])
            .send()
        else {
            return Vec::new();
        };
        let v: Value = r.json().unwrap_or(Value::Null);
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The first sample's value once `q` has one that `ok` accepts.
    fn wait(&self, q: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self
                .query(q)
                .first()
                .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()));
            if let Some(v) = value.filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never had {q}: {value:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

#[test]
fn a_real_prometheus_scrapes_the_hosts_series() {
    let server = Server::start();
    server.deploy("txn-features");
    server.deploy_fraud_score();
    let sample =
        std::fs::read(quiver_tests::repo().join("functions/txn-features/sample.json")).unwrap();
    for _ in 0..5 {
        let r = server.post(
            "/fn/default/txn-features",
            "application/json",
            sample.clone(),
        );
        assert_eq!(r.status(), 200);
    }
    let (rows, _) = quiver_tests::fraud_reference();
    let body = quiver_tests::fraud_input_rows(&rows[..4]).to_string();
    let r = server.post("/fn/default/fraud-score", "application/json", body);
    assert_eq!(r.status(), 200);
    let r = server.post(
        "/events/default/scored",
        "application/json",
        br#"{"x": 1}"#.to_vec(),
    );
    assert_eq!(r.status(), 202);
    let target = server.url.trim_start_matches("http://").to_string();
    let prom = Prometheus::start(&target, &server.admin_token);
    assert_eq!(prom.wait(r#"up{job="quiver"}"#, |v| v == 1.0), 1.0);
    let calls = prom.wait(
        r#"sum(quiver_invocations_total{tenant="default",function="txn-features",status="200"})"#,
        |v| v >= 5.0,
    );
    assert_eq!(calls, 5.0);
    // A latency histogram, as Grafana would chart it.
    let p50 = prom.wait(
        r#"histogram_quantile(0.5, sum by (le) (quiver_invocation_duration_seconds_bucket{function="txn-features"}))"#,
        |v| v > 0.0,
    );
    assert!(p50 < 2.0, "p50 {p50}");
    prom.wait(
        r#"quiver_cold_starts_total{function="txn-features"}"#,
        |v| v >= 1.0,
    );
    // Host calls: feature reads (txn-features keeps per-merchant stats), the
    // model's computes by backend and model version, batch sizes, publishes.
    prom.wait(
        r#"sum(quiver_feature_rows_total{tenant="default",source="store"})"#,
        |v| v >= 5.0,
    );
    prom.wait(
        r#"sum(quiver_inference_duration_seconds_count{model="fraud-model",version="1.0.0",backend="tract"})"#,
        |v| v >= 1.0,
    );
    let rows = prom.wait(
        r#"sum(quiver_batch_rows_sum{function="fraud-score"})"#,
        |v| v >= 4.0,
    );
    assert_eq!(rows, 4.0);
    prom.wait(
        r#"quiver_events_published_total{tenant="default",via="api"}"#,
        |v| v >= 1.0,
    );
    // The runtime's counters are registered series too (no hand-made text).
    prom.wait("quiver_instantiations_total", |v| v >= 1.0);
}
