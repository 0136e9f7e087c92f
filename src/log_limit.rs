//! Rate limits for log lines that repeat: the first occurrence is logged, then at most one
//! line per period, which says how many were left out in between.
//!
//! A condition that persists (a full disk, an unreachable store) makes the code that meets it
//! fail again and again, several times a second; logging each failure buries everything else
//! in the log and fills the disk further. The failures are still all counted (metrics); the
//! log tells that it happens, when it started, and how often.
//!
//! ```
//! use quantrac::log_limit::LogLimit;
//! static COMMIT_FAILED: LogLimit = LogLimit::new(std::time::Duration::from_secs(60));
//! for _ in 0..3 {
//!     if let Some(suppressed) = COMMIT_FAILED.admit() {
//!         tracing::error!(suppressed, "commit failed");
//!     }
//! }
//! ```

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One kind of repeated log line. `const`-constructible, so it can be a `static`.
#[derive(Debug)]
pub struct LogLimit {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last line was let through.
    last: Option<Instant>,
    /// Occurrences left out since.
    suppressed: u64,
}

impl LogLimit {
    /// At most one line per `every` (the first one at once).
    pub const fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// Whether this occurrence may be logged: `Some(n)` with the number of occurrences left
    /// out since the last logged one, or `None` (count it, log nothing).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    /// [`LogLimit::admit`] at time `now`.
    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        let due = state
            .last
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        if due {
            state.last = Some(now);
            Some(std::mem::take(&mut state.suppressed))
        } else {
            state.suppressed += 1;
            None
        }
    }

    /// The condition is over: the next occurrence is logged at once.
    pub fn reset(&self) {
        *self.state.lock() = State::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_then_one_per_period_with_the_count_left_out() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(limit.admit_at(at(0)), Some(0));
        // Five a second for ten seconds: 49 left out, then one line that says so.
        let logged: Vec<_> = (1..50)
            .filter_map(|i| limit.admit_at(at(i * 200)))
            .collect();
        assert!(logged.is_empty(), "{logged:?}");
        assert_eq!(limit.admit_at(at(10_000)), Some(49));
        assert_eq!(limit.admit_at(at(10_200)), None);
        limit.reset();
        assert_eq!(limit.admit_at(at(10_400)), Some(0));
    }
}
