//! Harness for black-box tests: start the real `quiver` binary on a free loopback
//! port with a fresh data dir, drive it over HTTP and the CLI, kill it on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `tests/`).
pub fn repo() -> PathBuf {
    // The test runner's CARGO_MANIFEST_DIR first: a test binary reused from a shared
    // target dir may have been built in a checkout somewhere else.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `quiver` binary: `QUIVER_BIN`, or the one cargo built next to this test.
pub fn quiver_bin() -> PathBuf {
    if let Ok(p) = std::env::var("QUIVER_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/quiver
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("quiver");
    assert!(
        bin.is_file(),
        "{} not found: build it first (`cargo build -p quiver-host`) or set QUIVER_BIN",
        bin.display()
    );
    bin
}

pub struct Server {
    child: Child,
    pub url: String,
    pub data_dir: PathBuf,
    /// The platform admin token the first start wrote to `<data-dir>/admin-token`;
    /// `http()` and `cli()` send it.
    pub admin_token: String,
    _tmp: Option<tempfile::TempDir>,
}

impl Server {
    /// A server with a fresh data dir and a 1 MiB body limit.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Server::start_in(tmp.path());
        s._tmp = Some(tmp);
        s
    }

    /// A server with a fresh data dir and extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = Server::spawn(tmp.path(), extra);
        s._tmp = Some(tmp);
        s
    }

    /// A server on an existing data dir (to test restarts).
    pub fn start_in(data_dir: &Path) -> Server {
        Server::spawn(data_dir, &[])
    }

    /// As `start_in`, with more `serve` flags.
    pub fn start_in_with(data_dir: &Path, extra: &[&str]) -> Server {
        Server::spawn(data_dir, extra)
    }

    fn spawn(data_dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(quiver_bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--max-body", "1MiB"])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn quiver serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("quiver listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let admin_token = std::fs::read_to_string(data_dir.join("admin-token"))
            .expect("the first start writes <data-dir>/admin-token")
            .trim()
            .to_string();
        Server {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
            admin_token,
            _tmp: None,
        }
    }

    /// Run the CLI against this server.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(quiver_bin())
            .current_dir(repo())
            .env("QUIVER_SERVER", &self.url)
            .env("QUIVER_TOKEN", &self.admin_token)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run quiver")
    }

    /// Run the CLI and require success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "quiver {args:?} failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run the CLI and require failure; returns stderr.
    pub fn cli_err(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "quiver {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Create tenant `name` (the platform admin's call); fine if it exists.
    pub fn ensure_tenant(&self, name: &str) {
        let out = self.cli(&["tenants", "create", name]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("exists"),
            "tenants create {name}: {err}"
        );
    }

    pub fn deploy(&self, function: &str) -> String {
        self.cli_ok(&["deploy", &format!("functions/{function}")])
    }

    /// Push a model file (path relative to the repository) as `name@version`.
    pub fn push_model(&self, file: &str, name: &str, version: &str) -> String {
        self.cli_ok(&["models", "push", file, "--name", name, "--version", version])
    }

    /// Push the fraud model as fraud-model@1.0.0 and deploy `fraud-score` on it.
    pub fn deploy_fraud_score(&self) {
        self.push_model(
            "functions/fraud-score/model/fraud.onnx",
            "fraud-model",
            "1.0.0",
        );
        self.deploy("fraud-score");
    }

    /// Deploy a first-party function with extra `deploy` flags (`--name`, `--set`...).
    pub fn deploy_with(&self, function: &str, flags: &[&str]) -> String {
        let dir = format!("functions/{function}");
        let mut args = vec!["deploy", dir.as_str()];
        args.extend_from_slice(flags);
        self.cli_ok(&args)
    }

    /// `chaos` twice: as `emitter`, which may publish to `scored` (10 s deadline), and as `sink`,
    /// triggered by `scored` with one attempt per event.
    pub fn deploy_emitter_and_sink(&self) {
        self.deploy_with(
            "chaos",
            &[
                "--name",
                "emitter",
                "--set",
                r#"events.publish=["scored"]"#,
                // A call that publishes 100 events commits 100 times: on a loaded
                // 2-core CI machine that outlasts chaos's 500 ms.
                "--set",
                r#"limits.timeout="10s""#,
            ],
        );
        self.deploy_with(
            "chaos",
            &[
                "--name",
                "sink",
                "--set",
                r#"triggers.events=["scored"]"#,
                "--set",
                "triggers.retry.max_attempts=1",
            ],
        );
    }

    /// Deploy through the admin API directly (no cargo build): `manifest` TOML plus
    /// component bytes. Returns the HTTP status.
    pub fn deploy_raw(&self, tenant: &str, manifest: &str, component: Vec<u8>) -> u16 {
        let form = reqwest::blocking::multipart::Form::new()
            .text("manifest", manifest.to_string())
            .part(
                "component",
                reqwest::blocking::multipart::Part::bytes(component),
            );
        self.http()
            .post(format!("{}/admin/v1/tenants/{tenant}/functions", self.url))
            .multipart(form)
            .send()
            .expect("deploy request")
            .status()
            .as_u16()
    }

    /// The `quiver ls --json` entry of function `name` (state, instances, queue...).
    pub fn function_state(&self, name: &str) -> serde_json::Value {
        let ls: serde_json::Value =
            serde_json::from_str(&self.cli_ok(&["ls", "--json"])).expect("ls --json");
        ls["functions"]
            .as_array()
            .and_then(|fs| fs.iter().find(|f| f["name"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {ls}"))
    }

    /// The server's resident set size in bytes (Linux `/proc/PID/status` VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc/PID/status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kib * 1024
    }

    /// Wait up to `secs` for the metric line `series` to reach `at_least`; its value.
    pub fn wait_metric(&self, series: &str, at_least: f64, secs: u64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.metric(series).unwrap_or(0.0);
            if v >= at_least {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {v} after {secs} s; expected at least {at_least}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of the metric line `series` (name and labels as rendered), if present.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").text().expect("metrics text");
        text.lines()
            .find(|l| l.starts_with(&format!("{series} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// A client that sends the platform admin token.
    pub fn http(&self) -> reqwest::blocking::Client {
        self.http_as(Some(&self.admin_token))
    }

    /// A client that sends `token` (`None`: no Authorization header).
    pub fn http_as(&self, token: Option<&str>) -> reqwest::blocking::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(t) = token {
            headers.insert(
                "authorization",
                format!("Bearer {t}")
                    .parse()
                    .expect("a token is a header value"),
            );
        }
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .default_headers(headers)
            .build()
            .expect("client")
    }

    /// Run the CLI with `token` instead of the admin's.
    pub fn cli_as(&self, token: &str, args: &[&str]) -> Output {
        Command::new(quiver_bin())
            .current_dir(repo())
            .env("QUIVER_SERVER", &self.url)
            .env("QUIVER_TOKEN", token)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run quiver")
    }

    pub fn post(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> reqwest::blocking::Response {
        self.http()
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .expect("request")
    }

    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.http()
            .get(format!("{}{path}", self.url))
            .send()
            .expect("request")
    }

    /// The server answers `/healthz` (used after every bad input).
    pub fn assert_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(r) = self.http().get(format!("{}/healthz", self.url)).send() {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server is not healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server process is the one this harness started and it has not exited
    /// (a crash, an abort or an OOM kill would show here).
    pub fn assert_running(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => panic!("the server exited: {status}"),
            Err(e) => panic!("cannot tell whether the server runs: {e}"),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stop the server as a service manager does (SIGTERM) and wait until it has
    /// exited by itself, successfully.
    pub fn terminate(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait().expect("wait for the server") {
                Some(status) => {
                    assert!(status.success(), "the server exited with {status}");
                    return;
                }
                None if Instant::now() > deadline => {
                    panic!("the server did not stop within 20 s of SIGTERM")
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `{"error": {"code", "message"}}` of a failed response, checked for shape.
pub fn error_of(resp: reqwest::blocking::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().expect("error body is JSON");
    let code = body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code in {body}"))
        .to_string();
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message in {body}"))
        .to_string();
    (status, code, message)
}

/// The fraud model's reference rows (log_amount, hour_of_day, merchant_z,
/// merchant_known) and scikit-learn's fraud probability for each
/// (`functions/fraud-score/model/reference.json`).
pub fn fraud_reference() -> (Vec<Vec<f64>>, Vec<f64>) {
    let path = repo().join("functions/fraud-score/model/reference.json");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("reference.json"))
            .expect("reference.json is JSON");
    let rows: Vec<Vec<f64>> = serde_json::from_value(r["rows"].clone()).expect("rows");
    let p_fraud = r["probabilities"]
        .as_array()
        .expect("probabilities")
        .iter()
        .map(|p| p[1].as_f64().expect("a probability"))
        .collect();
    (rows, p_fraud)
}

/// Reference rows as `fraud-score` input rows (JSON objects).
pub fn fraud_input_rows(rows: &[Vec<f64>]) -> serde_json::Value {
    rows.iter()
        .map(|x| {
            serde_json::json!({
                "log_amount": x[0], "hour_of_day": x[1] as i64, "merchant_z": x[2],
                "merchant_known": x[3] == 1.0,
            })
        })
        .collect()
}

pub fn read_sample(function: &str) -> Vec<u8> {
    std::fs::read(repo().join("functions").join(function).join("sample.json")).expect("sample.json")
}

/// The component cargo built for `function` (run `server.deploy(function)` first so
/// it exists): `<target>/wasm32-wasip2/release/<crate>.wasm` beside the quiver binary.
pub fn built_component(function: &str) -> Vec<u8> {
    let target = quiver_bin()
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", function.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `quiver serve` with `args` (on a fresh data dir) must refuse to start: its stderr.
pub fn serve_refused(args: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(quiver_bin())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .expect("quiver serve");
    assert!(!out.status.success(), "quiver serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A real `redis-server` on a free loopback port, no persistence; killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// Start on `port` (again, after `kill`, to test reconnects).
    pub fn start_on(port: u16) -> Redis {
        Redis::spawn(port, &["--save", "", "--appendonly", "no"])
    }

    /// Start on `port` with its data in `dir`, every write on disk before it is
    /// answered (AOF, `appendfsync always`): what survives a `kill -9` of Redis.
    pub fn start_durable(port: u16, dir: &Path) -> Redis {
        let dir = dir.to_str().expect("a UTF-8 path");
        Redis::spawn(
            port,
            &[
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                dir,
            ],
        )
    }

    fn spawn(port: u16, flags: &[&str]) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// `redis-cli` against this server; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The server process is the one this harness started and it has not exited
    /// (a crash, an abort or an OOM kill would show here).
    pub fn assert_running(&mut self) {
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => panic!("the server exited: {status}"),
            Err(e) => panic!("cannot tell whether the server runs: {e}"),
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JSON array of fraud-pipeline transactions, one per amount (txn ids `t-0`, ...).
pub fn txns(amounts: &[f64]) -> String {
    let rows: Vec<serde_json::Value> = amounts
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::json!({"txn_id": format!("t-{i}"), "amount": a,
                "ts": 1763812800 + i as i64 * 60, "merchant": "coffee-corner"})
        })
        .collect();
    serde_json::Value::Array(rows).to_string()
}

/// A series of tenant `default` as `/metrics` renders it (labels sorted by name).
pub fn series(metric: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.push(("tenant", "default"));
    labels.sort();
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{metric}{{{}}}", inner.join(","))
}

/// The Python of the test venv (`scripts/py-env.sh`: pinned real clients such as
/// `tritonclient`), made on first use and reused.
pub fn py_env() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo().join("scripts/py-env.sh"))
        .output()
        .expect("running scripts/py-env.sh");
    assert!(
        out.status.success(),
        "scripts/py-env.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The HTTP status `curl` got for `url` (0 when there was no HTTP answer), with
/// `extra` curl arguments (`-k`, `--cacert`, `-H`).
pub fn curl_status(extra: &[&str], url: &str) -> u16 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl (apt-get install curl)");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A real OCI registry (Debian's `docker-registry`, distribution v2) on a free
/// loopback port, storing in a temp dir; killed on drop.
pub struct OciRegistry {
    child: Child,
    pub port: u16,
    /// Its storage root (`docker/registry/v2/...` under it).
    pub root: PathBuf,
    _dir: tempfile::TempDir,
}

impl OciRegistry {
    pub fn start() -> OciRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let root = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                root.display()
            ),
        )
        .expect("write the registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let registry = OciRegistry {
            child,
            port,
            root,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while curl_status(&[], &format!("{}/v2/", registry.http_url())) != 200 {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// `http://127.0.0.1:PORT` (the distribution API's base).
    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `oci://127.0.0.1:PORT/<path>` (what `--registry` takes).
    pub fn oci_url(&self, path: &str) -> String {
        format!("oci://127.0.0.1:{}/{path}", self.port)
    }

    /// Where the registry keeps blob `sha256:<hex>` on disk.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for OciRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
