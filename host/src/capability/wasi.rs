//! WASI 0.2 (cli, io, clocks, random, filesystem, sockets) with an empty context:
//! no preopened directory, no environment, no socket address allowed. A guest can
//! import these interfaces (every toolchain's output does) and reach nothing.

use super::Capability;
use crate::runtime::HostState;
use wasmtime::component::Linker;

pub struct Wasi;

impl Capability for Wasi {
    fn name(&self) -> &'static str {
        "wasi"
    }

    fn imports(&self, _kind: &str) -> &'static [&'static str] {
        &[
            "wasi:cli/*",
            "wasi:io/*",
            "wasi:clocks/*",
            "wasi:random/*",
            "wasi:filesystem/*",
            "wasi:sockets/*",
        ]
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_async(linker)
    }
}
