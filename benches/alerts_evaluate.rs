//! Alert rule evaluation per reading, with the state of 10,000 stations x 8 parameters
//! loaded (80,000 series, each with its exceedance rule and the shipped declared rules:
//! early warning, device fault, calibration overrun, stuck sensor, ...).
//!
//! Every iteration evaluates one valid reading of the next series, 5 minutes after that
//! series' previous one (the normal pace: no holding back), so all rules run on live state.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quantrac::alerts::{Engine, EngineConfig, RuleBook};
use quantrac::registry::Registry;
use quantrac::telemetry::{Reading, Status, Timestamp};

const STATIONS: usize = 10_000;
const PARAMS: [&str; 8] = ["COD", "TSS", "NH4", "TN", "TP", "pH", "Temp", "Flow"];

/// A registry of `STATIONS` wastewater stations with the 8 parameters above, limits from
/// column B of QCVN 40 (the shipped limits.csv) and the shipped rules.
fn seeds(dir: &Path) {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    for file in ["limits.csv", "rules.toml"] {
        std::fs::copy(shipped.join(file), dir.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("zones.toml"),
        "[[zone]]\nid = \"Z\"\nname = \"z\"\nprovince = \"p\"\n",
    )
    .unwrap();
    let mut stations = String::new();
    for s in 0..STATIONS {
        write!(
            stations,
            "[[station]]\nid = \"S{s:05}\"\nzone = \"Z\"\nkind = \"wastewater\"\nname = \"s\"\noperator = \"o\"\nlocation = {{ lat = 10.0, lon = 106.0 }}\nexpected_interval = \"5m\"\nlimit_profile = \"qcvn40-2011-B\"\n"
        )
        .unwrap();
        for p in PARAMS {
            let unit = match p {
                "pH" => "pH",
                "Temp" => "°C",
                "Flow" => "m3/h",
                _ => "mg/L",
            };
            write!(
                stations,
                "[[station.parameter]]\nname = \"{p}\"\nunit = \"{unit}\"\nrange = [0, 5000]\n"
            )
            .unwrap();
        }
    }
    std::fs::write(dir.join("stations.toml"), stations).unwrap();
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    seeds(dir.path());
    let registry = Arc::new(Registry::load(dir.path()).unwrap());
    let book = Arc::new(RuleBook::load(dir.path()).unwrap());
    let t0 = 1_795_626_000_000_i64;
    let config = EngineConfig {
        lateness: Duration::from_secs(30),
        backfill_after: Duration::from_secs(900),
        reminder: Some(Duration::from_secs(4 * 3600)),
    };
    let mut engine = Engine::new(config, registry.clone(), book, Timestamp::from_millis(t0));
    // One reading per series, and keep them to cycle through.
    let mut readings: Vec<Reading> = Vec::with_capacity(STATIONS * PARAMS.len());
    for station in registry.stations() {
        for p in &station.parameters {
            let value = match &*p.name {
                "pH" => 7.2,
                "Temp" => 28.0,
                "Flow" => 800.0,
                _ => 5.0,
            };
            readings.push(Reading {
                station: station.id.clone(),
                zone: station.zone.clone(),
                param: p.name.clone(),
                ts: Timestamp::from_millis(t0),
                value,
                status: Status::Measuring,
            });
        }
    }
    let mut events = Vec::new();
    for round in 0..6 {
        for r in &mut readings {
            r.ts = Timestamp::from_millis(t0 + round * 300_000);
            r.value *= 1.001;
        }
        let now = Timestamp::from_millis(t0 + round * 300_000 + 1000);
        engine.evaluate(&readings, now, &mut events);
        events.clear();
        engine.take_updates();
    }
    assert_eq!(engine.active().count(), 0, "a calm fleet raises nothing");

    let mut group = c.benchmark_group("alerts");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    let mut round = 6i64;
    group.bench_function("evaluate_one_reading_80k_series", |b| {
        b.iter(|| {
            let r = &mut readings[i];
            r.ts = Timestamp::from_millis(t0 + round * 300_000);
            let now = Timestamp::from_millis(t0 + round * 300_000 + 1000);
            engine.evaluate(std::slice::from_ref(r), now, &mut events);
            events.clear();
            i += 1;
            if i == readings.len() {
                i = 0;
                round += 1;
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
