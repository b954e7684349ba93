//! `--registry oci://…` against a real OCI registry (Debian's `docker-registry`,
//! distribution v2, on loopback): what Quiver pushes is a CNCF Wasm OCI artifact
//! another client reads through the distribution API; what another client pushes
//! Quiver deploys; a host that lacks a version's bytes pulls them, verified.

use quiver_tests::{built_component, error_of, OciRegistry, Server};
use serde_json::{json, Value};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn get_json(url: &str) -> Value {
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .header("accept", OCI_MANIFEST)
        .send()
        .expect("GET");
    assert_eq!(resp.status(), 200, "{url}");
    resp.json().expect("JSON")
}

fn get_bytes(url: &str) -> Vec<u8> {
    let resp = reqwest::blocking::get(url).expect("GET");
    assert_eq!(resp.status(), 200, "{url}");
    resp.bytes().expect("body").to_vec()
}

fn sha256_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Push a blob with the distribution API's monolithic upload (POST, then PUT).
fn push_blob(base: &str, repo: &str, bytes: &[u8]) -> String {
    let http = reqwest::blocking::Client::new();
    let resp = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/"))
        .send()
        .expect("start upload");
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let location = match location.starts_with("http") {
        true => location,
        false => format!("{base}{location}"),
    };
    let digest = sha256_of(bytes);
    let sep = if location.contains('?') { '&' } else { '?' };
    let resp = http
        .put(format!("{location}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .expect("finish upload");
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
    digest
}

/// Push `layer` as a one-layer artifact tagged `tag`, the way any OCI tool does.
fn push_artifact(base: &str, repo: &str, tag: &str, layer: &[u8], layer_type: &str) {
    let layer_digest = push_blob(base, repo, layer);
    let config = json!({
        "created": "2026-12-04T00:00:00Z", "architecture": "wasm", "os": "wasip2",
        "layerDigests": [layer_digest],
    })
    .to_string();
    let config_digest = push_blob(base, repo, config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.wasm.config.v0+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": layer_digest, "size": layer.len()}],
    });
    let resp = reqwest::blocking::Client::new()
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.to_string())
        .send()
        .expect("push manifest");
    assert_eq!(resp.status(), 201, "{:?}", resp.text());
}

fn invoke_status(server: &Server, function: &str) -> reqwest::blocking::Response {
    server.post(
        &format!("/fn/default/{function}"),
        "application/json",
        quiver_tests::txns(&[4.5]),
    )
}

/// Empty the host's blob store and its compiled code, as on a host that never had
/// these bytes.
fn forget_local_blobs(server: &Server) {
    for dir in ["registry/blobs/sha256", "aot"] {
        let dir = server.data_dir.join(dir);
        std::fs::remove_dir_all(&dir).expect("remove");
        std::fs::create_dir_all(&dir).expect("recreate");
    }
}

fn local_blobs(server: &Server) -> usize {
    std::fs::read_dir(server.data_dir.join("registry/blobs/sha256"))
        .expect("blobs")
        .count()
}

