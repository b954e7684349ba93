//! Warm invocation through the host, split into its parts.
//!
//! Needs the first-party functions built (`./scripts/demo.sh` or
//! `cd functions && cargo build --release --target wasm32-wasip2`); run with
//! `cargo bench -p quiver-host --bench invoke`. See BENCHMARKS.md.

mod common;

use common::wasm;
use criterion::{criterion_group, criterion_main, Criterion};
use quiver_host::bindings::{Batch, Column, Field};
use quiver_host::manifest::ResolvedLimits;
use quiver_host::runtime::{Allocator, Invocation, Prepared, Runtime, MAX_IDLE};
use std::time::Duration;

fn one_row() -> Batch {
    Batch {
        fields: vec![
            Field {
                name: "amount".into(),
                values: Column::Float64(vec![42.5]),
            },
            Field {
                name: "ts".into(),
                values: Column::Int64(vec![1_763_812_800]),
            },
            Field {
                name: "merchant".into(),
                values: Column::Text(vec!["coffee-corner".into()]),
            },
        ],
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("tokio");
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = Runtime::new(dir.path(), Allocator::Pooling).expect("runtime");
    let bytes = wasm("txn_features");
    let component = runtime.component("bench", || Ok(bytes)).expect("compile");
    let Prepared::Transform(pre) = runtime.prepare("transform", &component).expect("prepare")
    else {
        panic!("txn-features is a transform");
    };
    let limits = ResolvedLimits {
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(2),
    };
    let inv = Invocation::new(limits, "bench/txn-features@1.0.0", MAX_IDLE);
    // A second deployment of the same component whose pool never keeps an instance:
    // every call instantiates, as before instance reuse.
    let cold_inv = Invocation::new(limits, "bench/fresh@1.0.0", MAX_IDLE);
    let echo_inv = Invocation::new(limits, "bench/chaos@1.0.0", MAX_IDLE);
    let input = one_row();
    let echo_bytes = wasm("chaos");
    let echo_component = runtime
        .component("bench-echo", || Ok(echo_bytes))
        .expect("compile");
    let Prepared::Transform(echo) = runtime
        .prepare("transform", &echo_component)
        .expect("prepare")
    else {
        panic!("chaos is a transform");
    };
    let echo_input = Batch {
        fields: vec![Field {
            name: "mode".into(),
            values: Column::Text(vec!["echo".into()]),
        }],
    };

    let mut g = c.benchmark_group("warm");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("transform_invoke_1_row", |b| {
        b.to_async(&rt).iter(|| async {
            let out = runtime.transform(&pre, &inv, &input).await.expect("invoke");
            assert_eq!(out.fields.len(), 4);
        })
    });
    // `chaos` in echo mode does almost nothing: this is the host's own cost per call
    // (store, instantiation, lowering and lifting a batch, epoch and limits).
    g.bench_function("echo_invoke_1_row", |b| {
        b.to_async(&rt).iter(|| async {
            let out = runtime
                .transform(&echo, &echo_inv, &echo_input)
                .await
                .expect("invoke");
            assert_eq!(out.fields.len(), 1);
        })
    });
    g.bench_function("echo_invoke_fresh_instance", |b| {
        b.to_async(&rt).iter(|| async {
            let out = runtime
                .transform_fresh(&echo, &cold_inv, &echo_input)
                .await
                .expect("invoke");
            assert_eq!(out.fields.len(), 1);
        })
    });
    g.bench_function("instantiate_only", |b| {
        b.to_async(&rt).iter(|| async {
            runtime
                .instantiate_only(&pre, &inv)
                .await
                .expect("instantiate");
        })
    });
    g.bench_function("store_only", |b| b.iter(|| runtime.store_only(&inv)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
