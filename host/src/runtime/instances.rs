//! Warm instances kept per deployment between calls.

use super::HostState;
use crate::bindings::inference::Inference;
use crate::bindings::ingest::Ingest;
use crate::bindings::monitor::Monitor;
use crate::bindings::trainer::Trainer;
use crate::bindings::transform::Transform;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

/// Typed functions are stateless: an instance that returned cleanly serves the
/// deployment's next call, skipping instantiation and the page faults of fresh
/// memory. Instances are never shared across deployments (each has its own limits
/// and config), so never across functions or tenants.
pub(super) struct InstancePool {
    pub(super) idle: Mutex<Vec<Warm>>,
    pub(super) max_idle: usize,
    pub(super) busy: AtomicUsize,
}

/// Idle instances kept per deployment at most; more concurrent calls instantiate afresh.
pub const MAX_IDLE: usize = 8;

/// Counts an instance as busy until dropped.
pub(super) struct Busy(Arc<InstancePool>);

impl Busy {
    pub(super) fn new(pool: &Arc<InstancePool>) -> Self {
        pool.busy.fetch_add(1, Ordering::Relaxed);
        Busy(pool.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InstancePool {
    pub(super) fn len(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    pub(super) fn take(&self) -> Option<Warm> {
        self.idle.lock().ok()?.pop()
    }

    pub(super) fn put(&self, mut warm: Warm) {
        warm.busy = None;
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < self.max_idle {
                idle.push(warm);
            }
        }
    }
}

pub(super) struct Warm {
    pub(super) store: Store<HostState>,
    pub(super) instance: WarmInstance,
    /// `Some` while checked out (never while pooled: the pool must not own itself).
    pub(super) busy: Option<Busy>,
}

pub(super) enum WarmInstance {
    Ingest(Ingest),
    Transform(Transform),
    Inference(Inference),
    Monitor(Monitor),
    Trainer(Trainer),
    Http(Proxy),
}
