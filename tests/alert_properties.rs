//! Properties of the alert engine that must hold for any data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use quantrac::alerts::{AlertEvent, Engine, EngineConfig, EventKind, RuleBook};
use quantrac::registry::Registry;
use quantrac::telemetry::{Reading, Status, Timestamp};

const MIN: i64 = 60_000;
const T0: i64 = 1_795_626_000_000;

/// One station reporting parameter X every minute; X's limit is 100 (clears at 95).
fn registry() -> Arc<Registry> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zones.toml"),
        "[[zone]]\nid = \"Z\"\nname = \"z\"\nprovince = \"p\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("stations.toml"),
        r#"
[[station]]
id = "S"
zone = "Z"
kind = "wastewater"
name = "s"
operator = "o"
location = { lat = 10.0, lon = 106.0 }
expected_interval = "1m"
limit_profile = "p"
[[station.parameter]]
name = "X"
unit = "u"
range = [0, 1000]
"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("limits.csv"),
        "profile,parameter,unit,averaging,lower,upper,factor_applies,valid_from,valid_to,status,source\np,X,u,inst,,100,no,,,S,test\np,X,u,1h,,90,no,,,S,test\n",
    )
    .unwrap();
    Arc::new(Registry::load(dir.path()).unwrap())
}

fn book() -> Arc<RuleBook> {
    Arc::new(
        RuleBook::parse(
            r#"
[exceedance]
for_count = 2
hysteresis = 0.05
coverage = 0.5
escalate = { severity = "critical", factor = 1.5 }
[[rule]]
name = "trend"
kind = "early_warning"
window = "10m"
horizon = "10m"
min_points = 3
[[rule]]
name = "jump"
kind = "rate_of_change"
max_change = 40
per = "1m"
"#,
        )
        .unwrap(),
    )
}

fn engine(lateness: Duration) -> Engine {
    let config = EngineConfig {
        lateness,
        backfill_after: Duration::from_secs(365 * 86_400),
        reminder: None,
    };
    Engine::new(config, registry(), book(), Timestamp::from_millis(T0))
}

fn reading(minute: i64, value: f64) -> Reading {
    Reading {
        station: "S".into(),
        zone: "Z".into(),
        param: "X".into(),
        ts: Timestamp::from_millis(T0 + minute * MIN),
        value,
        status: Status::Measuring,
    }
}

/// What an event says about the data, without processing times.
fn essence(e: &AlertEvent) -> String {
    let a = &e.alert;
    format!(
        "{} {} {} first={} last={} count={} peak={:?} resolved={:?}",
        e.kind.as_str(),
        a.rule,
        a.severity.as_str(),
        a.first_at.as_millis(),
        a.last_at.as_millis(),
        a.count,
        a.peak_value,
        a.resolved_at.map(Timestamp::as_millis),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn values_oscillating_inside_the_hysteresis_band_open_and_resolve_at_most_once(
        band in prop::collection::vec(95.01f64..100.0, 1..80),
    ) {
        let mut e = engine(Duration::from_secs(30));
        let mut events = Vec::new();
        let mut values = vec![120.0, 120.0];
        values.extend(band);
        for (m, v) in values.into_iter().enumerate() {
            let m = m as i64;
            e.evaluate(&[reading(m, v)], Timestamp::from_millis(T0 + m * MIN), &mut events);
        }
        let limit: Vec<&AlertEvent> = events.iter().filter(|e| &*e.alert.rule == "limit-inst").collect();
        let opened = limit.iter().filter(|e| e.kind == EventKind::Opened).count();
        let resolved = limit.iter().filter(|e| e.kind == EventKind::Resolved).count();
        prop_assert_eq!(opened, 1);
        prop_assert_eq!(resolved, 0);
    }

    #[test]
    fn a_rule_never_has_two_active_alerts_whatever_the_values(
        values in prop::collection::vec(prop_oneof![0.0f64..200.0, 94.0f64..101.0], 1..120),
    ) {
        let mut e = engine(Duration::from_secs(30));
        let mut events = Vec::new();
        for (m, v) in values.into_iter().enumerate() {
            let m = m as i64;
            e.evaluate(&[reading(m, v)], Timestamp::from_millis(T0 + m * MIN), &mut events);
        }
        for rule in ["limit-inst", "limit-1h", "trend", "jump"] {
            let mut open = false;
            for ev in events.iter().filter(|ev| &*ev.alert.rule == rule) {
                match ev.kind {
                    EventKind::Opened => { prop_assert!(!open, "{} opened twice", rule); open = true; }
                    EventKind::Resolved => { prop_assert!(open, "{} resolved while closed", rule); open = false; }
                    _ => prop_assert!(open, "{} changed while closed", rule),
                }
            }
        }
    }

    #[test]
    fn reordering_readings_within_the_lateness_bound_gives_the_same_alerts(
        values in prop::collection::vec(prop_oneof![50.0f64..150.0, 90.0f64..110.0], 5..90),
        delays in prop::collection::vec(0i64..270_000, 90),
    ) {
        let lateness = Duration::from_secs(300);
        let run = |delay: &dyn Fn(usize) -> i64| -> Vec<String> {
            let mut arrivals: Vec<(i64, usize)> = (0..values.len())
                .map(|k| (T0 + k as i64 * MIN + delay(k), k))
                .collect();
            arrivals.sort();
            let mut e = engine(lateness);
            let mut events = Vec::new();
            for &(at, k) in &arrivals {
                let now = Timestamp::from_millis(at);
                e.tick(now, &mut events);
                e.evaluate(&[reading(k as i64, values[k])], now, &mut events);
            }
            let end = arrivals.last().map_or(T0, |a| a.0) + 10 * MIN;
            e.tick(Timestamp::from_millis(end), &mut events);
            events.iter().map(essence).collect()
        };
        let in_order = run(&|_| 0);
        // The very first reading of a series is evaluated on arrival (there is no pace to
        // judge a gap by yet), so it arrives first here; every later one may be late.
        let shuffled = run(&|k| if k == 0 { 0 } else { delays[k] });
        prop_assert_eq!(in_order, shuffled);
    }

    #[test]
    fn an_engine_restored_from_a_snapshot_carries_on_exactly_like_one_that_never_stopped(
        values in prop::collection::vec(0.0f64..200.0, 2..100),
        split in 1usize..99,
    ) {
        let split = split.min(values.len() - 1);
        let feed = |e: &mut Engine, range: std::ops::Range<usize>, events: &mut Vec<AlertEvent>| {
            for k in range {
                let m = k as i64;
                e.evaluate(&[reading(m, values[k])], Timestamp::from_millis(T0 + m * MIN), events);
            }
        };
        let mut whole = engine(Duration::from_secs(30));
        let mut expected = Vec::new();
        feed(&mut whole, 0..values.len(), &mut expected);

        let mut first = engine(Duration::from_secs(30));
        let mut got = Vec::new();
        feed(&mut first, 0..split, &mut got);
        let blobs: Vec<(String, Vec<u8>)> = first.snapshot().into_iter().map(|(s, b)| (s.to_string(), b)).collect();
        let active = first.active().cloned().collect();
        let mut second = engine(Duration::from_secs(30));
        prop_assert!(second.restore(active, blobs, 1).is_empty());
        feed(&mut second, split..values.len(), &mut got);

        let essence_of = |events: &[AlertEvent]| events.iter().map(essence).collect::<Vec<_>>();
        prop_assert_eq!(essence_of(&expected), essence_of(&got));
    }
}
