//! Outbound HTTP (`wasi:http/outgoing-handler`, with `wasi:http/types`), linked for
//! every kind: the standard `wasi:http/proxy` world imports it even where a
//! component never calls out. Deny by default: a request goes out only to what the
//! manifest's `[capabilities] outbound` names, which must lie within the tenant's
//! grants (checked at deploy); anything else fails in the guest with
//! `HTTP-request-denied` and is counted.

use super::{Capability, Configure};
use crate::egress::{Egress, EgressPolicy};
use crate::functions::DeployError;
use crate::manifest::Manifest;
use crate::runtime::HostState;
use crate::tenancy::Tenant;
use futures::future::BoxFuture;
use std::sync::Arc;
use wasmtime::component::Linker;
use wasmtime_wasi_http::p2::bindings::{http, LinkOptions};
use wasmtime_wasi_http::{WasiHttp, WasiHttpView};

pub struct Outbound;

impl Capability for Outbound {
    fn name(&self) -> &'static str {
        "outbound"
    }

    fn imports(&self, _kind: &str) -> &'static [&'static str] {
        &["wasi:http/types", "wasi:http/outgoing-handler"]
    }

    fn link(&self, linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        http::types::add_to_linker::<HostState, WasiHttp>(
            linker,
            &LinkOptions::default().into(),
            |s: &mut HostState| s.http(),
        )?;
        http::outgoing_handler::add_to_linker::<HostState, WasiHttp>(
            linker,
            |s: &mut HostState| s.http(),
        )?;
        Ok(())
    }

    fn check(&self, manifest: &Manifest, tenant: &Tenant) -> Result<(), String> {
        let outbound: Vec<String> = manifest
            .capabilities
            .iter()
            .flat_map(|c| c.outbound.clone())
            .collect();
        crate::egress::check_outbound(&outbound, &tenant.outbound).map(|_| ())
    }

    fn configure<'a>(&'a self, cx: Configure<'a>) -> BoxFuture<'a, Result<(), DeployError>> {
        let allowed = cx.manifest.outbound().map_err(DeployError::Internal);
        Box::pin(async move {
            cx.invocation.egress = Egress(Arc::new(EgressPolicy {
                allowed: allowed?,
                usage: cx.usage,
            }));
            Ok(())
        })
    }
}
