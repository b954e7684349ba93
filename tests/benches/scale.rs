//! Scale-to-zero figures over real HTTP against the release `quiver` binary:
//! - density: deploy 1,000 functions (one component, deduplicated by digest), time
//!   it, and read the host's RSS with all of them Cold;
//! - cold start: N distinct `txn-features` components (each its own digest, so no
//!   compiled code is shared), deployed (AOT artifact on disk) and Cold; the first
//!   request to each is timed from the request's first byte sent to the response's
//!   first byte received, on a kept-alive connection; then a warm request to each.
//!
//! Run: `cargo build --release -p quiver-host && cargo bench -p quiver-tests --bench scale`
//! (`scripts/bench-scale.sh` does both). `SCALE_N` sets N (default 200).
use quiver_tests::{built_component, read_sample, Server};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A component with a custom section appended: same code, different digest.
fn variant(component: &[u8], i: usize) -> Vec<u8> {
    let name = b"quiver-bench";
    let payload = format!("variant-{i}");
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(payload.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section id
    let mut len = section.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        out.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&section);
    out
}

/// One POST on a kept-alive connection; returns time to the first response byte and
/// reads the whole response (Content-Length bodies only, which is what quiver sends).
fn timed_post(conn: &mut TcpStream, token: &str, path: &str, body: &[u8]) -> Duration {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    let started = Instant::now();
    conn.write_all(&req).expect("send");
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = conn.read(&mut buf).expect("first byte");
    let first_byte = started.elapsed();
    // Read the rest of the response.
    loop {
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let status_ok = text.starts_with("HTTP/1.1 200");
            assert!(status_ok, "{text}");
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("content-length");
            if n >= end + 4 + len {
                return first_byte;
            }
        }
        n += conn.read(&mut buf[n..]).expect("rest of the response");
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{what:<44} n={:<5} p50 {:>8.1} µs   p99 {:>8.1} µs   max {:>8.1} µs",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        samples[samples.len() - 1].as_secs_f64() * 1e6
    );
}

fn manifest(name: &str) -> String {
    format!("[function]\nname = \"{name}\"\nversion = \"1.0.0\"\nkind = \"transform\"\n")
}

fn density() {
    let server = Server::start();
    server.deploy("chaos");
    let component = built_component("chaos");
    let idle = server.rss_bytes();
    let started = Instant::now();
    for i in 0..1000 {
        let status = server.deploy_raw("default", &manifest(&format!("d-{i}")), component.clone());
        assert_eq!(status, 201);
    }
    let took = started.elapsed();
    println!(
        "density: deployed 1,000 functions in {:.2} s ({:.2} ms each, one component); \
         RSS {} MiB with all Cold ({} MiB before)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / 1000.0,
        server.rss_bytes() >> 20,
        idle >> 20
    );
}

fn cold_start(n: usize) {
    let server = Server::start();
    server.deploy("txn-features");
    let component = built_component("txn-features");
    let started = Instant::now();
    for i in 0..n {
        let status = server.deploy_raw(
            "default",
            &manifest(&format!("c-{i}")),
            variant(&component, i),
        );
        assert_eq!(status, 201);
    }
    let took = started.elapsed();
    println!(
        "cold start: deployed {n} distinct components in {:.2} s ({:.1} ms each: validate, compile, write AOT, publish)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1e3 / n as f64
    );
    let compilations = server.metric("quiver_compilations_total").unwrap_or(0.0);
    let body = read_sample("txn-features");
    let addr = server.url.trim_start_matches("http://").to_string();
    let mut conn = TcpStream::connect(&addr).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    // Warm the connection and the server's request path on a function we won't time.
    timed_post(
        &mut conn,
        &server.admin_token,
        "/fn/default/txn-features",
        &body,
    );
    let cold: Vec<Duration> = (0..n)
        .map(|i| {
            timed_post(
                &mut conn,
                &server.admin_token,
                &format!("/fn/default/c-{i}"),
                &body,
            )
        })
        .collect();
    let warm: Vec<Duration> = (0..n)
        .map(|i| {
            timed_post(
                &mut conn,
                &server.admin_token,
                &format!("/fn/default/c-{i}"),
                &body,
            )
        })
        .collect();
    assert_eq!(
        server.metric("quiver_compilations_total").unwrap_or(0.0),
        compilations,
        "cold starts load the AOT artifact; nothing is compiled"
    );
    let starts = server
        .metric(r#"quiver_cold_starts_total{function="c-0",tenant="default"}"#)
        .unwrap_or(0.0);
    assert_eq!(starts, 1.0, "the first request to c-0 was a cold start");
    report("txn-features, Cold -> first response byte", cold);
    report("txn-features, warm (same functions, again)", warm);
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument filters like libtest would.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let n = std::env::var("SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    if wants("density") {
        density();
    }
    if wants("cold_start") {
        cold_start(n);
    }
}
