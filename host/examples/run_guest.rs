//! Run a WASI command component (`wasm32-wasip2`) under Quiver's engine
//! configuration (component model, epoch interruption, Cranelift defaults), with
//! one directory preopened: how `scripts/bench-drift.sh` times quiver-ml's drift
//! statistics inside the sandbox, beside the same code built natively.
//!
//! `cargo run --release --example run_guest -- COMPONENT.wasm DIR [ARGS...]`
//! (`DIR` is the guest's `/data`).
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

struct State {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [component, dir, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: run_guest COMPONENT.wasm DIR [ARGS...]");
    };
    let engine = Engine::new(&quiver_host::runtime::engine_config())?;
    let mut linker = Linker::<State>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let compiled = std::time::Instant::now();
    let component = Component::from_file(&engine, component)?;
    eprintln!("compiled in {:.2} s", compiled.elapsed().as_secs_f64());
    let mut guest_args = vec!["guest".to_string()];
    guest_args.extend(rest.iter().cloned());
    let mut builder = WasiCtx::builder();
    builder
        .inherit_stdout()
        .inherit_stderr()
        .args(&guest_args)
        // The benchmark's own settings, and nothing else of the host's environment.
        .envs(
            &std::env::vars()
                .filter(|(k, _)| k.starts_with("QUIVER_BENCH_"))
                .collect::<Vec<_>>(),
        )
        .preopened_dir(dir, "/data", FsPerms::ReadWrite)?;
    let mut store = Store::new(
        &engine,
        State {
            ctx: builder.build(),
            table: ResourceTable::new(),
        },
    );
    // Epoch interruption is on in Quiver's config; nothing ticks the epoch here.
    store.set_epoch_deadline(u64::MAX);
    let command = Command::instantiate(&mut store, &component, &linker)?;
    match command.wasi_cli_run().call_run(&mut store)? {
        Ok(()) => Ok(()),
        Err(()) => anyhow::bail!("the guest exited with an error"),
    }
}
