//! Acceptance 1: `quiver demo` runs the whole pipeline on embedded defaults.
use quiver_tests::{quiver_bin, repo};
use std::process::{Command, Stdio};

#[test]
fn demo_deploys_and_runs_the_pipeline() {
    let data = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(quiver_bin())
            .current_dir(repo())
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .stdin(Stdio::null())
            .output()
            .expect("run quiver demo")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "deployed ingest-json",
        "deployed txn-features",
        "deployed hello-http",
        "deployed fraud-score",
        "deployed fraud-pipeline",
        "model    fraud-model",
        "ingest-json → txn-features → fraud-score",
        "t-1001",
        "score",
        "label",
        "rejected row 3",
        "merchant_txns",
        "feature store (embedded)",
        "hello from Quiver: GET /demo",
        "/v2/tenants/default/models/fraud-score/infer",
        "the ML loop, in tenant `loop-",
        "▶ trained  fraud-model@1.1.0: passed: auc",
        "`challenger` moved to it",
        "lineage: dataset sha256:",
        "trainer retrain-fraud@1.1.0, features txn-features@1.0.0, parent 1.0.0",
        "rollout 1 of fraud-model@1.1.0: step shadow passed",
        "rollout 1 of fraud-model@1.1.0: step 100%   promoted",
        "▶ rollout 1: promoted — every step passed (shadow → 10% → 50% → 100%); `champion` moved to 1.1.0",
        "▶ normal traffic: drift-monitor over the newest 600 rows of fraud-model@1.1.0",
        "drift.detected: ",
        "▶ retrained by the event: fraud-model@1.2.0 (parent 1.1.0)",
        "▶ rollout 2: promoted — every step passed (shadow → 10% → 50% → 100%); `champion` moved to 1.2.0",
        "drift injected → fraud-model@1.2.0 serving 100 % as champion: ",
        "a deliberately bad trainer (labels flipped): fraud-model@1.3.0-rejected: failed: auc",
        "no alias moved",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(data.path().join("registry/index.sqlite3").is_file());
    // A second run on the same data is idempotent.
    let again = run();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
