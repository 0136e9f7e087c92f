//! The rule book: which rules watch which station parameters, with what settings.
//!
//! Two sources, both data:
//! - every limit of a station's limit profile becomes an **exceedance** rule automatically
//!   (`limit-inst`, `limit-1h`, `limit-8h`, `limit-24h`; yearly limits are for compliance
//!   reports, not real-time alerts), with the settings of `[exceedance]` in
//!   `seeds/rules.toml`;
//! - `[[rule]]` entries of `seeds/rules.toml` declare the other kinds, selected by station,
//!   zone, station kind and parameter.
//!
//! [`compile`] turns these into the [`Rule`]s of one station parameter (and
//! [`compile_station`] those of a station), which the engine evaluates.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{RuleKind, Severity};
use crate::registry::{Averaging, Parameter, Station, StationKind};
use crate::telemetry::time::duration_ms;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("{path}: rule `{rule}`: {problem}")]
    Invalid {
        path: std::path::PathBuf,
        rule: String,
        problem: String,
    },
}

/// Name of the rules file inside the seed directory.
pub const FILE: &str = "rules.toml";

/// When an alert escalates, and to what.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    #[serde(default = "critical")]
    pub severity: Severity,
    /// Escalate once the offending value reaches `factor x threshold`.
    pub factor: Option<f64>,
    /// Escalate once the alert has lasted this long (event time).
    #[serde(default, with = "humantime_serde::option")]
    pub after: Option<Duration>,
}

fn critical() -> Severity {
    Severity::Critical
}

/// Settings shared by the automatic exceedance rules.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceedanceSettings {
    #[serde(default = "warning")]
    pub severity: Severity,
    #[serde(default = "one")]
    pub for_count: u32,
    #[serde(default, with = "humantime_serde")]
    pub for_duration: Duration,
    #[serde(default = "default_hysteresis")]
    pub hysteresis: f64,
    #[serde(default = "one")]
    pub clear_count: u32,
    /// Share of the expected readings an averaging window must hold to be judged.
    #[serde(default = "default_coverage")]
    pub coverage: f64,
    #[serde(default)]
    pub escalate: Option<Escalation>,
}

impl Default for ExceedanceSettings {
    fn default() -> Self {
        ExceedanceSettings {
            severity: Severity::Warning,
            for_count: 1,
            for_duration: Duration::ZERO,
            hysteresis: default_hysteresis(),
            clear_count: 1,
            coverage: default_coverage(),
            escalate: None,
        }
    }
}

fn warning() -> Severity {
    Severity::Warning
}
fn one() -> u32 {
    1
}
fn default_hysteresis() -> f64 {
    0.05
}
fn default_coverage() -> f64 {
    0.75
}

/// One `[[rule]]` of the rules file, as written. Kind-specific keys are checked by
/// [`RuleBook::load`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSeed {
    pub name: String,
    pub kind: RuleKind,
    #[serde(default)]
    pub stations: Vec<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub station_kinds: Vec<StationKind>,
    /// Parameter names; empty or `"*"` means every parameter.
    #[serde(default)]
    pub params: Vec<String>,
    pub severity: Option<Severity>,
    pub for_count: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub for_duration: Option<Duration>,
    pub clear_count: Option<u32>,
    pub hysteresis: Option<f64>,
    pub escalate: Option<Escalation>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub max_change: Option<f64>,
    #[serde(default, with = "humantime_serde::option")]
    pub per: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub horizon: Option<Duration>,
    pub min_points: Option<u32>,
    pub tolerance: Option<f64>,
    #[serde(default, with = "humantime_serde::option")]
    pub max: Option<Duration>,
    pub intervals: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    exceedance: ExceedanceSettings,
    #[serde(default)]
    rule: Vec<RuleSeed>,
}

/// All rule settings, validated.
#[derive(Debug, Clone, Default)]
pub struct RuleBook {
    pub exceedance: ExceedanceSettings,
    pub rules: Vec<RuleSeed>,
}

