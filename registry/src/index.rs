//! The embedded index: SQLite in WAL mode, one transaction per change.
//!
//! Every change (publish, channel moves, deletes) goes through ONE writer connection
//! behind a mutex, in a transaction begun with `BEGIN IMMEDIATE` where it reads before
//! it writes, so a check and the write it decides happen under one write lock (also
//! against another process on the same file). Reads go through a pool of
//! [`READERS`] connections opened with `PRAGMA query_only = 1`: in WAL mode they read
//! the last committed state without waiting for the writer or for each other. Every
//! connection waits up to [`BUSY_TIMEOUT`] for a lock before it reports `SQLITE_BUSY`.
//!
//! `Index::open(":memory:")` (a private database that dies with the `Index`) has no
//! pool: there is one connection, and reads share the writer's.

use crate::{Digest, NewVersion, RegistryError, Result};
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use serde::Serialize;
use std::ops::Deref;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// How many read connections an index opens.
pub const READERS: u32 = 4;
/// How long a connection waits for a lock another connection holds.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VersionRecord {
    pub tenant: String,
    pub name: String,
    pub version: String,
    pub digest: String,
    pub kind: String,
    pub world: String,
    pub size: u64,
    pub created_at: String,
    #[serde(skip)]
    pub manifest: String,
}

impl VersionRecord {
    pub fn semver(&self) -> Result<semver::Version> {
        semver::Version::parse(&self.version)
            .map_err(|e| RegistryError::Storage(format!("bad version in index: {e}")))
    }

    pub fn digest(&self) -> Result<Digest> {
        Digest::parse(&self.digest)
    }

    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(VersionRecord {
            tenant: row.get(0)?,
            name: row.get(1)?,
            version: row.get(2)?,
            digest: row.get(3)?,
            kind: row.get(4)?,
            world: row.get(5)?,
            size: row.get::<_, i64>(6)? as u64,
            created_at: row.get(7)?,
            manifest: row.get(8)?,
        })
    }
}

const COLUMNS: &str = "tenant, name, version, digest, kind, world, size, created_at, manifest";

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
     PRAGMA synchronous = FULL;
     CREATE TABLE IF NOT EXISTS versions (
         tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
         digest TEXT NOT NULL, kind TEXT NOT NULL, world TEXT NOT NULL,
         size INTEGER NOT NULL, created_at TEXT NOT NULL, manifest TEXT NOT NULL,
         PRIMARY KEY (tenant, name, version));
     CREATE TABLE IF NOT EXISTS channels (
         tenant TEXT NOT NULL, name TEXT NOT NULL, channel TEXT NOT NULL,
         version TEXT NOT NULL,
         PRIMARY KEY (tenant, name, channel));
     CREATE TABLE IF NOT EXISTS alias_history (
         seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, name TEXT NOT NULL,
         alias TEXT NOT NULL, from_version TEXT, to_version TEXT NOT NULL,
         actor TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
     CREATE INDEX IF NOT EXISTS alias_history_name ON alias_history (tenant, name, seq);
     CREATE TABLE IF NOT EXISTS traffic (
         tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
         weight INTEGER NOT NULL, PRIMARY KEY (tenant, name, version));
     CREATE TABLE IF NOT EXISTS shadows (
         tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
         PRIMARY KEY (tenant, name));
     CREATE TABLE IF NOT EXISTS rollouts (
         id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, model TEXT NOT NULL,
         alias TEXT NOT NULL, baseline TEXT NOT NULL, candidate TEXT NOT NULL,
         spec TEXT NOT NULL, actor TEXT NOT NULL, state TEXT NOT NULL,
         step INTEGER NOT NULL, failures INTEGER NOT NULL, started_ms INTEGER NOT NULL,
         step_started_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
         reason TEXT NOT NULL);
     CREATE UNIQUE INDEX IF NOT EXISTS rollouts_running ON rollouts (tenant, model)
         WHERE state = 'running';
     CREATE TABLE IF NOT EXISTS rollout_steps (
         rollout INTEGER NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL,
         step INTEGER NOT NULL, outcome TEXT NOT NULL, detail TEXT NOT NULL,
         PRIMARY KEY (rollout, seq));
     CREATE TABLE IF NOT EXISTS signatures (
         digest TEXT NOT NULL, key TEXT NOT NULL, signature TEXT NOT NULL,
         added_at TEXT NOT NULL, PRIMARY KEY (digest, key));";

/// What [`Index::insert`] found: it inserted the row, or one was already there (the
/// caller compares digests).
pub(crate) enum Inserted {
    Created(VersionRecord),
    Existing(VersionRecord),
}

pub struct Index {
    writer: Mutex<Connection>,
    /// `None` for `:memory:`, whose reads use the writer.
    readers: Option<r2d2::Pool<SqliteConnectionManager>>,
}

/// A connection to read with: one from the pool, or the writer of an in-memory index.
pub(crate) enum ReadConn<'a> {
    Pooled(r2d2::PooledConnection<SqliteConnectionManager>),
    Writer(MutexGuard<'a, Connection>),
}

impl Deref for ReadConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ReadConn::Pooled(c) => c,
            ReadConn::Writer(c) => c,
        }
    }
}

