//! Tenancy: tenants, their tokens, quotas and grants, the audit log and usage.
//!
//! Kept in `<data-dir>/tenancy.db` (SQLite, WAL, synchronous=FULL) and mirrored in
//! memory, so authenticating a request is a SHA-256 and a hash-map read: no I/O on
//! the hot path. This process is the only writer of its data dir, so the mirror stays
//! right; every change writes the database first, then the mirror.

mod audit;
mod ids;
mod quota;
mod store;

pub use audit::{AuditEntry, AuditVerdict};
pub use ids::{
    valid_name, valid_version, Denied, FunctionRef, Principal, RefError, Scope, TenantId,
};
pub use quota::{Quota, QuotaExceeded, RateLimited, Running, Usage, UsageSnapshot};

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Every token starts with this, so a leaked one is easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "qvr_";

/// A token as the mirror holds it (keyed by the SHA-256 of the whole token).
#[derive(Debug, Clone)]
struct TokenEntry {
    id: String,
    tenant: Option<TenantId>,
    scope: Scope,
    expires_at: Option<u64>,
}

/// What `quiver tokens ls` shows (never the secret, which is not stored).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub tenant: Option<String>,
    pub scope: Scope,
    pub created_at: u64,
    pub expires_at: Option<u64>,
    pub revoked_at: Option<u64>,
}

/// What a tenant has been granted, as the store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub outbound: Vec<String>,
    pub signers: Vec<String>,
}

/// The most keys one tenant may trust.
pub const MAX_SIGNERS: usize = 32;

/// A tenant as the mirror holds it: its limits and its running state.
pub struct Tenant {
    pub id: TenantId,
    pub quota: Quota,
    /// `outbound` grants: URL patterns its functions may be allowed to call.
    pub outbound: Vec<String>,
    /// `signer` grants: public keys (`ed25519:<hex>`) it trusts. When there is one,
    /// its components must carry a signature by one of them to deploy and to load.
    pub signers: Vec<String>,
    pub limiter: quota::Limiter,
    pub usage: Usage,
    /// Held from a deploy's quota checks to its publish, so that racing deploys of
    /// one tenant cannot together pass `max_functions` or `registry_bytes`.
    pub deploys: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing `Authorization: Bearer <token>`")]
    Missing,
    #[error("the Authorization header is not `Bearer <token>`")]
    Malformed,
    #[error("the token is not valid (unknown or revoked)")]
    Unknown,
    #[error("the token expired")]
    Expired,
}

#[derive(Debug, thiserror::Error)]
pub enum TenancyError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("tenancy store: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for TenancyError {
    fn from(e: rusqlite::Error) -> Self {
        TenancyError::Storage(e.to_string())
    }
}

pub struct Tenancy {
    db: Mutex<rusqlite::Connection>,
    tokens: RwLock<HashMap<[u8; 32], TokenEntry>>,
    tenants: RwLock<HashMap<TenantId, Arc<Tenant>>>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new token: a public id (12 hex) and 256 random bits.
fn new_token() -> Result<(String, String), TenancyError> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut id)
        .and_then(|()| getrandom::getrandom(&mut secret))
        .map_err(|e| TenancyError::Storage(format!("no randomness for a token: {e}")))?;
    let id = hex::encode(id);
    let token = format!("{TOKEN_PREFIX}{id}_{}", hex::encode(secret));
    Ok((id, token))
}

/// What the first start made: the platform admin token (shown once).
pub struct FirstStart {
    pub admin_token: String,
}

