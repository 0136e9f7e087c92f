#![allow(clippy::unwrap_used)]

use super::*;
use chrono::NaiveDate;

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
/// 2026-11-26T03:05:00Z
const T0: i64 = 1_795_662_300_000;

const STATIONS: &str = r#"
[[station]]
id = "WW"
zone = "Z1"
kind = "wastewater"
expected_interval = "5m"
limit_profile = "ww"
limit_factor = 0.9
parameter = [
  { name = "Flow", unit = "m3/h", range = [0, 5000] },
  { name = "Temp", unit = "°C", range = [0, 100] },
  { name = "pH", unit = "pH", range = [0, 14] },
  { name = "COD", unit = "mg/L", range = [0, 2000] },
  { name = "TSS", unit = "mg/L", range = [0, 2000] },
]

[[station]]
id = "AQ"
zone = "Z2"
kind = "ambient"
expected_interval = "1m"
limit_profile = "aq"
parameter = [
  { name = "PM2.5", unit = "ug/Nm3", range = [0, 1000] },
  { name = "O3", unit = "ug/Nm3", range = [0, 2000] },
]
"#;

const LIMITS: &str =
    "profile,parameter,unit,averaging,lower,upper,factor_applies,valid_from,valid_to,status,source
ww,pH,pH,inst,5.5,9,no,,,S,x
ww,COD,mg/L,inst,,150,yes,,,S,x
ww,TSS,mg/L,inst,,100,yes,,,S,x
aq,PM2.5,ug/Nm3,24h,,45,no,,,S,x
";

fn fleet() -> Fleet {
    Fleet::parse(
        STATIONS,
        LIMITS,
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap(),
    )
    .unwrap()
}

fn simulator(config: SimConfig) -> Simulator {
    Simulator::new(&fleet(), 0, config)
}

/// Every 5-minute sample of station `station` over `days` days.
fn samples(sim: &Simulator, station: usize, days: i64) -> Vec<Record> {
    (0..days * DAY / (5 * MINUTE))
        .map(|i| sim.sample(station, T0 + i * 5 * MINUTE))
        .collect()
}

#[test]
fn the_same_seed_and_time_give_the_same_record() {
    let a = simulator(SimConfig::default());
    let b = simulator(SimConfig::default());
    for ts in [T0, T0 + 1, T0 + 7 * DAY + 123] {
        assert_eq!(a.sample(0, ts), b.sample(0, ts));
    }
}

#[test]
fn sampling_does_not_depend_on_what_was_sampled_before() {
    let sim = simulator(SimConfig::default());
    let first = sim.sample(1, T0);
    let _ = samples(&sim, 1, 2);
    assert_eq!(sim.sample(1, T0), first);
}

#[test]
fn different_seeds_give_different_values() {
    let a = simulator(SimConfig::default());
    let b = simulator(SimConfig {
        seed: 43,
        ..SimConfig::default()
    });
    assert_ne!(a.sample(0, T0).readings, b.sample(0, T0).readings);
}

#[test]
fn records_carry_every_parameter_with_registry_units() {
    let sim = simulator(SimConfig::default());
    let record = sim.sample(0, T0);
    assert_eq!(record.station, "WW");
    assert_eq!(record.seq, None);
    let names: Vec<&str> = record.readings.iter().map(|r| r.param.as_str()).collect();
    assert_eq!(names, ["Flow", "Temp", "pH", "COD", "TSS"]);
    assert_eq!(record.readings[1].unit, "°C");
}

#[test]
fn values_stay_within_the_physical_range_and_have_two_decimals() {
    let sim = simulator(SimConfig::default());
    let fleet = fleet();
    for (station, spec) in fleet.stations.iter().enumerate() {
        for record in samples(&sim, station, 15) {
            for (reading, param) in record.readings.iter().zip(&spec.parameters) {
                let (min, max) = param.range;
                assert!(reading.value.is_finite());
                assert!((min..=max).contains(&reading.value), "{reading:?}");
                let cents = reading.value * 100.0;
                assert!((cents - cents.round()).abs() < 1e-6, "{reading:?}");
            }
        }
    }
}

#[test]
fn baselines_sit_well_below_the_limit_and_ph_near_seven() {
    let sim = simulator(SimConfig::quiet(42));
    let records = samples(&sim, 0, 3);
    let mean = |param: usize| {
        records.iter().map(|r| r.readings[param].value).sum::<f64>() / records.len() as f64
    };
    assert!((6.9..=7.5).contains(&mean(2)), "pH {}", mean(2));
    let cod = mean(3);
    assert!((0.3 * 135.0..=0.7 * 135.0).contains(&cod), "COD {cod}");
    let temp = mean(1);
    assert!((25.0..=33.0).contains(&temp), "Temp {temp}");
}

