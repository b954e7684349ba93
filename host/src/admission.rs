//! Admission control for one deployment: at most `capacity` requests run at once;
//! up to `max_queue` more wait (first come, first served) for at most
//! `queue_timeout`; past that a request is turned away with a reason the HTTP layer
//! maps to 429 (queue full) or 503 (waited too long), both with `Retry-After`.
//!
//! The decision is pure (`decide`); `Admission` applies it with a fair semaphore.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What to do with a request that finds `running` of `capacity` slots busy and
/// `queued` requests already waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Run,
    Wait,
    Reject,
}

pub fn decide(free_slots: usize, queued: u32, max_queue: u32) -> Decision {
    match (free_slots, queued < max_queue) {
        (1.., _) if queued == 0 => Decision::Run,
        (_, true) => Decision::Wait,
        (_, false) => Decision::Reject,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejected {
    #[error("{running} requests are running and {queued} are queued (the most this function takes); try again later")]
    QueueFull { running: u32, queued: u32 },
    #[error("no capacity freed up within the queue timeout of {0:?}; try again later")]
    Timeout(Duration),
}

impl Rejected {
    /// Seconds a client should wait before retrying (`Retry-After`).
    pub fn retry_after_secs(&self) -> u64 {
        match self {
            Rejected::QueueFull { .. } => 1,
            Rejected::Timeout(t) => t.as_secs().clamp(1, 30),
        }
    }
}

pub struct Admission {
    slots: Arc<Semaphore>,
    capacity: u32,
    max_queue: u32,
    queue_timeout: Duration,
    queued: AtomicU32,
}

/// Holds a slot until dropped.
pub struct Slot(#[allow(dead_code)] OwnedSemaphorePermit);

/// Counts a request as queued until dropped (also when its future is cancelled).
struct Queued<'a>(&'a AtomicU32);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(capacity: u32, max_queue: u32, queue_timeout: Duration) -> Self {
        Admission {
            slots: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            max_queue,
            queue_timeout,
            queued: AtomicU32::new(0),
        }
    }

    pub fn queued(&self) -> u32 {
        self.queued.load(Ordering::Acquire)
    }

    pub fn running(&self) -> u32 {
        self.capacity
            .saturating_sub(self.slots.available_permits() as u32)
    }

    pub async fn enter(&self) -> Result<Slot, Rejected> {
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        let guard = Queued(&self.queued);
        match decide(self.slots.available_permits(), queued, self.max_queue) {
            Decision::Run => {
                if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                    return Ok(Slot(permit));
                }
                // Lost a race for the last slot: wait like everyone else.
            }
            Decision::Wait => {}
            Decision::Reject => {
                drop(guard);
                return Err(Rejected::QueueFull {
                    running: self.running(),
                    queued,
                });
            }
        }
        let waited =
            tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await;
        drop(guard);
        match waited {
            Ok(Ok(permit)) => Ok(Slot(permit)),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(Rejected::Timeout(self.queue_timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        assert_eq!(decide(1, 0, 0), Decision::Run);
        assert_eq!(
            decide(0, 0, 0),
            Decision::Reject,
            "no queue: straight to 429"
        );
        assert_eq!(decide(0, 0, 2), Decision::Wait);
        assert_eq!(decide(0, 2, 2), Decision::Reject);
        assert_eq!(
            decide(3, 1, 5),
            Decision::Wait,
            "a free slot does not let a newcomer jump the queue"
        );
    }

    #[tokio::test]
    async fn queues_then_rejects_then_times_out() {
        let a = Arc::new(Admission::new(1, 1, Duration::from_millis(200)));
        let first = a.enter().await.unwrap();
        assert_eq!(a.running(), 1);
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.enter().await.map(|_| ()) }
        });
        while a.queued() == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(
            a.enter().await,
            Err(Rejected::QueueFull {
                running: 1,
                queued: 1
            })
        ));
        assert_eq!(
            waiter.await.unwrap(),
            Err(Rejected::Timeout(Duration::from_millis(200)))
        );
        assert_eq!(a.queued(), 0);
        drop(first);
        let waiter = tokio::spawn({
            let a = a.clone();
            async move { a.enter().await.map(|_| ()) }
        });
        assert_eq!(waiter.await.unwrap(), Ok(()), "a freed slot admits");
        assert_eq!(a.running(), 0);
    }
}
