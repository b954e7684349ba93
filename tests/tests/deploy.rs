//! deploy/: the Helm chart rendered by Helm's own engine (the Helm v4 SDK through
//! helm-python-sdk, no helm binary) and every manifest validated against the
//! Kubernetes schemas (kubernetes-validate, strict) and KEDA's CRD schemas; the
//! Dockerfile parsed; the systemd unit verified; local-cluster.sh run (3 hosts
//! behind nginx, one killed with SIGKILL while requests flow). Whatever the chart,
//! the image and the unit hand to the binary is then handed to the real binary,
//! which must start on it and answer the probes: no flag or variable it lacks.

use quiver_tests::{free_port, py_env, quiver_bin, repo, OciRegistry};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run a deploy/tests helper in the test venv (`scripts/py-env.sh`: pinned
/// helm-python-sdk, kubernetes-validate, jsonschema, dockerfile-parse); its stdout
/// is one JSON document.
fn run_py(script: &str, args: &[PathBuf]) -> Value {
    let out = Command::new(py_env())
        .arg("-B") // no __pycache__ in the clone
        .arg(repo().join("deploy/tests").join(script))
        .args(args)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the helper prints JSON")
}

/// Every value set rendered and validated (deploy/tests/chart.py).
fn chart_report() -> Value {
    run_py(
        "chart.py",
        &[
            repo().join("deploy/helm/quiver"),
            repo().join("deploy/tests/values"),
        ],
    )
}

fn output_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The environment variables `quiver serve --help` documents for the host itself
/// (`[env: NAME=]`), less the CLI's client settings (server, tenant, token).
fn serve_env() -> BTreeSet<String> {
    let help = output_ok(
        &Command::new(quiver_bin())
            .args(["serve", "--help"])
            .output()
            .expect("quiver serve --help"),
        "quiver serve --help",
    );
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split('=').next())
        .map(str::to_string)
        .filter(|n| !["QUIVER_SERVER", "QUIVER_TENANT", "QUIVER_TOKEN"].contains(&n.as_str()))
        .collect();
    assert!(
        names.contains("QUIVER_LISTEN") && names.contains("QUIVER_REDIS"),
        "unexpected help:\n{help}"
    );
    // Credentials are no flags (a flag's value shows in `ps`): `--registry`'s help
    // names the variables the host reads.
    let mut names = names;
    for var in ["QUIVER_REGISTRY_USERNAME", "QUIVER_REGISTRY_PASSWORD"] {
        assert!(help.contains(var), "--registry's help names {var}:\n{help}");
        names.insert(var.to_string());
    }
    names
}

/// A host started from a deployment's command line and environment (nothing
/// inherited), killed on drop.
struct Host {
    child: Child,
    url: String,
}

impl Host {
    fn start(args: &[String], env: &BTreeMap<String, String>) -> Host {
        let mut child = Command::new(quiver_bin())
            .args(args)
            .env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn quiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let url = line
            .trim()
            .strip_prefix("quiver listening on ")
            .unwrap_or_else(|| panic!("quiver {args:?} with {env:?} did not start: {line:?}"))
            .to_string();
        Host { child, url }
    }