#[test]
fn without_episodes_no_measured_value_crosses_its_limit() {
    let sim = simulator(SimConfig::quiet(42));
    for record in samples(&sim, 0, 30) {
        assert!(record.readings[3].value < 135.0, "{record:?}");
        assert!(record.readings[4].value < 90.0, "{record:?}");
    }
}

#[test]
fn episodes_exceed_the_limit_after_a_visible_rise() {
    let sim = simulator(SimConfig {
        calibrations: false,
        faults: false,
        ..SimConfig::default()
    });
    let records = samples(&sim, 0, 30);
    let limit = 135.0;
    let crossing = records
        .windows(2)
        .position(|w| w[0].readings[3].value <= limit && w[1].readings[3].value > limit)
        .map(|i| i + 1);
    let Some(crossing) = crossing else {
        panic!("COD never crossed its limit in 30 days");
    };
    let peak = records
        .iter()
        .map(|r| r.readings[3].value)
        .fold(0.0, f64::max);
    assert!(peak > 1.15 * limit && peak < 1.7 * limit, "peak {peak}");
    // The hour before the crossing climbs: its last value is well above its first.
    let before = &records[crossing.saturating_sub(12)..crossing];
    let rise = before[before.len() - 1].readings[3].value - before[0].readings[3].value;
    assert!(rise > 0.15 * limit, "rise {rise}");
}

#[test]
fn calibration_and_fault_statuses_occur() {
    let sim = simulator(SimConfig::default());
    let records = samples(&sim, 0, 30);
    let count = |status| {
        records
            .iter()
            .flat_map(|r| &r.readings)
            .filter(|r| r.status == status)
            .count()
    };
    assert!(count(Status::Calibrating) > 10);
    assert!(count(Status::DeviceError) > 0);
    assert!(count(Status::Measuring) > 9 * count(Status::Calibrating));
    // Flow meters are not calibrated with the analyzers.
    assert!(records
        .iter()
        .all(|r| r.readings[0].status != Status::Calibrating));
}

#[test]
fn disabled_events_leave_every_reading_measuring() {
    let sim = simulator(SimConfig::quiet(7));
    assert!(samples(&sim, 1, 10)
        .iter()
        .flat_map(|r| &r.readings)
        .all(|r| r.status == Status::Measuring));
}

/// Ticks every minute for `days` days with a 5-minute interval; returns all messages.
fn run_ticks(sim: &mut Simulator, days: i64) -> Vec<Outgoing> {
    (0..days * DAY / MINUTE)
        .flat_map(|m| sim.tick(T0 + m * MINUTE, 5 * MINUTE))
        .collect()
}

