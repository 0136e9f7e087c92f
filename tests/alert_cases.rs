//! Rule behaviour, described as data: every `tests/alert_cases/*.toml` file is a scenario of
//! readings, clock ticks, gateway announcements and acknowledgements fed to the (pure) alert
//! engine, with the exact events each step must produce. See `tests/alert_cases/README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quantrac::alerts::{AlertEvent, Engine, EngineConfig, RuleBook};
use quantrac::registry::Registry;
use quantrac::telemetry::{GatewayState, Reading, Status, Timestamp};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    station: String,
    /// A whole rules file replacing `seeds/rules.toml`.
    rules: Option<String>,
    #[serde(default = "lateness", with = "humantime_serde")]
    lateness: Duration,
    #[serde(default = "backfill_after", with = "humantime_serde")]
    backfill_after: Duration,
    #[serde(default, with = "humantime_serde::option")]
    reminder: Option<Duration>,
    #[serde(rename = "step")]
    steps: Vec<Step>,
}

fn lateness() -> Duration {
    Duration::from_secs(30)
}
fn backfill_after() -> Duration {
    Duration::from_secs(900)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    /// Minutes after the start, on the clock.
    t: f64,
    /// Readings `{ PARAM = value }`, measured at `ts` (minutes; default `t`).
    #[serde(default)]
    read: BTreeMap<String, f64>,
    ts: Option<f64>,
    #[serde(default = "measuring")]
    status: String,
    /// Repeat the readings `times` times, `every` minutes apart (clock and event time).
    repeat: Option<Repeat>,
    #[serde(default)]
    tick: bool,
    gateway: Option<String>,
    ack: Option<u64>,
    /// Every event the step produces, in order: "<kind> <rule> <param|-> <severity>[ backfilled]".
    #[serde(default)]
    expect: Vec<String>,
    /// Active alerts after the step: "<rule> <param|->" (checked when given).
    active: Option<Vec<String>>,
    /// Field checks on the alerts of the events of this step, by position.
    #[serde(default)]
    check: Vec<Check>,
}

fn measuring() -> String {
    "00".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Repeat {
    every: f64,
    times: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Check {
    event: usize,
    count: Option<u64>,
    peak: Option<f64>,
    first_value: Option<f64>,
    threshold: Option<f64>,
    first_at: Option<f64>,
    resolved_at: Option<f64>,
    message_contains: Option<String>,
}

/// 2026-11-26T00:00:00+07:00
const T0: i64 = 1_795_626_000_000;

fn at(minutes: f64) -> Timestamp {
    Timestamp::from_millis(T0 + (minutes * 60_000.0).round() as i64)
}

fn describe(e: &AlertEvent) -> String {
    let a = &e.alert;
    format!(
        "{} {} {} {}{}",
        e.kind.as_str(),
        a.rule,
        a.param.as_deref().unwrap_or("-"),
        a.severity.as_str(),
        if e.backfilled { " backfilled" } else { "" }
    )
}

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

fn run(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let case: Case = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let registry = Arc::new(Registry::load(&seeds()).unwrap());
    let book = match &case.rules {
        Some(rules) => RuleBook::parse(rules).unwrap(),
        None => RuleBook::load(&seeds()).unwrap(),
    };
    let config = EngineConfig {
        lateness: case.lateness,
        backfill_after: case.backfill_after,
        reminder: case.reminder,
    };
    let mut engine = Engine::new(config, registry.clone(), Arc::new(book), at(0.0));
    let station = registry
        .station(&case.station)
        .unwrap_or_else(|| panic!("{name}: no station {}", case.station));
    for (i, step) in case.steps.iter().enumerate() {
        let context = format!(
            "{name} ({}) step {} at t={}",
            case.description,
            i + 1,
            step.t
        );
        let mut events = Vec::new();
        let status = Status::from_code(&step.status).unwrap();
        let (times, every) = step
            .repeat
            .as_ref()
            .map_or((1, 0.0), |r| (r.times, r.every));
        for k in 0..times {
            let t = step.t + f64::from(k) * every;
            let ts = step.ts.unwrap_or(step.t) + f64::from(k) * every;
            let readings: Vec<Reading> = step
                .read
                .iter()
                .map(|(param, &value)| {
                    let p = station
                        .parameter(param)
                        .unwrap_or_else(|| panic!("{context}: no parameter {param}"));
                    Reading {
                        station: station.id.clone(),
                        zone: station.zone.clone(),
                        param: p.name.clone(),
                        ts: at(ts),
                        value,
                        status,
                    }
                })
                .collect();
            if !readings.is_empty() {
                engine.evaluate(&readings, at(t), &mut events);
            }
            if step.tick {
                engine.tick(at(t), &mut events);
            }
            if let Some(g) = &step.gateway {
                let state = GatewayState::parse(g.as_bytes()).unwrap();
                engine.gateway(&station.id, state, at(t), &mut events);
            }
            if let Some(id) = step.ack {
                events.push(
                    engine
                        .acknowledge(id, "inspector", "seen", at(t))
                        .unwrap_or_else(|e| panic!("{context}: {e}")),
                );
            }
        }
        // The other stations of the registry are silent: their "no data" alerts are noise here.
        events.retain(|e| e.alert.station == station.id);
        let got: Vec<String> = events.iter().map(describe).collect();
        assert_eq!(got, step.expect, "{context}");
        if let Some(active) = &step.active {
            let mut got: Vec<String> = engine
                .active()
                .filter(|a| a.station == station.id)
                .map(|a| format!("{} {}", a.rule, a.param.as_deref().unwrap_or("-")))
                .collect();
            got.sort();
            let mut want = active.clone();
            want.sort();
            assert_eq!(got, want, "{context}: active alerts");
        }
        for c in &step.check {
            let a = &events
                .get(c.event)
                .unwrap_or_else(|| panic!("{context}: no event {}", c.event))
                .alert;
            let minutes = |t: Timestamp| (t.as_millis() - T0) as f64 / 60_000.0;
            if let Some(v) = c.count {
                assert_eq!(a.count, v, "{context}: count");
            }
            if let Some(v) = c.peak {
                assert_eq!(a.peak_value, Some(v), "{context}: peak");
            }
            if let Some(v) = c.first_value {
                assert_eq!(a.first_value, Some(v), "{context}: first value");
            }
            if let Some(v) = c.threshold {
                let got = a.threshold.unwrap();
                assert!((got - v).abs() < 1e-9, "{context}: threshold {got} != {v}");
            }
            if let Some(v) = c.first_at {
                assert_eq!(minutes(a.first_at), v, "{context}: first_at");
            }
            if let Some(v) = c.resolved_at {
                assert_eq!(
                    a.resolved_at.map(minutes),
                    Some(v),
                    "{context}: resolved_at"
                );
            }
            if let Some(text) = &c.message_contains {
                assert!(
                    a.message.contains(text.as_str()),
                    "{context}: message {:?}",
                    a.message
                );
            }
        }
    }
}

#[test]
fn every_alert_case_produces_exactly_its_expected_events() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alert_cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the cases are there");
    for file in files {
        run(&file);
    }
}
