//! The tenancy database: tenants (quota and grants as JSON), tokens (hashes only)
//! and the audit log.

use super::{Grants, Quota, Scope, TenancyError, TenantId, TokenEntry, TokenInfo};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
     PRAGMA synchronous = FULL;
     CREATE TABLE IF NOT EXISTS tenants (
         name TEXT PRIMARY KEY, created_at INTEGER NOT NULL,
         quota TEXT NOT NULL, outbound TEXT NOT NULL,
         signers TEXT NOT NULL DEFAULT '[]');
     CREATE TABLE IF NOT EXISTS tokens (
         id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE, tenant TEXT,
         scope TEXT NOT NULL, created_at INTEGER NOT NULL,
         expires_at INTEGER, revoked_at INTEGER);
     CREATE TABLE IF NOT EXISTS audit (
         seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,
         tenant TEXT, action TEXT NOT NULL, target TEXT NOT NULL,
         result TEXT NOT NULL, prev TEXT NOT NULL, hash TEXT NOT NULL);
     CREATE TABLE IF NOT EXISTS usage (
         tenant TEXT PRIMARY KEY, counters TEXT NOT NULL, saved_at INTEGER NOT NULL);";

pub(super) fn open(path: &Path) -> Result<Connection, TenancyError> {
    let conn = Connection::open(path)
        .map_err(|e| TenancyError::Storage(format!("opening {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    // Stores made before signatures have no `signers` column: add it (no signers).
    let has_signers: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('tenants') WHERE name = 'signers'",
        [],
        |r| r.get(0),
    )?;
    if has_signers == 0 {
        conn.execute_batch("ALTER TABLE tenants ADD COLUMN signers TEXT NOT NULL DEFAULT '[]'")?;
    }
    Ok(conn)
}

fn storage(what: &str) -> impl Fn(serde_json::Error) -> TenancyError + '_ {
    move |e| TenancyError::Storage(format!("{what} in the tenancy store does not parse: {e}"))
}

pub(super) fn tenants(db: &Connection) -> Result<Vec<(TenantId, Quota, Grants)>, TenancyError> {
    let mut stmt =
        db.prepare("SELECT name, quota, outbound, signers FROM tenants ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(name, quota, outbound, signers)| {
            let id = TenantId::parse(&name).map_err(TenancyError::Storage)?;
            let quota: Quota = serde_json::from_str(&quota).map_err(storage("a quota"))?;
            let grants = Grants {
                outbound: serde_json::from_str(&outbound).map_err(storage("a grant"))?,
                signers: serde_json::from_str(&signers).map_err(storage("a signer"))?,
            };
            Ok((id, quota, grants))
        })
        .collect()
}

pub(super) fn insert_tenant(db: &Connection, id: &TenantId, now: u64) -> Result<(), TenancyError> {
    let n = db.execute(
        "INSERT OR IGNORE INTO tenants (name, created_at, quota, outbound) VALUES (?1, ?2, '{}', '[]')",
        params![id.as_str(), now as i64],
    )?;
    match n {
        1 => Ok(()),
        _ => Err(TenancyError::Conflict(format!("tenant `{id}` exists"))),
    }
}

pub(super) fn update_tenant(
    db: &Connection,
    id: &TenantId,
    quota: &Quota,
    grants: &Grants,
) -> Result<(), TenancyError> {
    let quota = serde_json::to_string(quota).map_err(storage("a quota"))?;
    let outbound = serde_json::to_string(&grants.outbound).map_err(storage("a grant"))?;
    let signers = serde_json::to_string(&grants.signers).map_err(storage("a signer"))?;
    db.execute(
        "UPDATE tenants SET quota = ?2, outbound = ?3, signers = ?4 WHERE name = ?1",
        params![id.as_str(), quota, outbound, signers],
    )?;
    Ok(())
}

pub(super) fn live_tokens(db: &Connection) -> Result<HashMap<[u8; 32], TokenEntry>, TenancyError> {
    let mut stmt = db.prepare(
        "SELECT id, hash, tenant, scope, expires_at FROM tokens WHERE revoked_at IS NULL",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Vec<u8>>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<i64>>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut out = HashMap::new();
    for (id, hash, tenant, scope, expires_at) in rows {
        let hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| TenancyError::Storage(format!("token {id}: a hash is not 32 bytes")))?;
        let tenant = tenant
            .map(|t| TenantId::parse(&t))
            .transpose()
            .map_err(TenancyError::Storage)?;
        let scope = Scope::parse(&scope)
            .ok_or_else(|| TenancyError::Storage(format!("token {id}: unknown scope {scope}")))?;
        let expires_at = expires_at.map(|e| e as u64);
        out.insert(
            hash,
            TokenEntry {
                id,
                tenant,
                scope,
                expires_at,
            },
        );
    }
    Ok(out)
}