impl RuleBook {
    /// Reads `rules.toml` from the seed directory. Without the file, only the exceedance
    /// rules exist, with default settings.
    pub fn load(seeds: &Path) -> Result<RuleBook, Error> {
        let path = seeds.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RuleBook::default()),
            Err(source) => return Err(Error::Read { path, source }),
        };
        RuleBook::parse(&text).map_err(|e| match e {
            Error::Syntax { message, .. } => Error::Syntax {
                path: path.clone(),
                message,
            },
            Error::Invalid { rule, problem, .. } => Error::Invalid {
                path: path.clone(),
                rule,
                problem,
            },
            other => other,
        })
    }

    /// Parses and checks the text of a rules file.
    pub fn parse(text: &str) -> Result<RuleBook, Error> {
        let file: RulesFile = toml::from_str(text).map_err(|e| Error::Syntax {
            path: FILE.into(),
            message: e.to_string(),
        })?;
        let invalid = |rule: &str, problem: &str| Error::Invalid {
            path: FILE.into(),
            rule: rule.to_owned(),
            problem: problem.to_owned(),
        };
        check_trigger(
            "[exceedance]",
            Some(file.exceedance.hysteresis),
            Some(file.exceedance.for_count),
            &invalid,
        )?;
        let c = file.exceedance.coverage;
        if !(c > 0.0 && c <= 1.0) {
            return Err(invalid("[exceedance]", "coverage must be in (0, 1]"));
        }
        let mut names = HashSet::new();
        for r in &file.rule {
            if !names.insert(r.name.as_str()) || r.name.starts_with("limit-") || r.name.is_empty() {
                return Err(invalid(
                    &r.name,
                    "names must be unique, non-empty, and not start with `limit-`",
                ));
            }
            check_trigger(&r.name, r.hysteresis, r.for_count, &invalid)?;
            let positive = |d: Option<Duration>| d.is_some_and(|d| !d.is_zero());
            let problem = match r.kind {
                RuleKind::Exceedance => {
                    Some("exceedance rules are made from limit profiles; set them in [exceedance]")
                }
                RuleKind::Threshold if r.above.is_none() && r.below.is_none() => {
                    Some("needs `above` and/or `below`")
                }
                RuleKind::Threshold if matches!((r.above, r.below), (Some(a), Some(b)) if b >= a) => {
                    Some(
                        "`below` must be less than `above` (the rule fires outside [below, above])",
                    )
                }
                RuleKind::RateOfChange
                    if !(r.max_change.is_some_and(|m| m > 0.0) && positive(r.per)) =>
                {
                    Some("needs `max_change` > 0 and `per` (a duration)")
                }
                RuleKind::Stuck if !positive(r.window) => Some("needs `window` (a duration)"),
                RuleKind::EarlyWarning if !(positive(r.window) && positive(r.horizon)) => {
                    Some("needs `window` and `horizon` (durations)")
                }
                RuleKind::CalibrationOverrun if !positive(r.max) => {
                    Some("needs `max` (a duration)")
                }
                RuleKind::NoData if r.intervals == Some(0) => Some("`intervals` must be positive"),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(invalid(&r.name, problem));
            }
        }
        Ok(RuleBook {
            exceedance: file.exceedance,
            rules: file.rule,
        })
    }
}

fn check_trigger(
    rule: &str,
    hysteresis: Option<f64>,
    for_count: Option<u32>,
    invalid: &dyn Fn(&str, &str) -> Error,
) -> Result<(), Error> {
    if hysteresis.is_some_and(|h| !(0.0..1.0).contains(&h)) {
        return Err(invalid(rule, "hysteresis must be in [0, 1)"));
    }
    if for_count == Some(0) {
        return Err(invalid(rule, "for_count must be at least 1"));
    }
    Ok(())
}

/// One side or both of a limit, with the days (Vietnam local, days since 1970-01-01) it
/// applies on.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub from_day: Option<i64>,
    pub to_day: Option<i64>,
    pub source: Arc<str>,
}

impl Bounds {
    pub fn applies_on(&self, day: i64) -> bool {
        self.from_day.is_none_or(|f| f <= day) && self.to_day.is_none_or(|t| day <= t)
    }
}

