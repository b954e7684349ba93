//! Traffic splits (`quiver traffic NAME 1.2.0=90 1.3.0=10`): while one is set, each
//! unpinned call of the function goes to one of the split's versions, picked in
//! proportion to the weights: at random, or, for a call that brings a route key
//! (`x-quiver-route-key`), by the key's hash, so the same key keeps to the same
//! version while the weights stay (and moving weight to a version only moves keys
//! to it). `quiver traffic NAME --clear` and a rollback return it to `stable`. A
//! shadow version (`quiver traffic NAME --shadow 1.3.0`) gets a copy of each
//! unpinned call after it is answered (see [`crate::call`]).

use super::{DeployError, Functions};
use sha2::{Digest as _, Sha256};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A split's versions and their weights.
pub(super) type Split = Arc<Vec<(String, u32)>>;

/// How a function's unpinned calls are routed, as the registry says.
#[derive(Clone, Default)]
pub(super) struct Routing {
    pub split: Option<Split>,
    pub shadow: Option<Arc<str>>,
}

/// A route key is at most this long (a longer header is not a key: the call is
/// routed at random).
pub const MAX_ROUTE_KEY: usize = 256;

tokio::task_local! {
    static ROUTE_KEY: Option<Arc<str>>;
}

/// Run `fut` (a call) with `key` as its route key.
pub async fn with_route_key<F: std::future::Future>(key: Option<&str>, fut: F) -> F::Output {
    let key = key.filter(|k| !k.is_empty() && k.len() <= MAX_ROUTE_KEY);
    ROUTE_KEY.scope(key.map(Arc::from), fut).await
}

/// A version of `split`, by weight (by the call's route key when it has one).
pub fn pick_version(split: &[(String, u32)]) -> String {
    pick(split)
}

/// A version of `split`, by weight.
pub(super) fn pick(split: &[(String, u32)]) -> String {
    let key = ROUTE_KEY.try_with(|k| k.clone()).ok().flatten();
    pick_by(split, key.as_deref())
}

fn pick_by(split: &[(String, u32)], key: Option<&str>) -> String {
    let total: u64 = split.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut bytes = [0u8; 8];
    match key {
        Some(key) => bytes.copy_from_slice(&Sha256::digest(key.as_bytes())[..8]),
        // A failed read of the OS's randomness only skews this one pick.
        None => {
            let _ = getrandom::getrandom(&mut bytes);
        }
    }
    // The 64 bits as a fraction of the total (not modulo it): a key keeps its place
    // on [0, total) when the weights change, so growing a version's weight only
    // moves keys onto it.
    let mut at = ((u128::from(u64::from_le_bytes(bytes)) * u128::from(total)) >> 64) as u64;
    for (version, weight) in split {
        if at < u64::from(*weight) {
            return version.clone();
        }
        at -= u64::from(*weight);
    }
    split.last().map(|(v, _)| v.clone()).unwrap_or_default()
}

impl Functions {
    /// `tenant/name`'s split, read from the registry once and kept until it changes.
    pub(super) async fn split(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Option<Split>, DeployError> {
        Ok(self.routing(tenant, name).await?.split)
    }

    /// The version that sees a copy of `tenant/name`'s unpinned calls, if any.
    pub async fn shadow(&self, tenant: &str, name: &str) -> Result<Option<Arc<str>>, DeployError> {
        Ok(self.routing(tenant, name).await?.shadow)
    }

    async fn routing(&self, tenant: &str, name: &str) -> Result<Routing, DeployError> {
        let key = format!("{tenant}/{name}");
        if let Some(known) = self.splits.read().ok().and_then(|s| s.get(&key).cloned()) {
            return Ok(known);
        }
        // A change landing while this reads bumps the generation: then what was
        // read serves this call but is not kept.
        let generation = self.serving_generation.load(Ordering::Acquire);
        let (t, n) = (tenant.to_string(), name.to_string());
        let (split, shadow) = self
            .registry_call(move |r| Ok((r.traffic(&t, &n)?, r.shadow(&t, &n)?)))
            .await?;
        let routing = Routing {
            split: (!split.is_empty()).then(|| Arc::new(split)),
            shadow: shadow.map(Arc::from),
        };
        if let Ok(mut splits) = self.splits.write() {
            if self.serving_generation.load(Ordering::Acquire) == generation {
                splits.insert(key, routing.clone());
            }
        }
        Ok(routing)
    }

    /// Mirror (or with `None`, stop mirroring) `name`'s unpinned calls to `version`.
    pub async fn set_shadow(
        &self,
        tenant: &str,
        name: &str,
        version: Option<String>,
    ) -> Result<(), DeployError> {
        let (t, n) = (tenant.to_string(), name.to_string());
        self.registry_call(move |r| r.set_shadow(&t, &n, version.as_deref()))
            .await?;
        self.forget_serving(tenant, name);
        Ok(())
    }

    /// Set (or with `[]`, clear) `name`'s split.
    pub async fn set_traffic(
        &self,
        tenant: &str,
        name: &str,
        weights: Vec<(String, u32)>,
    ) -> Result<(), DeployError> {
        let (t, n) = (tenant.to_string(), name.to_string());
        self.registry_call(move |r| r.set_traffic(&t, &n, &weights))
            .await?;
        self.forget_serving(tenant, name);
        Ok(())
    }

    pub async fn traffic(
        &self,
        tenant: &str,
        name: &str,
    ) -> Result<Vec<(String, u32)>, DeployError> {
        let (t, n) = (tenant.to_string(), name.to_string());
        self.registry_call(move |r| r.traffic(&t, &n)).await
    }
}

#[cfg(test)]
mod tests {
    use super::{pick, pick_by};

    #[test]
    fn picks_follow_the_weights() {
        let split = vec![("a".to_string(), 90), ("b".to_string(), 10)];
        let b = (0..10_000).filter(|_| pick(&split) == "b").count();
        assert!(
            (700..1300).contains(&b),
            "{b} of 10000 for a weight of 10 %"
        );
        assert_eq!(pick(&[("only".to_string(), 1)]), "only");
    }

    #[test]
    fn a_route_key_keeps_to_its_version_and_more_weight_only_brings_keys_over() {
        let at = |b: u32| vec![("a".to_string(), 100 - b), ("b".to_string(), b)];
        let keys: Vec<String> = (0..2000).map(|i| format!("user-{i}")).collect();
        let on_b = |w: u32| -> Vec<&String> {
            keys.iter()
                .filter(|k| pick_by(&at(w), Some(k)) == "b")
                .collect()
        };
        for k in &keys[..50] {
            assert_eq!(pick_by(&at(10), Some(k)), pick_by(&at(10), Some(k)));
        }
        let (ten, fifty) = (on_b(10), on_b(50));
        // Weights that do not add up to 100 (the total changes): still only onto b.
        let other = |b: u32| vec![("a".to_string(), 90), ("b".to_string(), b)];
        let on = |split: &[(String, u32)]| -> Vec<&String> {
            keys.iter()
                .filter(|k| pick_by(split, Some(k)) == "b")
                .collect()
        };
        let (b10, b30) = (on(&other(10)), on(&other(30)));
        assert!(b10.iter().all(|k| b30.contains(k)) && b30.len() > b10.len());
        assert!((100..300).contains(&ten.len()), "{}", ten.len());
        assert!((800..1200).contains(&fifty.len()), "{}", fifty.len());
        assert!(
            ten.iter().all(|k| fifty.contains(k)),
            "a key on b at 10 % stays on b at 50 %"
        );
    }
}
