//! What each rule kind looks at, and its verdict on one observation.
//!
//! Each rule of a series keeps a small [`State`] (a window, a previous value, a start time)
//! and turns an [`Observation`] into a [`Verdict`]: *exceeding* (the condition holds),
//! *band* (inside the hysteresis band: neither opens nor clears), *clear*, or *unknown*
//! (the observation says nothing: a calibrating reading for a limit, too little data in an
//! averaging window). Only valid readings (status `00`) count for limits, thresholds, trends,
//! rates and stuck sensors; status drives the device rules.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::rules::{Bounds, Check, Rule};
use super::window::{Points, Window};
use crate::telemetry::Status;

/// One reading as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub ts: i64,
    pub value: f64,
    pub status: Status,
}

/// What the rules need to know about the series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Context {
    /// The station's expected reporting interval.
    pub interval_ms: i64,
    /// The observation's Vietnam local day (days since 1970-01-01), to pick the limit row
    /// in force.
    pub day: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Exceeding {
        /// The judged quantity: the reading, the mean, the projected value, the change.
        value: f64,
        threshold: f64,
        /// How far beyond the threshold, in the offending direction (for the peak and
        /// escalation).
        excess: f64,
        source: Option<Arc<str>>,
    },
    Band,
    Clear,
    Unknown,
}

/// Per-rule state of a series. Serializable: it survives restarts in snapshots.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum State {
    #[default]
    Stateless,
    Window(Window),
    Points(Points),
    Previous(Option<(i64, f64)>),
    Since(Option<i64>),
}

impl State {
    /// Whether this state is the kind `rule` needs (a reload can change a rule's kind).
    pub fn fits(&self, rule: &Rule) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(&State::for_rule(rule))
    }

    /// The initial state for a rule.
    pub fn for_rule(rule: &Rule) -> State {
        match &rule.check {
            Check::Limit {
                window_ms: Some(w), ..
            } => State::Window(Window::new(*w)),
            Check::Stuck { window_ms, .. } => State::Window(Window::new(*window_ms)),
            Check::Trend { .. } => State::Points(Points::default()),
            Check::Rate { .. } => State::Previous(None),
            Check::CalibrationOverrun { .. } => State::Since(None),
            _ => State::Stateless,
        }
    }
}

/// Judges `value` against optional lower and upper bounds with hysteresis `h` (a share of
/// each bound): beyond a bound is exceeding; back inside by `h` is clear; between is band.
pub fn judge(
    value: f64,
    lower: Option<f64>,
    upper: Option<f64>,
    h: f64,
    source: Option<&Arc<str>>,
) -> Verdict {
    if let Some(u) = upper.filter(|&u| value > u) {
        return Verdict::Exceeding {
            value,
            threshold: u,
            excess: value - u,
            source: source.cloned(),
        };
    }
    if let Some(l) = lower.filter(|&l| value < l) {
        return Verdict::Exceeding {
            value,
            threshold: l,
            excess: l - value,
            source: source.cloned(),
        };
    }
    let clear_of_upper = upper.is_none_or(|u| value <= u - h * u.abs());
    let clear_of_lower = lower.is_none_or(|l| value >= l + h * l.abs());
    if clear_of_upper && clear_of_lower {
        Verdict::Clear
    } else {
        Verdict::Band
    }
}

fn in_force(bounds: &[Bounds], day: i64) -> Option<&Bounds> {
    bounds.iter().find(|b| b.applies_on(day))
}