    /// The status of GET `path` (curl: the TLS cases use a self-signed certificate).
    fn get(&self, path: &str) -> u16 {
        quiver_tests::curl_status(&["-k"], &format!("{}{path}", self.url))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback redis-server, with a password when given; killed on drop.
struct TestRedis {
    child: Child,
    port: u16,
}

impl TestRedis {
    fn start(password: Option<&str>) -> TestRedis {
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let redis = TestRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut ping = Command::new("redis-cli");
            ping.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
            if let Some(p) = password {
                ping.args(["--no-auth-warning", "-a", p]);
            }
            let out = ping.arg("PING").output().expect("redis-cli");
            if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                return redis;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = A.iter().position(|a| *a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=quiver-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install openssl)");
    output_ok(&out, "openssl req");
    (cert, key)
}

fn objects(case: &Value) -> Vec<&Value> {
    case["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|o| &o["object"])
        .collect()
}

fn find<'a>(case: &'a Value, kind: &str, name: &str) -> &'a Value {
    objects(case)
        .into_iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"))
}

fn kinds(case: &Value) -> Vec<String> {
    let mut k: Vec<String> = objects(case)
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    k.sort();
    k
}

fn host_container(case: &Value) -> &Value {
    let d = find(case, "Deployment", "q-quiver");
    let containers = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    &containers[0]
}

fn env_of<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
}

#[test]
fn the_chart_renders_with_helm_and_every_manifest_validates() {
    let r = chart_report();
    let helm = r["helm"].as_str().unwrap();
    assert!(helm.starts_with("v4."), "rendered by Helm {helm}");
    assert_eq!(r["k8s_versions"], serde_json::json!(["1.30.0", "1.37.0"]));

    // `helm lint --strict`: no warning, no error (an info about the icon is fine).
    let lint = &r["lint"];
    assert_eq!(lint["errors"], serde_json::json!([]), "{lint}");
    for m in lint["messages"].as_array().unwrap() {
        assert!(m["severity"].as_i64().unwrap() < 2, "lint: {m}");
    }

    // The validators reject what they must, and accept the valid control.
    let c = &r["controls"];
    let has = |k: &str, text: &str| {
        let problems = c[k].as_array().unwrap();
        assert!(
            !problems.is_empty() && problems.iter().all(|p| p.as_str().unwrap().contains(text)),
            "control {k}: {problems:?}"
        );
    };
    has("k8s_unknown_field", "'livenessProbes' was unexpected");
    has("keda_wrong_type", "'zero' is not of type 'integer'");
    has("keda_unknown_field", "'scaleTargetRefs' was unexpected");
    has("keda_unknown_trigger_key", "KEDA reads no ['lagcount']");
    assert_eq!(c["keda_valid"], serde_json::json!([]));

    let cases = r["cases"].as_object().unwrap();
    let good = ["defaults", "full", "hpa", "no-redis"];
    for name in good {
        let case = &cases[name];
        assert!(case["error"].is_null(), "{name}: {}", case["error"]);
        assert_eq!(case["problems"], serde_json::json!([]), "{name}");
        // kubernetes-validate or the KEDA schema looked at every object.
        for o in case["objects"].as_array().unwrap() {
            assert_eq!(
                o["problems"],
                serde_json::json!([]),
                "{name}: {}",
                o["object"]
            );
        }
    }

    // Defaults: one host on a volume, the internal Redis, probes on /healthz.
    let d = &cases["defaults"];
    assert_eq!(
        kinds(d),
        [
            "Deployment/q-quiver",
            "Deployment/q-quiver-redis",
            "PersistentVolumeClaim/q-quiver-data",
            "PersistentVolumeClaim/q-quiver-redis",
            "Service/q-quiver",
            "Service/q-quiver-redis",
            "ServiceAccount/q-quiver",
        ]
    );
    let dep = find(d, "Deployment", "q-quiver");
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    let host = host_container(d);
    assert_eq!(host["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(host["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(host["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(host["readinessProbe"]["httpGet"]["path"], "/healthz");
    assert!(host["resources"]["limits"]["memory"].is_string(), "{host}");
    assert_eq!(
        env_of(host, "QUIVER_REDIS").unwrap()["value"],
        "redis://q-quiver-redis:6379/0"
    );
    let redis_svc = find(d, "Service", "q-quiver-redis");
    assert_eq!(redis_svc["spec"]["ports"][0]["port"], 6379);

    // External Redis + TLS + KEDA (stream lag and HTTP activity).
    let f = &cases["full"];
    assert_eq!(
        kinds(f),
        [
            "Deployment/q-quiver",
            "PersistentVolumeClaim/q-quiver-data",
            "ScaledObject/q-quiver",
            "Secret/q-quiver-redis-url",
            "Service/q-quiver",
            "ServiceAccount/q-quiver",
            "TriggerAuthentication/q-quiver-redis",
        ]
    );
    let dep = find(f, "Deployment", "q-quiver");
    assert!(
        dep["spec"]["replicas"].is_null(),
        "KEDA owns the replica count"
    );
    let host = host_container(f);
    assert_eq!(
        env_of(host, "QUIVER_REDIS").unwrap()["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "q-quiver-redis-url", "key": "url"})
    );
    let secret = find(f, "Secret", "q-quiver-redis-url");
    assert_eq!(
        base64_decode(secret["data"]["url"].as_str().unwrap()),
        b"redis://:s3cret@redis.example.internal:6380/0"
    );
    assert_eq!(host["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(host["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(
        env_of(host, "QUIVER_TLS_CERT").unwrap()["value"],
        "/etc/quiver/tls/tls.crt"
    );
    assert_eq!(
        env_of(host, "QUIVER_REGISTRY").unwrap()["value"],
        "oci://registry.example.com/quiver"
    );
    for (var, key) in [
        ("QUIVER_REGISTRY_USERNAME", "username"),
        ("QUIVER_REGISTRY_PASSWORD", "password"),
    ] {
        assert_eq!(
            env_of(host, var).unwrap()["valueFrom"]["secretKeyRef"],
            serde_json::json!({"name": "registry-auth", "key": key})
        );
    }
    assert_eq!(
        env_of(host, "QUIVER_PRECOMPILED_KEY_FILE").unwrap()["value"],
        "/etc/quiver/precompiled/key"
    );
    let volumes = &dep["spec"]["template"]["spec"]["volumes"];
    let key_volume = volumes
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "precompiled-key")
        .unwrap_or_else(|| panic!("{volumes}"));
    assert_eq!(key_volume["secret"]["secretName"], "quiver-precompiled-key");
    assert!(env_of(host_container(d), "QUIVER_REGISTRY").is_none());
    let so = find(f, "ScaledObject", "q-quiver");
    assert_eq!(so["spec"]["minReplicaCount"], 0);
    assert_eq!(so["spec"]["maxReplicaCount"], 1);
    assert_eq!(so["spec"]["scaleTargetRef"]["name"], "q-quiver");
    let triggers = so["spec"]["triggers"].as_array().unwrap();
    assert_eq!(triggers.len(), 3, "{triggers:?}");
    let t = &triggers[0];
    assert_eq!(t["type"], "redis-streams");
    // The host's stream and group names (host/src/events/redis_bus.rs).
    assert_eq!(t["metadata"]["stream"], "quiver:ev:default:transactions");
    assert_eq!(t["metadata"]["consumerGroup"], "txn-features");
    assert_eq!(t["metadata"]["lagCount"], "20");
    assert_eq!(t["metadata"]["address"], "redis.example.internal:6380");
    assert_eq!(t["authenticationRef"]["name"], "q-quiver-redis");
    assert_eq!(
        triggers[1]["metadata"]["stream"],
        "quiver:ev:acme:drift.detected"
    );
    assert_eq!(triggers[2]["type"], "prometheus");

    // The HPA, with an existing Redis Secret and no volume.
    let h = &cases["hpa"];
    let hpa = find(h, "HorizontalPodAutoscaler", "q-quiver");
    assert_eq!(hpa["spec"]["maxReplicas"], 1);
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "q-quiver");
    let host = host_container(h);
    assert_eq!(
        env_of(host, "QUIVER_REDIS").unwrap()["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "my-redis", "key": "redis-url"})
    );
    assert_eq!(
        host["readinessProbe"]["httpGet"]["path"],
        "/v2/health/ready"
    );
    let volumes = &find(h, "Deployment", "q-quiver")["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["emptyDir"], serde_json::json!({}), "{volumes}");

    // No Redis: no --redis at all (the binary's embedded defaults).
    let n = &cases["no-redis"];
    assert!(env_of(host_container(n), "QUIVER_REDIS").is_none());
    assert!(
        !kinds(n).iter().any(|k| k.contains("redis")),
        "{:?}",
        kinds(n)
    );

    // What the binary cannot do (yet) fails the render, saying why.
    let bad: BTreeMap<&str, &[&str]> = BTreeMap::from([
        (
            "bad-registry",
            &["registry.url=https://registry.example.com/quiver: expected oci://"][..],
        ),
        (
            "bad-index",
            &[
                "shared (PostgreSQL) registry index is not built yet",
                "no --index flag",
            ],
        ),
        (
            "bad-replicas",
            &["3 hosts asked for", "which is not built yet"],
        ),
        (
            "bad-keda-max",
            &["4 hosts asked for", "which is not built yet"],
        ),
        ("bad-hpa-and-keda", &["KEDA makes and owns the HPA"]),
        (
            "bad-external-no-url",
            &["redis.mode=external needs redis.external.url"],
        ),
        (
            "bad-rediss",
            &["rediss:// (TLS to Redis) is not built into the quiver binary"],
        ),
    ]);
    let all: BTreeSet<&str> = cases.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = good.iter().copied().chain(bad.keys().copied()).collect();
    assert_eq!(all, expected, "every values file has its expectations here");
    for (name, texts) in bad {
        let err = cases[name]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} rendered"));
        assert!(err.contains("execution error"), "{name}: {err}");
        for text in texts {
            assert!(err.contains(text), "{name}: {err}");
        }
    }
}

#[test]
fn the_binary_starts_on_what_the_chart_passes_it_and_answers_its_probes() {
    let r = chart_report();
    let known = serve_env();
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path());
    for name in ["defaults", "full", "hpa", "no-redis"] {
        let case = &r["cases"][name];
        let host = host_container(case);
        let args: Vec<String> = serde_json::from_value(host["args"].clone()).unwrap();
        assert_eq!(args, ["serve"], "{name}");
        assert!(
            host["command"].is_null(),
            "{name}: the image's entrypoint runs"
        );
        let port = host["ports"][0]["containerPort"].as_u64().unwrap();
        let mounts = host["volumeMounts"].as_array().unwrap();
        let mount = |volume: &str| {
            mounts
                .iter()
                .find(|m| m["name"] == volume)
                .and_then(|m| m["mountPath"].as_str())
                .unwrap_or_else(|| panic!("{name}: no {volume} mount"))
                .to_string()
        };

        let data = tempfile::tempdir().unwrap();
        let mut redis = None;
        let mut registry = None;
        let mut env = BTreeMap::new();
        for e in host["env"].as_array().unwrap() {
            let var = e["name"].as_str().unwrap().to_string();
            assert!(known.contains(&var), "{name}: `quiver serve` has no {var}");
            let value = match (var.as_str(), e["value"].as_str()) {
                ("QUIVER_LISTEN", Some(v)) => {
                    assert_eq!(v, format!("0.0.0.0:{port}"), "{name}: the container port");
                    "127.0.0.1:0".to_string()
                }
                ("QUIVER_DATA_DIR", Some(v)) => {
                    assert_eq!(v, mount("data"), "{name}: the data volume");
                    data.path().to_str().unwrap().to_string()
                }
                ("QUIVER_REDIS", Some(v)) => {
                    // The internal Redis' Service, on loopback here.
                    let svc = find(case, "Service", "q-quiver-redis");
                    let p = &svc["spec"]["ports"][0]["port"];
                    assert_eq!(v, format!("redis://q-quiver-redis:{p}/0"), "{name}");
                    let r = redis.insert(TestRedis::start(None));
                    format!("redis://127.0.0.1:{}/0", r.port)
                }
                ("QUIVER_REDIS", None) => {
                    let sel = &e["valueFrom"]["secretKeyRef"];
                    let rendered = objects(case)
                        .into_iter()
                        .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == sel["name"]);
                    match rendered {
                        // The URL the chart wrote, with its password, pointed at loopback.
                        Some(s) => {
                            let url = base64_decode(
                                s["data"][sel["key"].as_str().unwrap()].as_str().unwrap(),
                            );
                            let url = String::from_utf8(url).unwrap();
                            let (auth, rest) = url
                                .strip_prefix("redis://")
                                .and_then(|u| u.split_once('@'))
                                .unwrap_or_else(|| panic!("{name}: {url}"));
                            let db = rest.split_once('/').map_or("0", |(_, db)| db);
                            let password = auth.trim_start_matches(':');
                            let r = redis.insert(TestRedis::start(Some(password)));
                            format!("redis://{auth}@127.0.0.1:{}/{db}", r.port)
                        }
                        // An existing Secret: any reachable Redis.
                        None => {
                            let r = redis.insert(TestRedis::start(None));
                            format!("redis://127.0.0.1:{}/0", r.port)
                        }
                    }
                }
                ("QUIVER_TLS_CERT", Some(v)) => {
                    assert_eq!(v, format!("{}/tls.crt", mount("tls")), "{name}");
                    cert.to_str().unwrap().to_string()
                }
                ("QUIVER_TLS_KEY", Some(v)) => {
                    assert_eq!(v, format!("{}/tls.key", mount("tls")), "{name}");
                    key.to_str().unwrap().to_string()
                }
                // A real OCI registry, on loopback.
                ("QUIVER_REGISTRY", Some(v)) => {
                    let path = v.strip_prefix("oci://").and_then(|r| r.split_once('/'));
                    let (_, path) = path.unwrap_or_else(|| panic!("{name}: {v}"));
                    registry.insert(OciRegistry::start()).oci_url(path)
                }
                ("QUIVER_REGISTRY_USERNAME" | "QUIVER_REGISTRY_PASSWORD", None) => {
                    assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], "registry-auth");
                    "quiver".to_string()
                }
                ("QUIVER_PRECOMPILED_KEY_FILE", Some(v)) => {
                    assert_eq!(v, format!("{}/key", mount("precompiled-key")), "{name}");
                    let file = certs.path().join("precompiled-key");
                    std::fs::write(&file, "a-key-the-hosts-share-0123456789abcdef").unwrap();
                    file.to_str().unwrap().to_string()
                }
                // Nothing leaves the machine: a loopback port nothing listens on.
                ("QUIVER_OTLP_ENDPOINT", Some(_)) => format!("http://127.0.0.1:{}", free_port()),
                ("QUIVER_HOST_ID", None) => {
                    assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");
                    "q-quiver-5d8f9-abcde".to_string()
                }
                (_, Some(v)) => v.to_string(),
                (_, None) => panic!("{name}: {var} from {}", e["valueFrom"]),
            };
            env.insert(var, value);
        }
        let running = Host::start(&args, &env);
        let tls = host["livenessProbe"]["httpGet"]["scheme"] == "HTTPS";
        assert_eq!(
            running.url.starts_with("https://"),
            tls,
            "{name}: {}",
            running.url
        );
        for probe in ["livenessProbe", "readinessProbe"] {
            let path = host[probe]["httpGet"]["path"].as_str().unwrap();
            assert_eq!(running.get(path), 200, "{name}: {probe} GET {path}");
        }
        // It is the Redis the chart named that the host uses.
        let health = Command::new("curl")
            .args(["-sk", &format!("{}/healthz", running.url)])
            .output()
            .unwrap();
        let health: Value = serde_json::from_slice(&health.stdout).unwrap();
        let backend = if redis.is_some() { "redis" } else { "embedded" };
        assert_eq!(health["features"]["backend"], backend, "{name}: {health}");
        assert_eq!(health["features"]["ready"], true, "{name}: {health}");
        assert!(data.path().join("admin-token").is_file(), "{name}");
    }
}

#[test]
fn the_dockerfile_is_multi_stage_non_root_and_ships_only_the_binary() {
    let parsed = run_py("dockerfile.py", &[repo().join("deploy/Dockerfile")]);
    let stages = parsed["stages"].as_array().unwrap();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    let build = &stages[0];
    assert_eq!(build["as"], "build");
    let instr = |stage: &Value, kind: &str| -> Vec<String> {
        stage["instructions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["instruction"] == kind)
            .map(|i| i["value"].as_str().unwrap().to_string())
            .collect()
    };

    // The builder: a Rust at least the workspace's rust-version, building the
    // default features (tract; no ONNX Runtime) of the `quiver` binary.
    let from = build["from"].as_str().unwrap();
    let tag = from.rsplit(':').next().unwrap();
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let wanted = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap();
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap()).collect() };
    let image_rust = tag.split('-').next().unwrap();
    assert!(
        version(image_rust) >= version(&wanted),
        "{from} < rust {wanted}"
    );
    let runs = instr(build, "RUN").join("\n");
    assert!(
        runs.contains("cargo build --locked --release --bin quiver"),
        "{runs}"
    );
    assert!(
        !runs.contains("--features"),
        "default features only: {runs}"
    );

    // Everything the host's build reads is copied in, and let through the
    // Dockerfile's .dockerignore: the workspace members and the host's path deps.
    let copied: BTreeSet<String> = instr(build, "COPY")
        .iter()
        .flat_map(|v| {
            let words: Vec<&str> = v.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    let members = manifest
        .lines()
        .find_map(|l| l.strip_prefix("members = "))
        .unwrap()
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|m| m.trim_matches('"').to_string());
    let host_manifest = std::fs::read_to_string(repo().join("host/Cargo.toml")).unwrap();
    let path_deps = host_manifest
        .split("path = \"../")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_string());
    let ignore = std::fs::read_to_string(repo().join("deploy/Dockerfile.dockerignore")).unwrap();
    for need in members
        .chain(path_deps)
        .chain(["Cargo.toml", "Cargo.lock", "wit"].map(String::from))
    {
        assert!(
            copied.contains(&need),
            "the build stage does not copy {need}: {copied:?}"
        );
        assert!(repo().join(&need).exists(), "{need}");
        let allowed = ignore
            .lines()
            .any(|l| l.trim_end_matches('/') == format!("!{need}"));
        assert!(allowed, "Dockerfile.dockerignore keeps {need} out");
    }

    // The final stage: the same Debian as the builder, one COPY (the binary), no
    // RUN or ADD, a numeric non-root USER, the binary as the entrypoint.
    let last = stages.last().unwrap();
    let runtime = last["from"].as_str().unwrap();
    assert!(runtime.contains("distroless/cc-debian12"), "{runtime}");
    assert!(
        from.contains("bookworm"),
        "builder on Debian 12 like {runtime}: {from}"
    );
    let copies = instr(last, "COPY");
    assert_eq!(copies, ["--from=build /out/quiver /usr/local/bin/quiver"]);
    assert!(
        runs.contains("/out/quiver"),
        "the build stage puts the binary at /out/quiver"
    );
    assert!(
        instr(last, "RUN").is_empty() && instr(last, "ADD").is_empty(),
        "{last}"
    );
    let user = instr(last, "USER");
    assert_eq!(user.len(), 1, "{user:?}");
    let uid: u32 = user[0]
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric USER");
    assert_ne!(uid, 0, "non-root");
    assert_eq!(instr(last, "ENTRYPOINT"), [r#"["/usr/local/bin/quiver"]"#]);
    assert_eq!(instr(last, "CMD"), [r#"["serve"]"#]);

    // The image's environment is `quiver serve`'s, and the port it exposes is the
    // one the host listens on.
    let known = serve_env();
    let mut env = BTreeMap::new();
    for v in instr(last, "ENV") {
        for pair in v.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("ENV K=V");
            assert!(known.contains(k), "`quiver serve` has no {k}");
            env.insert(k.to_string(), v.to_string());
        }
    }
    let listen = env["QUIVER_LISTEN"].clone();
    assert_eq!(instr(last, "EXPOSE"), [listen.rsplit(':').next().unwrap()]);
    assert!(listen.starts_with("0.0.0.0:"), "{listen}");
    assert!(
        env["QUIVER_DATA_DIR"].starts_with("/home/nonroot/"),
        "the nonroot user's home"
    );

    // The binary needs nothing distroless/cc lacks: glibc, libm, libgcc_s.
    let ldd = output_ok(
        &Command::new("ldd").arg(quiver_bin()).output().unwrap(),
        "ldd",
    );
    let in_distroless_cc = [
        "linux-vdso.so",
        "libgcc_s.so",
        "libm.so",
        "libc.so",
        "ld-linux-x86-64.so",
        "libpthread.so",
        "libdl.so",
        "librt.so",
    ];
    for line in ldd.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let lib = line.split_whitespace().next().unwrap();
        let lib = lib.rsplit('/').next().unwrap();
        assert!(
            in_distroless_cc.iter().any(|k| lib.starts_with(k)),
            "the binary links {lib}, which distroless/cc does not have:\n{ldd}"
        );
    }

    // The image's command line and environment start the host (on loopback here).
    let data = tempfile::tempdir().unwrap();
    env.insert("QUIVER_LISTEN".into(), "127.0.0.1:0".into());
    env.insert(
        "QUIVER_DATA_DIR".into(),
        data.path().join("quiver").to_str().unwrap().into(),
    );
    let host = Host::start(&["serve".to_string()], &env);
    assert_eq!(host.get("/healthz"), 200);
}

/// `key=value` lines of a unit's sections (repeated keys kept in order).
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = s.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.to_string(), v.to_string()));
        }
    }
    out
}

