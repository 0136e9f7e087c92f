//! The reports over a year of one-minute data in the embedded store, through the HTTP API of
//! a quantrac started in this process (the code an analyst's request runs).
//!
//! ```text
//! cargo bench --bench reports_year            # loads the year once (kept), then measures
//! ```
//! Data: the six seed stations (`seeds/`) x their parameters, one reading a minute for 365
//! days ending at the last local midnight, calm values with an exceedance now and then,
//! each reading's arrival 30 s after its time. Kept in `QUANTRAC_BENCH_DIR`
//! (`target/reports-year`) so that later runs only measure; delete it to load again.
//! `QUANTRAC_BENCH_RUNS` (10) runs of each request after one unmeasured first run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use quantrac::config::Config;
use quantrac::registry::Registry;
use quantrac::security::Role;
use quantrac::storage::sqlite::{SqliteConfig, SqliteStore};
use quantrac::storage::{PresenceUpdate, Store, WriteItem};
use quantrac::telemetry::{Reading, Status, Timestamp};

const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;
const VIETNAM: i64 = 7 * 3_600_000;

fn seeds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
}

/// The last local midnight before now: the year's end (exclusive).
fn year_end() -> i64 {
    let now = Timestamp::now().as_millis() + VIETNAM;
    now - now.rem_euclid(DAY) - VIETNAM
}

async fn load(dir: &Path, end: i64) {
    let registry = Registry::load(&seeds()).unwrap();
    let mut config = SqliteConfig::in_dir(dir);
    config.writer.batch_max_rows = 100_000;
    let store = SqliteStore::open(config).unwrap();
    let start = end - 365 * DAY;
    let began = Instant::now();
    let mut rows = 0u64;
    // Day by day, every station's minute together, as gateways send them.
    for day in 0..365 {
        for m in 0..1440 {
            let ts = start + day * DAY + m * MINUTE;
            for station in registry.stations() {
                let readings: Vec<Reading> = station
                    .parameters
                    .iter()
                    .enumerate()
                    .map(|(k, p)| {
                        let upper = p
                            .limits
                            .iter()
                            .filter_map(|l| l.upper)
                            .fold(f64::NAN, f64::min);
                        let calm = if upper.is_finite() {
                            upper * 0.5
                        } else {
                            (p.range.min + p.range.max) / 4.0
                        };
                        // About one reading in 500 above half again the calm value.
                        let spike = (m * 7 + k as i64 * 13 + day) % 500 == 0;
                        Reading {
                            station: station.id.clone(),
                            zone: station.zone.clone(),
                            param: p.name.clone(),
                            ts: Timestamp::from_millis(ts),
                            value: if spike {
                                calm * 2.5
                            } else {
                                calm * (1.0 + 0.1 * ((m % 10) as f64 / 10.0))
                            },
                            status: Status::Measuring,
                        }
                    })
                    .collect();
                rows += readings.len() as u64;
                store
                    .write(WriteItem {
                        readings,
                        presence: Some(PresenceUpdate {
                            station: station.id.clone(),
                            last_seen: Some(Timestamp::from_millis(ts + 30_000)),
                            gateway: None,
                        }),
                        ..WriteItem::default()
                    })
                    .await
                    .unwrap();
            }
        }
        if day % 30 == 29 {
            println!(
                "day {:>3}: {rows} readings, {:.0} readings/s",
                day + 1,
                rows as f64 / began.elapsed().as_secs_f64()
            );
        }
    }
    store.flush().await.unwrap();
    store.close().await.unwrap();
    println!(
        "loaded {rows} readings in {:.0} s",
        began.elapsed().as_secs_f64()
    );
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

async fn measure(http: &reqwest::Client, base: &str, name: &str, path: &str, runs: usize) {
    let get = || async {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.bytes().await.unwrap().len()
    };
    let cold = Instant::now();
    let bytes = get().await;
    let cold = cold.elapsed();
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        get().await;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "| {name} | {} KB | {:.1} | {:.1} | {:.1} |",
        bytes / 1024,
        cold.as_secs_f64() * 1e3,
        percentile(&times, 50).as_secs_f64() * 1e3,
        percentile(&times, 95).as_secs_f64() * 1e3,
    );
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let dir = std::env::var("QUANTRAC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/reports-year"));
    let runs = std::env::var("QUANTRAC_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let marker = dir.join("loaded");
    let end = match std::fs::read_to_string(&marker) {
        Ok(text) => text.trim().parse().unwrap(),
        Err(_) => {
            let end = year_end();
            std::fs::create_dir_all(&dir).unwrap();
            load(&dir, end).await;
            std::fs::write(&marker, end.to_string()).unwrap();
            end
        }
    };
    println!(
        "store: {} MB in {}",
        dir_size(&dir) / 1_000_000,
        dir.display()
    );
    let mut config = Config::builtin();
    config.storage.path = dir.clone();
    config.registry.seeds = seeds();
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    config.mqtt.endpoint.listen = "127.0.0.1:0".parse().unwrap();
    config.storage.integrity_check_timeout = Duration::ZERO;
    let started = Instant::now();
    let running = quantrac::app::start(config).await.expect("quantrac starts");
    // The first start after an upgrade includes the schema migrations.
    println!(
        "quantrac started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let (token, _) = running
        .security()
        .create_token("bench", Role::Admin, "bench", None)
        .unwrap();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    let http = reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap();
    let base = format!("http://{}", running.api_addr);
    let (year_from, month_from) = (end - 365 * DAY, end - 30 * DAY);
    println!("| request | answer | first run ms | p50 ms | p95 ms |");
    println!("|---|---:|---:|---:|---:|");
    let cases = [
        ("one series, hourly buckets over the year", format!("/api/v1/readings?station=DN-AMATA-WW01&param=COD&bucket=1h&from={year_from}&to={end}")),
        ("compliance, a zone (3 stations), 30 days, period=month", format!("/api/v1/reports/compliance?zone=DN-AMATA&period=month&from={month_from}&to={end}")),
        ("compliance, one station, the year, period=month", format!("/api/v1/reports/compliance?station=DN-AMATA-WW01&period=month&from={}&to={end}", year_from + DAY)),
        ("connectivity, the whole center (6 stations), the year, period=month", format!("/api/v1/reports/connectivity?period=month&from={}&to={end}", year_from + DAY)),
        ("VN_AQI, a zone, daily over 30 days", format!("/api/v1/aqi?zone=DN-AMATA&period=day&from={month_from}&to={end}")),
        ("VN_AQI, a zone, hourly over 7 days", format!("/api/v1/aqi?zone=DN-AMATA&period=hour&from={}&to={end}", end - 7 * DAY)),
    ];
    for (name, path) in cases {
        measure(&http, &base, name, &path, runs).await;
    }
    running.stop().await;
}
