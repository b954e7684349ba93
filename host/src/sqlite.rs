//! One SQLite connection shared by an embedded store's tasks (reports, datasets);
//! every use runs on a blocking thread, never on an async worker.

use rusqlite::Connection;
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub struct SharedDb {
    conn: Arc<Mutex<Connection>>,
    /// What it stores, for errors ("the report store").
    what: &'static str,
}

impl SharedDb {
    pub fn new(conn: Connection, what: &'static str) -> SharedDb {
        SharedDb {
            conn: Arc::new(Mutex::new(conn)),
            what,
        }
    }

    /// Open (or create) `path` in WAL mode (`synchronous = NORMAL`: what these stores
    /// keep may lose its last writes to a power cut, never its consistency) and make
    /// `schema`. Blocking.
    pub fn open(
        path: &std::path::Path,
        schema: &str,
        what: &'static str,
    ) -> anyhow::Result<SharedDb> {
        let conn = Connection::open(path)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        conn.execute_batch(schema)?;
        Ok(SharedDb::new(conn, what))
    }

    /// Run `f` on the connection, on a blocking thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let (conn, what) = (self.conn.clone(), self.what);
        tokio::task::spawn_blocking(move || {
            let db = conn
                .lock()
                .map_err(|_| anyhow::anyhow!("{what}'s lock is poisoned"))?;
            f(&db)
        })
        .await?
    }
}
