//! The embedded event log: SQLite in WAL mode with `synchronous = FULL`, so a
//! published event is on disk before `publish` returns and survives `kill -9`. One
//! table of events; one of deliveries per (group, event) holding the lease, the
//! attempt count and, for a dead event, the reason; one cursor per group. SQLite
//! rather than segment files: the lease/ack/retry bookkeeping is a few indexed
//! updates in one transaction, which segment files would have to reinvent.

use super::{Bus, DeadEvent, Event, EventError, Failed, Group, NewEvent, Retry, Trim, MAX_PAYLOAD};
use crate::tenancy::TenantId;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SCHEMA: &str = "PRAGMA journal_mode = WAL;
     PRAGMA synchronous = FULL;
     CREATE TABLE IF NOT EXISTS events (
         id INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, topic TEXT NOT NULL,
         time_ms INTEGER NOT NULL, content_type TEXT NOT NULL, payload BLOB NOT NULL,
         source TEXT, traceparent TEXT);
     CREATE INDEX IF NOT EXISTS events_topic ON events (tenant, topic, id);
     CREATE TABLE IF NOT EXISTS cursors (
         tenant TEXT NOT NULL, topic TEXT NOT NULL, grp TEXT NOT NULL,
         next_id INTEGER NOT NULL, PRIMARY KEY (tenant, topic, grp));
     CREATE TABLE IF NOT EXISTS deliveries (
         tenant TEXT NOT NULL, topic TEXT NOT NULL, grp TEXT NOT NULL,
         id INTEGER NOT NULL, attempts INTEGER NOT NULL,
         state TEXT NOT NULL CHECK (state IN ('leased', 'waiting', 'dead')),
         visible_at INTEGER NOT NULL, reason TEXT,
         PRIMARY KEY (tenant, topic, grp, id));
     CREATE INDEX IF NOT EXISTS deliveries_id ON deliveries (tenant, topic, id);
     CREATE TABLE IF NOT EXISTS ticks (
         schedule TEXT NOT NULL, tick_ms INTEGER NOT NULL, PRIMARY KEY (schedule, tick_ms));";

use crate::unix_ms as now_ms;

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// The embedded backend of [`Bus`]. One host owns a data dir, so at open every
/// lease a previous process held is given back at once (that process is gone):
/// an event whose function was running at a crash is delivered again on restart,
/// its attempt counted.
pub struct EventLog {
    log: Arc<Sqlite>,
    /// Bumped by every publish and replay, so an idle consumer wakes at once.
    changed: tokio::sync::watch::Sender<u64>,
}

