//! Per-tenant quotas (persisted), the limiter that applies the rate and concurrency
//! ones on every call, and usage counters.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A tenant's limits; an absent field is no limit. `quiver tenants set-quota` sets
/// the fields it names; 0 removes one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Functions (names, not versions) the tenant may have.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_functions: Option<u64>,
    /// Bytes of components and models in the registry, every version counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_bytes: Option<u64>,
    /// A ceiling over `[limits] memory` (per instance): a deploy asking more is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// A ceiling over `[limits] timeout`, in milliseconds: the most one invocation
    /// may run (the epoch deadline that interrupts a guest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
    /// Invocations running at once across all the tenant's functions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u64>,
    /// Requests per second (a token bucket of `burst`, default one second's worth).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Bytes the tenant may keep in the feature store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_bytes: Option<u64>,
}

impl Quota {
    /// `self` with the fields `change` names replaced (0 clears a field).
    pub fn merged(&self, change: &Quota) -> Quota {
        fn pick<T: Copy + PartialEq + Default>(old: Option<T>, new: Option<T>) -> Option<T> {
            match new {
                Some(v) if v == T::default() => None,
                Some(v) => Some(v),
                None => old,
            }
        }
        let rate = pick(self.rate, change.rate);
        Quota {
            max_functions: pick(self.max_functions, change.max_functions),
            registry_bytes: pick(self.registry_bytes, change.registry_bytes),
            memory: pick(self.memory, change.memory),
            cpu_ms: pick(self.cpu_ms, change.cpu_ms),
            max_instances: pick(self.max_instances, change.max_instances),
            // A burst means nothing without a rate: clearing the rate clears it.
            burst: rate.and(pick(self.burst, change.burst)),
            rate,
            feature_bytes: pick(self.feature_bytes, change.feature_bytes),
        }
    }

    pub fn check(&self) -> Result<(), String> {
        if let Some(r) = self.rate {
            if !r.is_finite() || !(0.0..=1e9).contains(&r) {
                return Err(format!("rate {r} must be a number of requests per second"));
            }
        }
        if self.burst.is_some() && self.rate.is_none() {
            return Err("a burst needs a rate".into());
        }
        Ok(())
    }

    /// A deployment's limits under this quota's ceilings (a quota lowered after a
    /// deploy holds for what was deployed before it).
    pub fn ceiling(
        &self,
        limits: crate::manifest::ResolvedLimits,
    ) -> crate::manifest::ResolvedLimits {
        let cap = |v: usize, max: Option<u64>| match max {
            Some(m) => v.min(usize::try_from(m).unwrap_or(usize::MAX)),
            None => v,
        };
        crate::manifest::ResolvedLimits {
            memory_bytes: cap(limits.memory_bytes, self.memory),
            timeout: match self.cpu_ms {
                Some(ms) => limits.timeout.min(Duration::from_millis(ms)),
                None => limits.timeout,
            },
        }
    }

    /// Is `memory` bytes per instance within the ceiling?
    pub fn check_memory(&self, memory: usize) -> Result<(), QuotaExceeded> {
        match self.memory {
            Some(max) if memory as u64 > max => Err(QuotaExceeded {
                quota: "memory",
                detail: format!("an instance may have at most {max} bytes of memory; the manifest asks for {memory}"),
            }),
            _ => Ok(()),
        }
    }

