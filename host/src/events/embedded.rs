//! The embedded event log: SQLite in WAL mode with `synchronous = FULL`, so a
//! published event is on disk before `publish` returns and survives `kill -9`. One
//! table of events; one of deliveries per (group, event) holding the lease, the
//! attempt count and, for a dead event, the reason; one cursor per group. SQLite
//! rather than segment files: the lease/ack/retry bookkeeping is a few indexed
//! updates in one transaction, which segment files would have to reinvent.

use super::{DeadEvent, Event, EventError, Group, NewEvent, Retry, MAX_PAYLOAD};
use crate::tenancy::TenantId;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
         PRIMARY KEY (tenant, topic, grp, id));";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

pub struct EventLog {
    db: Mutex<Connection>,
}

impl EventLog {
    /// Open (or create) the log at `path`. Blocking: call from a blocking thread.
    pub fn open(path: &Path) -> Result<EventLog, EventError> {
        let db = Connection::open(path)
            .map_err(|e| EventError::Storage(format!("opening {}: {e}", path.display())))?;
        db.busy_timeout(Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        Ok(EventLog { db: Mutex::new(db) })
    }

    fn db(&self) -> Result<std::sync::MutexGuard<'_, Connection>, EventError> {
        self.db
            .lock()
            .map_err(|_| EventError::Storage("event log lock poisoned".into()))
    }

    /// Append an event (durable when this returns); its id.
    pub fn publish(
        &self,
        tenant: &TenantId,
        topic: &str,
        event: &NewEvent,
    ) -> Result<u64, EventError> {
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
    pub fn claim(
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
    pub fn subscribe(&self, group: &Group) -> Result<(), EventError> {
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
    pub fn ack(&self, group: &Group, id: u64) -> Result<(), EventError> {
        let db = self.db()?;
        let n = db.execute(
            "DELETE FROM deliveries WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND id = ?4
             AND state = 'leased'",
            params![group.tenant.as_str(), group.topic, group.name, id as i64],
        )?;
        match n {
            1 => Ok(()),
            _ => Err(EventError::NotLeased(id)),
        }
    }

    /// The group's function failed on event `id` (on its `attempt`-th delivery):
    /// retry after the policy's backoff, or, past `max_attempts`, dead with `reason`.
    pub fn fail(
        &self,
        group: &Group,
        id: u64,
        reason: &str,
        retry: &Retry,
        jitter: f64,
    ) -> Result<(), EventError> {
        let db = self.db()?;
        let key = params![group.tenant.as_str(), group.topic, group.name, id as i64];
        let attempts: Option<u32> = db
            .query_row(
                "SELECT attempts FROM deliveries WHERE tenant = ?1 AND topic = ?2 AND grp = ?3
                 AND id = ?4 AND state = 'leased'",
                key,
                |r| r.get(0),
            )
            .optional()?;
        let Some(attempts) = attempts else {
            return Err(EventError::NotLeased(id));
        };
        let reason: String = reason.chars().take(1024).collect();
        let (state, visible_at) = match attempts >= retry.max_attempts {
            true => ("dead", i64::MAX),
            false => {
                let wait = retry.delay(attempts, jitter);
                ("waiting", (now_ms() as i64).saturating_add(ms(wait)))
            }
        };
        db.execute(
            "UPDATE deliveries SET state = ?5, visible_at = ?6, reason = ?7
             WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND id = ?4",
            params![
                group.tenant.as_str(),
                group.topic,
                group.name,
                id as i64,
                state,
                visible_at,
                reason
            ],
        )?;
        Ok(())
    }

    /// The group's dead events, oldest first.
    pub fn dead(&self, group: &Group) -> Result<Vec<DeadEvent>, EventError> {
        let db = self.db()?;
        let rows: Vec<(i64, u32, String)> = {
            let mut stmt = db.prepare(
                "SELECT id, attempts, COALESCE(reason, '') FROM deliveries
                 WHERE tenant = ?1 AND topic = ?2 AND grp = ?3 AND state = 'dead' ORDER BY id",
            )?;
            let rows = stmt.query_map(
                params![group.tenant.as_str(), group.topic, group.name],
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
    pub fn replay(&self, group: &Group, ids: Option<&[u64]>) -> Result<usize, EventError> {
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
                        params![group.tenant.as_str(), group.topic, group.name, *id as i64],
                    )?;
                }
                Ok(n)
            }
        }
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
        id: id as u64,
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
            let log = EventLog::open(&path).unwrap();
            assert_eq!(log.publish(&acme, "drift.detected", &json("1")).unwrap(), 1);
            log.publish(&acme, "drift.detected", &json("2")).unwrap();
            log.publish(&acme, "other", &json("x")).unwrap();
        }
        let log = EventLog::open(&path).unwrap();
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
            log.ack(&a, e.id).unwrap();
        }
        assert!(matches!(
            log.ack(&a, got[0].id),
            Err(EventError::NotLeased(_))
        ));
    }

    #[test]
    fn an_expired_lease_is_delivered_again_with_its_attempt_counted() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("e.db")).unwrap();
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
        assert_eq!((again[0].id, again[0].attempt), (first[0].id, 2));
    }

    #[test]
    fn failures_retry_then_go_dead_with_the_reason_and_replay_brings_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("e.db")).unwrap();
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
            log.fail(&g, e[0].id, &format!("trap #{attempt}"), &retry, 0.0)
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
        assert!(log
            .claim(&g, 1, Duration::from_secs(30))
            .unwrap()
            .is_empty());
        let dead = log.dead(&g).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(
            (dead[0].event.attempt, dead[0].reason.as_str()),
            (3, "trap #3")
        );
        assert_eq!(log.replay(&g, Some(&[999])).unwrap(), 0);
        assert_eq!(log.replay(&g, None).unwrap(), 1);
        let e = log.claim(&g, 1, Duration::from_secs(30)).unwrap();
        assert_eq!(e[0].attempt, 1, "a replay starts a fresh set of attempts");
        log.ack(&g, e[0].id).unwrap();
        assert!(log.dead(&g).unwrap().is_empty());
    }

    #[test]
    fn a_new_subscription_starts_at_new_events_and_bad_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(&dir.path().join("e.db")).unwrap();
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
}