#[test]
fn artifacts_go_to_the_oci_registry_and_come_back_verified() {
    let registry = OciRegistry::start();
    let base = registry.http_url();
    let flag = registry.oci_url("quiver");
    let mut server = Server::start_with(&["--registry", &flag]);

    // Quiver pushes: a Wasm OCI artifact, read back through the plain API.
    let out: Value =
        serde_json::from_str(&server.cli_ok(&["--json", "deploy", "functions/txn-features"]))
            .expect("deploy --json");
    let digest = out["digest"].as_str().expect("digest").to_string();
    let repo = "quiver/default/fn/txn-features";
    let tags = get_json(&format!("{base}/v2/{repo}/tags/list"));
    assert_eq!(tags["tags"], json!(["1.0.0"]));
    let manifest = get_json(&format!("{base}/v2/{repo}/manifests/1.0.0"));
    assert_eq!(manifest["mediaType"], OCI_MANIFEST);
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], "application/wasm");
    assert_eq!(layers[0]["digest"], digest.as_str());
    let config: Value = serde_json::from_slice(&get_bytes(&format!(
        "{base}/v2/{repo}/blobs/{}",
        manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
    )))
    .expect("config JSON");
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("wasip2"), Some("wasm"))
    );
    assert_eq!(config["layerDigests"], json!([digest]));
    let layer = get_bytes(&format!("{base}/v2/{repo}/blobs/{digest}"));
    assert_eq!(sha256_of(&layer), digest);
    assert_eq!(layer, built_component("txn-features"));

    // Models are OCI artifacts too.
    server.push_model(
        "functions/fraud-score/model/fraud.onnx",
        "fraud-model",
        "1.0.0",
    );
    let model = get_json(&format!(
        "{base}/v2/quiver/default/model/fraud-model/manifests/1.0.0"
    ));
    assert_eq!(model["artifactType"], "application/vnd.quiver.model.v1");
    let model_digest = model["layers"][0]["digest"].as_str().expect("digest");
    let onnx = std::fs::read(quiver_tests::repo().join("functions/fraud-score/model/fraud.onnx"))
        .expect("fraud.onnx");
    assert_eq!(sha256_of(&onnx), model_digest);
    server.deploy("fraud-score");

    // A host without the bytes pulls them (component and model) by digest.
    server.terminate();
    forget_local_blobs(&server);
    let mut server = Server::start_in_with(&server.data_dir, &["--registry", &flag]);
    let resp = invoke_status(&server, "txn-features");
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    let (rows, _) = quiver_tests::fraud_reference();
    let resp = server.post(
        "/fn/default/fraud-score",
        "application/json",
        quiver_tests::fraud_input_rows(&rows[..1]).to_string(),
    );
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert!(server
        .data_dir
        .join(format!(
            "registry/blobs/sha256/{}/{}",
            &digest[7..9],
            &digest[7..]
        ))
        .is_file());

    // Bytes changed in the registry's storage are refused on pull, with the reason,
    // and nothing is kept.
    server.terminate();
    forget_local_blobs(&server);
    let mut junk = layer.clone();
    junk[100] ^= 0xff;
    std::fs::write(registry.blob_file(&digest), &junk).expect("tamper");
    let server = Server::start_in_with(&server.data_dir, &["--registry", &flag]);
    let (status, code, message) = error_of(invoke_status(&server, "txn-features"));
    assert_eq!(
        (status, code.as_str()),
        (502, "registry_unavailable"),
        "{message}"
    );
    assert!(
        message.contains("refused") || message.contains("igest"),
        "{message}"
    );
    assert_eq!(local_blobs(&server), 0, "a corrupt pull is not kept");

    // Another tool pushes; Quiver deploys from the registry, verified, and runs it.
    std::fs::write(registry.blob_file(&digest), &layer).expect("restore");
    let other = "other/tools/txn";
    push_artifact(&base, other, "2.1.0", &layer, "application/wasm");
    let url = registry.oci_url(&format!("{other}:2.1.0"));
    let out: Value = serde_json::from_str(&server.cli_ok(&[
        "--json",
        "deploy",
        &url,
        "--kind",
        "transform",
        "--name",
        "from-oci",
        "--set",
        "features.groups=[\"merchant\"]",
    ]))
    .expect("deploy --json");
    assert_eq!(out["version"], "2.1.0", "the tag is the version");
    assert_eq!(out["digest"], digest.as_str());
    let resp = invoke_status(&server, "from-oci");
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    // Not a Wasm artifact: refused, naming why.
    push_artifact(
        &base,
        "other/tools/notwasm",
        "1.0.0",
        b"hello",
        "text/plain",
    );
    let err = server.cli_err(&[
        "deploy",
        &registry.oci_url("other/tools/notwasm:1.0.0"),
        "--kind",
        "transform",
    ]);
    assert!(err.contains("application/wasm"), "{err}");
}

