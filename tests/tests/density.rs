//! Density: deployed-but-Cold functions cost (almost) nothing, and memory taken by a
//! burst of warm functions goes back once they are idle past `idle_timeout`.
use quiver_tests::{built_component, Server};

use serde_json::Value;
use std::time::{Duration, Instant};

const FUNCTIONS: usize = 1000;
const BURST: usize = 100;
const MIB: u64 = 1 << 20;

/// idle_timeout is 6 s: long enough that a burst slowed down by a loaded CI machine
/// is counted before its first functions go Cold again.
fn manifest(i: usize) -> String {
    format!(
        "[function]\nname = \"f-{i}\"\nversion = \"1.0.0\"\nkind = \"transform\"\n\
         [scaling]\nidle_timeout = \"6s\"\n"
    )
}

fn states(server: &Server) -> Vec<String> {
    let ls: Value = server
        .get("/admin/v1/tenants/default/functions")
        .json()
        .unwrap();
    ls["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["state"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_thousand_cold_functions_stay_small_and_a_burst_gives_memory_back() {
    let server = Server::start();
    server.deploy("chaos"); // builds the component
    let component = built_component("chaos");
    for i in 0..FUNCTIONS {
        let status = server.deploy_raw("default", &manifest(i), component.clone());
        assert_eq!(status, 201, "deploying f-{i}");
    }
    let all = states(&server);
    assert_eq!(all.len(), FUNCTIONS + 1);
    assert!(
        all.iter().all(|s| s == "cold"),
        "deploy leaves functions Cold"
    );
    let cold = server.rss_bytes();
    eprintln!("RSS with {FUNCTIONS} Cold functions: {} MiB", cold / MIB);
    assert!(
        cold <= 150 * MIB,
        "{FUNCTIONS} Cold functions: RSS {} MiB is over 150 MiB",
        cold / MIB
    );

    // A burst that warms 100 of them, 4 requests at a time; chaos `grow` touches
    // 8 MiB, which its warm instance keeps until the function goes Cold.
    let sample = br#"[{"mode": "grow"}]"#.to_vec();
    std::thread::scope(|s| {
        for lane in 0..4 {
            let (server, sample) = (&server, &sample);
            s.spawn(move || {
                for i in (lane..BURST).step_by(4) {
                    let r = server.post(
                        &format!("/fn/default/f-{i}"),
                        "application/json",
                        sample.clone(),
                    );
                    assert_eq!(r.status(), 200, "f-{i}");
                }
            });
        }
    });
    let warm_count = states(&server).iter().filter(|s| *s != "cold").count();
    assert_eq!(warm_count, BURST, "the burst warmed {BURST} functions");
    let warm = server.rss_bytes();
    eprintln!("RSS with {BURST} warm: {} MiB", warm / MIB);

    let deadline = Instant::now() + Duration::from_secs(30);
    while states(&server).iter().any(|s| s != "cold") {
        assert!(Instant::now() < deadline, "the burst did not go Cold");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Memory goes back as the evicted instances' drops finish: sample for a few
    // seconds and keep the lowest reading.
    // "Back near its Cold level": at least 96 % of what the burst took is returned
    // (what stays is the allocator's fragmentation and code pages the burst touched).
    let mut after = server.rss_bytes();
    let near = |after: u64| after <= cold + warm.saturating_sub(cold) / 25;
    let settle = Instant::now() + Duration::from_secs(10);
    while !near(after) && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(200));
        after = after.min(server.rss_bytes());
    }
    eprintln!("RSS after idle_timeout: {} MiB", after / MIB);
    assert!(
        warm >= cold + 100 * MIB,
        "the burst should hold memory while warm (else this test shows nothing): cold {} MiB, warm {} MiB",
        cold / MIB,
        warm / MIB
    );
    assert!(
        near(after),
        "RSS did not come back near its Cold level: cold {} MiB, warm {} MiB, after {} MiB",
        cold / MIB,
        warm / MIB,
        after / MIB
    );
}
