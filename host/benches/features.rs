//! The features interface: a guest's `get` of 16 features on the embedded store and
//! on Redis, against a raw `HMGET` from a native client on the same Redis in the same
//! run; and `get-many` of 256 entities (one pipelined round trip) against 256 gets.
//!
//! Needs the functions built and `redis-server` on PATH (the bench starts one on a
//! free loopback port): `cargo bench -p quiver-host --bench features`.

mod common;

use common::{columns, guest_nanos, interleaved, on_worker, percentiles, took, wasm, WARM_UP};
use criterion::{criterion_group, criterion_main, Criterion};
use quiver_host::bindings::transform::TransformPre;
use quiver_host::bindings::{Batch, Column, Field};
use quiver_host::features::{Embedded, FeatureBackend, FeatureScope, RedisStore, Value};
use quiver_host::manifest::ResolvedLimits;
use quiver_host::runtime::{Allocator, HostState, Invocation, Prepared, Runtime, MAX_IDLE};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct RedisServer(Child, u16);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server() -> RedisServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH (apt-get install redis-server)");
    std::thread::sleep(Duration::from_millis(300));
    RedisServer(child, port)
}

fn text(name: &str, v: &str) -> Field {
    Field {
        name: name.into(),
        values: Column::Text(vec![v.into()]),
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("f{i}")).collect()
}

/// A Redis feature store on `url`, once connected (on the calling runtime).
async fn connect(url: &str) -> Arc<dyn FeatureBackend> {
    let s = RedisStore::start(url, Duration::from_secs(1)).expect("redis url");
    for _ in 0..100 {
        if s.ready().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Arc::new(s)
}

fn scope(backend: Arc<dyn FeatureBackend>) -> Arc<FeatureScope> {
    Arc::new(FeatureScope::new(
        backend,
        "bench",
        vec!["merchant".into()],
        "bench/features-probe@1.0.0",
    ))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let redis = redis_server();
    let url = format!("redis://127.0.0.1:{}/0", redis.1);
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(dir.path(), Allocator::Pooling).expect("runtime");
    let bytes = wasm("features_probe");
    let component = runtime.component("probe", || Ok(bytes)).expect("compile");
    let Prepared::Transform(pre) = runtime.prepare("transform", &component).expect("prepare")
    else {
        panic!("features-probe is a transform");
    };
    let limits = ResolvedLimits {
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(2),
    };
    let embedded: Arc<dyn FeatureBackend> = Arc::new(Embedded::new(
        quiver_host::features::DEFAULT_EMBEDDED_CAPACITY,
    ));
    let redis_store = rt.block_on(connect(&url));
    let sixteen: Vec<(String, Value)> = names(16)
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n, Value::F64(i as f64 * 0.5)))
        .collect();
    let entities: Vec<String> = (0..256).map(|i| format!("m-{i}")).collect();
    for backend in [&embedded, &redis_store] {
        let s = scope(backend.clone());
        rt.block_on(async {
            for e in &entities {
                s.put("merchant", e, &sixteen, None).await.expect("put");
            }
        });
    }
    let input = Batch {
        fields: vec![
            text("op", "get"),
            text("group", "merchant"),
            text("entity", "m-1"),
            text("name", &names(16).join(",")),
        ],
    };

    let mut g = c.benchmark_group("features");
    for (label, backend) in [("embedded", &embedded), ("redis", &redis_store)] {
        let mut inv = Invocation::new(limits, "bench/probe@1.0.0", MAX_IDLE);
        inv.features = Some(scope(backend.clone()));
        let out = rt
            .block_on(runtime.transform(&pre, &inv, &input))
            .expect("probe call");
        assert_eq!(
            out.fields
                .iter()
                .find(|f| f.name == "found")
                .map(|f| match &f.values {
                    Column::Boolean(b) => b.iter().all(|x| *x) && b.len() == 16,
                    _ => false,
                }),
            Some(true),
            "all 16 features found"
        );
        if label == "redis" {
            // As the server runs: a multi-thread runtime, each call on a worker.
            redis_p50(&rt, &runtime, &pre, &inv, &input, &url);
            continue;
        }
        // The guest's own `get`, timed inside the guest (as on Redis below).
        let out = rt
            .block_on(runtime.transform(&pre, &inv, &time_get(WARM_UP + 10_000)))
            .expect("time-get");
        let (p50, p99) = percentiles(guest_latencies(&out)[WARM_UP..].to_vec());
        println!("features/guest_get_16_{label} (timed in the guest, 10,000 calls): p50 {p50:.2?}, p99 {p99:.2?}");
        g.bench_function(format!("guest_call_get_16_{label}"), |b| {
            b.to_async(&rt)
                .iter(|| async { runtime.transform(&pre, &inv, &input).await.expect("call") })
        });
        let s = scope(backend.clone());
        let n16 = names(16);
        g.bench_function(format!("host_get_16_{label}"), |b| {
            b.to_async(&rt)
                .iter(|| async { s.get("merchant", "m-1", &n16).await.expect("get") })
        });
    }

    let s = scope(redis_store.clone());
    let one = names(1);
    g.bench_function("host_get_many_256_redis_pipelined", |b| {
        b.to_async(&rt).iter(|| async {
            s.get_many("merchant", &entities, &one)
                .await
                .expect("get-many")
        })
    });
    g.bench_function("host_get_256_one_by_one_redis", |b| {
        b.to_async(&rt).iter(|| async {
            for e in &entities {
                s.get("merchant", e, &one).await.expect("get");
            }
        })
    });
    g.finish();
}