/// Evaluates one rule on one observation.
pub fn evaluate(rule: &Rule, state: &mut State, obs: &Observation, ctx: &Context) -> Verdict {
    let valid = obs.status == Status::Measuring;
    let h = rule.hysteresis;
    match (&rule.check, state) {
        (
            Check::Limit {
                window_ms: None,
                bounds,
                ..
            },
            _,
        ) => {
            if !valid {
                return Verdict::Unknown;
            }
            match in_force(bounds, ctx.day) {
                Some(b) => judge(obs.value, b.lower, b.upper, h, Some(&b.source)),
                None => Verdict::Unknown,
            }
        }
        (
            Check::Limit {
                window_ms: Some(window_ms),
                coverage,
                bounds,
            },
            State::Window(window),
        ) => {
            if !valid {
                return Verdict::Unknown;
            }
            window.add(obs.ts, obs.value);
            let (Some(stats), Some(b)) = (window.stats(obs.ts), in_force(bounds, ctx.day)) else {
                return Verdict::Unknown;
            };
            if !crate::coverage::covered(
                u64::from(stats.count),
                *window_ms,
                ctx.interval_ms,
                *coverage,
            ) {
                return Verdict::Unknown;
            }
            judge(stats.mean, b.lower, b.upper, h, Some(&b.source))
        }
        (Check::Threshold { above, below }, _) => {
            if !valid {
                return Verdict::Unknown;
            }
            judge(obs.value, *below, *above, h, None)
        }
        (Check::Rate { max_change, per_ms }, State::Previous(previous)) => {
            if !valid {
                return Verdict::Unknown;
            }
            let Some((pts, pv)) = previous.replace((obs.ts, obs.value)) else {
                return Verdict::Unknown;
            };
            // The change allowed grows with the time between readings, never below one `per`.
            let periods = ((obs.ts - pts) as f64 / *per_ms as f64).max(1.0);
            let allowed = max_change * periods;
            let change = (obs.value - pv).abs();
            judge(change, None, Some(allowed), h, None)
        }
        (
            Check::Stuck {
                min_points,
                tolerance,
                ..
            },
            State::Window(window),
        ) => {
            if !valid {
                return Verdict::Unknown;
            }
            window.add(obs.ts, obs.value);
            match window.stats(obs.ts) {
                Some(s) if s.count >= *min_points && s.max - s.min <= *tolerance => {
                    Verdict::Exceeding {
                        value: obs.value,
                        threshold: *tolerance,
                        excess: 0.0,
                        source: None,
                    }
                }
                Some(s) if s.count >= *min_points => Verdict::Clear,
                _ => Verdict::Unknown,
            }
        }
        (
            Check::Trend {
                window_ms,
                horizon_ms,
                min_points,
                bounds,
            },
            State::Points(points),
        ) => {
            if !valid {
                return Verdict::Unknown;
            }
            points.add(obs.ts, obs.value, *window_ms);
            let Some(upper) = in_force(bounds, ctx.day).and_then(|b| b.upper) else {
                return Verdict::Unknown;
            };
            if obs.value > upper {
                // Crossed: the exceedance rule takes over from the warning.
                return Verdict::Clear;
            }
            if points.len() < *min_points as usize {
                return Verdict::Unknown;
            }
            let Some(line) = points.fit() else {
                return Verdict::Unknown;
            };
            let projected = line.at(obs.ts + horizon_ms);
            if line.slope > 0.0 && projected >= upper {
                Verdict::Exceeding {
                    value: projected,
                    threshold: upper,
                    excess: projected - upper,
                    source: in_force(bounds, ctx.day).map(|b| b.source.clone()),
                }
            } else if projected < upper - h * upper.abs() || line.slope <= 0.0 {
                Verdict::Clear
            } else {
                Verdict::Band
            }
        }
        (Check::DeviceFault, _) => match obs.status {
            Status::DeviceError => Verdict::Exceeding {
                value: obs.value,
                threshold: f64::NAN,
                excess: 0.0,
                source: None,
            },
            Status::Measuring => Verdict::Clear,
            Status::Calibrating => Verdict::Band,
        },
        (Check::CalibrationOverrun { max_ms }, State::Since(since)) => {
            if obs.status != Status::Calibrating {
                *since = None;
                return Verdict::Clear;
            }
            let start = *since.get_or_insert(obs.ts);
            let lasted = obs.ts - start;
            if lasted > *max_ms {
                let minutes = lasted as f64 / 60_000.0;
                Verdict::Exceeding {
                    value: minutes,
                    threshold: *max_ms as f64 / 60_000.0,
                    excess: minutes - *max_ms as f64 / 60_000.0,
                    source: None,
                }
            } else {
                Verdict::Band
            }
        }
        // Station-level checks are judged by the engine on the clock. A state that does not
        // fit its check cannot reach here: the engine rebuilds states that do not fit
        // (`State::fits`) when rules are reloaded or restored.
        _ => Verdict::Unknown,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn exceeding(v: &Verdict) -> bool {
        matches!(v, Verdict::Exceeding { .. })
    }

    #[test]
    fn judging_has_a_hysteresis_band_on_both_sides() {
        let (lo, up) = (Some(6.0), Some(9.0));
        assert!(exceeding(&judge(9.1, lo, up, 0.05, None)));
        assert_eq!(
            judge(9.0, lo, up, 0.05, None),
            Verdict::Band,
            "at the limit is not above it"
        );
        assert_eq!(judge(8.6, lo, up, 0.05, None), Verdict::Band);
        assert_eq!(judge(8.55, lo, up, 0.05, None), Verdict::Clear);
        assert!(exceeding(&judge(5.9, lo, up, 0.05, None)));
        assert_eq!(judge(6.2, lo, up, 0.05, None), Verdict::Band);
        assert_eq!(judge(6.3, lo, up, 0.05, None), Verdict::Clear);
        let Verdict::Exceeding {
            excess, threshold, ..
        } = judge(5.0, lo, up, 0.05, None)
        else {
            panic!()
        };
        assert_eq!((excess, threshold), (1.0, 6.0));
    }
}
