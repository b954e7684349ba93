//! `quiver:ml/config`: the manifest's `[config]` table, read-only to the guest.

use super::{Capability, Configure};
use crate::bindings::base;
use crate::functions::DeployError;
use crate::runtime::HostState;
use futures::future::BoxFuture;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

pub struct Config;

impl Capability for Config {
    fn name(&self) -> &'static str {
        "config"
    }

    fn imports(&self, _kind: &str) -> &'static [&'static str] {
        &["quiver:ml/config"]
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        base::quiver::ml::config::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
    }

    fn configure<'a>(&'a self, cx: Configure<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        cx.invocation.config = Arc::new(cx.manifest.config.clone());
        Box::pin(async { Ok(()) })
    }
}

impl base::quiver::ml::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}
