//! A year of one-minute data in QuestDB, and the queries a monitoring center runs on it,
//! through quantrac's own store code (`QuestDbStore`).
//!
//! ```text
//! cargo bench --bench questdb_year -- load    # writes the year over ILP/HTTP (once)
//! cargo bench --bench questdb_year -- query   # p50/p95 of each query
//! ```
//! Settings from the environment: `QUANTRAC_BENCH_QUESTDB_URL` (`http://127.0.0.1:9000`),
//! `QUANTRAC_BENCH_QUESTDB_PG` (`postgresql://admin:quest@127.0.0.1:8812/qdb`),
//! `QUANTRAC_BENCH_TABLE` (`bench_year`), `QUANTRAC_BENCH_STATIONS` (50),
//! `QUANTRAC_BENCH_DAYS` (365), `QUANTRAC_BENCH_RUNS` (30). Eight parameters per station;
//! rows are written in time order, every station's minute together, as gateways send them.
//! The year ends at the last whole day (UTC) before the load.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::time::{Duration, Instant};

use quantrac::config::Config;
use quantrac::storage::questdb::{sink, QuestDbStore};
use quantrac::storage::sqlite::SqliteConfig;
use quantrac::storage::{AggregateQuery, RawQuery, Store};
use quantrac::telemetry::{Status, Timestamp};
use questdb::ingress::{Buffer, TimestampMicros};

const PARAMS: [&str; 8] = ["COD", "TSS", "NH4", "TN", "TP", "pH", "Temp", "Flow"];
const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
const VIETNAM: i64 = 7 * 3_600_000;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    config: quantrac::config::QuestDbConfig,
    stations: usize,
    days: i64,
    /// End of the year (exclusive), a UTC midnight.
    end: i64,
}

impl Setup {
    fn from_env() -> Setup {
        let mut config = Config::builtin().storage.questdb;
        config.http = env("QUANTRAC_BENCH_QUESTDB_URL", config.http);
        config.pg = env("QUANTRAC_BENCH_QUESTDB_PG", config.pg);
        config.table = env("QUANTRAC_BENCH_TABLE", "bench_year".to_owned());
        config.ttl = false;
        let days = env("QUANTRAC_BENCH_DAYS", 365);
        // The same end for a load and a later query run: a day boundary, fixed per table by
        // the data itself in `query` (its newest row).
        let now = Timestamp::now().as_millis();
        Setup {
            config,
            stations: env("QUANTRAC_BENCH_STATIONS", 50),
            days,
            end: now - now.rem_euclid(DAY),
        }
    }

    fn station(s: usize) -> String {
        format!("BENCH-S{s:03}")
    }

    async fn store(&self, dir: &std::path::Path) -> QuestDbStore {
        QuestDbStore::open(
            &self.config,
            SqliteConfig::in_dir(dir),
            Duration::from_secs(3650 * 86_400),
            None,
        )
        .await
        .expect("QuestDB answers")
    }
}

