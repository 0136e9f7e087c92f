//! Scenarios: short sequences of records that trigger one kind of alert rule on demand, for
//! demonstrations and tests. Pure: [`Scenario::steps`] says what to send and when; the
//! binary's `scenario` command (or a test) sends it.
//!
//! Values are relative to the parameter's limit (or its physical range), so a scenario works
//! for any station of the seeds. Each scenario ends back to normal, so the alert it raised
//! resolves (except `no_data` and `gateway_offline`, which end with the station silent or
//! offline, and then back).

use std::fmt;
use std::str::FromStr;

use crate::fleet::{ParamSpec, StationSpec};
use crate::record::{Reading, Record, Status};

/// The rule kinds a scenario can trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Above the limit for six readings, then back well below it.
    Exceedance,
    /// A steady climb towards the limit that stops short of it, then back down.
    EarlyWarning,
    /// A sudden jump (pH by default).
    RateOfChange,
    /// The same value, twelve times.
    Stuck,
    /// Three readings with status 02, then measuring again.
    DeviceFault,
    /// Status 01 for `calibration` readings in a row, then measuring.
    CalibrationOverrun,
    /// Readings, then nothing for `silence` steps, then readings again.
    NoData,
    /// `offline` on the status topic, later `online`.
    GatewayOffline,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Exceedance,
        Scenario::EarlyWarning,
        Scenario::RateOfChange,
        Scenario::Stuck,
        Scenario::DeviceFault,
        Scenario::CalibrationOverrun,
        Scenario::NoData,
        Scenario::GatewayOffline,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Scenario::Exceedance => "exceedance",
            Scenario::EarlyWarning => "early_warning",
            Scenario::RateOfChange => "rate_of_change",
            Scenario::Stuck => "stuck",
            Scenario::DeviceFault => "device_fault",
            Scenario::CalibrationOverrun => "calibration_overrun",
            Scenario::NoData => "no_data",
            Scenario::GatewayOffline => "gateway_offline",
        }
    }

    /// The parameter a scenario uses on `station` when none is named: the first with an
    /// upper limit (pH for a rate of change), else the first.
    pub fn default_param(self, station: &StationSpec) -> Option<&ParamSpec> {
        let by_name = |n: &str| station.parameters.iter().find(|p| p.name == n);
        let limited = station.parameters.iter().find(|p| p.upper_limit.is_some());
        match self {
            Scenario::RateOfChange => by_name("pH").or(limited),
            _ => limited,
        }
        .or_else(|| station.parameters.first())
    }

    /// What to send, one step per reporting interval. `calibration` is how many steps the
    /// calibration overrun lasts (make it exceed the rule's maximum).
    pub fn steps(self, param: &ParamSpec, calibration: usize) -> Vec<Step> {
        let (lo, hi) = param.range;
        let limit = param.upper_limit.unwrap_or(lo + (hi - lo) * 0.5);
        let normal = clamp(limit * 0.5, param.range);
        let reading = |value: f64, status: Status| Step::Reading {
            value: round(clamp(value, param.range)),
            status,
        };
        let ok = |value: f64| reading(value, Status::Measuring);
        let mut steps = Vec::new();
        match self {
            Scenario::Exceedance => {
                steps.extend((0..3).map(|_| ok(normal)));
                steps.extend((0..6).map(|i| ok(limit * (1.2 + 0.05 * f64::from(i)))));
                steps.extend((0..4).map(|_| ok(limit * 0.5)));
            }
            Scenario::EarlyWarning => {
                steps.extend((0..6).map(|i| ok(limit * (0.4 + 0.1 * f64::from(i)))));
                steps.extend((0..4).map(|_| ok(limit * 0.4)));
            }
            Scenario::RateOfChange => {
                let base = clamp(7.0, param.range);
                steps.extend((0..3).map(|_| ok(base)));
                steps.push(ok(base + (hi - lo) * 0.2));
                steps.extend((0..3).map(|_| ok(base + (hi - lo) * 0.2)));
            }
            Scenario::Stuck => {
                steps.extend((0..12).map(|_| ok(normal)));
                steps.push(ok(normal * 1.01 + 0.1));
            }
            Scenario::DeviceFault => {
                steps.extend((0..3).map(|_| reading(normal, Status::DeviceError)));
                steps.extend((0..2).map(|_| ok(normal)));
            }
            Scenario::CalibrationOverrun => {
                steps.extend((0..calibration).map(|_| reading(normal, Status::Calibrating)));
                steps.extend((0..2).map(|_| ok(normal)));
            }
            Scenario::NoData => {
                steps.extend((0..2).map(|_| ok(normal)));
                steps.push(Step::Silence(calibration.max(4)));
                steps.push(ok(normal));
            }
            Scenario::GatewayOffline => {
                steps.push(ok(normal));
                steps.push(Step::Status(false));
                steps.push(Step::Silence(2));
                steps.push(Step::Status(true));
                steps.push(ok(normal));
            }
        }
        steps
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown scenario name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scenario `{0}` (exceedance, early_warning, rate_of_change, stuck, device_fault, calibration_overrun, no_data, gateway_offline)")]
pub struct UnknownScenario(pub String);

impl FromStr for Scenario {
    type Err = UnknownScenario;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = s.trim().replace('-', "_").to_ascii_lowercase();
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.as_str() == key)
            .ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

/// One step of a scenario, one reporting interval long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// A record with this reading of the scenario's parameter.
    Reading { value: f64, status: Status },
    /// Send nothing for this many intervals.
    Silence(usize),
    /// Announce the gateway online (`true`) or offline on the status topic.
    Status(bool),
}

