//! `quiver:ml/log` (and the `types` every Quiver interface shares): a guest's log
//! lines, tagged with the deployment, into the host's tracing.

use super::{Capability, Configure};
use crate::bindings::base;
use crate::functions::DeployError;
use crate::runtime::HostState;
use futures::future::BoxFuture;
use std::sync::Arc;
use wasmtime::component::{HasSelf, Linker};

pub struct Log;

impl Capability for Log {
    fn name(&self) -> &'static str {
        "log"
    }

    fn imports(&self, _kind: &str) -> &'static [&'static str] {
        &["quiver:ml/types", "quiver:ml/log"]
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        base::quiver::ml::log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)
    }

    fn configure<'a>(&'a self, cx: Configure<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async move {
            cx.invocation.logs = Some(Arc::new(crate::logs::LogSink {
                logs: cx.functions.logs().clone(),
                tenant: cx.record.tenant.clone(),
                function: cx.record.name.clone(),
                version: format!("{}@{}", cx.record.name, cx.record.version),
            }));
            Ok(())
        })
    }
}

impl base::quiver::ml::types::Host for HostState {}

impl base::quiver::ml::log::Host for HostState {
    fn log(&mut self, level: base::quiver::ml::log::Level, message: String) {
        use base::quiver::ml::log::Level;
        let f = &*self.tag;
        if let Some(sink) = &self.logs {
            let name = match level {
                Level::Trace => "trace",
                Level::Debug => "debug",
                Level::Info => "info",
                Level::Warn => "warn",
                Level::Error => "error",
            };
            sink.line(name, &self.trace_id, &message);
        }
        match level {
            Level::Trace => tracing::trace!(function = f, "{message}"),
            Level::Debug => tracing::debug!(function = f, "{message}"),
            Level::Info => tracing::info!(function = f, "{message}"),
            Level::Warn => tracing::warn!(function = f, "{message}"),
            Level::Error => tracing::error!(function = f, "{message}"),
        }
    }
}
