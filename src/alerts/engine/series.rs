//! Per-series state: the rules of one station parameter, and event-time ordering.
//!
//! Readings are evaluated in event-time order. A reading that follows the previous one at
//! the station's normal pace (within 1.5 expected intervals) is evaluated at once: nothing
//! can be missing before it. After a gap, a reading is held back so that a straggler that
//! fills the gap can still be evaluated before it: until a reading at least `lateness` newer
//! arrives, or `lateness` has passed on the clock. A reading older than one already
//! evaluated is too late: it is stored, but does not change alert state. The first reading a
//! series ever sends is evaluated on arrival: there is no pace yet to judge a gap by.

use std::sync::Arc;

use super::super::condition::{Observation, State};
use super::super::rules::Rule;
use super::super::tracker::Tracker;

/// A rule with its state.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub rule: Arc<Rule>,
    pub state: State,
    pub tracker: Tracker,
}

impl Slot {
    pub fn new(rule: Arc<Rule>) -> Slot {
        Slot {
            state: State::for_rule(&rule),
            rule,
            tracker: Tracker::default(),
        }
    }
}

/// A reading waiting for stragglers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Held {
    pub obs: Observation,
    /// Processing time of its arrival.
    pub arrived: i64,
}

/// What became of an offered reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Offer {
    /// Evaluate it now (nothing was held).
    Now,
    /// Held back, possibly releasing others: call [`Series::release`].
    Held,
    /// Older than what was already evaluated.
    TooLate,
}

#[derive(Debug, Clone)]
pub(super) struct Series {
    pub param: Arc<str>,
    pub unit: Arc<str>,
    pub slots: Vec<Slot>,
    /// Event time of the newest evaluated reading.
    pub last_ts: Option<i64>,
    /// Held readings, oldest first.
    pub held: Vec<Held>,
}

impl Series {
    pub fn new(param: Arc<str>, unit: Arc<str>, rules: Vec<Arc<Rule>>) -> Series {
        Series {
            param,
            unit,
            slots: rules.into_iter().map(Slot::new).collect(),
            last_ts: None,
            held: Vec::new(),
        }
    }

    fn contiguous(&self, ts: i64, interval_ms: i64) -> bool {
        self.last_ts
            .is_none_or(|last| ts - last <= interval_ms + interval_ms / 2)
    }

    /// Offers a new reading. The fast path (in order, at the normal pace, nothing held)
    /// returns [`Offer::Now`] without touching the buffer.
    pub fn offer(&mut self, obs: Observation, now: i64, interval_ms: i64) -> Offer {
        if self.last_ts.is_some_and(|last| obs.ts <= last) {
            return Offer::TooLate;
        }
        if self.held.is_empty() && self.contiguous(obs.ts, interval_ms) {
            self.last_ts = Some(obs.ts);
            return Offer::Now;
        }
        let held = Held { obs, arrived: now };
        match self.held.binary_search_by(|h| h.obs.ts.cmp(&obs.ts)) {
            // A re-sent reading replaces the held one: the last value wins, as in the store.
            Ok(i) => self.held[i] = held,
            Err(i) => self.held.insert(i, held),
        }
        Offer::Held
    }

    /// Takes the held readings that may be evaluated now, oldest first.
    pub fn release(
        &mut self,
        now: i64,
        interval_ms: i64,
        lateness_ms: i64,
        out: &mut Vec<Observation>,
    ) {
        let newest = self.held.last().map_or(i64::MIN, |h| h.obs.ts);
        let mut taken = 0;
        for h in &self.held {
            let ready = self
                .last_ts
                .is_none_or(|last| h.obs.ts - last <= interval_ms + interval_ms / 2)
                || newest - h.obs.ts >= lateness_ms
                || now - h.arrived >= lateness_ms;
            if !ready {
                break;
            }
            self.last_ts = Some(h.obs.ts);
            out.push(h.obs);
            taken += 1;
        }
        self.held.drain(..taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Status;

    const MIN: i64 = 60_000;

    fn obs(minute: i64) -> Observation {
        Observation {
            ts: minute * MIN,
            value: minute as f64,
            status: Status::Measuring,
        }
    }

    fn series() -> Series {
        Series::new(Arc::from("p"), Arc::from("u"), vec![])
    }

    fn released(s: &mut Series, now: i64) -> Vec<i64> {
        let mut out = Vec::new();
        s.release(now, 5 * MIN, 30_000, &mut out);
        out.iter().map(|o| o.ts / MIN).collect()
    }

    #[test]
    fn readings_at_the_normal_pace_are_evaluated_at_once() {
        let mut s = series();
        for m in [0, 5, 10, 17] {
            assert_eq!(s.offer(obs(m), m * MIN, 5 * MIN), Offer::Now, "{m}");
        }
    }

    #[test]
    fn after_a_gap_a_reading_waits_for_a_straggler_that_is_then_evaluated_first() {
        let mut s = series();
        s.offer(obs(0), 0, 5 * MIN);
        assert_eq!(s.offer(obs(10), 10 * MIN, 5 * MIN), Offer::Held);
        assert!(released(&mut s, 10 * MIN).is_empty());
        assert_eq!(s.offer(obs(5), 10 * MIN + 1000, 5 * MIN), Offer::Held);
        assert_eq!(released(&mut s, 10 * MIN + 1000), [5, 10]);
    }

    #[test]
    fn a_held_reading_goes_after_the_lateness_or_when_a_much_newer_one_arrives() {
        let mut s = series();
        s.offer(obs(0), 0, 5 * MIN);
        s.offer(obs(10), 10 * MIN, 5 * MIN);
        assert!(released(&mut s, 10 * MIN + 29_000).is_empty());
        assert_eq!(released(&mut s, 10 * MIN + 30_000), [10]);
        s.offer(obs(30), 30 * MIN, 5 * MIN);
        s.offer(obs(31), 30 * MIN, 5 * MIN);
        assert_eq!(
            released(&mut s, 30 * MIN),
            [30, 31],
            "a newer reading releases the held one"
        );
    }

    #[test]
    fn readings_older_than_the_last_evaluated_are_too_late() {
        let mut s = series();
        s.offer(obs(5), 0, 5 * MIN);
        assert_eq!(s.offer(obs(5), 0, 5 * MIN), Offer::TooLate);
        assert_eq!(s.offer(obs(0), 0, 5 * MIN), Offer::TooLate);
    }
}