/// What a rule checks, with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// Each valid reading (`window_ms: None`) or the rolling mean over a window.
    Limit {
        window_ms: Option<i64>,
        coverage: f64,
        bounds: Vec<Bounds>,
    },
    Threshold {
        above: Option<f64>,
        below: Option<f64>,
    },
    Rate {
        max_change: f64,
        per_ms: i64,
    },
    Stuck {
        window_ms: i64,
        min_points: u32,
        tolerance: f64,
    },
    Trend {
        window_ms: i64,
        horizon_ms: i64,
        min_points: u32,
        bounds: Vec<Bounds>,
    },
    DeviceFault,
    CalibrationOverrun {
        max_ms: i64,
    },
    NoData {
        after_ms: i64,
    },
    GatewayOffline,
}

/// A compiled rule of one station parameter (or of a station).
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: Arc<str>,
    pub kind: RuleKind,
    pub severity: Severity,
    pub for_count: u32,
    pub for_ms: i64,
    pub clear_count: u32,
    /// Share of the threshold the value must move back before the alert clears.
    pub hysteresis: f64,
    pub escalate: Option<EscalateTo>,
    pub check: Check,
}

/// Compiled escalation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalateTo {
    pub severity: Severity,
    pub factor: Option<f64>,
    pub after_ms: Option<i64>,
}

impl From<&Escalation> for EscalateTo {
    fn from(e: &Escalation) -> Self {
        EscalateTo {
            severity: e.severity,
            factor: e.factor,
            after_ms: e.after.map(duration_ms),
        }
    }
}

fn bounds_of(param: &Parameter, averaging: Averaging) -> Vec<Bounds> {
    param
        .limits
        .iter()
        .filter(|l| l.averaging == averaging)
        .map(|l| Bounds {
            lower: l.lower,
            upper: l.upper,
            from_day: l.valid_from.map(day_number),
            to_day: l.valid_to.map(day_number),
            source: Arc::from(l.source.as_str()),
        })
        .collect()
}

/// Days since 1970-01-01 of a calendar date.
pub fn day_number(date: chrono::NaiveDate) -> i64 {
    date.signed_duration_since(chrono::NaiveDate::default())
        .num_days()
}

fn selects(seed: &RuleSeed, station: &Station, param: Option<&str>) -> bool {
    let listed = |list: &[String], value: &str| {
        list.is_empty() || list.iter().any(|v| v == value || v == "*")
    };
    listed(&seed.stations, &station.id)
        && listed(&seed.zones, &station.zone)
        && (seed.station_kinds.is_empty() || seed.station_kinds.contains(&station.kind))
        && param.is_none_or(|p| listed(&seed.params, p))
}

/// Shares identical compiled rules between series: thousands of stations with the same
/// profile and rules then point at a handful of rules, which stay in the CPU cache while the
/// engine walks from one series' state to the next.
#[derive(Debug, Default)]
pub struct Interner {
    by_name: std::collections::HashMap<Arc<str>, Vec<Arc<Rule>>>,
}

impl Interner {
    pub fn intern(&mut self, rule: Rule) -> Arc<Rule> {
        let same_name = self.by_name.entry(rule.name.clone()).or_default();
        match same_name.iter().find(|r| ***r == rule) {
            Some(existing) => existing.clone(),
            None => {
                let rule = Arc::new(rule);
                same_name.push(rule.clone());
                rule
            }
        }
    }
}