#[test]
fn precompiled_code_is_pulled_only_with_a_mac_under_the_hosts_key() {
    let registry = OciRegistry::start();
    let base = registry.http_url();
    let flag = registry.oci_url("quiver");
    let keys = tempfile::tempdir().expect("tempdir");
    let (key_a, key_b, short) = (
        keys.path().join("a"),
        keys.path().join("b"),
        keys.path().join("short"),
    );
    std::fs::write(&key_a, "a-secret-the-hosts-share-0123456789abcdef\n").expect("key");
    std::fs::write(&key_b, "another-secret-no-host-shares-0123456789").expect("key");
    std::fs::write(&short, "too-short").expect("key");
    let serve = |dir: Option<&std::path::Path>, key: &std::path::Path| -> Server {
        let key = key.to_str().expect("utf-8");
        let flags = ["--registry", flag.as_str(), "--precompiled-key-file", key];
        match dir {
            Some(dir) => Server::start_in_with(dir, &flags),
            None => Server::start_with(&flags),
        }
    };

    // A key too short to be a secret, or one without a registry: refused at start.
    let err = quiver_tests::serve_refused(&[
        "--registry",
        &flag,
        "--precompiled-key-file",
        short.to_str().expect("utf-8"),
    ]);
    assert!(err.contains("at least 32"), "{err}");
    let err =
        quiver_tests::serve_refused(&["--precompiled-key-file", key_a.to_str().expect("utf-8")]);
    assert!(err.contains("--registry"), "{err}");

    // The deploy pushes the code it compiled beside the component, with a MAC.
    let mut server = serve(None, &key_a);
    server.deploy("txn-features");
    let repo = "quiver/default/aot/txn-features";
    let tags = get_json(&format!("{base}/v2/{repo}/tags/list"));
    let tags = tags["tags"].as_array().expect("tags");
    assert_eq!(tags.len(), 1, "{tags:?}");
    let tag = tags[0].as_str().expect("tag").to_string();
    assert!(
        tag.starts_with("1.0.0-") && tag.len() == "1.0.0-".len() + 16,
        "{tag}"
    );
    let manifest = get_json(&format!("{base}/v2/{repo}/manifests/{tag}"));
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.quiver.precompiled.v1"
    );
    let mac = manifest["annotations"]["dev.quiver.precompiled.mac"]
        .as_str()
        .expect("a MAC");
    assert_eq!(mac.len(), 64, "HMAC-SHA256 in hex");
    let code_digest = manifest["layers"][0]["digest"]
        .as_str()
        .expect("layer digest")
        .to_string();
    let local_code: Vec<_> = std::fs::read_dir(server.data_dir.join("aot"))
        .expect("aot")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .collect();
    assert_eq!(local_code.len(), 1);
    assert_eq!(
        sha256_of(&local_code[0]),
        code_digest,
        "the deploy's own code"
    );

    // A host that never had this version's bytes or code loads the precompiled code:
    // nothing compiled, and the component itself is not even pulled.
    server.terminate();
    forget_local_blobs(&server);
    let dir = server.data_dir.clone();
    let mut server = serve(Some(&dir), &key_a);
    let resp = invoke_status(&server, "txn-features");
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert_eq!(server.metric("quiver_compilations_total"), Some(0.0));
    assert_eq!(
        server.metric(r#"quiver_precompiled_pulls_total{outcome="loaded"}"#),
        Some(1.0)
    );
    assert_eq!(local_blobs(&server), 0, "the code was enough");

    // Under another key the MAC does not verify: refused, compiled from the
    // component instead, and still served.
    server.terminate();
    forget_local_blobs(&server);
    let mut server = serve(Some(&dir), &key_b);
    let resp = invoke_status(&server, "txn-features");
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert_eq!(server.metric("quiver_compilations_total"), Some(1.0));
    assert_eq!(
        server.metric(r#"quiver_precompiled_pulls_total{outcome="refused"}"#),
        Some(1.0)
    );
    assert_eq!(
        local_blobs(&server),
        1,
        "the component was pulled to compile"
    );

    // Code changed in the registry's storage under a valid MAC: its digest no
    // longer matches what the MAC covers, so it is refused too.
    server.terminate();
    forget_local_blobs(&server);
    let mut junk = std::fs::read(registry.blob_file(&code_digest)).expect("code blob");
    let at = junk.len() / 2;
    junk[at] ^= 0xff;
    std::fs::write(registry.blob_file(&code_digest), &junk).expect("tamper");
    let mut server = serve(Some(&dir), &key_a);
    let resp = invoke_status(&server, "txn-features");
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert_eq!(server.metric("quiver_compilations_total"), Some(1.0));
    assert_eq!(
        server.metric(r#"quiver_precompiled_pulls_total{outcome="refused"}"#),
        Some(1.0)
    );
    assert_eq!(
        server.metric(r#"quiver_precompiled_pulls_total{outcome="loaded"}"#),
        None
    );
    let kept: Vec<_> = std::fs::read_dir(dir.join("aot"))
        .expect("aot")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .collect();
    assert_eq!(kept.len(), 1);
    assert_ne!(kept[0], junk, "what is cached is this host's own compile");
    server.terminate();
}