    pub fn check_timeout(&self, timeout: Duration) -> Result<(), QuotaExceeded> {
        match self.cpu_ms {
            Some(max) if timeout.as_millis() > u128::from(max) => Err(QuotaExceeded {
                quota: "cpu_ms",
                detail: format!(
                    "an invocation may run at most {max} ms; the manifest's timeout is {} ms",
                    timeout.as_millis()
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// A quota a request or deploy would exceed, named.
#[derive(Debug, Clone, thiserror::Error)]
#[error("quota `{quota}` exceeded: {detail}")]
pub struct QuotaExceeded {
    pub quota: &'static str,
    pub detail: String,
}

/// Refused by the tenant's rate or concurrency quota.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RateLimited {
    #[error("quota `rate` exceeded: this tenant may make {rate} requests per second; retry after {retry_after:?}")]
    Rate { rate: f64, retry_after: Duration },
    #[error(
        "quota `max_instances` exceeded: {max} invocations of this tenant are already running"
    )]
    Concurrency { max: u64 },
}

impl RateLimited {
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            RateLimited::Rate { retry_after, .. } => {
                retry_after.as_secs_f64().ceil().max(1.0) as u64
            }
            RateLimited::Concurrency { .. } => 1,
        }
    }
}

struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

/// The rate and concurrency quotas of one tenant, applied on every call.
pub struct Limiter {
    bucket: Option<Mutex<Bucket>>,
    max_running: Option<u64>,
    running: Arc<AtomicU32>,
}

/// Counts a call as running for its tenant until dropped.
pub struct Running(Option<Arc<AtomicU32>>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(r) = &self.0 {
            r.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Limiter {
    pub fn new(q: &Quota) -> Limiter {
        Limiter::with_running(q, Arc::new(AtomicU32::new(0)))
    }

    fn with_running(q: &Quota, running: Arc<AtomicU32>) -> Limiter {
        let bucket = q.rate.map(|rate| {
            let burst = q.burst.map_or(rate.max(1.0), |b| b as f64);
            Mutex::new(Bucket {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
            })
        });
        Limiter {
            bucket,
            max_running: q.max_instances,
            running,
        }
    }

    /// The same running count under new limits (calls in flight keep counting).
    pub fn reconfigured(&self, q: &Quota) -> Limiter {
        Limiter::with_running(q, self.running.clone())
    }

    /// Take a token and a running slot, or say which quota refuses.
    pub fn admit(&self) -> Result<Running, RateLimited> {
        if let Some(bucket) = &self.bucket {
            // A poisoned bucket only means a panic mid-update of two floats: go on.
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(b.last).as_secs_f64() * b.rate;
            b.tokens = (b.tokens + refill).min(b.burst);
            b.last = now;
            if b.tokens < 1.0 {
                let retry_after = match b.rate > 0.0 {
                    true => Duration::from_secs_f64((1.0 - b.tokens) / b.rate),
                    false => Duration::from_secs(60),
                };
                return Err(RateLimited::Rate {
                    rate: b.rate,
                    retry_after,
                });
            }
            b.tokens -= 1.0;
        }
        let Some(max) = self.max_running else {
            return Ok(Running(None));
        };
        let now = self.running.fetch_add(1, Ordering::AcqRel);
        let guard = Running(Some(self.running.clone()));
        if u64::from(now) >= max {
            return Err(RateLimited::Concurrency { max });
        }
        Ok(guard)
    }
}

/// What a tenant used since this host started (`quiver usage`, `/metrics`).
#[derive(Clone, Default)]
pub struct Usage(Arc<UsageCounters>);

#[derive(Default)]
pub struct UsageCounters {
    pub invocations: AtomicU64,
    /// Microseconds instances were busy running this tenant's calls.
    pub busy_us: AtomicU64,
    /// Memory limit x busy time, in MiB-milliseconds.
    pub memory_mib_ms: AtomicU64,
    pub inference_calls: AtomicU64,
    pub egress_calls: AtomicU64,
    pub egress_denied: AtomicU64,
}

impl std::ops::Deref for Usage {
    type Target = UsageCounters;
    fn deref(&self) -> &UsageCounters {
        &self.0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct UsageSnapshot {
    pub invocations: u64,
    pub cpu_ms: f64,
    pub memory_gb_seconds: f64,
    pub inference_calls: u64,
    pub egress_calls: u64,
    pub egress_denied: u64,
}

impl Usage {
    /// Count one finished invocation that kept an instance of `memory` bytes busy.
    pub fn invoked(&self, busy: Duration, memory: usize) {
        let us = busy.as_micros().min(u128::from(u64::MAX)) as u64;
        self.invocations.fetch_add(1, Ordering::Relaxed);
        self.busy_us.fetch_add(us, Ordering::Relaxed);
        let mib_ms = (memory as u64 >> 20).saturating_mul(us) / 1000;
        self.memory_mib_ms.fetch_add(mib_ms, Ordering::Relaxed);
    }

    /// The raw counters, in the order the tenancy store saves them.
    pub(super) fn to_saved(&self) -> [u64; 6] {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            get(&self.invocations),
            get(&self.busy_us),
            get(&self.memory_mib_ms),
            get(&self.inference_calls),
            get(&self.egress_calls),
            get(&self.egress_denied),
        ]
    }

    /// Add counters saved by an earlier run (at start, before any call counts).
    pub(super) fn add_saved(&self, saved: [u64; 6]) {
        let counters = [
            &self.invocations,
            &self.busy_us,
            &self.memory_mib_ms,
            &self.inference_calls,
            &self.egress_calls,
            &self.egress_denied,
        ];
        for (c, v) in counters.into_iter().zip(saved) {
            c.fetch_add(v, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> UsageSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        UsageSnapshot {
            invocations: get(&self.invocations),
            cpu_ms: get(&self.busy_us) as f64 / 1000.0,
            memory_gb_seconds: get(&self.memory_mib_ms) as f64 / 1024.0 / 1000.0,
            inference_calls: get(&self.inference_calls),
            egress_calls: get(&self.egress_calls),
            egress_denied: get(&self.egress_denied),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refuses_past_its_burst_and_names_the_wait() {
        let l = Limiter::new(&Quota {
            rate: Some(10.0),
            burst: Some(3),
            ..Quota::default()
        });
        for _ in 0..3 {
            assert!(l.admit().is_ok());
        }
        match l.admit() {
            Err(RateLimited::Rate { retry_after, .. }) => {
                assert!(retry_after <= Duration::from_millis(100), "{retry_after:?}")
            }
            Ok(_) => panic!("a fourth request within the burst was admitted"),
            Err(other) => panic!("{other:?}"),
        }
        std::thread::sleep(Duration::from_millis(120));
        assert!(l.admit().is_ok(), "a token refilled after 1/rate");
    }

    #[test]
    fn concurrency_is_released_when_a_call_ends() {
        let l = Limiter::new(&Quota {
            max_instances: Some(2),
            ..Quota::default()
        });
        let a = l.admit().unwrap();
        let _b = l.admit().unwrap();
        assert!(matches!(
            l.admit(),
            Err(RateLimited::Concurrency { max: 2 })
        ));
        drop(a);
        let again = l.reconfigured(&Quota {
            max_instances: Some(2),
            ..Quota::default()
        });
        assert!(again.admit().is_ok(), "the running count carries over");
    }

    #[test]
    fn zero_clears_a_field() {
        let q = Quota {
            rate: Some(5.0),
            max_functions: Some(3),
            ..Quota::default()
        };
        let m = q.merged(&Quota {
            rate: Some(0.0),
            memory: Some(1 << 20),
            ..Quota::default()
        });
        assert_eq!(m.rate, None);
        assert_eq!(m.max_functions, Some(3));
        assert_eq!(m.memory, Some(1 << 20));
    }
}
