//! The embedded index: SQLite, one transaction per change.

use crate::{Digest, NewVersion, RegistryError, Result};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;
use std::time::SystemTime;

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

pub struct Index {
    conn: Mutex<Connection>,
}

impl Index {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS versions (
                 tenant TEXT NOT NULL, name TEXT NOT NULL, version TEXT NOT NULL,
                 digest TEXT NOT NULL, kind TEXT NOT NULL, world TEXT NOT NULL,
                 size INTEGER NOT NULL, created_at TEXT NOT NULL, manifest TEXT NOT NULL,
                 PRIMARY KEY (tenant, name, version));
             CREATE TABLE IF NOT EXISTS channels (
                 tenant TEXT NOT NULL, name TEXT NOT NULL, channel TEXT NOT NULL,
                 version TEXT NOT NULL,
                 PRIMARY KEY (tenant, name, channel));",
        )?;
        Ok(Index {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| RegistryError::Storage("index lock poisoned".into()))
    }

    /// Insert a version and point `stable` at it, atomically.
    pub(crate) fn insert(&self, v: &NewVersion<'_>, digest: &Digest) -> Result<VersionRecord> {
        let created_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let mut conn = self.conn()?;
        let tx = conn.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO versions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                v.tenant,
                v.name,
                v.version.to_string(),
                digest.to_string(),
                v.kind,
                v.world,
                v.bytes.len() as i64,
                created_at,
                v.manifest
            ],
        )?;
        tx.execute(
            "INSERT INTO channels (tenant, name, channel, version) VALUES (?1, ?2, 'stable', ?3)
             ON CONFLICT (tenant, name, channel) DO UPDATE SET version = excluded.version",
            params![v.tenant, v.name, v.version.to_string()],
        )?;
        tx.commit()?;
        drop(conn);
        self.get(v.tenant, v.name, &v.version.to_string())?
            .ok_or_else(|| RegistryError::Storage("inserted version vanished".into()))
    }

    pub fn get(&self, tenant: &str, name: &str, version: &str) -> Result<Option<VersionRecord>> {
        Ok(self
            .conn()?
            .query_row(
                &format!("SELECT {COLUMNS} FROM versions WHERE tenant = ?1 AND name = ?2 AND version = ?3"),
                params![tenant, name, version],
                VersionRecord::from_row,
            )
            .optional()?)
    }

    pub fn channel(&self, tenant: &str, name: &str, channel: &str) -> Result<Option<String>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT version FROM channels WHERE tenant = ?1 AND name = ?2 AND channel = ?3",
                params![tenant, name, channel],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_channel(
        &self,
        tenant: &str,
        name: &str,
        channel: &str,
        version: &str,
    ) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO channels (tenant, name, channel, version) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, name, channel) DO UPDATE SET version = excluded.version",
            params![tenant, name, channel, version],
        )?;
        Ok(())
    }

    /// The `stable` version of a function.
    pub fn serving(&self, tenant: &str, name: &str) -> Result<Option<VersionRecord>> {
        match self.channel(tenant, name, "stable")? {
            Some(v) => self.get(tenant, name, &v),
            None => Ok(None),
        }
    }

    /// All versions of a function, oldest semver first.
    pub fn versions(&self, tenant: &str, name: &str) -> Result<Vec<VersionRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM versions WHERE tenant = ?1 AND name = ?2"
        ))?;
        let mut out = stmt
            .query_map(params![tenant, name], VersionRecord::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        out.sort_by_key(|r| r.semver().ok());
        Ok(out)
    }

    /// The serving version of every function of a tenant, by name.
    pub fn list_serving(&self, tenant: &str) -> Result<Vec<VersionRecord>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {} FROM versions v JOIN channels c
               ON c.tenant = v.tenant AND c.name = v.name AND c.version = v.version
             WHERE v.tenant = ?1 AND c.channel = 'stable' AND v.kind != 'model'
             ORDER BY v.name",
            COLUMNS
                .split(", ")
                .map(|c| format!("v.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        let out = stmt
            .query_map(params![tenant], VersionRecord::from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(out)
    }

    /// The distinct names of a tenant's entries of one kind.
    pub fn names(&self, tenant: &str, kind: &str) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT name FROM versions WHERE tenant = ?1 AND kind = ?2 ORDER BY name",
        )?;
        let out = stmt
            .query_map(params![tenant, kind], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(out)
    }

    /// Every serving version of every tenant (the host warms its view from this).
    pub fn tenants(&self) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT DISTINCT tenant FROM versions ORDER BY tenant")?;
        let out = stmt
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(out)
    }
}
