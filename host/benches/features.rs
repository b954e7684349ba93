//! The features interface: a guest's `get` of 16 features on the embedded store and
//! on Redis, against a raw `HMGET` from a native client on the same Redis in the same
//! run; and `get-many` of 256 entities (one pipelined round trip) against 256 gets.
//!
//! Needs the functions built and `redis-server` on PATH (the bench starts one on a
//! free loopback port): `cargo bench -p quiver-host --bench features`.

mod common;

use common::wasm;
use criterion::{criterion_group, criterion_main, Criterion};
use quiver_host::bindings::{Batch, Column, Field};
use quiver_host::features::{Embedded, FeatureBackend, FeatureScope, RedisStore, Value};
use quiver_host::manifest::ResolvedLimits;
use quiver_host::runtime::{Allocator, Invocation, Prepared, Runtime, MAX_IDLE};
use std::num::NonZeroUsize;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

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
    let embedded: Arc<dyn FeatureBackend> =
        Arc::new(Embedded::new(NonZeroUsize::new(100_000).expect("nonzero")));
    let redis_store: Arc<dyn FeatureBackend> = rt
        .block_on(async {
            let s = RedisStore::start(&url, Duration::from_secs(1)).expect("redis url");
            for _ in 0..100 {
                if s.ready().await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok::<_, ()>(Arc::new(s) as Arc<dyn FeatureBackend>)
        })
        .expect("redis");
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
        let mut inv = Invocation::new(limits, Default::default(), "bench/probe@1.0.0", MAX_IDLE);
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
        g.bench_function(format!("guest_get_16_{label}"), |b| {
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

    // The peer: the same HMGET from a native client, multiplexed connection.
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut conn = rt
        .block_on(client.get_multiplexed_async_connection())
        .expect("connect");
    let n16 = names(16);
    g.bench_function("native_hmget_16_redis", |b| {
        b.to_async(&rt).iter(|| {
            let mut conn = conn.clone();
            let n16 = n16.clone();
            async move {
                let v: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg("quiver:feat:bench:merchant:m-1")
                    .arg(&n16)
                    .query_async(&mut conn)
                    .await
                    .expect("hmget");
                v
            }
        })
    });
    let _ = &mut conn;

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

criterion_group!(benches, bench);
criterion_main!(benches);