/// The Redis target is read at p50, and on this VM the latency of a loopback round trip
/// swings by 2-3x from one second to the next (cross-thread and cross-process
/// wake-ups), so the paths are interleaved call by call: each iteration times one call
/// of each path (the order rotating), in a task on a runtime worker as the server runs
/// a request.
/// - `native`: `HMGET` of the 16 fields from a native multiplexed connection (the peer);
/// - `host`: `FeatureScope::get` (what the host does for a guest's `get`);
/// - `guest get`: the guest's own `get` call, timed inside the guest with its
///   monotonic clock (`features-probe` `op=time-get`): guest → host → Redis → guest;
/// - `guest call`: a whole invocation of `features-probe` `op=get` from the host
///   (checkout, input batch lowered, one `get`, 16 output rows lifted).
///
/// Printed: p50 and p99 of each path, and the p50 of the per-iteration ratios.
fn redis_p50(
    rt: &tokio::runtime::Runtime,
    runtime: &Arc<Runtime>,
    pre: &TransformPre<HostState>,
    inv: &Invocation,
    input: &Batch,
    url: &str,
) {
    const ITERS: usize = 5000;
    let client = redis::Client::open(url).expect("client");
    let conn = rt
        .block_on(client.get_multiplexed_async_connection())
        .expect("connect");
    let scope = inv.features.clone().expect("a scope");
    let n16 = names(16);
    let timed = time_get(1);
    let (runtime, pre, inv, input) = (runtime.clone(), pre.clone(), inv.clone(), input.clone());
    let samples: Vec<[Duration; 4]> = on_worker(rt, async move {
        let (conn, scope, n16, timed) = (&conn, &scope, &n16, &timed);
        let (runtime, pre, inv, input) = (&runtime, &pre, &inv, &input);
        interleaved(ITERS, move |path| {
            Box::pin(async move {
                let started = Instant::now();
                match path {
                    0 => {
                        let v: Vec<Option<String>> = redis::cmd("HMGET")
                            .arg("quiver:feat:bench:merchant:m-1")
                            .arg(n16)
                            .query_async(&mut conn.clone())
                            .await
                            .expect("hmget");
                        let took = started.elapsed();
                        assert_eq!(v.len(), 16);
                        took
                    }
                    1 => {
                        let v = scope.get("merchant", "m-1", n16).await.expect("get");
                        let took = started.elapsed();
                        assert_eq!(v.len(), 16);
                        took
                    }
                    2 => {
                        let out = runtime.transform(pre, inv, timed).await;
                        guest_latencies(&out.expect("time-get"))[0]
                    }
                    _ => {
                        let out = runtime.transform(pre, inv, input).await;
                        took(started, out.expect("call"))
                    }
                }
            })
        })
        .await
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let paths = columns(&samples);
    let ratio_p50 = |i: usize| {
        let mut r: Vec<f64> = samples.iter().map(|s| us(s[i]) / us(s[0])).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    println!("features/get_16_redis, {ITERS} interleaved iterations (µs):");
    println!(
        "{:<11} {:>8} {:>8} {:>19} {:>22}",
        "path", "p50", "p99", "p50 / native p50", "p50 of per-call ratio"
    );
    let native_p50 = us(paths[0].0);
    for (i, name) in ["native", "host", "guest get", "guest call"]
        .iter()
        .enumerate()
    {
        let (p50, p99) = paths[i];
        println!(
            "{name:<11} {:>8.1} {:>8.1} {:>18.2}x {:>21.2}x",
            us(p50),
            us(p99),
            us(p50) / native_p50,
            ratio_p50(i)
        );
    }
}

/// `features-probe` input: `calls` gets of the 16 features of `m-1`, each timed by the
/// guest.
fn time_get(calls: usize) -> Batch {
    Batch {
        fields: vec![
            text("op", "time-get"),
            text("group", "merchant"),
            text("entity", "m-1"),
            text("name", &names(16).join(",")),
            Field {
                name: "value".into(),
                values: Column::Float64(vec![calls as f64]),
            },
        ],
    }
}

/// The latencies a `time-get` call measured, one per `get`, each of which found all 16.
fn guest_latencies(out: &Batch) -> Vec<Duration> {
    let found = out
        .fields
        .iter()
        .find(|f| f.name == "found")
        .map(|f| &f.values);
    assert!(
        matches!(found, Some(Column::Boolean(f)) if f.iter().all(|x| *x)),
        "every feature found: {out:?}"
    );
    guest_nanos(out, "value")
}

criterion_group!(benches, bench);
criterion_main!(benches);