/// The rules of one station parameter: exceedance rules from its limits, then the declared
/// rules that select it.
pub fn compile(
    book: &RuleBook,
    station: &Station,
    param: &Parameter,
    interner: &mut Interner,
) -> Vec<Arc<Rule>> {
    let ex = &book.exceedance;
    let mut rules = Vec::new();
    for (averaging, name) in [
        (Averaging::Instant, "limit-inst"),
        (Averaging::Hour1, "limit-1h"),
        (Averaging::Hour8, "limit-8h"),
        (Averaging::Hour24, "limit-24h"),
    ] {
        let bounds = bounds_of(param, averaging);
        if bounds.is_empty() {
            continue;
        }
        rules.push(interner.intern(Rule {
            name: Arc::from(name),
            kind: RuleKind::Exceedance,
            severity: ex.severity,
            for_count: ex.for_count,
            for_ms: duration_ms(ex.for_duration),
            clear_count: ex.clear_count,
            hysteresis: ex.hysteresis,
            escalate: ex.escalate.as_ref().map(EscalateTo::from),
            check: Check::Limit {
                window_ms: averaging.window_ms(),
                coverage: ex.coverage,
                bounds,
            },
        }));
    }
    for seed in book.rules.iter().filter(|s| !s.kind.is_station_level()) {
        if !selects(seed, station, Some(&param.name)) {
            continue;
        }
        let check = match seed.kind {
            RuleKind::Threshold => Check::Threshold {
                above: seed.above,
                below: seed.below,
            },
            RuleKind::RateOfChange => Check::Rate {
                max_change: seed.max_change.unwrap_or(f64::INFINITY),
                per_ms: seed.per.map_or(60_000, duration_ms),
            },
            RuleKind::Stuck => Check::Stuck {
                window_ms: seed.window.map_or(3_600_000, duration_ms),
                min_points: seed.min_points.unwrap_or(6),
                tolerance: seed.tolerance.unwrap_or(0.0),
            },
            RuleKind::EarlyWarning => {
                // Only against an instantaneous upper limit: raw readings trend towards it.
                let bounds: Vec<Bounds> = bounds_of(param, Averaging::Instant)
                    .into_iter()
                    .filter(|b| b.upper.is_some())
                    .collect();
                if bounds.is_empty() {
                    continue;
                }
                Check::Trend {
                    window_ms: seed.window.map_or(1_800_000, duration_ms),
                    horizon_ms: seed.horizon.map_or(1_800_000, duration_ms),
                    min_points: seed.min_points.unwrap_or(4).max(2),
                    bounds,
                }
            }
            RuleKind::DeviceFault => Check::DeviceFault,
            RuleKind::CalibrationOverrun => Check::CalibrationOverrun {
                max_ms: seed.max.map_or(7_200_000, duration_ms),
            },
            RuleKind::Exceedance | RuleKind::NoData | RuleKind::GatewayOffline => continue,
        };
        rules.push(interner.intern(declared(seed, check)));
    }
    rules
}

/// The station-level rules (no data, gateway offline) that select `station`.
pub fn compile_station(
    book: &RuleBook,
    station: &Station,
    interner: &mut Interner,
) -> Vec<Arc<Rule>> {
    book.rules
        .iter()
        .filter(|s| s.kind.is_station_level() && selects(s, station, None))
        .map(|seed| {
            let check = match seed.kind {
                RuleKind::NoData => Check::NoData {
                    after_ms: duration_ms(
                        station
                            .expected_interval
                            .saturating_mul(seed.intervals.unwrap_or(3)),
                    ),
                },
                _ => Check::GatewayOffline,
            };
            interner.intern(declared(seed, check))
        })
        .collect()
}

