//! The lifecycle of one deployed version, as a pure decision core: state plus an
//! event in, a decision out, no I/O (in the spirit of wadm's `Scaler`). The shell in
//! `functions/` feeds it request starts, ends and clock ticks and carries out
//! evictions.
//!
//! Cold (not loaded) -> Warm (requests in flight) -> Idle (none in flight since
//! `idle_since`) -> Cold again once `idle_timeout` has passed, unless
//! `min_instances > 0` keeps it loaded.

use std::time::{Duration, Instant};

pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Warm,
    Idle,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Warm => "warm",
            Phase::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Lifecycle {
    idle_timeout: Duration,
    min_instances: u32,
    in_flight: u32,
    idle_since: Instant,
}

impl Lifecycle {
    /// A deployment that was just loaded (a request is about to start).
    pub fn new(idle_timeout: Duration, min_instances: u32, now: Instant) -> Self {
        Lifecycle {
            idle_timeout,
            min_instances,
            in_flight: 0,
            idle_since: now,
        }
    }

    pub fn started(&mut self) {
        self.in_flight += 1;
    }

    pub fn finished(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.idle_since = now;
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    pub fn phase(&self) -> Phase {
        match self.in_flight {
            0 => Phase::Idle,
            _ => Phase::Warm,
        }
    }

    /// On a clock tick: should this deployment go back to Cold?
    pub fn should_evict(&self, now: Instant) -> bool {
        self.in_flight == 0
            && self.min_instances == 0
            && now.saturating_duration_since(self.idle_since) >= self.idle_timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goes_cold_only_after_the_idle_timeout_with_nothing_in_flight() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Lifecycle::new(s, 0, t0);
        assert!(!l.should_evict(t0));
        assert!(l.should_evict(t0 + s));
        l.started();
        l.started();
        assert_eq!(l.phase(), Phase::Warm);
        assert!(
            !l.should_evict(t0 + 10 * s),
            "never while requests are in flight"
        );
        l.finished(t0 + 10 * s);
        assert_eq!(l.phase(), Phase::Warm);
        l.finished(t0 + 11 * s);
        assert_eq!(l.phase(), Phase::Idle);
        assert!(
            !l.should_evict(t0 + 11 * s + s / 2),
            "the idle clock restarts at the last finish"
        );
        assert!(l.should_evict(t0 + 12 * s));
    }

    #[test]
    fn min_instances_keeps_it_loaded() {
        let t0 = Instant::now();
        let l = Lifecycle::new(Duration::ZERO, 1, t0);
        assert!(!l.should_evict(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn a_stray_finish_does_not_underflow() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new(Duration::from_secs(1), 0, t0);
        l.finished(t0);
        assert_eq!(l.in_flight(), 0);
    }
}
