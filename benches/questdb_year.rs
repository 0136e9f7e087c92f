//! A year of one-minute data in QuestDB, and the queries a monitoring center runs on it,
//! through quantrac's own store code (`QuestDbStore`).
//!
//! ```text
//! cargo bench --bench questdb_year -- load    # writes the year over ILP/HTTP (once)
//! cargo bench --bench questdb_year -- query   # p50/p95 of each query
//! cargo bench --bench questdb_year -- ilp     # QuestDB's own ILP ceiling (see `ilp`)
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
use quantrac::storage::questdb::read::Source;
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
    // The rollup (src/storage/questdb/rollup.rs) is refreshed by QuestDB after writes; a
    // freshly created one is built from the whole table first.
    let waited = Instant::now();
    while !store.rollup_fresh().await.unwrap() {
        assert!(
            waited.elapsed() < Duration::from_secs(3600),
            "the hourly rollup caught up within an hour"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "hourly rollup fresh after {:.1} s of waiting",
        waited.elapsed().as_secs_f64()
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
    let daily = AggregateQuery {
        params: all.clone(),
        bucket_ms: DAY,
        ..hourly.clone()
    };
    // Each aggregate from raw rows (as before the rollup) and through the rollup (what the
    // API does now), which must agree.
    for (name, q) in [
        ("one series, hourly buckets over the year", &hourly),
        ("one station, daily buckets over the year, 8 params", &daily),
    ] {
        for rollup in [false, true] {
            let label = format!("{name} ({})", if rollup { "rollup" } else { "raw rows" });
            measure(&label, runs, || async {
                let (r, source) = store.aggregate_from(q.clone(), rollup).await.unwrap();
                assert_eq!(source == Source::Rollup, rollup, "{label}: {source:?}");
                r.iter().map(|s| s.buckets.len()).sum()
            })
            .await;
        }
        let (raw, _) = store.aggregate_from(q.clone(), false).await.unwrap();
        let (rolled, _) = store.aggregate_from(q.clone(), true).await.unwrap();
        for (a, b) in raw.iter().zip(&rolled) {
            assert_eq!(a.buckets.len(), b.buckets.len(), "{name}");
            for (x, y) in a.buckets.iter().zip(&b.buckets) {
                assert_eq!(
                    (x.start, x.count, x.min, x.max),
                    (y.start, y.count, y.min, y.max)
                );
                assert!(
                    (x.avg - y.avg).abs() <= 1e-12 * x.avg.abs().max(1.0),
                    "{name}"
                );
            }
        }
    }
    // "Latest" is served from quantrac's live cache, filled once at start from the store
    // (app::restore_live): the fill is one LATEST ON query, a request is a map lookup.
    let live = quantrac::live::Live::new();
    measure(
        "start-up fill of the live cache (LATEST ON, every series)",
        runs.min(10),
        || async {
            let rows = store.latest().await.unwrap();
            for row in &rows {
                live.restore(
                    row.station.as_str().into(),
                    None,
                    None,
                    [quantrac::live::LatestValue {
                        param: row.param.as_str().into(),
                        ts: row.ts,
                        value: row.value,
                        status: row.status,
                    }],
                );
            }
            rows.len()
        },
    )
    .await;
    let ids: Vec<String> = (0..setup.stations).map(Setup::station).collect();
    measure(
        "latest of every station, from the live cache (per request)",
        runs,
        || async {
            ids.iter()
                .filter_map(|id| live.station(id))
                .map(|s| s.latest.len())
                .sum()
        },
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

/// QuestDB's own ILP ceiling for the rows `perf.py` sends through quantrac: one bare sender
/// writes `QUANTRAC_BENCH_ILP_ROWS` rows (2,000,000) of `QUANTRAC_BENCH_ILP_STATIONS`
/// (10,000) generated stations (`firmware-sim seeds` names) x 8 parameters, round-robin over
/// the stations as the load tool publishes them, flushing every `QUANTRAC_BENCH_ILP_FLUSH`
/// rows (10,000), into a fresh table created by quantrac's own DDL (dropped afterwards).
/// Prints the rate until the last flush was acknowledged and until every row was visible to
/// queries, as one JSON line (last line of stdout) for `perf.py`.
fn ilp(setup: &Setup, runtime: &tokio::runtime::Runtime) {
    let total: u64 = env("QUANTRAC_BENCH_ILP_ROWS", 2_000_000);
    let stations: usize = env("QUANTRAC_BENCH_ILP_STATIONS", 10_000);
    let flush_rows: usize = env("QUANTRAC_BENCH_ILP_FLUSH", 10_000);
    let mut config = setup.config.clone();
    config.table = format!("bench_ilp_{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let store = QuestDbStore::open(
            &config,
            SqliteConfig::in_dir(dir.path()),
            Duration::from_secs(3650 * 86_400),
            None,
        )
        .await
        .expect("QuestDB answers");
        store.close().await.unwrap();
    });
    let names: Vec<(String, String)> = (0..stations)
        .map(|i| {
            (
                firmware_sim::fleet::generate::station_id(i),
                format!("L{:02}", i % 10),
            )
        })
        .collect();
    let mut sender = sink::sender(&config).unwrap();
    let mut buffer: Buffer = sender.new_buffer();
    // Recent times, one record a second per station, as a live fleet sends them.
    let rounds = total.div_ceil((stations * PARAMS.len()) as u64) as i64;
    let start = Timestamp::now().as_millis() - rounds * 1000 - 60_000;
    let began = Instant::now();
    let mut rows: u64 = 0;
    let mut flushes = Vec::new();
    'fill: for round in 0.. {
        let ts = TimestampMicros::new((start + round * 1000) * 1000);
        for (station, zone) in &names {
            for (p, param) in PARAMS.iter().enumerate() {
                if rows == total {
                    break 'fill;
                }
                buffer
                    .table(config.table.as_str())
                    .unwrap()
                    .symbol("station", station.as_str())
                    .unwrap()
                    .symbol("zone", zone.as_str())
                    .unwrap()
                    .symbol("param", *param)
                    .unwrap()
                    .symbol("status", "00")
                    .unwrap()
                    .column_f64("value", (rows as f64 * 0.37 + p as f64).sin() * 40.0 + 50.0)
                    .unwrap()
                    .at(ts)
                    .unwrap();
                rows += 1;
                if buffer.row_count() >= flush_rows {
                    let t = Instant::now();
                    sender.flush(&mut buffer).unwrap();
                    flushes.push(t.elapsed());
                }
            }
        }
    }
    if !buffer.is_empty() {
        let t = Instant::now();
        sender.flush(&mut buffer).unwrap();
        flushes.push(t.elapsed());
    }
    let acked = began.elapsed().as_secs_f64();
    // Visible: QuestDB applied its WAL and counts every row.
    let (visible, counted) = runtime.block_on(async {
        let (client, conn) = tokio_postgres::connect(&config.pg, tokio_postgres::NoTls)
            .await
            .expect("QuestDB PG wire answers");
        tokio::spawn(conn);
        let sql = format!("SELECT count() FROM {}", config.table);
        loop {
            let n: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
            if n as u64 >= rows || began.elapsed() > Duration::from_secs(600) {
                let visible = began.elapsed().as_secs_f64();
                client
                    .batch_execute(&format!("DROP TABLE {}", config.table))
                    .await
                    .unwrap();
                return (visible, n);
            }
            // Another process's WAL apply: nothing to wait on but its count.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    flushes.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "bare ILP sender: {rows} rows ({stations} stations x 8 params, flush every {flush_rows} \
         rows) acknowledged in {acked:.2} s ({:.0} rows/s), visible in {visible:.2} s ({:.0} rows/s)",
        rows as f64 / acked,
        rows as f64 / visible
    );
    println!(
        "{{\"rows\": {rows}, \"visible_rows\": {counted}, \"stations\": {stations}, \"flush_rows\": {flush_rows}, \
         \"acked_seconds\": {acked:.3}, \"visible_seconds\": {visible:.3}, \
         \"acked_per_second\": {:.0}, \"visible_per_second\": {:.0}, \
         \"flush_p50_ms\": {:.2}, \"flush_p99_ms\": {:.2}}}",
        rows as f64 / acked,
        rows as f64 / visible,
        ms(percentile(&flushes, 50)),
        ms(percentile(&flushes, 99)),
    );
}

fn main() {
    let setup = Setup::from_env();
    let mode = std::env::args()
        .skip(1)
        .find(|a| a == "load" || a == "query" || a == "ilp");
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
        Some("ilp") => ilp(&setup, &runtime),
        // `cargo bench` runs every bench with `--bench`: nothing to do without a mode.
        _ => eprintln!("questdb_year: pass `load`, `query` or `ilp` (see the file's doc)"),
    }
}