impl EventLog {
    /// Open (or create) the log at `path`. Blocking.
    pub fn open(path: &Path) -> Result<EventLog, EventError> {
        let log = Sqlite::open(path)?;
        log.db()?.execute(
            "UPDATE deliveries SET visible_at = 0 WHERE state = 'leased'",
            [],
        )?;
        Ok(EventLog {
            log: Arc::new(log),
            changed: tokio::sync::watch::channel(0).0,
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Sqlite) -> Result<T, EventError> + Send + 'static,
    ) -> Result<T, EventError> {
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || f(&log))
            .await
            .map_err(|e| EventError::Storage(format!("event log task: {e}")))?
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

fn parse_id(id: &str) -> Result<i64, EventError> {
    id.parse::<i64>()
        .map_err(|_| EventError::NotLeased(id.chars().take(64).collect()))
}

#[async_trait]
impl Bus for EventLog {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn publish(
        &self,
        tenant: &TenantId,
        topic: &str,
        event: NewEvent,
    ) -> Result<String, EventError> {
        let (tenant, topic) = (tenant.clone(), topic.to_string());
        let id = self
            .blocking(move |l| l.publish(&tenant, &topic, &event))
            .await?;
        self.bump();
        Ok(id.to_string())
    }

    async fn subscribe(&self, group: &Group) -> Result<(), EventError> {
        let group = group.clone();
        self.blocking(move |l| l.subscribe(&group)).await
    }

    async fn claim(
        &self,
        group: &Group,
        _consumer: &str,
        max: usize,
        visibility: Duration,
        block: Duration,
    ) -> Result<Vec<Event>, EventError> {
        // Marks what has been published so far as seen: a publish after this wakes `changed`.
        let mut rx = self.changed.subscribe();
        let g = group.clone();
        let got = self.blocking(move |l| l.claim(&g, max, visibility)).await?;
        if !got.is_empty() || block.is_zero() {
            return Ok(got);
        }
        // Wake for a publish, or when the group's next retry or lease comes due.
        let g = group.clone();
        let due = self.blocking(move |l| l.next_due(&g)).await?;
        let wait = match due {
            Some(at) => block.min(Duration::from_millis(at.saturating_sub(now_ms()))),
            None => block,
        };
        let _ = tokio::time::timeout(wait, rx.changed()).await;
        let g = group.clone();
        self.blocking(move |l| l.claim(&g, max, visibility)).await
    }

    async fn ack(&self, group: &Group, id: &str) -> Result<(), EventError> {
        let (group, id) = (group.clone(), parse_id(id)?);
        self.blocking(move |l| l.ack(&group, id)).await
    }

    async fn fail(
        &self,
        group: &Group,
        id: &str,
        reason: &str,
        retry: &Retry,
    ) -> Result<Failed, EventError> {
        let (group, id, reason, retry) = (group.clone(), parse_id(id)?, reason.to_string(), *retry);
        let jitter = super::jitter();
        self.blocking(move |l| l.fail(&group, id, &reason, &retry, jitter))
            .await
    }

    async fn dead(&self, group: &Group, limit: usize) -> Result<Vec<DeadEvent>, EventError> {
        let group = group.clone();
        self.blocking(move |l| l.dead(&group, limit)).await
    }

    async fn replay(&self, group: &Group, ids: Option<&[String]>) -> Result<usize, EventError> {
        let group = group.clone();
        let ids = ids.map(|ids| {
            ids.iter()
                .filter_map(|i| i.parse::<i64>().ok())
                .collect::<Vec<_>>()
        });
        let n = self
            .blocking(move |l| l.replay(&group, ids.as_deref()))
            .await?;
        self.bump();
        Ok(n)
    }

    async fn groups(&self, tenant: &TenantId, topic: &str) -> Result<Vec<String>, EventError> {
        let (tenant, topic) = (tenant.clone(), topic.to_string());
        self.blocking(move |l| l.groups(&tenant, &topic)).await
    }

    async fn recent(
        &self,
        tenant: &TenantId,
        topic: &str,
        limit: usize,
    ) -> Result<Vec<Event>, EventError> {
        let (tenant, topic) = (tenant.clone(), topic.to_string());
        self.blocking(move |l| l.recent(&tenant, &topic, limit))
            .await
    }

    async fn trim(&self, policy: &Trim) -> Result<u64, EventError> {
        let policy = *policy;
        self.blocking(move |l| l.trim(&policy)).await
    }

    async fn tick(&self, key: &str, tick_ms: u64) -> Result<bool, EventError> {
        let key = key.to_string();
        self.blocking(move |l| {
            let n = l.db()?.execute(
                "INSERT INTO ticks (schedule, tick_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![key, tick_ms as i64],
            )?;
            Ok(n == 1)
        })
        .await
    }
}

/// The log itself; every method blocks on SQLite.
struct Sqlite {
    db: Mutex<Connection>,
}

impl Sqlite {
    fn open(path: &Path) -> Result<Sqlite, EventError> {
        let db = Connection::open(path)
            .map_err(|e| EventError::Storage(format!("opening {}: {e}", path.display())))?;
        db.busy_timeout(Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        Ok(Sqlite { db: Mutex::new(db) })
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, EventError> {
        self.db
            .lock()
            .map_err(|_| EventError::Storage("event log lock poisoned".into()))
    }

    /// Append an event (durable when this returns); its id.
    fn publish(&self, tenant: &TenantId, topic: &str, event: &NewEvent) -> Result<u64, EventError> {
        super::check_topic(topic).map_err(EventError::Invalid)?;
        if event.payload.len() > MAX_PAYLOAD {
            return Err(EventError::Invalid(format!(
                "an event's payload is at most {MAX_PAYLOAD} bytes; this one is {}",
                event.payload.len()
            )));
        }
        let db = self.db()?;
        db.execute(
            "INSERT INTO events (tenant, topic, time_ms, content_type, payload, source, traceparent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                tenant.as_str(),
                topic,
                now_ms() as i64,
                event.content_type,
                event.payload,
                event.source,
                event.traceparent
            ],
        )?;
        Ok(db.last_insert_rowid() as u64)
    }

    /// Lease up to `max` events to `group` for `visibility`: first those whose
    /// retry is due or whose lease expired (a consumer that died), then new ones in
    /// order. A group's first claim starts at the events published after it
    /// subscribed (`subscribe`), or at the first one if it never did.
    fn claim(
        &self,
        group: &Group,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<Event>, EventError> {
        let now = now_ms() as i64;
        let until = now.saturating_add(ms(visibility));
        let (t, topic, g) = (group.tenant.as_str(), group.topic.as_str(), &group.name);
        let mut db = self.db()?;
        let tx = db.transaction()?;
        let mut ids: Vec<(i64, u32)> = {
            let mut stmt = tx.prepare(
                "SELECT id, attempts FROM deliveries
                 WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND state != 'dead'
                   AND visible_at <= ?4 ORDER BY id LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![t, topic, g, now, max as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect::<Result<_, _>>()?
        };
        for (id, attempts) in &mut ids {
            *attempts += 1;
            tx.execute(
                "UPDATE deliveries SET state = 'leased', attempts = ?5, visible_at = ?6
                 WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND id = ?4",
                params![t, topic, g, *id, *attempts, until],
            )?;
        }
        if ids.len() < max {
            let next: i64 = tx
                .query_row(
                    "SELECT next_id FROM cursors WHERE tenant = ?1 AND topic = ?2 AND grp = ?3",
                    params![t, topic, g],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            let fresh: Vec<i64> = {
                let mut stmt = tx.prepare(
                    "SELECT id FROM events WHERE tenant = ?1 AND topic = ?2 AND id >= ?3
                     ORDER BY id LIMIT ?4",
                )?;
                let rows = stmt
                    .query_map(params![t, topic, next, (max - ids.len()) as i64], |r| {
                        r.get(0)
                    })?;
                rows.collect::<Result<_, _>>()?
            };
            for id in &fresh {
                tx.execute(
                    "INSERT INTO deliveries (tenant, topic, grp, id, attempts, state, visible_at)
                     VALUES (?1, ?2, ?3, ?4, 1, 'leased', ?5)",
                    params![t, topic, g, id, until],
                )?;
                ids.push((*id, 1));
            }
            if let Some(last) = fresh.last() {
                tx.execute(
                    "INSERT INTO cursors (tenant, topic, grp, next_id) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (tenant, topic, grp) DO UPDATE SET next_id = ?4",
                    params![t, topic, g, last + 1],
                )?;
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for (id, attempt) in ids {
            out.push(read_event(&tx, id, attempt)?);
        }
        tx.commit()?;
        Ok(out)
    }

    /// Start `group` at the events published from now on (a new subscription does
    /// not replay a topic's history).
    fn subscribe(&self, group: &Group) -> Result<(), EventError> {
        let db = self.db()?;
        let next: i64 = db.query_row(
            "SELECT COALESCE(MAX(id), 0) + 1 FROM events WHERE tenant = ?1 AND topic = ?2",
            params![group.tenant.as_str(), group.topic],
            |r| r.get(0),
        )?;
        db.execute(
            "INSERT INTO cursors (tenant, topic, grp, next_id) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, topic, grp) DO NOTHING",
            params![group.tenant.as_str(), group.topic, group.name, next],
        )?;
        Ok(())
    }

    /// The group's function succeeded on event `id`: done with it.
    fn ack(&self, group: &Group, id: i64) -> Result<(), EventError> {
        let db = self.db()?;
        let n = db.execute(
            "DELETE FROM deliveries WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND id = ?4
             AND state = 'leased'",
            params![group.tenant.as_str(), group.topic, group.name, id],
        )?;
        match n {
            1 => Ok(()),
            _ => Err(EventError::NotLeased(id.to_string())),
        }
    }

    /// The group's function failed on event `id` (on its `attempt`-th delivery):
    /// retry after the policy's backoff, or, past `max_attempts`, dead with `reason`.
    fn fail(
        &self,
        group: &Group,
        id: i64,
        reason: &str,
        retry: &Retry,
        jitter: f64,
    ) -> Result<Failed, EventError> {
        let db = self.db()?;
        let key = params![group.tenant.as_str(), group.topic, group.name, id];
        let attempts: Option<u32> = db
            .query_row(
                "SELECT attempts FROM deliveries WHERE tenant = ?1 AND topic = ?2 AND grp = ?3
                 AND id = ?4 AND state = 'leased'",
                key,
                |r| r.get(0),
            )
            .optional()?;
        let Some(attempts) = attempts else {
            return Err(EventError::NotLeased(id.to_string()));
        };
        let reason: String = reason.chars().take(1024).collect();
        let (state, visible_at, failed) = match attempts >= retry.max_attempts {
            true => ("dead", i64::MAX, Failed::Dead),
            false => {
                let wait = retry.delay(attempts, jitter);
                let at = (now_ms() as i64).saturating_add(ms(wait));
                ("waiting", at, Failed::Retry(wait))
            }
        };
        db.execute(
            "UPDATE deliveries SET state = ?5, visible_at = ?6, reason = ?7
             WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND id = ?4",
            params![
                group.tenant.as_str(),
                group.topic,
                group.name,
                id,
                state,
                visible_at,
                reason
            ],
        )?;
        Ok(failed)
    }

    /// The group's dead events, oldest first.
    fn dead(&self, group: &Group, limit: usize) -> Result<Vec<DeadEvent>, EventError> {
        let db = self.db()?;
        let rows: Vec<(i64, u32, String)> = {
            let mut stmt = db.prepare(
                "SELECT id, attempts, COALESCE(reason, '') FROM deliveries
                 WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND state = 'dead' ORDER BY id
                 LIMIT ?4",
            )?;
            let rows = stmt.query_map(
                params![
                    group.tenant.as_str(),
                    group.topic,
                    group.name,
                    limit.min(i64::MAX as usize) as i64
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        rows.into_iter()
            .map(|(id, attempts, reason)| {
                Ok(DeadEvent {
                    event: read_event(&db, id, attempts)?,
                    reason,
                })
            })
            .collect()
    }

    /// Give dead events (all, or those of `ids`) back to the group: delivered again
    /// at its next claim, with a fresh set of attempts. How many.
    fn replay(&self, group: &Group, ids: Option<&[i64]>) -> Result<usize, EventError> {
        let db = self.db()?;
        let key = params![group.tenant.as_str(), group.topic, group.name];
        let sql = "UPDATE deliveries SET state = 'waiting', attempts = 0, visible_at = 0,
                   reason = NULL WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND state = 'dead'";
        match ids {
            None => Ok(db.execute(sql, key)?),
            Some(ids) => {
                let mut n = 0;
                for id in ids {
                    n += db.execute(
                        &format!("{sql} AND id = ?4"),
                        params![group.tenant.as_str(), group.topic, group.name, *id],
                    )?;
                }
                Ok(n)
            }
        }
    }

    /// When the group's earliest waiting retry or held lease comes due (ms).
    fn next_due(&self, group: &Group) -> Result<Option<u64>, EventError> {
        let db = self.db()?;
        let at: Option<i64> = db.query_row(
            "SELECT MIN(visible_at) FROM deliveries
             WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND state != 'dead'",
            params![group.tenant.as_str(), group.topic, group.name],
            |r| r.get(0),
        )?;
        Ok(at.map(|a| a.max(0) as u64))
    }

    fn recent(
        &self,
        tenant: &TenantId,
        topic: &str,
        limit: usize,
    ) -> Result<Vec<Event>, EventError> {
        let db = self.db()?;
        let ids: Vec<i64> = {
            let mut stmt = db.prepare(
                "SELECT id FROM events WHERE tenant = ?1 AND topic = ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![tenant.as_str(), topic, limit.min(1000) as i64],
                |r| r.get(0),
            )?;
            rows.collect::<Result<_, _>>()?
        };
        ids.into_iter().map(|id| read_event(&db, id, 0)).collect()
    }

    fn groups(&self, tenant: &TenantId, topic: &str) -> Result<Vec<String>, EventError> {
        let db = self.db()?;
        let mut stmt = db.prepare(
            "SELECT grp FROM cursors WHERE tenant = ?1 AND topic = ?2
             UNION SELECT grp FROM deliveries WHERE tenant = ?1 AND topic = ?2 ORDER BY 1",
        )?;
        let rows = stmt.query_map(params![tenant.as_str(), topic], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Per topic: delete events older than `max_age`, or beyond the newest
    /// `max_len`, that every group's cursor has passed and no group still holds
    /// (leased, waiting for a retry, or dead).
    fn trim(&self, policy: &Trim) -> Result<u64, EventError> {
        let cutoff = (now_ms() as i64).saturating_sub(ms(policy.max_age));
        let max_len = policy.max_len.min(i64::MAX as u64) as i64;
        let db = self.db()?;
        let n = db.execute(
            "DELETE FROM events WHERE id IN (
               SELECT e.id FROM (SELECT id, tenant, topic, time_ms, ROW_NUMBER() OVER
                                   (PARTITION BY tenant, topic ORDER BY id DESC) AS newer
                                   FROM events) e
                WHERE (e.time_ms < ?1 OR e.newer > ?2)
                  AND e.id < COALESCE((SELECT MIN(c.next_id) FROM cursors c
                                        WHERE c.tenant = e.tenant AND c.topic = e.topic),
                                      9223372036854775807)
                  AND NOT EXISTS (SELECT 1 FROM deliveries d
                                   WHERE d.tenant = e.tenant AND d.topic = e.topic AND d.id = e.id))",
            params![cutoff, max_len],
        )?;
        Ok(n as u64)
    }
}

fn read_event(db: &Connection, id: i64, attempt: u32) -> Result<Event, EventError> {
    let row = db.query_row(
        "SELECT tenant, topic, time_ms, content_type, payload, source, traceparent
         FROM events WHERE id = ?1",
        [id],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                NewEvent {
                    content_type: r.get(3)?,
                    payload: r.get(4)?,
                    source: r.get(5)?,
                    traceparent: r.get(6)?,
                },
            ))
        },
    )?;
    let (tenant, topic, time_ms, event) = row;
    Ok(Event {
        id: id.to_string(),
        tenant: TenantId::parse(&tenant).map_err(EventError::Storage)?,
        topic,
        time_ms: time_ms as u64,
        event,
        attempt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(s: &str) -> NewEvent {
        NewEvent {
            content_type: "application/json".into(),
            payload: s.as_bytes().to_vec(),
            source: Some("drift-monitor@1.0.0".into()),
            traceparent: None,
        }
    }

    fn num(e: &Event) -> i64 {
        e.id.parse().unwrap()
    }

    fn group(name: &str) -> Group {
        Group {
            tenant: TenantId::parse("acme").unwrap(),
            topic: "drift.detected".into(),
            name: name.into(),
        }
    }

    #[test]
    fn events_survive_reopen_and_each_group_sees_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.db");
        let acme = TenantId::parse("acme").unwrap();
        {
            let log = Sqlite::open(&path).unwrap();
            assert_eq!(log.publish(&acme, "drift.detected", &json("1")).unwrap(), 1);
            log.publish(&acme, "drift.detected", &json("2")).unwrap();
            log.publish(&acme, "other", &json("x")).unwrap();
        }
        let log = Sqlite::open(&path).unwrap();
        let (a, b) = (group("retrain"), group("alert"));
        let got = log.claim(&a, 10, Duration::from_secs(30)).unwrap();
        let payloads: Vec<_> = got.iter().map(|e| e.event.payload.clone()).collect();
        assert_eq!(payloads, vec![b"1".to_vec(), b"2".to_vec()]);
        assert_eq!(got[0].event.source.as_deref(), Some("drift-monitor@1.0.0"));
        assert!(log
            .claim(&a, 10, Duration::from_secs(30))
            .unwrap()
            .is_empty());
        assert_eq!(log.claim(&b, 10, Duration::from_secs(30)).unwrap().len(), 2);
        for e in &got {
            log.ack(&a, num(e)).unwrap();
        }
        assert!(matches!(
            log.ack(&a, num(&got[0])),
            Err(EventError::NotLeased(_))
        ));
    }

    #[test]
    fn an_expired_lease_is_delivered_again_with_its_attempt_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = Sqlite::open(&dir.path().join("e.db")).unwrap();
        let acme = TenantId::parse("acme").unwrap();
        log.publish(&acme, "drift.detected", &json("1")).unwrap();
        let g = group("retrain");
        let first = log.claim(&g, 1, Duration::from_millis(50)).unwrap();
        assert_eq!(first[0].attempt, 1);
        assert!(log
            .claim(&g, 1, Duration::from_millis(50))
            .unwrap()
            .is_empty());
        std::thread::sleep(Duration::from_millis(80));
        let again = log.claim(&g, 1, Duration::from_secs(30)).unwrap();
        assert_eq!((&again[0].id, again[0].attempt), (&first[0].id, 2));
    }

    #[test]
    fn failures_retry_then_go_dead_with_the_reason_and_replay_brings_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = Sqlite::open(&dir.path().join("e.db")).unwrap();
        let acme = TenantId::parse("acme").unwrap();
        log.publish(&acme, "drift.detected", &json("1")).unwrap();
        let g = group("retrain");
        let retry = Retry {
            max_attempts: 3,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
        };
        for attempt in 1..=3 {
            std::thread::sleep(Duration::from_millis(10));
            let e = log.claim(&g, 1, Duration::from_secs(30)).unwrap();
            assert_eq!(e[0].attempt, attempt);
            log.fail(&g, num(&e[0]), &format!("trap #{attempt}"), &retry, 0.0)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        assert!(log
            .claim(&g, 1, Duration::from_secs(30))
            .unwrap()
            .is_empty());
        let dead = log.dead(&g, 100).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].event.attempt, dead[0].reason.as_str()),
            (3, "trap #3")
        );
        assert_eq!(log.replay(&g, Some(&[999])).unwrap(), 0);
        assert_eq!(log.replay(&g, None).unwrap(), 1);
        let e = log.claim(&g, 1, Duration::from_secs(30)).unwrap();
        assert_eq!(e[0].attempt, 1, "a replay starts a fresh set of attempts");
        log.ack(&g, num(&e[0])).unwrap();
        assert!(log.dead(&g, 100).unwrap().is_empty());
    }

    #[test]
    fn a_new_subscription_starts_at_new_events_and_bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = Sqlite::open(&dir.path().join("e.db")).unwrap();
        let acme = TenantId::parse("acme").unwrap();
        log.publish(&acme, "drift.detected", &json("old")).unwrap();
        let g = group("late");
        log.subscribe(&g).unwrap();
        log.publish(&acme, "drift.detected", &json("new")).unwrap();
        let got = log.claim(&g, 10, Duration::from_secs(30)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.payload, b"new");
        for bad in ["", "Drift", "a/b", ".x", "a b", &"x".repeat(129)] {
            assert!(matches!(
                log.publish(&acme, bad, &json("1")),
                Err(EventError::Invalid(_))
            ));
        }
        let mut big = json("");
        big.payload = vec![0; MAX_PAYLOAD + 1];
        assert!(matches!(
            log.publish(&acme, "drift.detected", &big),
            Err(EventError::Invalid(_))
        ));
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling_with_jitter_taking_at_most_half() {
        let r = Retry {
            max_attempts: 10,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
        };
        assert_eq!(r.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(r.delay(2, 0.0), Duration::from_secs(2));
        assert_eq!(r.delay(3, 0.0), Duration::from_secs(4));
        assert_eq!(r.delay(4, 0.0), Duration::from_secs(5));
        assert_eq!(r.delay(40, 0.0), Duration::from_secs(5));
        assert_eq!(r.delay(2, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn trim_drops_only_what_every_group_is_done_with() {
        let dir = tempfile::tempdir().unwrap();
        let log = Sqlite::open(&dir.path().join("e.db")).unwrap();
        let acme = TenantId::parse("acme").unwrap();
        let g = group("retrain");
        log.subscribe(&g).unwrap();
        for i in 0..5 {
            log.publish(&acme, "drift.detected", &json(&i.to_string()))
                .unwrap();
        }
        // Nobody subscribes to `orphan`: kept up to the policy, then trimmed.
        for i in 0..5 {
            log.publish(&acme, "orphan", &json(&i.to_string())).unwrap();
        }
        let policy = Trim {
            max_age: Duration::from_secs(3600),
            max_len: 2,
        };
        // The group has not read any `drift.detected` event: none may go.
        assert_eq!(
            log.trim(&policy).unwrap(),
            3,
            "only the orphan topic's oldest 3"
        );
        let two = log.claim(&g, 2, Duration::from_secs(30)).unwrap();
        log.ack(&g, num(&two[0])).unwrap();
        // The first is acked; the second is still leased; the other three unread.
        assert_eq!(log.trim(&policy).unwrap(), 1);
        let rest = log.claim(&g, 10, Duration::from_secs(30)).unwrap();
        assert_eq!(rest.len(), 3, "the unread three are all there");
        let policy = Trim {
            max_age: Duration::ZERO,
            max_len: 0,
        };
        log.ack(&g, num(&two[1])).unwrap();
        assert_eq!(
            log.trim(&policy).unwrap(),
            3,
            "acked #2 and the 2 orphans left"
        );
        for e in &rest {
            log.ack(&g, num(e)).unwrap();
        }
        assert_eq!(log.trim(&policy).unwrap(), 3);
    }

    #[tokio::test]
    async fn an_idle_claim_wakes_on_publish_and_ticks_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let bus = Arc::new(EventLog::open(&dir.path().join("e.db")).unwrap());
        let g = group("retrain");
        bus.subscribe(&g).await.unwrap();
        let waiter = {
            let (bus, g) = (bus.clone(), g.clone());
            tokio::spawn(async move {
                bus.claim(
                    &g,
                    "h",
                    10,
                    Duration::from_secs(30),
                    Duration::from_secs(20),
                )
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let acme = TenantId::parse("acme").unwrap();
        bus.publish(&acme, "drift.detected", json("1"))
            .await
            .unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got.len(), 1);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "woke on the publish"
        );
        assert!(bus.tick("acme/nightly", 1_000).await.unwrap());
        assert!(!bus.tick("acme/nightly", 1_000).await.unwrap());
        assert!(bus.tick("acme/nightly", 2_000).await.unwrap());
    }
}