#[test]
fn ticks_emit_one_record_per_aligned_interval() {
    let mut sim = simulator(SimConfig::quiet(42));
    let messages = run_ticks(&mut sim, 1);
    let ww: Vec<&Outgoing> = messages.iter().filter(|m| m.station == "WW").collect();
    assert_eq!(ww.len(), 288);
    assert!(ww.iter().all(|m| m.records.len() == 1 && m.zone == "Z1"));
    assert!(ww.iter().all(|m| m.records[0].ts_ms % (5 * MINUTE) == 0));
    let seqs: Vec<u64> = ww.iter().filter_map(|m| m.records[0].seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    // The tick's record is the sample at that instant.
    let mut expected = sim.sample(0, ww[0].records[0].ts_ms);
    expected.seq = ww[0].records[0].seq;
    assert_eq!(ww[0].records[0], expected);
}

#[test]
fn dropouts_hold_records_back_and_flush_them_as_one_backlog_message() {
    let mut sim = simulator(SimConfig {
        duplicates: false,
        ..SimConfig::default()
    });
    let messages = run_ticks(&mut sim, 20);
    let ww: Vec<&Outgoing> = messages.iter().filter(|m| m.station == "WW").collect();
    let backlog = ww.iter().find(|m| m.records.len() > 2);
    let Some(backlog) = backlog else {
        panic!("no backlog message in 20 days");
    };
    assert!(backlog
        .records
        .windows(2)
        .all(|w| w[1].ts_ms == w[0].ts_ms + 5 * MINUTE));
    // Nothing is lost: every interval is sent exactly once, except those still held back if
    // the window ends inside a dropout (at most an hour, 12 intervals).
    let sent: usize = ww.iter().map(|m| m.records.len()).sum();
    assert!(sent + 12 >= 20 * 288 && sent <= 20 * 288, "{sent}");
}

#[test]
fn duplicates_resend_the_previous_message() {
    let mut sim = simulator(SimConfig {
        dropouts: false,
        ..SimConfig::default()
    });
    let messages = run_ticks(&mut sim, 5);
    let ww: Vec<&Outgoing> = messages.iter().filter(|m| m.station == "WW").collect();
    let duplicated = ww
        .windows(3)
        .any(|w| w[0] == w[1] && w[2].records[0].ts_ms > w[1].records[0].ts_ms);
    assert!(duplicated, "no duplicate in 5 days");
    assert!(ww.len() > 5 * 288);
}

#[test]
fn a_late_tick_catches_up_every_missed_interval() {
    let mut sim = simulator(SimConfig::quiet(1));
    let first = sim.tick_station(0, T0, 5 * MINUTE);
    assert_eq!(first.len(), 1);
    let again = sim.tick_station(0, T0 + MINUTE, 5 * MINUTE);
    assert!(again.is_empty());
    let late = sim.tick_station(0, T0 + 31 * MINUTE, 5 * MINUTE);
    assert_eq!(late.len(), 6);
}

#[test]
fn start_from_resumes_right_after_a_backfill() {
    let mut sim = simulator(SimConfig::quiet(1));
    let now = T0 + 2 * MINUTE;
    let history = sim.history(now - DAY, now, 5 * MINUTE, 12);
    sim.start_from(now);
    let live = sim.tick_station(0, now + 10 * MINUTE, 5 * MINUTE);
    let last_history = history
        .iter()
        .filter(|m| m.station == "WW")
        .flat_map(|m| &m.records)
        .map(|r| r.ts_ms)
        .max()
        .unwrap();
    assert_eq!(live[0].records[0].ts_ms, last_history + 5 * MINUTE);
}

#[test]
fn the_record_counter_runs_on_from_the_backfill_into_live_records_at_another_pace() {
    let mut sim = simulator(SimConfig::quiet(1));
    let now = T0 + 2 * MINUTE;
    let history = sim.history(now - DAY, now, 5 * MINUTE, 12);
    sim.start_from(now);
    let live = sim.tick_station(0, now + 30_000, 10_000);
    let last_history = history
        .iter()
        .filter(|m| m.station == "WW")
        .flat_map(|m| &m.records)
        .filter_map(|r| r.seq)
        .max()
        .unwrap();
    let first_live = live[0].records[0].seq.unwrap();
    assert_eq!(
        first_live,
        last_history + 1,
        "no gap: quantrac would count it as missing"
    );
}

#[test]
fn history_covers_the_range_in_messages_of_at_most_the_asked_size() {
    let mut sim = simulator(SimConfig::default());
    let from = T0 - 1;
    let to = T0 + DAY;
    let messages = sim.history(from, to, 5 * MINUTE, 12);
    for station in ["WW", "AQ"] {
        let ts: Vec<i64> = messages
            .iter()
            .filter(|m| m.station == station)
            .flat_map(|m| m.records.iter().map(|r| r.ts_ms))
            .collect();
        assert_eq!(ts.len(), 288);
        assert_eq!(ts[0], T0);
        assert!(ts.windows(2).all(|w| w[1] == w[0] + 5 * MINUTE));
        assert!(*ts.last().unwrap() < to);
    }
    assert!(messages
        .iter()
        .all(|m| !m.records.is_empty() && m.records.len() <= 12));
    let firsts: Vec<i64> = messages.iter().map(|m| m.records[0].ts_ms).collect();
    assert!(firsts.windows(2).all(|w| w[0] <= w[1]), "oldest first");
}

#[test]
fn asking_for_more_stations_than_the_fleet_simulates_the_whole_fleet() {
    assert_eq!(Simulator::new(&fleet(), 1, SimConfig::default()).len(), 1);
    assert_eq!(Simulator::new(&fleet(), 9, SimConfig::default()).len(), 2);
}

#[test]
fn a_continued_counter_numbers_the_next_record_and_history_after_it() {
    let mut sim = simulator(SimConfig::quiet(1));
    sim.continue_counter("WW", 41);
    sim.continue_counter("no-such-station", 7);
    let history = sim.history(T0, T0 + 15 * MINUTE, 5 * MINUTE, 10);
    let seqs: Vec<Option<u64>> = history
        .iter()
        .filter(|m| m.station == "WW")
        .flat_map(|m| m.records.iter().map(|r| r.seq))
        .collect();
    assert_eq!(seqs, [Some(41), Some(42), Some(43)]);
    sim.start_from(T0 + 15 * MINUTE);
    let live = sim.tick_station(0, T0 + 15 * MINUTE, 5 * MINUTE);
    assert_eq!(live[0].records[0].seq, Some(44), "live records count on");
}