pub(super) fn insert_token(
    db: &Connection,
    t: &TokenInfo,
    hash: &[u8; 32],
) -> Result<(), TenancyError> {
    db.execute(
        "INSERT INTO tokens (id, hash, tenant, scope, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            t.id,
            &hash[..],
            t.tenant,
            t.scope.as_str(),
            t.created_at as i64,
            t.expires_at.map(|e| e as i64)
        ],
    )?;
    Ok(())
}

/// A `tokens` row as read: id, tenant, scope, created_at, expires_at, revoked_at.
type TokenRow = (
    String,
    Option<String>,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

fn token_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn token_info(
    (id, tenant, scope, created_at, expires_at, revoked_at): TokenRow,
) -> Result<TokenInfo, TenancyError> {
    Ok(TokenInfo {
        scope: Scope::parse(&scope)
            .ok_or_else(|| TenancyError::Storage(format!("token {id}: unknown scope {scope}")))?,
        id,
        tenant,
        created_at: created_at as u64,
        expires_at: expires_at.map(|e| e as u64),
        revoked_at: revoked_at.map(|e| e as u64),
    })
}

const TOKEN_COLUMNS: &str = "id, tenant, scope, created_at, expires_at, revoked_at";

pub(super) fn tokens(
    db: &Connection,
    tenant: Option<&TenantId>,
) -> Result<Vec<TokenInfo>, TenancyError> {
    let rows = match tenant {
        Some(t) => db
            .prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens WHERE tenant = ?1 ORDER BY created_at, id"
            ))?
            .query_map([t.as_str()], token_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => db
            .prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
            ))?
            .query_map([], token_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    rows.into_iter().map(token_info).collect()
}

pub(super) fn revoke_token(
    db: &Connection,
    id: &str,
    tenant: Option<&TenantId>,
    now: u64,
) -> Result<TokenInfo, TenancyError> {
    let row = db
        .query_row(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = ?1"),
            [id],
            token_row,
        )
        .optional()?;
    let info = match row.map(token_info).transpose()? {
        // Another tenant's token is as absent as one that never existed.
        Some(info) if tenant.is_none_or(|t| info.tenant.as_deref() == Some(t.as_str())) => info,
        _ => return Err(TenancyError::NotFound(format!("no token `{id}`"))),
    };
    db.execute(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        params![id, now as i64],
    )?;
    Ok(TokenInfo {
        revoked_at: info.revoked_at.or(Some(now)),
        ..info
    })
}

/// Every tenant's saved usage counters (`UsageCounters::to_saved` form).
pub(super) fn saved_usage(db: &Connection) -> Result<HashMap<String, [u64; 6]>, TenancyError> {
    let mut stmt = db.prepare("SELECT tenant, counters FROM usage")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = HashMap::new();
    for row in rows {
        let (tenant, text) = row?;
        let counters: [u64; 6] = serde_json::from_str(&text).map_err(storage("usage"))?;
        out.insert(tenant, counters);
    }
    Ok(out)
}

/// Save tenants' usage counters, all in one transaction.
pub(super) fn save_usage(
    db: &mut Connection,
    rows: &[(String, [u64; 6])],
    now: u64,
) -> Result<(), TenancyError> {
    let tx = db.transaction()?;
    for (tenant, counters) in rows {
        let text = serde_json::to_string(counters).map_err(storage("usage"))?;
        tx.execute(
            "INSERT INTO usage (tenant, counters, saved_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(tenant) DO UPDATE SET counters = ?2, saved_at = ?3",
            rusqlite::params![tenant, text, now as i64],
        )?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_from_before_signers_opens_with_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tenancy.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE tenants (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL,
                 quota TEXT NOT NULL, outbound TEXT NOT NULL);
             INSERT INTO tenants VALUES ('acme', 1, '{}', '[\"https://a.example\"]');",
        )
        .unwrap();
        drop(old);
        let db = open(&path).unwrap();
        let all = tenants(&db).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].2.outbound, vec!["https://a.example".to_string()]);
        assert!(all[0].2.signers.is_empty());
        // Opening again finds the column there and leaves it.
        drop(db);
        let db = open(&path).unwrap();
        let id = TenantId::parse("acme").unwrap();
        let grants = Grants {
            outbound: vec![],
            signers: vec!["ed25519:00".into()],
        };
        update_tenant(&db, &id, &Quota::default(), &grants).unwrap();
        assert_eq!(tenants(&db).unwrap()[0].2, grants);
    }
}
