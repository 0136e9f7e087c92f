//! Bursts of failed authentications: a pure state machine that says when one address has
//! failed often enough, in a short enough time, to be worth an audit entry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Tracks failures per address in fixed windows; reports each burst once per window.
#[derive(Debug)]
pub struct FailureWatch {
    threshold: u32,
    window: Duration,
    /// Bound on tracked addresses: when full, expired windows are dropped, then the oldest.
    capacity: usize,
    by_address: HashMap<IpAddr, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

/// A burst worth recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Burst {
    pub address: IpAddr,
    pub failures: u32,
    pub within: Duration,
}

impl FailureWatch {
    pub fn new(threshold: u32, window: Duration, capacity: usize) -> FailureWatch {
        FailureWatch {
            threshold: threshold.max(1),
            window,
            capacity: capacity.max(1),
            by_address: HashMap::new(),
        }
    }

    /// Records a failure from `address` at `now`; returns the burst when this failure is the
    /// `threshold`-th in the address's current window.
    pub fn failed(&mut self, address: IpAddr, now: Instant) -> Option<Burst> {
        if !self.by_address.contains_key(&address) && self.by_address.len() >= self.capacity {
            self.evict(now);
        }
        let window = self.by_address.entry(address).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(window.started) >= self.window {
            *window = Window {
                started: now,
                failures: 0,
            };
        }
        window.failures += 1;
        (window.failures == self.threshold).then_some(Burst {
            address,
            failures: window.failures,
            within: self.window,
        })
    }

    fn evict(&mut self, now: Instant) {
        let window = self.window;
        self.by_address
            .retain(|_, w| now.duration_since(w.started) < window);
        if self.by_address.len() >= self.capacity {
            if let Some(oldest) = self
                .by_address
                .iter()
                .min_by_key(|(_, w)| w.started)
                .map(|(a, _)| *a)
            {
                self.by_address.remove(&oldest);
            }
        }
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.by_address.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn the_threshold_failure_within_the_window_reports_one_burst() {
        let mut w = FailureWatch::new(3, Duration::from_secs(60), 100);
        let t = Instant::now();
        assert_eq!(w.failed(A, t), None);
        assert_eq!(w.failed(B, t), None);
        assert_eq!(w.failed(A, t + Duration::from_secs(1)), None);
        let burst = w.failed(A, t + Duration::from_secs(2)).map(|b| b.failures);
        assert_eq!(burst, Some(3));
        assert_eq!(
            w.failed(A, t + Duration::from_secs(3)),
            None,
            "once per window"
        );
    }

    #[test]
    fn failures_spread_over_more_than_a_window_are_not_a_burst() {
        let mut w = FailureWatch::new(2, Duration::from_secs(60), 100);
        let t = Instant::now();
        assert_eq!(w.failed(A, t), None);
        assert_eq!(w.failed(A, t + Duration::from_secs(61)), None);
        assert!(w.failed(A, t + Duration::from_secs(62)).is_some());
    }

    #[test]
    fn the_number_of_tracked_addresses_stays_bounded() {
        let mut w = FailureWatch::new(5, Duration::from_secs(60), 10);
        let t = Instant::now();
        for i in 0..1000u32 {
            w.failed(
                IpAddr::V4(i.into()),
                t + Duration::from_millis(u64::from(i)),
            );
        }
        assert!(w.tracked() <= 10);
    }
}
