//! The engine's configuration: the component model, epoch interruption, no
//! component-model async, and the pooling allocator with how it resets slots.

use crate::manifest::MAX_MEMORY;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// The configuration every Quiver engine starts from (public for the benchmark
/// runner `examples/run_guest.rs`).
pub fn engine_config() -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    // Quiver's worlds are synchronous (WASI 0.2, no component-model async), and with
    // concurrency support on, every guest-to-host call allocates and frees a host
    // task in the store's concurrent state. Off, a wasi-nn run from a guest took
    // ~10% less time (BENCHMARKS.md, inference).
    config.concurrency_support(false);
    config
}

const MEMORY_KEEP_RESIDENT: usize = 64 << 10;
const TABLE_KEEP_RESIDENT: usize = 16 << 10;

pub(super) fn pooled_engine() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(1_000);
    pool.total_core_instances(2_000);
    pool.total_memories(2_000);
    pool.total_tables(2_000);
    pool.max_memory_size(MAX_MEMORY);
    // Resetting a slot: memset up to this much of what the instance dirtied (found
    // with PAGEMAP_SCAN where the kernel has it) instead of madvise, which is a TLB
    // shootdown on every core. Profiled under load (perf, hello-http with a fresh
    // instance per request): madvise and lazy table-init page faults took ~30% of CPU;
    // with these settings throughput doubles (BENCHMARKS.md). The cost is up to
    // 80 KiB left resident per slot that has been used.
    pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT);
    pool.table_keep_resident(TABLE_KEEP_RESIDENT);
    pool.pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = engine_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}