impl Index {
    /// Open (or create) the index at `path`. The writer opens first and creates the
    /// schema, so the read connections open a database that has its tables.
    pub fn open(path: &Path) -> Result<Self> {
        let writer = Connection::open(path)?;
        writer.busy_timeout(BUSY_TIMEOUT)?;
        writer.execute_batch(SCHEMA)?;
        let readers = match path == Path::new(":memory:") {
            true => None,
            false => {
                let manager = SqliteConnectionManager::file(path).with_init(|c| {
                    c.busy_timeout(BUSY_TIMEOUT)?;
                    // A small page cache each: readers serve point lookups, and four
                    // default-sized caches would hold ~8 MiB after a burst of cold loads.
                    c.execute_batch("PRAGMA query_only = 1; PRAGMA cache_size = -256;")
                });
                let pool = r2d2::Pool::builder()
                    .max_size(READERS)
                    .build(manager)
                    .map_err(|e| RegistryError::Storage(format!("index read pool: {e}")))?;
                Some(pool)
            }
        };
        Ok(Index {
            writer: Mutex::new(writer),
            readers,
        })
    }

    pub(crate) fn writer(&self) -> Result<MutexGuard<'_, Connection>> {
        self.writer
            .lock()
            .map_err(|_| RegistryError::Storage("index lock poisoned".into()))
    }

    pub(crate) fn reader(&self) -> Result<ReadConn<'_>> {
        match &self.readers {
            Some(pool) => pool
                .get()
                .map(ReadConn::Pooled)
                .map_err(|e| RegistryError::Storage(format!("index read connection: {e}"))),
            None => self.writer().map(ReadConn::Writer),
        }
    }

    /// Insert a version and point `stable` at it, in one `BEGIN IMMEDIATE` transaction
    /// that first looks for the row: of concurrent inserts of one version exactly one
    /// creates it, the others get [`Inserted::Existing`] (never a key violation).
    pub(crate) fn insert(&self, v: &NewVersion<'_>, digest: &Digest) -> Result<Inserted> {
        let created_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let version = v.version.to_string();
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(existing) = get_on(&tx, v.tenant, v.name, &version)? {
            return Ok(Inserted::Existing(existing));
        }
        tx.execute(
            &format!(
                "INSERT INTO versions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                v.tenant,
                v.name,
                version,
                digest.to_string(),
                v.kind,
                v.world,
                v.bytes.len() as i64,
                created_at,
                v.manifest
            ],
        )?;
        upsert_channel(&tx, v.tenant, v.name, "stable", &version)?;
        let record = get_on(&tx, v.tenant, v.name, &version)?
            .ok_or_else(|| RegistryError::Storage("inserted version vanished".into()))?;
        tx.commit()?;
        Ok(Inserted::Created(record))
    }

    /// Delete one version, in one `BEGIN IMMEDIATE` transaction. `Ok(None)` when there
    /// is no such row. When `stable` points at it: without `force` the delete is
    /// refused; with `force` `stable` moves to the highest remaining version by semver,
    /// or its row goes when none remain. Other channels that point at the version are
    /// removed. Returns the deleted row and where `stable` points afterwards.
    pub(crate) fn delete(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
        force: bool,
    ) -> Result<Option<(VersionRecord, Option<String>)>> {
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(record) = get_on(&tx, tenant, name, version)? else {
            return Ok(None);
        };
        let stable = channel_on(&tx, tenant, name, "stable")?;
        let is_serving = stable.as_deref() == Some(version);
        if is_serving && !force {
            return Err(RegistryError::Invalid(format!(
                "`{name}@{version}` is the serving version of `{name}`; \
                 roll back first or pass --force"
            )));
        }
        tx.execute(
            "DELETE FROM versions WHERE tenant = ?1 AND name = ?2 AND version = ?3",
            params![tenant, name, version],
        )?;
        // A shadow of the deleted version ends with it.
        tx.execute(
            "DELETE FROM shadows WHERE tenant = ?1 AND name = ?2 AND version = ?3",
            params![tenant, name, version],
        )?;
        tx.execute(
            "DELETE FROM channels WHERE tenant = ?1 AND name = ?2 AND version = ?3
               AND channel != 'stable'",
            params![tenant, name, version],
        )?;
        let serving = match is_serving {
            false => stable,
            true => {
                let next = versions_on(&tx, tenant, name)?.pop();
                match &next {
                    Some(r) => upsert_channel(&tx, tenant, name, "stable", &r.version)?,
                    None => {
                        tx.execute(
                            "DELETE FROM channels WHERE tenant = ?1 AND name = ?2
                               AND channel = 'stable'",
                            params![tenant, name],
                        )?;
                    }
                }
                next.map(|r| r.version)
            }
        };
        tx.commit()?;
        Ok(Some((record, serving)))
    }

    pub fn get(&self, tenant: &str, name: &str, version: &str) -> Result<Option<VersionRecord>> {
        get_on(&*self.reader()?, tenant, name, version)
    }

    pub fn channel(&self, tenant: &str, name: &str, channel: &str) -> Result<Option<String>> {
        channel_on(&*self.reader()?, tenant, name, channel)
    }

    pub fn set_channel(
        &self,
        tenant: &str,
        name: &str,
        channel: &str,
        version: &str,
    ) -> Result<()> {
        upsert_channel(&*self.writer()?, tenant, name, channel, version)
    }

    /// Point `channel` at `version` only if that version exists, in one `BEGIN
    /// IMMEDIATE` transaction: a delete committed just before cannot leave the channel
    /// pointing at nothing. `Ok(false)` when the version is gone.
    pub fn move_channel(
        &self,
        tenant: &str,
        name: &str,
        channel: &str,
        version: &str,
    ) -> Result<bool> {
        let mut conn = self.writer()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let exists = version_exists(&tx, tenant, name, version)?;
        if exists {
            upsert_channel(&tx, tenant, name, channel, version)?;
        }
        tx.commit()?;
        Ok(exists)
    }

    /// The `stable` version of a function, read in one statement (a concurrent channel
    /// move or delete cannot fall between reading the channel and its row).
    pub fn serving(&self, tenant: &str, name: &str) -> Result<Option<VersionRecord>> {
        Ok(self
            .reader()?
            .query_row(
                &format!(
                    "SELECT {} FROM versions v JOIN channels c
                       ON c.tenant = v.tenant AND c.name = v.name AND c.version = v.version
                     WHERE v.tenant = ?1 AND v.name = ?2 AND c.channel = 'stable'",
                    prefixed_columns()
                ),
                params![tenant, name],
                VersionRecord::from_row,
            )
            .optional()?)
    }

    /// All versions of a function, oldest semver first.
    pub fn versions(&self, tenant: &str, name: &str) -> Result<Vec<VersionRecord>> {
        versions_on(&*self.reader()?, tenant, name)
    }

    /// Bytes a tenant's versions hold (components and models, every version).
    pub fn tenant_bytes(&self, tenant: &str) -> Result<u64> {
        let conn = self.reader()?;
        let n: i64 = conn.query_row(
            "SELECT COALESCE(SUM(size), 0) FROM versions WHERE tenant = ?1",
            [tenant],
            |r| r.get(0),
        )?;
        Ok(n as u64)
    }

    /// Every row of a tenant, any kind (functions, pipelines, models under their
    /// stored `model:` names), by name, then oldest semver first.
    pub fn all_versions(&self, tenant: &str) -> Result<Vec<VersionRecord>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM versions WHERE tenant = ?1 ORDER BY name"
        ))?;
        let mut out = stmt
            .query_map(params![tenant], VersionRecord::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        // A stable sort: names stay in order, each name's versions by semver.
        out.sort_by(|a, b| {
            (a.name.as_str(), a.semver().ok()).cmp(&(b.name.as_str(), b.semver().ok()))
        });
        Ok(out)
    }

    /// Every digest any row of any tenant references.
    pub fn digests(&self) -> Result<Vec<String>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare("SELECT DISTINCT digest FROM versions")?;
        let out = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(out)
    }

    /// Every (tenant, digest) a version references.
    pub fn tenant_digests(&self) -> Result<Vec<(String, String)>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare("SELECT DISTINCT tenant, digest FROM versions")?;
        let out = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
        Ok(out)
    }

    /// The serving version of every function of a tenant, by name.
    pub fn list_serving(&self, tenant: &str) -> Result<Vec<VersionRecord>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM versions v JOIN channels c
               ON c.tenant = v.tenant AND c.name = v.name AND c.version = v.version
             WHERE v.tenant = ?1 AND c.channel = 'stable' AND v.kind != 'model'
             ORDER BY v.name",
            prefixed_columns()
        ))?;
        let out = stmt
            .query_map(params![tenant], VersionRecord::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(out)
    }

    /// The distinct names of a tenant's entries of one kind.
    pub fn names(&self, tenant: &str, kind: &str) -> Result<Vec<String>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT name FROM versions WHERE tenant = ?1 AND kind = ?2 ORDER BY name",
        )?;
        let out = stmt
            .query_map(params![tenant, kind], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(out)
    }

    /// Every tenant that has at least one row (the host warms its view from this).
    pub fn tenants(&self) -> Result<Vec<String>> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare("SELECT DISTINCT tenant FROM versions ORDER BY tenant")?;
        let out = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(out)
    }
}