impl Tenancy {
    /// Open (or create) the store under `data_dir`. On the first start it creates
    /// the `default` tenant and a platform admin token, returned once.
    pub fn open(data_dir: &Path) -> Result<(Tenancy, Option<FirstStart>), TenancyError> {
        let conn = store::open(&data_dir.join("tenancy.db"))?;
        let t = Tenancy {
            db: Mutex::new(conn),
            tokens: RwLock::new(HashMap::new()),
            tenants: RwLock::new(HashMap::new()),
        };
        t.reload()?;
        let has_admin = t
            .tokens
            .read()
            .map_err(|_| poisoned())?
            .values()
            .any(|e| e.tenant.is_none());
        let first = match has_admin {
            true => None,
            false => {
                let default = TenantId::parse("default").map_err(TenancyError::Invalid)?;
                if t.tenant(&default).is_none() {
                    t.create_tenant(&default)?;
                }
                let (_, token) = t.create_token(None, Scope::Admin, None)?;
                Some(FirstStart { admin_token: token })
            }
        };
        Ok((t, first))
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, rusqlite::Connection>, TenancyError> {
        self.db.lock().map_err(|_| poisoned())
    }

    /// Read the database into the mirror.
    fn reload(&self) -> Result<(), TenancyError> {
        let db = self.db()?;
        let tokens = store::live_tokens(&db)?;
        let tenants = store::tenants(&db)?;
        let saved = store::saved_usage(&db)?;
        drop(db);
        *self.tokens.write().map_err(|_| poisoned())? = tokens;
        let mut map = self.tenants.write().map_err(|_| poisoned())?;
        for (id, quota, grants) in tenants {
            let tenant = Tenant::new(id.clone(), quota, grants);
            if let Some(counters) = saved.get(id.as_str()) {
                tenant.usage.add_saved(*counters);
            }
            map.insert(id, Arc::new(tenant));
        }
        Ok(())
    }

    /// Save every tenant's usage counters, so they outlive a restart (the server
    /// saves them every `--usage-save-interval` and when it stops). Blocking.
    pub fn save_usage(&self) -> Result<(), TenancyError> {
        let rows: Vec<(String, [u64; 6])> = self
            .tenants()
            .iter()
            .map(|t| (t.id.to_string(), t.usage.to_saved()))
            .collect();
        let mut db = self.db()?;
        store::save_usage(&mut db, &rows, now_secs())
    }

    /// The principal a bearer token stands for.
    pub fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(AuthError::Unknown);
        }
        let hash = token_hash(token);
        let tokens = self.tokens.read().map_err(|_| AuthError::Unknown)?;
        let entry = tokens.get(&hash).ok_or(AuthError::Unknown)?;
        if entry.expires_at.is_some_and(|at| now_secs() >= at) {
            return Err(AuthError::Expired);
        }
        Ok(Principal {
            tenant: entry.tenant.clone(),
            scope: entry.scope,
            token_id: entry.id.clone(),
        })
    }

    pub fn tenant(&self, id: &TenantId) -> Option<Arc<Tenant>> {
        self.tenants.read().ok()?.get(id).cloned()
    }

    /// A tenant by name, if the name is valid and the tenant exists.
    pub fn find(&self, name: &str) -> Option<Arc<Tenant>> {
        self.tenant(&TenantId::parse(name).ok()?)
    }

    pub fn tenants(&self) -> Vec<Arc<Tenant>> {
        let mut all: Vec<_> = self
            .tenants
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    pub fn create_tenant(&self, id: &TenantId) -> Result<Arc<Tenant>, TenancyError> {
        let db = self.db()?;
        store::insert_tenant(&db, id, now_secs())?;
        drop(db);
        let tenant = Arc::new(Tenant::new(id.clone(), Quota::default(), Grants::default()));
        self.tenants
            .write()
            .map_err(|_| poisoned())?
            .insert(id.clone(), tenant.clone());
        Ok(tenant)
    }

    /// Replace a tenant's quota (the fields given; `None` keeps the old value).
    pub fn set_quota(&self, id: &TenantId, change: &Quota) -> Result<Quota, TenancyError> {
        // Held from the read to the mirror's swap, like a grant's (see `change_grants`).
        let db = self.db()?;
        let old = self
            .tenant(id)
            .ok_or_else(|| TenancyError::NotFound(format!("no tenant `{id}`")))?;
        let quota = old.quota.merged(change);
        if change.burst.is_some_and(|b| b > 0) && quota.rate.is_none() {
            return Err(TenancyError::Invalid("a burst needs a rate".into()));
        }
        quota.check().map_err(TenancyError::Invalid)?;
        store::update_tenant(&db, id, &quota, &old.grants())?;
        self.replace(&old, quota.clone(), old.grants())?;
        drop(db);
        Ok(quota)
    }

    /// Let a tenant's functions be granted `pattern` (`https://*.example.com`).
    pub fn grant_outbound(
        &self,
        id: &TenantId,
        pattern: &str,
    ) -> Result<Vec<String>, TenancyError> {
        crate::egress::Pattern::parse(pattern).map_err(TenancyError::Invalid)?;
        let grants = self.change_grants(id, |g| {
            if !g.outbound.iter().any(|p| p == pattern) {
                g.outbound.push(pattern.to_string());
            }
            Ok(())
        })?;
        Ok(grants.outbound)
    }

    /// Trust `key` (`ed25519:<hex>`) to sign the tenant's components; from then on
    /// its components need a signature by a trusted key.
    pub fn grant_signer(&self, id: &TenantId, key: &str) -> Result<Vec<String>, TenancyError> {
        let key = crate::signing::PublicKey::parse(key)
            .map_err(TenancyError::Invalid)?
            .to_string();
        let grants = self.change_grants(id, |g| {
            if !g.signers.contains(&key) {
                if g.signers.len() >= MAX_SIGNERS {
                    return Err(TenancyError::Invalid(format!(
                        "a tenant trusts at most {MAX_SIGNERS} keys"
                    )));
                }
                g.signers.push(key.clone());
            }
            Ok(())
        })?;
        Ok(grants.signers)
    }

    /// Stop trusting `key`. (An `outbound` grant is checked against manifests at
    /// deploy only, so it is not revocable: taking it back would not stop what runs.)
    pub fn revoke_signer(&self, id: &TenantId, key: &str) -> Result<Vec<String>, TenancyError> {
        let key = crate::signing::PublicKey::parse(key)
            .map_err(TenancyError::Invalid)?
            .to_string();
        let grants = self.change_grants(id, |g| {
            let before = g.signers.len();
            g.signers.retain(|k| *k != key);
            match g.signers.len() < before {
                true => Ok(()),
                false => Err(TenancyError::NotFound(format!(
                    "tenant `{id}` does not trust {key}"
                ))),
            }
        })?;
        Ok(grants.signers)
    }

    /// Apply `change` to a tenant's grants: the store first, then the mirror.
    fn change_grants(
        &self,
        id: &TenantId,
        change: impl FnOnce(&mut Grants) -> Result<(), TenancyError>,
    ) -> Result<Grants, TenancyError> {
        let db = self.db()?;
        // Read under the store's lock, so that two grants at once do not lose one.
        let old = self
            .tenant(id)
            .ok_or_else(|| TenancyError::NotFound(format!("no tenant `{id}`")))?;
        let mut grants = old.grants();
        change(&mut grants)?;
        store::update_tenant(&db, id, &old.quota, &grants)?;
        self.replace(&old, old.quota.clone(), grants.clone())?;
        drop(db);
        Ok(grants)
    }

    /// Swap a tenant's settings in the mirror, keeping its limiter and usage.
    fn replace(&self, old: &Tenant, quota: Quota, grants: Grants) -> Result<(), TenancyError> {
        let tenant = Arc::new(Tenant {
            id: old.id.clone(),
            limiter: old.limiter.reconfigured(&quota),
            usage: old.usage.clone(),
            deploys: old.deploys.clone(),
            quota,
            outbound: grants.outbound,
            signers: grants.signers,
        });
        self.tenants
            .write()
            .map_err(|_| poisoned())?
            .insert(old.id.clone(), tenant);
        Ok(())
    }

    /// A new token for `tenant` (`None`: platform admin); the token text, shown once.
    pub fn create_token(
        &self,
        tenant: Option<&TenantId>,
        scope: Scope,
        expires_at: Option<u64>,
    ) -> Result<(TokenInfo, String), TenancyError> {
        if let Some(t) = tenant {
            if self.tenant(t).is_none() {
                return Err(TenancyError::NotFound(format!("no tenant `{t}`")));
            }
        }
        let (id, token) = new_token()?;
        let hash = token_hash(&token);
        let info = TokenInfo {
            id: id.clone(),
            tenant: tenant.map(|t| t.to_string()),
            scope,
            created_at: now_secs(),
            expires_at,
            revoked_at: None,
        };
        let db = self.db()?;
        store::insert_token(&db, &info, &hash)?;
        drop(db);
        self.tokens.write().map_err(|_| poisoned())?.insert(
            hash,
            TokenEntry {
                id,
                tenant: tenant.cloned(),
                scope,
                expires_at,
            },
        );
        Ok((info, token))
    }

    /// Tokens of `tenant` (`None`: every token, the platform's included).
    pub fn list_tokens(&self, tenant: Option<&TenantId>) -> Result<Vec<TokenInfo>, TenancyError> {
        store::tokens(&*self.db()?, tenant)
    }

    /// Revoke a token by id; `tenant` limits which tokens the caller may revoke.
    pub fn revoke_token(
        &self,
        id: &str,
        tenant: Option<&TenantId>,
    ) -> Result<TokenInfo, TenancyError> {
        let db = self.db()?;
        let info = store::revoke_token(&db, id, tenant, now_secs())?;
        drop(db);
        self.tokens
            .write()
            .map_err(|_| poisoned())?
            .retain(|_, e| e.id != id);
        Ok(info)
    }

    /// Append an admin action to the hash-chained audit log.
    pub fn audit(&self, entry: audit::NewEntry) -> Result<AuditEntry, TenancyError> {
        audit::append(&mut *self.db()?, entry)
    }

    /// Audit entries, oldest first (`tenant`: only that tenant's).
    pub fn audit_log(
        &self,
        tenant: Option<&TenantId>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, TenancyError> {
        audit::list(&*self.db()?, tenant, limit)
    }

    /// Recompute the chain: the first entry that does not follow from the one before.
    pub fn audit_verify(&self) -> Result<AuditVerdict, TenancyError> {
        audit::verify(&*self.db()?)
    }
}

impl Tenant {
    fn new(id: TenantId, quota: Quota, grants: Grants) -> Tenant {
        Tenant {
            limiter: quota::Limiter::new(&quota),
            usage: Usage::default(),
            deploys: Arc::default(),
            id,
            quota,
            outbound: grants.outbound,
            signers: grants.signers,
        }
    }

    pub fn grants(&self) -> Grants {
        Grants {
            outbound: self.outbound.clone(),
            signers: self.signers.clone(),
        }
    }
}

fn poisoned() -> TenancyError {
    TenancyError::Storage("a tenancy lock was poisoned by a panic".into())
}

pub use audit::NewEntry as NewAuditEntry;
