//! The event bus: at-least-once delivery of tenant-scoped topics to consumer groups
//! (one group per subscribing function), with leases that expire (a consumer that
//! died gives its events back), retries with backoff, a dead-letter set with the
//! reason and the attempt count, replay, and a trim policy that never drops what a
//! group has not acknowledged. Two backends behind [`Bus`]: [`EventLog`] (embedded,
//! the default: SQLite in the data dir) and [`RedisBus`] (Redis Streams, shared by
//! hosts). The triggers that consume it are in [`crate::triggers`].

use crate::tenancy::TenantId;
use async_trait::async_trait;
use std::time::Duration;

mod embedded;
mod redis_bus;

pub use embedded::EventLog;
pub use redis_bus::RedisBus;

/// A topic name: 1-128 characters of a-z, 0-9, '-', '_' and '.' (`drift.detected`).
pub fn valid_topic(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

/// A topic name, checked; the message says the rule.
pub fn check_topic(s: &str) -> Result<(), String> {
    match valid_topic(s) {
        true => Ok(()),
        false => Err(format!(
            "topic `{}` must be 1-128 characters of a-z, 0-9, '-', '_' and '.'",
            s.chars().take(128).collect::<String>()
        )),
    }
}

/// The most one event's payload may hold.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// What a publisher sends.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub content_type: String,
    pub payload: Vec<u8>,
    /// `function@version` that published it (`None`: a client).
    pub source: Option<String>,
    /// W3C trace context of the publishing call.
    pub traceparent: Option<String>,
}

/// An event as a consumer gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique in its topic, increasing in the order of publication (the embedded
    /// log's row id, or a Redis stream entry id).
    pub id: String,
    pub tenant: TenantId,
    pub topic: String,
    /// Milliseconds since the Unix epoch, at publication.
    pub time_ms: u64,
    pub event: NewEvent,
    /// Deliveries to this group so far, this one included.
    pub attempt: u32,
}

/// An event that used up its attempts.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadEvent {
    pub event: Event,
    pub reason: String,
}

/// Who consumes: a group sees every event of its topic once (at least once).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Group {
    pub tenant: TenantId,
    pub topic: String,
    /// The subscribing function's name.
    pub name: String,
}

/// Retry policy of a subscription (`[triggers.retry]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub max_attempts: u32,
    /// The first retry's wait; each next one doubles it (with jitter), up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            max_attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl Retry {
    /// The wait before attempt `attempt + 1`, `jitter` in [0, 1) taking up to half
    /// of it away (so retries of many events spread out).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let d = exp.min(self.max_backoff);
        d.mul_f64(1.0 - 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// What became of a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Failed {
    /// Delivered again after this wait.
    Retry(Duration),
    /// Out of attempts: in the dead-letter set.
    Dead,
}

/// How long a topic's events are kept once every group is done with them (and
/// for a topic nobody subscribes to, how long they are kept at all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trim {
    pub max_age: Duration,
    /// The most events kept per topic.
    pub max_len: u64,
}

impl Default for Trim {
    fn default() -> Self {
        Trim {
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_len: 100_000,
        }
    }
}

/// A uniform number in [0, 1) for backoff jitter.
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    match getrandom::getrandom(&mut b) {
        Ok(()) => (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

/// The operations every backend provides. Ids are the backend's, as strings.
#[async_trait]
pub trait Bus: Send + Sync {
    /// `embedded` or `redis`.
    fn backend(&self) -> &'static str;
    /// Append an event (durable when this returns); its id.
    async fn publish(
        &self,
        tenant: &TenantId,
        topic: &str,
        event: NewEvent,
    ) -> Result<String, EventError>;
    /// Start `group` at the events published from now on, if it does not exist
    /// (a new subscription does not replay a topic's history).
    async fn subscribe(&self, group: &Group) -> Result<(), EventError>;
    /// Lease up to `max` events to `group` (as `consumer`) for `visibility`: those
    /// whose retry is due, those whose lease expired (a consumer that died), then
    /// new ones in order. With none, waits up to `block` for new ones.
    async fn claim(
        &self,
        group: &Group,
        consumer: &str,
        max: usize,
        visibility: Duration,
        block: Duration,
    ) -> Result<Vec<Event>, EventError>;
    /// The group's function succeeded on event `id`: done with it.
    async fn ack(&self, group: &Group, id: &str) -> Result<(), EventError>;
    /// The group's function failed on event `id`: retried after the policy's
    /// backoff, or, past `max_attempts`, dead with `reason`.
    async fn fail(
        &self,
        group: &Group,
        id: &str,
        reason: &str,
        retry: &Retry,
    ) -> Result<Failed, EventError>;
    /// The group's dead events, oldest first (at most `limit`).
    async fn dead(&self, group: &Group, limit: usize) -> Result<Vec<DeadEvent>, EventError>;
    /// Give dead events (all, or those of `ids`) back to the group, with a fresh
    /// set of attempts. How many.
    async fn replay(&self, group: &Group, ids: Option<&[String]>) -> Result<usize, EventError>;
    /// The consumer groups of a topic.
    async fn groups(&self, tenant: &TenantId, topic: &str) -> Result<Vec<String>, EventError>;
    /// The topic's newest events still kept, newest first (at most `limit`).
    async fn recent(
        &self,
        tenant: &TenantId,
        topic: &str,
        limit: usize,
    ) -> Result<Vec<Event>, EventError>;
    /// Drop events past the policy that no group still needs. How many went.
    async fn trim(&self, policy: &Trim) -> Result<u64, EventError>;
    /// Take the run of schedule `key` at `tick_ms`: true for exactly one caller
    /// across hosts and restarts.
    async fn tick(&self, key: &str, tick_ms: u64) -> Result<bool, EventError>;
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("{0}")]
    Invalid(String),
    #[error("no event {0} is leased to this group")]
    NotLeased(String),
    #[error("event store: {0}")]
    Storage(String),
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for EventError {
    fn from(e: rusqlite::Error) -> Self {
        EventError::Storage(e.to_string())
    }
}