#[test]
fn the_systemd_unit_verifies_is_hardened_and_starts_the_binary() {
    let path = repo().join("deploy/systemd/quiver.service");
    let text = std::fs::read_to_string(&path).unwrap();
    let entries = unit_entries(&text);
    let get = |key: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|(s, k, _)| s == "Service" && k == key)
            .map(|(_, _, v)| v.clone())
            .collect()
    };
    let one = |key: &str| -> String {
        let v = get(key);
        assert_eq!(v.len(), 1, "{key}: {v:?}");
        v[0].clone()
    };

    // Hardening.
    assert!(
        one("DynamicUser") == "yes" || !get("User").is_empty(),
        "a user of its own"
    );
    for (key, want) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("StateDirectory", "quiver"),
        ("Restart", "on-failure"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(key), want, "{key}");
    }
    // wasmtime maps compiled code executable: this would break every call.
    assert!(get("MemoryDenyWriteExecute").iter().all(|v| v != "yes"));

    // The command and environment are `quiver serve`'s; the data dir is the
    // StateDirectory.
    let exec = one("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/quiver"));
    let args: Vec<String> = words.map(String::from).collect();
    assert_eq!(args, ["serve"]);
    let known = serve_env();
    let mut env = BTreeMap::new();
    for e in get("Environment") {
        let (k, v) = e.split_once('=').unwrap();
        assert!(known.contains(k), "`quiver serve` has no {k}");
        env.insert(k.to_string(), v.to_string());
    }
    assert_eq!(
        env["QUIVER_DATA_DIR"],
        format!("/var/lib/{}", one("StateDirectory"))
    );
    let example = std::fs::read_to_string(repo().join("deploy/systemd/quiver.env")).unwrap();
    let mut named = 0;
    for line in example.lines().filter_map(|l| l.strip_prefix('#')) {
        if let Some((k, _)) = line
            .split_once('=')
            .filter(|(k, _)| k.starts_with("QUIVER_"))
        {
            assert!(
                known.contains(k),
                "quiver.env names {k}, which `quiver serve` lacks"
            );
            named += 1;
        }
    }
    assert!(named >= 5, "quiver.env shows the usual settings");

    // systemd's own checks, on a copy whose ExecStart is the binary built here:
    // `verify` (syntax, unknown keys, the command exists) and the offline security
    // score (0 best, 10 worst; 3.0 "OK" is 30 on --threshold's scale).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("quiver.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/quiver", quiver_bin().to_str().unwrap()),
    )
    .unwrap();
    match Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
    {
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.trim().is_empty(),
                "systemd-analyze verify:\n{stderr}"
            );
            let out = Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--threshold=30"])
                .arg(&copy)
                .output()
                .unwrap();
            let report = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "exposure above 3.0:\n{report}");
            assert!(report.contains("Overall exposure level"), "{report}");
        }
        Err(e) => eprintln!("systemd-analyze not here ({e}): the unit was only parsed"),
    }

    // What systemd would run starts (the data dir as StateDirectory makes it).
    let data = tempfile::tempdir().unwrap();
    let state = data.path().join("quiver");
    env.insert("QUIVER_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("QUIVER_DATA_DIR".into(), state.to_str().unwrap().into());
    let host = Host::start(&args, &env);
    assert_eq!(host.get("/healthz"), 200);
    assert!(state.join("admin-token").is_file());
}