/// `COLUMNS` qualified with the `v.` alias of `versions`.
fn prefixed_columns() -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("v.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn get_on(
    conn: &Connection,
    tenant: &str,
    name: &str,
    version: &str,
) -> Result<Option<VersionRecord>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM versions WHERE tenant = ?1 AND name = ?2 AND version = ?3"
            ),
            params![tenant, name, version],
            VersionRecord::from_row,
        )
        .optional()?)
}

pub(crate) fn channel_on(
    conn: &Connection,
    tenant: &str,
    name: &str,
    channel: &str,
) -> Result<Option<String>> {
    Ok(conn
        .query_row(
            "SELECT version FROM channels WHERE tenant = ?1 AND name = ?2 AND channel = ?3",
            params![tenant, name, channel],
            |r| r.get(0),
        )
        .optional()?)
}

/// Whether `name@version` of `tenant` is in the index (inside the caller's transaction).
pub(crate) fn version_exists(
    conn: &Connection,
    tenant: &str,
    name: &str,
    version: &str,
) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM versions WHERE tenant = ?1 AND name = ?2 AND version = ?3)",
        params![tenant, name, version],
        |r| r.get(0),
    )?)
}

pub(crate) fn upsert_channel(
    conn: &Connection,
    tenant: &str,
    name: &str,
    channel: &str,
    version: &str,
) -> Result<()> {
    conn.execute(
        "INSERT INTO channels (tenant, name, channel, version) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (tenant, name, channel) DO UPDATE SET version = excluded.version",
        params![tenant, name, channel, version],
    )?;
    Ok(())
}

