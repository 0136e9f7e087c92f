//! From verdicts to a lifecycle: when an alert opens, goes on, and resolves.
//!
//! - **Opening** needs `for_count` consecutive exceeding verdicts spanning at least `for_ms`
//!   of event time (a verdict in the band or clear breaks the streak).
//! - **Resolving** needs `clear_count` consecutive clear verdicts; a verdict in the
//!   hysteresis band keeps the alert open and restarts that count. So a value that
//!   oscillates inside the band opens and resolves at most once.
//! - **Unknown** verdicts (no data to judge) change nothing.

use serde::{Deserialize, Serialize};

use super::condition::Verdict;
use super::rules::Rule;

/// Per-rule lifecycle state of a series (or station).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    /// Consecutive exceeding verdicts while no alert is open.
    streak: u32,
    /// Event time and value of the streak's first verdict.
    first: Option<(i64, f64)>,
    /// The streak's worst value and its excess.
    worst: Option<(f64, f64)>,
    /// Consecutive clear verdicts while an alert is open.
    clear_streak: u32,
    /// The active alert this rule feeds, if any.
    pub open: Option<u64>,
}

/// What the engine must do with the alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Nothing,
    /// Open an alert for the streak that just qualified.
    Open {
        first_at: i64,
        first_value: f64,
        worst_value: f64,
        count: u32,
    },
    /// The active alert sees another offending verdict.
    Continue,
    /// The condition cleared.
    Resolve,
}

impl Tracker {
    pub fn step(&mut self, rule: &Rule, verdict: &Verdict, ts: i64) -> Transition {
        match verdict {
            Verdict::Unknown => Transition::Nothing,
            Verdict::Exceeding { value, excess, .. } => {
                self.clear_streak = 0;
                if self.open.is_some() {
                    return Transition::Continue;
                }
                self.streak += 1;
                let (first_at, first_value) = *self.first.get_or_insert((ts, *value));
                if self.worst.is_none_or(|(_, worst)| *excess > worst) {
                    self.worst = Some((*value, *excess));
                }
                if self.streak >= rule.for_count && ts - first_at >= rule.for_ms {
                    let worst_value = self.worst.map_or(*value, |(v, _)| v);
                    let count = self.streak;
                    self.reset_streak();
                    Transition::Open {
                        first_at,
                        first_value,
                        worst_value,
                        count,
                    }
                } else {
                    Transition::Nothing
                }
            }
            Verdict::Band => {
                self.reset_streak();
                self.clear_streak = 0;
                Transition::Nothing
            }
            Verdict::Clear => {
                self.reset_streak();
                if self.open.is_none() {
                    return Transition::Nothing;
                }
                self.clear_streak += 1;
                if self.clear_streak >= rule.clear_count {
                    self.clear_streak = 0;
                    Transition::Resolve
                } else {
                    Transition::Nothing
                }
            }
        }
    }

    fn reset_streak(&mut self) {
        self.streak = 0;
        self.first = None;
        self.worst = None;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::alerts::rules::Check;
    use crate::alerts::{RuleKind, Severity};

    fn rule(for_count: u32, for_ms: i64, clear_count: u32) -> Rule {
        Rule {
            name: Arc::from("r"),
            kind: RuleKind::Threshold,
            severity: Severity::Warning,
            for_count,
            for_ms,
            clear_count,
            hysteresis: 0.0,
            escalate: None,
            check: Check::Threshold {
                above: Some(1.0),
                below: None,
            },
        }
    }

    fn over(value: f64) -> Verdict {
        Verdict::Exceeding {
            value,
            threshold: 1.0,
            excess: value - 1.0,
            source: None,
        }
    }

    #[test]
    fn an_alert_opens_after_the_required_count_with_the_streak_first_and_worst() {
        let r = rule(3, 0, 1);
        let mut t = Tracker::default();
        assert_eq!(t.step(&r, &over(2.0), 0), Transition::Nothing);
        assert_eq!(t.step(&r, &over(5.0), 1), Transition::Nothing);
        assert_eq!(
            t.step(&r, &over(3.0), 2),
            Transition::Open {
                first_at: 0,
                first_value: 2.0,
                worst_value: 5.0,
                count: 3
            }
        );
    }

    #[test]
    fn a_band_or_clear_verdict_breaks_the_streak_and_unknown_does_not() {
        let r = rule(2, 0, 1);
        let mut t = Tracker::default();
        t.step(&r, &over(2.0), 0);
        t.step(&r, &Verdict::Band, 1);
        assert_eq!(
            t.step(&r, &over(2.0), 2),
            Transition::Nothing,
            "streak restarted"
        );
        t.step(&r, &Verdict::Unknown, 3);
        assert!(matches!(
            t.step(&r, &over(2.0), 4),
            Transition::Open { count: 2, .. }
        ));
    }

    #[test]
    fn a_minimum_duration_counts_event_time_from_the_first_offending_reading() {
        let r = rule(1, 600_000, 1);
        let mut t = Tracker::default();
        assert_eq!(t.step(&r, &over(2.0), 0), Transition::Nothing);
        assert_eq!(t.step(&r, &over(2.0), 300_000), Transition::Nothing);
        assert!(matches!(
            t.step(&r, &over(2.0), 600_000),
            Transition::Open { first_at: 0, .. }
        ));
    }

    #[test]
    fn resolving_needs_consecutive_clear_verdicts_and_the_band_holds_the_alert_open() {
        let r = rule(1, 0, 2);
        let mut t = Tracker::default();
        assert!(matches!(t.step(&r, &over(2.0), 0), Transition::Open { .. }));
        t.open = Some(7);
        assert_eq!(t.step(&r, &Verdict::Clear, 1), Transition::Nothing);
        assert_eq!(t.step(&r, &Verdict::Band, 2), Transition::Nothing);
        assert_eq!(t.step(&r, &Verdict::Clear, 3), Transition::Nothing);
        assert_eq!(t.step(&r, &over(3.0), 4), Transition::Continue);
        assert_eq!(t.step(&r, &Verdict::Clear, 5), Transition::Nothing);
        assert_eq!(t.step(&r, &Verdict::Clear, 6), Transition::Resolve);
    }
}
