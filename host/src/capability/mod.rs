//! Host capabilities: one seam (cf. Spin's factors, wasmtime's crate per interface).
//! Each host interface a guest can import is one [`Capability`]: it says which WIT
//! imports it provides to which kinds of function, links its host side into the one
//! `Linker`, checks the manifest section it owns at deploy (against the tenant's
//! grants), and builds its part of a deployment's [`Invocation`] at load, from which
//! every store of that deployment is made. Deploy-time validation's list of provided
//! imports is derived from [`ALL`]; adding a capability is a file here and a line in
//! [`ALL`] (and, where it keeps per-store state, a field of `Invocation` and
//! `HostState`), and touches no trigger and no other capability.

use crate::functions::{DeployError, Functions};
use crate::manifest::Manifest;
use crate::runtime::{HostState, Invocation};
use crate::tenancy::{Tenant, Usage};
use futures::future::BoxFuture;
use quiver_registry::VersionRecord;
use std::sync::Arc;
use wasmtime::component::Linker;

pub use datasets::DatasetScope;
pub use events::EventScope;

mod config;
mod datasets;
mod events;
mod features;
mod log;
mod models;
mod outbound;
mod wasi;

/// What a capability gets to build its part of a deployment.
pub struct Configure<'a> {
    pub functions: &'a Arc<Functions>,
    pub record: &'a VersionRecord,
    pub manifest: &'a Manifest,
    /// Where the deployment's tenant is metered.
    pub usage: Option<Usage>,
    pub invocation: &'a mut Invocation,
}

pub trait Capability: Send + Sync {
    /// Its name, in errors.
    fn name(&self) -> &'static str;

    /// The interfaces (or whole packages, `pkg/*`) it provides to a function of
    /// `kind`; a component importing anything no capability provides is refused at
    /// deploy, naming the import.
    fn imports(&self, kind: &str) -> &'static [&'static str];

    /// Link its host side (once, for the engine's one linker).
    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()>;

    /// Check, at deploy, the manifest section it owns against the tenant (its
    /// grants); the message says what was refused.
    fn check(&self, _manifest: &Manifest, _tenant: &Tenant) -> Result<(), String> {
        Ok(())
    }

    /// Build its part of the deployment's invocation (at load).
    fn configure<'a>(&'a self, _cx: Configure<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        Box::pin(async { Ok(()) })
    }
}

/// Every capability this host has, in linking order.
pub static ALL: &[&dyn Capability] = &[
    &wasi::Wasi,
    &log::Log,
    &config::Config,
    &features::Features,
    &models::Models,
    &outbound::Outbound,
    &events::Events,
    &datasets::Datasets,
];

/// The imports a component of `kind` may have: what the capabilities provide it.
pub fn provided_imports(kind: &str) -> Vec<&'static str> {
    ALL.iter().flat_map(|c| c.imports(kind)).copied().collect()
}

/// Link every capability into `linker`.
pub fn link_all(linker: &mut Linker<HostState>) -> anyhow::Result<()> {
    for c in ALL {
        c.link(linker)
            .map_err(|e| anyhow::anyhow!("linking the `{}` capability: {e:#}", c.name()))?;
    }
    Ok(())
}

/// Check a manifest's capability sections against its tenant at deploy.
pub fn check_all(manifest: &Manifest, tenant: &Tenant) -> Result<(), String> {
    ALL.iter().try_for_each(|c| c.check(manifest, tenant))
}

/// Build every capability's part of a deployment's invocation.
pub async fn configure_all(
    functions: &Arc<Functions>,
    record: &VersionRecord,
    manifest: &Manifest,
    usage: Option<Usage>,
    invocation: &mut Invocation,
) -> Result<(), DeployError> {
    for c in ALL {
        let cx = Configure {
            functions,
            record,
            manifest,
            usage: usage.clone(),
            invocation: &mut *invocation,
        };
        c.configure(cx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_follow_the_kind() {
        let transform = provided_imports("transform");
        let inference = provided_imports("inference");
        for both in [
            "wasi:cli/*",
            "quiver:ml/log",
            "quiver:ml/features",
            "wasi:http/outgoing-handler",
        ] {
            assert!(transform.contains(&both), "{both}");
            assert!(inference.contains(&both), "{both}");
        }
        for only in ["wasi:nn/*", "quiver:ml/models"] {
            assert!(inference.contains(&only), "{only}");
            assert!(!transform.contains(&only), "{only}");
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}