fn declared(seed: &RuleSeed, check: Check) -> Rule {
    Rule {
        name: Arc::from(seed.name.as_str()),
        kind: seed.kind,
        severity: seed.severity.unwrap_or(Severity::Warning),
        for_count: seed.for_count.unwrap_or(1),
        for_ms: seed.for_duration.map_or(0, duration_ms),
        clear_count: seed.clear_count.unwrap_or(1),
        hysteresis: seed.hysteresis.unwrap_or(0.0),
        escalate: seed.escalate.as_ref().map(EscalateTo::from),
        check,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    fn seeds() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
    }

    #[test]
    fn the_shipped_rule_book_loads_and_declares_every_other_kind() {
        let book = RuleBook::load(&seeds()).unwrap();
        for kind in [
            RuleKind::Threshold,
            RuleKind::RateOfChange,
            RuleKind::Stuck,
            RuleKind::EarlyWarning,
            RuleKind::DeviceFault,
            RuleKind::CalibrationOverrun,
            RuleKind::NoData,
            RuleKind::GatewayOffline,
        ] {
            assert!(book.rules.iter().any(|r| r.kind == kind), "{kind}");
        }
    }

    #[test]
    fn every_limit_becomes_an_exceedance_rule_with_the_station_factor() {
        let registry = Registry::load(&seeds()).unwrap();
        let book = RuleBook::load(&seeds()).unwrap();
        let ww = registry.station("DN-AMATA-WW01").unwrap();
        let cod = compile(
            &book,
            ww,
            ww.parameter("COD").unwrap(),
            &mut Interner::default(),
        );
        let limit = cod.iter().find(|r| &*r.name == "limit-inst").unwrap();
        let Check::Limit {
            bounds, window_ms, ..
        } = &limit.check
        else {
            panic!("a limit check")
        };
        assert_eq!(*window_ms, None);
        assert_eq!(bounds[0].upper, Some(135.0));
        let aq = registry.station("DN-AMATA-AQ01").unwrap();
        let pm = compile(
            &book,
            aq,
            aq.parameter("PM2.5").unwrap(),
            &mut Interner::default(),
        );
        let daily = pm.iter().find(|r| &*r.name == "limit-24h").unwrap();
        let Check::Limit {
            bounds, window_ms, ..
        } = &daily.check
        else {
            panic!("a limit check")
        };
        assert_eq!(*window_ms, Some(86_400_000));
        assert_eq!(bounds.len(), 2, "both validity periods");
        assert!(
            pm.iter().all(|r| &*r.name != "limit-1y"),
            "yearly limits are not real-time"
        );
    }

    #[test]
    fn declared_rules_select_by_station_kind_and_parameter() {
        let book = RuleBook::parse(
            r#"
[[rule]]
name = "hot"
kind = "threshold"
station_kinds = ["wastewater"]
params = ["Temp"]
above = 40
"#,
        )
        .unwrap();
        let registry = Registry::load(&seeds()).unwrap();
        let ww = registry.station("DN-AMATA-WW01").unwrap();
        let st = registry.station("DN-AMATA-ST01").unwrap();
        let names = |s: &Station, p: &str| -> Vec<String> {
            compile(&book, s, s.parameter(p).unwrap(), &mut Interner::default())
                .iter()
                .map(|r| r.name.to_string())
                .collect()
        };
        assert!(names(ww, "Temp").contains(&"hot".to_owned()));
        assert!(!names(ww, "pH").contains(&"hot".to_owned()));
        assert!(!names(st, "Temp").contains(&"hot".to_owned()));
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        for (text, needle) in [
            ("[[rule]]\nname='x'\nkind='threshold'\n", "needs `above`"),
            ("[[rule]]\nname='x'\nkind='stuck'\n", "needs `window`"),
            (
                "[[rule]]\nname='x'\nkind='exceedance'\n",
                "made from limit profiles",
            ),
            (
                "[[rule]]\nname='x'\nkind='no_data'\n[[rule]]\nname='x'\nkind='no_data'\n",
                "unique",
            ),
            (
                "[[rule]]\nname='x'\nkind='no_data'\nhysteresis=1.5\n",
                "hysteresis",
            ),
            ("[[rule]]\nname='x'\nkind='bogus'\n", "bogus"),
            ("[exceedance]\ncoverage=0\n", "coverage"),
        ] {
            let err = RuleBook::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod interning {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn identical_rules_of_different_stations_are_one_shared_rule() {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let registry = Registry::load(&seeds).unwrap();
        let book = RuleBook::load(&seeds).unwrap();
        let mut interner = Interner::default();
        let (ww1, ww2) = (
            registry.station("DN-AMATA-WW01").unwrap(),
            registry.station("BN-VSIP-WW01").unwrap(),
        );
        let a = compile(&book, ww1, ww1.parameter("NH4").unwrap(), &mut interner);
        let b = compile(&book, ww2, ww2.parameter("NH4").unwrap(), &mut interner);
        let fault = |rules: &[Arc<Rule>]| {
            rules
                .iter()
                .find(|r| &*r.name == "device-fault")
                .unwrap()
                .clone()
        };
        assert!(
            Arc::ptr_eq(&fault(&a), &fault(&b)),
            "same declared rule, shared"
        );
        let limit = |rules: &[Arc<Rule>]| {
            rules
                .iter()
                .find(|r| &*r.name == "limit-inst")
                .unwrap()
                .clone()
        };
        assert!(
            !Arc::ptr_eq(&limit(&a), &limit(&b)),
            "different factors and profiles, different rules"
        );
    }
}