/// All versions of a name, oldest semver first.
fn versions_on(conn: &Connection, tenant: &str, name: &str) -> Result<Vec<VersionRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM versions WHERE tenant = ?1 AND name = ?2"
    ))?;
    let mut out = stmt
        .query_map(params![tenant, name], VersionRecord::from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    out.sort_by_key(|r| r.semver().ok());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(index: &Index, tenant: &str, name: &str, version: &str, bytes: &[u8]) {
        let version = semver::Version::parse(version).unwrap();
        let v = NewVersion {
            tenant,
            name,
            version: &version,
            kind: "transform",
            world: "w",
            manifest: "{}",
            bytes,
        };
        assert!(matches!(
            index.insert(&v, &Digest::of(bytes)).unwrap(),
            Inserted::Created(_)
        ));
    }

    #[test]
    fn all_versions_lists_every_kind_by_name_then_semver() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite3")).unwrap();
        insert(&index, "t", "b", "1.10.0", b"1");
        insert(&index, "t", "b", "1.9.0", b"2");
        insert(&index, "t", "a", "1.0.0", b"3");
        insert(&index, "t", "model:m", "1.0.0", b"4");
        insert(&index, "u", "a", "1.0.0", b"5");
        let got: Vec<(String, String)> = index
            .all_versions("t")
            .unwrap()
            .into_iter()
            .map(|r| (r.name, r.version))
            .collect();
        let want = [("a", "1.0.0"), ("b", "1.9.0"), ("b", "1.10.0")];
        let mut want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        want.push(("model:m".into(), "1.0.0".into()));
        assert_eq!(got, want);
        assert_eq!(index.digests().unwrap().len(), 5);
    }

    #[test]
    fn readers_are_query_only_and_see_the_writers_commits() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("i.sqlite3")).unwrap();
        insert(&index, "t", "a", "1.0.0", b"1");
        // Hold every read connection but one at once: each sees the commit.
        let held: Vec<_> = (0..READERS - 1).map(|_| index.reader().unwrap()).collect();
        assert!(index.get("t", "a", "1.0.0").unwrap().is_some());
        let err = held[0].execute("DELETE FROM versions", []).unwrap_err();
        assert!(err.to_string().contains("readonly"), "{err}");
    }

    #[test]
    fn in_memory_index_works_without_a_pool() {
        let index = Index::open(Path::new(":memory:")).unwrap();
        insert(&index, "t", "a", "1.0.0", b"1");
        assert_eq!(
            index.serving("t", "a").unwrap().map(|r| r.version),
            Some("1.0.0".to_string())
        );
    }
}
