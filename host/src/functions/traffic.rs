//! Traffic splits (`quiver traffic NAME 1.2.0=90 1.3.0=10`): while one is set, each
//! unpinned call of the function goes to one of the split's versions, picked at
//! random in proportion to the weights; `quiver traffic NAME --clear` and a rollback
//! return it to `stable`.

use super::{DeployError, Functions};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A split's versions and their weights.
pub(super) type Split = Arc<Vec<(String, u32)>>;

/// A version of `split`, by weight.
pub(super) fn pick(split: &[(String, u32)]) -> String {
    let total: u64 = split.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut bytes = [0u8; 8];
    // A failed read of the OS's randomness only skews this one pick.
    let _ = getrandom::getrandom(&mut bytes);
    let mut at = u64::from_le_bytes(bytes) % total.max(1);
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
        let key = format!("{tenant}/{name}");
        if let Some(known) = self.splits.read().ok().and_then(|s| s.get(&key).cloned()) {
            return Ok(known);
        }
        // A change landing while this reads bumps the generation: then what was
        // read serves this call but is not kept.
        let generation = self.serving_generation.load(Ordering::Acquire);
        let (t, n) = (tenant.to_string(), name.to_string());
        let split = self.registry_call(move |r| r.traffic(&t, &n)).await?;
        let split = (!split.is_empty()).then(|| Arc::new(split));
        if let Ok(mut splits) = self.splits.write() {
            if self.serving_generation.load(Ordering::Acquire) == generation {
                splits.insert(key, split.clone());
            }
        }
        Ok(split)
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
    use super::pick;

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
}