fn load(setup: &Setup) {
    let mut sender = sink::sender(&setup.config).unwrap();
    let mut buffer: Buffer = sender.new_buffer();
    let start = setup.end - setup.days * DAY;
    let minutes = setup.days * DAY / MINUTE;
    let stations: Vec<String> = (0..setup.stations).map(Setup::station).collect();
    let began = Instant::now();
    let mut rows: u64 = 0;
    let mut flushes = Vec::new();
    for m in 0..minutes {
        let ts = TimestampMicros::new((start + m * MINUTE) * 1000);
        for (s, station) in stations.iter().enumerate() {
            for (p, param) in PARAMS.iter().enumerate() {
                let value = ((m as f64) * 0.001 + (s * 8 + p) as f64).sin() * 50.0 + 60.0;
                buffer
                    .table(setup.config.table.as_str())
                    .unwrap()
                    .symbol("station", station.as_str())
                    .unwrap()
                    .symbol("zone", "BENCH")
                    .unwrap()
                    .symbol("param", *param)
                    .unwrap()
                    .symbol("status", "00")
                    .unwrap()
                    .column_f64("value", value)
                    .unwrap()
                    .at(ts)
                    .unwrap();
                rows += 1;
            }
        }
        if buffer.row_count() >= 50_000 {
            let t = Instant::now();
            sender.flush(&mut buffer).unwrap();
            flushes.push(t.elapsed());
        }
        if m % (30 * 1440) == 0 && m > 0 {
            let secs = began.elapsed().as_secs_f64();
            println!(
                "day {:>3}: {rows} rows, {:.0} rows/s",
                m / 1440,
                rows as f64 / secs
            );
        }
    }
    sender.flush(&mut buffer).unwrap();
    let secs = began.elapsed().as_secs_f64();
    flushes.sort();
    println!(
        "loaded {rows} rows ({} stations x 8 params x {} days) in {secs:.0} s: {:.0} rows/s; \
         flush of 50k rows p50 {:?} p99 {:?}",
        setup.stations,
        setup.days,
        rows as f64 / secs,
        flushes.get(flushes.len() / 2).copied().unwrap_or_default(),
        flushes
            .get(flushes.len() * 99 / 100)
            .copied()
            .unwrap_or_default(),
    );
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

async fn measure<F, Fut>(name: &str, runs: usize, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    // One run first, unmeasured: the first touch of a year of partitions maps files.
    let cold = Instant::now();
    let n = f().await;
    let cold = cold.elapsed();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "| {name} | {n} | {:.1} | {:.1} | {:.1} | {:.1} |",
        cold.as_secs_f64() * 1e3,
        percentile(&times, 50).as_secs_f64() * 1e3,
        percentile(&times, 95).as_secs_f64() * 1e3,
        times.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

async fn query(setup: &Setup) {
    let dir = tempfile::tempdir().unwrap();
    let store = setup.store(dir.path()).await;
    let runs = env("QUANTRAC_BENCH_RUNS", 30);
    let latest = store.latest().await.unwrap();
    let end = latest
        .iter()
        .map(|l| l.ts.as_millis())
        .max()
        .expect("a loaded table")
        + MINUTE;
    let start = end - setup.days * DAY;
    let station = Setup::station(setup.stations / 2);
    let all: Vec<String> = PARAMS.iter().map(|p| (*p).to_owned()).collect();
    println!(
        "{} series in {}; year {} .. {}",
        latest.len(),
        setup.config.table,
        Timestamp::from_millis(start).as_millis(),
        end
    );
    println!("| query | rows or buckets | first run ms | p50 ms | p95 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let hourly = AggregateQuery {
        station: station.clone(),
        params: vec!["COD".to_owned()],
        from: Timestamp::from_millis(start),
        to: Timestamp::from_millis(end),
        bucket_ms: 3_600_000,
        align_offset_ms: VIETNAM,
        status: Some(Status::Measuring),
    };
    measure("one series, hourly buckets over the year", runs, || async {
        let r = store.aggregate(hourly.clone()).await.unwrap();
        r[0].buckets.len()
    })
    .await;
    let daily = AggregateQuery {
        params: all.clone(),
        bucket_ms: DAY,
        ..hourly.clone()
    };
    measure(
        "one station, daily buckets over the year, 8 params",
        runs,
        || async {
            let r = store.aggregate(daily.clone()).await.unwrap();
            r.iter().map(|s| s.buckets.len()).sum()
        },
    )
    .await;
    measure(
        "latest of every series (LATEST ON; start-up only)",
        runs.min(10),
        || async { store.latest().await.unwrap().len() },
    )
    .await;
    let deep = start + 200 * DAY + 12 * 3_600_000;
    let raw = RawQuery {
        station: station.clone(),
        params: all.clone(),
        from: Timestamp::from_millis(start),
        to: Timestamp::from_millis(end),
        after: Some((Timestamp::from_millis(deep), "NH4".to_owned())),
        limit: 1000,
        status: None,
    };
    measure(
        "raw page of 1,000 rows, 200 days in (cursor)",
        runs,
        || async { store.readings(raw.clone()).await.unwrap().readings.len() },
    )
    .await;
    store.close().await.unwrap();
}

fn main() {
    let setup = Setup::from_env();
    let mode = std::env::args()
        .skip(1)
        .find(|a| a == "load" || a == "query");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match mode.as_deref() {
        Some("load") => {
            // Creates the table (explicit DDL, DEDUP) before the first row arrives.
            let dir = tempfile::tempdir().unwrap();
            runtime.block_on(async {
                setup.store(dir.path()).await.close().await.unwrap();
            });
            load(&setup);
        }
        Some("query") => runtime.block_on(query(&setup)),
        // `cargo bench` runs every bench with `--bench`: nothing to do without a mode.
        _ => eprintln!("questdb_year: pass `load` or `query` (see the file's doc)"),
    }
}