impl Step {
    /// The record of a reading step, for `station` and `param` at `ts_ms`.
    pub fn record(
        &self,
        station: &StationSpec,
        param: &ParamSpec,
        ts_ms: i64,
        seq: u64,
    ) -> Option<Record> {
        let Step::Reading { value, status } = *self else {
            return None;
        };
        Some(Record {
            station: station.id.clone(),
            ts_ms,
            seq: Some(seq),
            readings: vec![Reading {
                param: param.name.clone(),
                value,
                unit: param.unit.clone(),
                status,
            }],
        })
    }
}

fn clamp(value: f64, (lo, hi): (f64, f64)) -> f64 {
    value.clamp(lo, hi)
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cod() -> ParamSpec {
        ParamSpec {
            name: "COD".into(),
            unit: "mg/L".into(),
            range: (0.0, 2000.0),
            upper_limit: Some(135.0),
            lower_limit: None,
        }
    }

    fn values(steps: &[Step]) -> Vec<f64> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Reading { value, .. } => Some(*value),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn an_exceedance_goes_above_the_limit_for_six_readings_then_back_below_it() {
        let v = values(&Scenario::Exceedance.steps(&cod(), 0));
        assert_eq!(v.iter().filter(|&&x| x > 135.0).count(), 6);
        assert!(*v.last().unwrap() < 135.0 * 0.95);
    }

    #[test]
    fn an_early_warning_climbs_but_never_crosses_the_limit() {
        let v = values(&Scenario::EarlyWarning.steps(&cod(), 0));
        assert!(v.iter().all(|&x| x < 135.0));
        assert!(v.windows(2).take(5).all(|w| w[1] > w[0]));
    }

    #[test]
    fn device_and_calibration_scenarios_use_their_statuses() {
        let steps = Scenario::DeviceFault.steps(&cod(), 0);
        assert!(matches!(
            steps[0],
            Step::Reading {
                status: Status::DeviceError,
                ..
            }
        ));
        let steps = Scenario::CalibrationOverrun.steps(&cod(), 5);
        let calibrating = steps
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Step::Reading {
                        status: Status::Calibrating,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(calibrating, 5);
    }

    #[test]
    fn names_parse_with_dashes_or_underscores() {
        assert_eq!(
            "early-warning".parse::<Scenario>().unwrap(),
            Scenario::EarlyWarning
        );
        assert_eq!("NO_DATA".parse::<Scenario>().unwrap(), Scenario::NoData);
        assert!("flood".parse::<Scenario>().is_err());
    }
}