/// local-cluster.sh's `down` with the same settings, run however the test ends.
struct Cluster {
    env: Vec<(String, String)>,
}

impl Cluster {
    /// At most 5 minutes (a first `up` may build the demo function).
    fn script(&self, command: &str) -> Output {
        Command::new("timeout")
            .args(["300", "bash"])
            .arg(repo().join("deploy/local-cluster.sh"))
            .arg(command)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("deploy/local-cluster.sh")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.script("down");
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

struct Answer {
    at: Instant,
    get: bool,
    status: Option<u16>,
    upstream: String,
}

#[test]
fn the_local_cluster_keeps_answering_when_a_host_is_killed() {
    for tool in ["redis-server", "redis-cli", "nginx", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} is needed (scripts/test.sh installs it)"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cluster_dir = dir.path().join("cluster");
    let (nginx, redis) = (free_port(), free_port());
    let hosts = [free_port(), free_port(), free_port()];
    let cluster = Cluster {
        env: vec![
            ("QUIVER_BIN".into(), quiver_bin().to_str().unwrap().into()),
            ("CLUSTER_DIR".into(), cluster_dir.to_str().unwrap().into()),
            ("NGINX_PORT".into(), nginx.to_string()),
            ("REDIS_PORT".into(), redis.to_string()),
            ("HOST_PORTS".into(), hosts.map(|p| p.to_string()).join(" ")),
        ],
    };
    let up = output_ok(&cluster.script("up"), "local-cluster.sh up");
    assert!(
        up.contains("deploying hello-http (public) to each host separately"),
        "{up}"
    );
    assert_eq!(up.matches("deployed hello-http@").count(), 3, "{up}");
    assert!(up.trim_end().ends_with("up"), "{up}");
    let pids: BTreeMap<String, u32> = std::fs::read_to_string(cluster_dir.join("pids"))
        .unwrap()
        .lines()
        .map(|l| {
            let (name, pid) = l.split_once(' ').unwrap();
            (name.to_string(), pid.parse().unwrap())
        })
        .collect();
    let names: Vec<&str> = pids.keys().map(String::as_str).collect();
    assert_eq!(names, ["host1", "host2", "host3", "nginx", "redis"]);
    assert!(pids.values().all(|p| alive(*p)), "{pids:?}");
    let status = output_ok(&cluster.script("status"), "status");
    assert_eq!(status.matches(" running").count(), 5, "{status}");

    // Every host shares the one Redis; each has its own data dir and token.
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tokens = BTreeSet::new();
    for (i, port) in hosts.iter().enumerate() {
        let health: Value = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(health["features"]["backend"], "redis", "{health}");
        assert_eq!(health["features"]["ready"], true, "{health}");
        let token = cluster_dir.join(format!("host{}/admin-token", i + 1));
        tokens.insert(std::fs::read_to_string(token).unwrap());
    }
    assert_eq!(tokens.len(), 3, "no shared tenancy yet: a token per host");

    // Round robin: every host answers through nginx.
    let base = format!("http://127.0.0.1:{nginx}/http/default/hello-http");
    let mut seen = BTreeSet::new();
    for _ in 0..12 {
        let resp = client.get(format!("{base}/hi")).send().unwrap();
        assert_eq!(resp.status(), 200);
        seen.insert(
            resp.headers()["x-quiver-upstream"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        assert_eq!(resp.text().unwrap().trim(), "hello from Quiver: GET /hi");
    }
    let all: BTreeSet<String> = hosts.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    assert_eq!(seen, all);

    // Four callers, GETs and POSTs busy 20 ms each; host2 is SIGKILLed a second in;
    // they go on until 7 s after the kill (past nginx's fail_timeout of 5 s, when it
    // tries host2 again), at most 1500 calls each.
    const CALLERS: usize = 4;
    let answers = Arc::new(Mutex::new(Vec::<Answer>::new()));
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (answers, killed_at) = (answers.clone(), killed_at.clone());
            let (client, base) = (client.clone(), base.clone());
            std::thread::spawn(move || {
                for i in 0..1500 {
                    if killed_at
                        .lock()
                        .unwrap()
                        .is_some_and(|k| k.elapsed() > Duration::from_secs(7))
                    {
                        break;
                    }
                    let get = (i + c) % 2 == 0;
                    let req = match get {
                        true => client.get(format!("{base}/spin/20")),
                        false => client.post(format!("{base}/spin/20")).body("x"),
                    };
                    let (status, upstream) = match req.send() {
                        Ok(r) => {
                            let up = r
                                .headers()
                                .get("x-quiver-upstream")
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_default();
                            let s = r.status().as_u16();
                            match r.text() {
                                Ok(_) => (Some(s), up),
                                Err(_) => (None, up),
                            }
                        }
                        Err(_) => (None, String::new()),
                    };
                    answers.lock().unwrap().push(Answer {
                        at: Instant::now(),
                        get,
                        status,
                        upstream,
                    });
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let victim = pids["host2"];
    output_ok(
        &Command::new("kill")
            .args(["-9", &victim.to_string()])
            .output()
            .unwrap(),
        "kill -9",
    );
    let kill = Instant::now();
    *killed_at.lock().unwrap() = Some(kill);
    for c in callers {
        c.join().unwrap();
    }
    assert!(!alive(victim), "host2 is dead");

    let answers = answers.lock().unwrap();
    let failed: Vec<&Answer> = answers.iter().filter(|a| a.status != Some(200)).collect();
    let (before, after) = answers.iter().partition::<Vec<&Answer>, _>(|a| a.at < kill);
    let failed_gets = failed.iter().filter(|a| a.get).count();
    let last_failure = failed
        .iter()
        .map(|a| a.at.saturating_duration_since(kill))
        .max();
    eprintln!(
        "local cluster: {} calls ({} before the kill, {} after), {} failed ({} GET, {} POST), \
         statuses {:?}, the last {last_failure:?} after the kill",
        answers.len(),
        before.len(),
        after.len(),
        failed.len(),
        failed_gets,
        failed.len() - failed_gets,
        failed.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert!(
        before.len() >= 8 && after.len() >= 50,
        "enough traffic on both sides"
    );
    // The bound: at most the calls in flight on host2 when it died, one per caller,
    // and only then.
    assert!(failed.len() <= CALLERS, "{} calls failed", failed.len());
    for f in &failed {
        let late = f.at.saturating_duration_since(kill);
        assert!(
            late < Duration::from_secs(2),
            "a call failed {late:?} after the kill"
        );
    }
    // After the kill no answer comes from host2, though nginx tries it again after
    // fail_timeout (its refused connection goes on to the next host).
    let dead = format!("127.0.0.1:{}", hosts[1]);
    let settled = kill + Duration::from_secs(1);
    for a in answers
        .iter()
        .filter(|a| a.at > settled && a.status == Some(200))
    {
        let last = a.upstream.rsplit(", ").next().unwrap();
        assert_ne!(last, dead, "answered by the dead host: {}", a.upstream);
    }
    let retried = after.iter().filter(|a| a.upstream.contains(&dead)).count();
    eprintln!("local cluster: {retried} calls after the kill tried host2 first and went on");
    assert!(answers
        .iter()
        .filter(|a| a.at > settled)
        .all(|a| a.status == Some(200)));
    drop(answers);

    // `down` stops everything by pid; nothing listens any more.
    let down = output_ok(&cluster.script("down"), "local-cluster.sh down");
    assert!(down.contains("stopped"), "{down}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.values().any(|p| alive(*p)) {
        assert!(
            Instant::now() < deadline,
            "still running after down: {pids:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for port in [nginx, redis, hosts[0], hosts[2]] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open"
        );
    }
    assert!(!cluster_dir.join("pids").exists());
}
