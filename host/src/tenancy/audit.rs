//! The audit log: every admin action, appended with who, when, what and the result,
//! each entry's hash covering the one before it. Editing an entry changes its hash
//! (and breaks the next entry's link); deleting one leaves a gap in the sequence and
//! a link that does not match. Truncating the newest entries is caught against a head
//! recorded earlier (`quiver audit verify` prints the head and the count).

use super::{TenancyError, TenantId};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use sha2::{Digest as _, Sha256};

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An action to record.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub actor: String,
    pub tenant: Option<TenantId>,
    /// e.g. `deploy`, `rollback`, `tokens.create`.
    pub action: String,
    /// What it acted on, e.g. `fraud-score@1.2.0`.
    pub target: String,
    /// `ok`, or the error code and HTTP status.
    pub result: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: u64,
    pub actor: String,
    pub tenant: Option<String>,
    pub action: String,
    pub target: String,
    pub result: String,
    pub prev: String,
    pub hash: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditVerdict {
    pub ok: bool,
    pub entries: u64,
    /// The last entry's hash: keep it to detect a later truncation.
    pub head: String,
    /// The first entry that does not follow, and why.
    pub broken_at: Option<u64>,
    pub reason: Option<String>,
}

fn entry_hash(prev: &str, e: &AuditEntry) -> String {
    // A JSON array: every field delimited and escaped, so no two entries share bytes.
    let body = serde_json::json!([e.seq, e.at, e.actor, e.tenant, e.action, e.target, e.result]);
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(b"\n");
    h.update(body.to_string().as_bytes());
    hex::encode(h.finalize())
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: r.get::<_, i64>(0)? as u64,
        at: r.get::<_, i64>(1)? as u64,
        actor: r.get(2)?,
        tenant: r.get(3)?,
        action: r.get(4)?,
        target: r.get(5)?,
        result: r.get(6)?,
        prev: r.get(7)?,
        hash: r.get(8)?,
    })
}

const COLUMNS: &str = "seq, at, actor, tenant, action, target, result, prev, hash";

pub(super) fn append(db: &mut Connection, e: NewEntry) -> Result<AuditEntry, TenancyError> {
    let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = last.map_or((1, GENESIS.to_string()), |(s, h)| (s as u64 + 1, h));
    let mut entry = AuditEntry {
        seq,
        at: super::now_secs(),
        actor: e.actor,
        tenant: e.tenant.map(|t| t.to_string()),
        action: e.action,
        target: e.target,
        result: e.result,
        prev: prev.clone(),
        hash: String::new(),
    };
    entry.hash = entry_hash(&prev, &entry);
    tx.execute(
        &format!("INSERT INTO audit ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            entry.seq as i64,
            entry.at as i64,
            entry.actor,
            entry.tenant,
            entry.action,
            entry.target,
            entry.result,
            entry.prev,
            entry.hash
        ],
    )?;
    tx.commit()?;
    Ok(entry)
}

/// The newest `limit` entries (of `tenant`, if given), oldest first.
pub(super) fn list(
    db: &Connection,
    tenant: Option<&TenantId>,
    limit: usize,
) -> Result<Vec<AuditEntry>, TenancyError> {
    let limit = limit.min(10_000) as i64;
    let mut out = match tenant {
        Some(t) => db
            .prepare(&format!(
                "SELECT {COLUMNS} FROM audit WHERE tenant = ?1 ORDER BY seq DESC LIMIT ?2"
            ))?
            .query_map(params![t.as_str(), limit], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
        None => db
            .prepare(&format!(
                "SELECT {COLUMNS} FROM audit ORDER BY seq DESC LIMIT ?1"
            ))?
            .query_map(params![limit], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?,
    };
    out.reverse();
    Ok(out)
}

pub(super) fn verify(db: &Connection) -> Result<AuditVerdict, TenancyError> {
    let mut stmt = db.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
    let mut rows = stmt.query([])?;
    let mut prev = GENESIS.to_string();
    let mut expected_seq = 1u64;
    let mut entries = 0u64;
    let broken = |seq: u64, reason: String, entries: u64, head: &str| AuditVerdict {
        ok: false,
        entries,
        head: head.to_string(),
        broken_at: Some(seq),
        reason: Some(reason),
    };
    while let Some(r) = rows.next()? {
        let e = row(r)?;
        if e.seq != expected_seq {
            return Ok(broken(
                e.seq,
                format!("entry {expected_seq} is missing (the next is {})", e.seq),
                entries,
                &prev,
            ));
        }
        if e.prev != prev {
            return Ok(broken(
                e.seq,
                "its link does not match the entry before it".into(),
                entries,
                &prev,
            ));
        }
        if entry_hash(&prev, &e) != e.hash {
            return Ok(broken(
                e.seq,
                "its contents do not match its hash (edited)".into(),
                entries,
                &prev,
            ));
        }
        prev = e.hash;
        expected_seq += 1;
        entries += 1;
    }
    Ok(AuditVerdict {
        ok: true,
        entries,
        head: prev,
        broken_at: None,
        reason: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let dir = tempfile::tempdir().unwrap();
        let conn = super::super::store::open(&dir.path().join("t.db")).unwrap();
        std::mem::forget(dir);
        conn
    }

    fn add(db: &mut Connection, action: &str) {
        append(
            db,
            NewEntry {
                actor: "platform:x".into(),
                tenant: Some(TenantId::parse("acme").unwrap()),
                action: action.into(),
                target: "f@1.0.0".into(),
                result: "ok".into(),
            },
        )
        .unwrap();
    }

    #[test]
    fn an_edit_and_a_deletion_are_both_found() {
        let mut conn = db();
        for a in ["deploy", "rollback", "rm", "tokens.create"] {
            add(&mut conn, a);
        }
        let v = verify(&conn).unwrap();
        assert!(v.ok && v.entries == 4, "{v:?}");

        conn.execute("UPDATE audit SET result = 'denied' WHERE seq = 2", [])
            .unwrap();
        let v = verify(&conn).unwrap();
        assert_eq!((v.ok, v.broken_at), (false, Some(2)), "{v:?}");

        let mut conn = db();
        for a in ["deploy", "rollback", "rm"] {
            add(&mut conn, a);
        }
        conn.execute("DELETE FROM audit WHERE seq = 2", []).unwrap();
        let v = verify(&conn).unwrap();
        assert_eq!((v.ok, v.broken_at), (false, Some(3)), "{v:?}");
        // Renumbering to hide the gap still breaks the link.
        conn.execute("UPDATE audit SET seq = 2 WHERE seq = 3", [])
            .unwrap();
        let v = verify(&conn).unwrap();
        assert_eq!((v.ok, v.broken_at), (false, Some(2)), "{v:?}");
    }
}
