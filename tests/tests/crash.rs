//! A `kill -9` at any point of a deploy leaves either the whole version or none of it.
use quiver_tests::{quiver_bin, read_sample, repo, Server};
use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn kill_9_during_deploys_never_leaves_a_half_version() {
    let dir = tempfile::tempdir().unwrap();
    let rounds = 8u64;
    for round in 0..=rounds {
        let mut server = Server::start_in(dir.path());
        let mut deploy = Command::new(quiver_bin())
            .current_dir(repo())
            .env("QUIVER_SERVER", &server.url)
            .env("QUIVER_TOKEN", &server.admin_token)
            .args([
                "deploy",
                "functions/txn-features",
                "--version",
                &format!("1.0.{round}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if round < rounds {
            // Kill the server (SIGKILL) at a different point of each deploy.
            std::thread::sleep(Duration::from_millis(round * 60));
            server.kill();
            let _ = deploy.wait();
        } else {
            // The last round completes, so at least one version exists.
            assert!(deploy.wait().unwrap().success());
        }
    }

    let server = Server::start_in(dir.path());
    let v: Value =
        serde_json::from_str(&server.cli_ok(&["versions", "txn-features", "--json"])).unwrap();
    let versions = v["versions"].as_array().unwrap();
    assert!(!versions.is_empty());
    for rec in versions {
        let version = rec["version"].as_str().unwrap();
        let r = server.post(
            &format!("/fn/default/txn-features@{version}"),
            "application/json",
            read_sample("txn-features"),
        );
        assert_eq!(
            r.status(),
            200,
            "version {version} is listed but does not serve"
        );
    }
    let tmp = std::fs::read_dir(dir.path().join("registry/blobs/tmp"))
        .unwrap()
        .count();
    assert_eq!(tmp, 0, "unfinished blob writes are cleaned up at start");
}
