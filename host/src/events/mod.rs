//! The event bus (issue 15, in progress): at-least-once delivery of tenant-scoped
//! topics to consumer groups (one group per subscribing function), with leases that
//! expire (a consumer that died gives its events back), retries, and a dead-letter
//! set with the reason and the attempt count. [`EventLog`] is the embedded,
//! durable backend; a Redis Streams backend goes behind the same operations. Not
//! wired to any trigger or route yet: `[triggers] events` is still refused at deploy.

use crate::tenancy::TenantId;
use std::time::Duration;

mod embedded;

pub use embedded::EventLog;

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
    /// Per log, increasing: the order of publication.
    pub id: u64,
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

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("{0}")]
    Invalid(String),
    #[error("no event {0} is leased to this group")]
    NotLeased(u64),
    #[error("event store: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for EventError {
    fn from(e: rusqlite::Error) -> Self {
        EventError::Storage(e.to_string())
    }
}
