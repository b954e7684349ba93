//! Scale to zero: an idle deployment goes back to Cold after its idle_timeout, and
//! comes back (from the on-disk AOT artifact) on the next request.
use quiver_tests::{read_sample, Server};
use serde_json::Value;
use std::time::{Duration, Instant};

fn state_of(server: &Server, name: &str) -> Value {
    server.function_state(name)
}

/// The value of the first metric line that starts with `series` (name and labels).
fn counter(server: &Server, series: &str) -> u64 {
    let text = server.get("/metrics").text().unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{series} ")))
        .unwrap_or_else(|| panic!("{series} missing in {text}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn deploy_idle_after_1s(server: &Server) {
    server.cli_ok(&[
        "deploy",
        "functions/txn-features",
        "--set",
        "scaling.idle_timeout=1s",
    ]);
}

fn wait_for_cold(server: &Server, name: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while state_of(server, name)["state"] != "cold" {
        assert!(
            Instant::now() < deadline,
            "{name} did not go cold: {}",
            state_of(server, name)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn idle_functions_scale_to_zero_and_come_back() {
    let server = Server::start();
    deploy_idle_after_1s(&server);
    wait_for_cold(&server, "txn-features", Duration::from_secs(5));
    assert!(server.cli_ok(&["ls"]).contains("cold"));

    let call = || {
        server.post(
            "/fn/default/txn-features",
            "application/json",
            read_sample("txn-features"),
        )
    };
    assert_eq!(call().status(), 200);
    let live = state_of(&server, "txn-features");
    assert_eq!(live["state"], "idle", "{live}");
    assert_eq!(live["idle_instances"], 1, "{live}");
    let before = counter(&server, "quiver_instantiations_total");

    wait_for_cold(&server, "txn-features", Duration::from_secs(5));
    assert_eq!(state_of(&server, "txn-features")["idle_instances"], 0);
    assert_eq!(
        call().status(),
        200,
        "a cold function serves its next request"
    );
    assert_eq!(
        counter(&server, "quiver_instantiations_total"),
        before + 1,
        "its instances were released"
    );
    assert_eq!(
        counter(&server, "quiver_compilations_total"),
        1,
        "it came back from the AOT artifact"
    );
}

#[test]
fn min_instances_keeps_a_function_loaded() {
    let server = Server::start();
    server.cli_ok(&[
        "deploy",
        "functions/txn-features",
        "--set",
        "scaling.idle_timeout=200ms",
        "--set",
        "scaling.min_instances=1",
    ]);
    let r = server.post(
        "/fn/default/txn-features",
        "application/json",
        read_sample("txn-features"),
    );
    assert_eq!(r.status(), 200);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(state_of(&server, "txn-features")["state"], "idle");
}

#[test]
fn concurrent_first_requests_load_a_cold_function_once() {
    let server = Server::start();
    deploy_idle_after_1s(&server);
    let burst = || {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    s.spawn(|| {
                        server
                            .post(
                                "/fn/default/txn-features",
                                "application/json",
                                read_sample("txn-features"),
                            )
                            .status()
                    })
                })
                .collect();
            for h in handles {
                assert_eq!(h.join().unwrap(), 200);
            }
        })
    };
    let cold_starts = || {
        counter(
            &server,
            r#"quiver_cold_starts_total{function="txn-features",tenant="default"}"#,
        )
    };
    burst();
    assert_eq!(cold_starts(), 1, "16 concurrent first requests, one load");
    let text = server.get("/metrics").text().unwrap();
    assert!(
        text.contains(
            r#"quiver_cold_start_seconds_count{function="txn-features",tenant="default"} 1"#
        ),
        "{text}"
    );

    wait_for_cold(&server, "txn-features", Duration::from_secs(5));
    burst();
    assert_eq!(cold_starts(), 2, "one more load after going cold");
}
