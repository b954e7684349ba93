//! Typed identity, made once at the edge: a validated [`TenantId`], the [`Scope`]
//! a token carries and the [`Principal`] the auth layer builds from it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A tenant's name: 1-64 characters of a-z, 0-9 and '-' (so it is safe in a path,
/// a Redis key, a file name and a Prometheus label as it is).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

/// The one name rule of tenants, functions, models and feature groups' owners.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

impl TenantId {
    pub fn parse(s: &str) -> Result<TenantId, String> {
        match valid_name(s) {
            true => Ok(TenantId(Arc::from(s))),
            false => Err(format!(
                "tenant `{}` must be 1-64 characters of a-z, 0-9 and '-'",
                s.chars().take(64).collect::<String>()
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0)
    }
}

impl Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TenantId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// What a call names: a tenant's function (or model) and, when the caller pinned
/// one (`name@1.2.0`), an exact version. Made once at the edge, each part checked,
/// so nothing past it handles an unchecked name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FunctionRef {
    pub tenant: TenantId,
    name: Arc<str>,
    version: Option<Arc<str>>,
}

/// Why a function reference was refused (the part, and the rule it breaks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefError {
    Name(String),
    Version(String),
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefError::Name(m) | RefError::Version(m) => f.write_str(m),
        }
    }
}

/// Versions are semver (at most 64 characters), checked before they reach a store.
pub fn valid_version(v: &str) -> bool {
    v.len() <= 64 && semver::Version::parse(v).is_ok()
}

impl FunctionRef {
    pub fn new(tenant: TenantId, name: &str, version: Option<&str>) -> Result<Self, RefError> {
        if !valid_name(name) {
            return Err(RefError::Name(format!(
                "function `{}` must be 1-64 characters of a-z, 0-9 and '-'",
                name.chars().take(64).collect::<String>()
            )));
        }
        if let Some(v) = version.filter(|v| !valid_version(v)) {
            return Err(RefError::Version(format!(
                "version `{}` is not a semver version",
                v.chars().take(64).collect::<String>()
            )));
        }
        Ok(FunctionRef {
            tenant,
            name: Arc::from(name),
            version: version.map(Arc::from),
        })
    }

    /// `name` or `name@version`.
    pub fn parse(tenant: TenantId, name_ref: &str) -> Result<Self, RefError> {
        match name_ref.split_once('@') {
            Some((name, version)) => FunctionRef::new(tenant, name, Some(version)),
            None => FunctionRef::new(tenant, name_ref, None),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
}

impl fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.name)?;
        match &self.version {
            Some(v) => write!(f, "@{v}"),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FunctionRef({self})")
    }
}

/// What a token may do, each including the ones before it: `invoke` calls functions
/// and reads its tenant's functions, metrics and usage; `deploy` also changes them
/// (deploy, rollback, rm, models, feature backfill); `admin` also manages the
/// tenant's tokens and reads its audit log.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Invoke,
    Deploy,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Invoke => "invoke",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "invoke" => Some(Scope::Invoke),
            "deploy" => Some(Scope::Deploy),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

/// Who a request acts for, from a verified token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `None`: the platform admin, who acts on every tenant and on the platform.
    pub tenant: Option<TenantId>,
    pub scope: Scope,
    /// The token's public id (what the audit log names, never the secret).
    pub token_id: String,
}

/// Why a principal may not act on a tenant's resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Another tenant's: answered exactly as if it did not exist.
    NotFound,
    /// Its own tenant, but the token's scope is below what the action needs.
    Scope(Scope),
}

impl Principal {
    pub fn is_platform(&self) -> bool {
        self.tenant.is_none()
    }

    /// May this principal act on `tenant` with `scope`? Another tenant's resource
    /// is `NotFound` before the scope is looked at, so nothing about it leaks.
    pub fn may(&self, tenant: &TenantId, scope: Scope) -> Result<(), Denied> {
        match &self.tenant {
            Some(own) if own != tenant => Err(Denied::NotFound),
            _ if self.scope < scope => Err(Denied::Scope(scope)),
            _ => Ok(()),
        }
    }

    /// Who the audit log says acted.
    pub fn actor(&self) -> String {
        match &self.tenant {
            None => format!("platform:{}", self.token_id),
            Some(t) => format!("{t}:{}", self.token_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked_once() {
        for ok in ["a", "acme", "team-7", &"x".repeat(64)] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "a/b",
            "a%2Fb",
            "..",
            "a b",
            "a_b",
            "a:b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn function_refs_check_name_and_version() {
        let acme = TenantId::parse("acme").unwrap();
        let r = FunctionRef::parse(acme.clone(), "score@1.2.0").unwrap();
        assert_eq!((r.name(), r.version()), ("score", Some("1.2.0")));
        assert_eq!(r.to_string(), "acme/score@1.2.0");
        let r = FunctionRef::parse(acme.clone(), "score").unwrap();
        assert_eq!(r.version(), None);
        for bad in [
            "",
            "Score",
            "a/b",
            "a@",
            "a@1.0.0' OR 1=1--",
            "a@1",
            "a@x",
            "@1.0.0",
        ] {
            assert!(FunctionRef::parse(acme.clone(), bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            FunctionRef::parse(acme.clone(), "a@1.0"),
            Err(RefError::Version(_))
        ));
        assert!(matches!(
            FunctionRef::parse(acme, "A@1.0.0"),
            Err(RefError::Name(_))
        ));
    }

    #[test]
    fn another_tenant_is_not_found_before_scope() {
        let acme = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("other").unwrap();
        let p = Principal {
            tenant: Some(acme.clone()),
            scope: Scope::Invoke,
            token_id: "t".into(),
        };
        assert_eq!(p.may(&acme, Scope::Invoke), Ok(()));
        assert_eq!(
            p.may(&acme, Scope::Deploy),
            Err(Denied::Scope(Scope::Deploy))
        );
        assert_eq!(p.may(&other, Scope::Invoke), Err(Denied::NotFound));
        assert_eq!(p.may(&other, Scope::Admin), Err(Denied::NotFound));
        let admin = Principal {
            tenant: None,
            scope: Scope::Admin,
            token_id: "a".into(),
        };
        assert_eq!(admin.may(&other, Scope::Admin), Ok(()));
    }
}
