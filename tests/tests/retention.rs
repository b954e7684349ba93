//! Delete and retention end to end: `quiver rm`, `quiver models rm` and `quiver gc`,
//! and a collection racing deploys of the very bytes it is collecting.
use quiver_tests::{built_component, read_sample, Server};
use std::path::Path;
use std::sync::Arc;

fn blob_path(data_dir: &Path, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    data_dir
        .join("registry/blobs/sha256")
        .join(&hex[..2])
        .join(hex)
}

fn artifacts(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("aot"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn rm_refuses_what_serves_and_gc_removes_what_nothing_references() {
    let server = Server::start();
    server.deploy("txn-features");
    server.deploy_with("txn-features", &["--version", "1.1.0"]);
    let err = server.cli_err(&["rm", "txn-features@1.1.0"]);
    assert!(
        err.contains("serving version") && err.contains("--force"),
        "{err}"
    );
    let err = server.cli_err(&["rm", "txn-features"]);
    assert!(err.contains("txn-features@VERSION"), "{err}");
    let out = server.cli_ok(&["rm", "txn-features@1.0.0"]);
    assert!(
        out.contains("deleted txn-features@1.0.0; txn-features serves 1.1.0"),
        "{out}"
    );
    let resp = server.post(
        "/fn/default/txn-features@1.0.0",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(resp.status(), 404, "a deleted version is gone");
    let versions = server.cli_ok(&["versions", "txn-features", "--json"]);
    assert!(!versions.contains("\"1.0.0\""), "{versions}");

    // A pipeline pins its stages: deleting one is refused.
    server.deploy("ingest-json");
    server.deploy_fraud_score();
    server.deploy("fraud-pipeline");
    server.deploy_with("txn-features", &["--version", "1.2.0"]);
    let err = server.cli_err(&["rm", "txn-features@1.1.0"]);
    assert!(
        err.contains("is a stage of pipeline fraud-pipeline@"),
        "{err}"
    );

    // chaos: one version, forced out; then its blob and artifact are garbage.
    let deployed = server.cli_ok(&["deploy", "functions/chaos", "--json"]);
    let digest = serde_json::from_str::<serde_json::Value>(&deployed).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let resp = server.post(
        "/fn/default/chaos",
        "application/json",
        r#"[{"mode": "echo"}]"#,
    );
    assert_eq!(resp.status(), 200);
    assert!(blob_path(&server.data_dir, &digest).is_file());
    let before = artifacts(&server.data_dir);
    let out = server.cli_ok(&["rm", "--force", "chaos@1.2.0"]);
    assert!(out.contains("no version of chaos is left"), "{out}");
    let resp = server.post(
        "/fn/default/chaos",
        "application/json",
        r#"[{"mode": "echo"}]"#,
    );
    assert_eq!(resp.status(), 404);
    // Still on disk until collected.
    assert!(blob_path(&server.data_dir, &digest).is_file());
    let gc: serde_json::Value = serde_json::from_str(&server.cli_ok(&["gc", "--json"])).unwrap();
    assert_eq!(gc["blobs_removed"], 1, "{gc}");
    assert!(gc["artifacts_removed"].as_u64().unwrap() >= 1, "{gc}");
    assert!(!blob_path(&server.data_dir, &digest).exists());
    assert!(artifacts(&server.data_dir) < before);
    // What still serves is untouched by the collection.
    let resp = server.post(
        "/fn/default/txn-features",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(resp.status(), 200);
    let again: serde_json::Value = serde_json::from_str(&server.cli_ok(&["gc", "--json"])).unwrap();
    assert_eq!(again["blobs_removed"], 0, "{again}");

    // Models: a bound version is refused, an unbound one goes.
    server.push_model(
        "functions/fraud-score/model/fraud.onnx",
        "other-model",
        "1.0.0",
    );
    server.cli_ok(&["models", "rm", "other-model@1.0.0"]);
    let err = server.cli_err(&["models", "rm", "fraud-model@1.0.0"]);
    assert!(err.contains("bound by fraud-score@"), "{err}");
    let listed = server.cli_ok(&["models", "ls", "--json"]);
    assert!(
        !listed.contains("other-model") && listed.contains("fraud-model"),
        "{listed}"
    );
}

/// The collector never takes a blob a deploy is publishing: 20 times, a version of
/// bytes that are garbage (their last version was just deleted) is deployed while
/// `gc` runs over and over; each keeps its blob, and the last serves after a
/// restart with no compiled artifacts left (which needs the blob).
#[test]
fn gc_racing_deploys_of_the_same_bytes_keeps_every_published_blob() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path());
    server.deploy("txn-features");
    let component = built_component("txn-features");
    let digest = {
        let out = server.cli_ok(&["versions", "txn-features", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["versions"][0]["digest"].as_str().unwrap().to_string()
    };
    server.cli_ok(&["rm", "--force", "txn-features@1.0.0"]);
    let shared = Arc::new(server);
    let collector = {
        let s = shared.clone();
        std::thread::spawn(move || {
            for _ in 0..30 {
                s.cli_ok(&["gc", "--json"]);
            }
        })
    };
    for i in 1..=20 {
        let manifest =
            format!("[function]\nname = 'txn-features'\nversion = '1.0.{i}'\nkind = 'transform'\n");
        assert_eq!(
            shared.deploy_raw("default", &manifest, component.clone()),
            201
        );
        assert!(
            blob_path(dir.path(), &digest).is_file(),
            "1.0.{i} is published but its blob is gone"
        );
        // Unreferenced again, so the next deploy races the collector too.
        if i < 20 {
            shared.cli_ok(&["rm", "--force", &format!("txn-features@1.0.{i}")]);
        }
    }
    collector.join().unwrap();
    shared.cli_ok(&["gc"]);
    assert!(blob_path(dir.path(), &digest).is_file());
    server = Arc::try_unwrap(shared).ok().expect("the collector is done");
    server.kill();
    // Restarted, with the AOT cache gone: every version loads from its blob.
    std::fs::remove_dir_all(dir.path().join("aot")).unwrap();
    let server = Server::start_in(dir.path());
    let resp = server.post(
        "/fn/default/txn-features@1.0.20",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(resp.status(), 200);
}
