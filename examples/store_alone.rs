//! The embedded store alone, writing the rows quantrac's device endpoint writes for the
//! load traffic (`firmware-sim load`): the stations of a seed set x their first `--params`
//! parameters, one message of a record per station, round-robin, each message with the
//! station's presence and record-counter window, as ingest writes them (the shape of the
//! `store_write` bench's `+presence+counter` case). No MQTT, no decoding, no validation, no
//! alerts: the rate the endpoint's stored rate is compared with (`benches/perf.py`).
//!
//! Messages are handed to the store's writer as fast as its bounded queue takes them (its
//! group commit batches them like ingest's), with at most `--window` not yet durable; the
//! rate counts readings durable, from the first write to the last confirmation.
//!
//! ```sh
//! cargo run --release --example store_alone -- --data /tmp/copy-of-a-data-dir \
//!     --seeds /tmp/load-seeds --seconds 8
//! ```
//! Prints one JSON line. The data directory's database is written to: use a copy.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Parser;
use quantrac::ack::DurableWait;
use quantrac::config::Config;
use quantrac::registry::Registry;
use quantrac::security::sequence::Sequences;
use quantrac::storage::sqlite::{SqliteConfig, SqliteStore};
use quantrac::storage::{PresenceUpdate, Store, WriteItem};
use quantrac::telemetry::{Reading, Status, Timestamp};

#[derive(Parser)]
struct Args {
    /// quantrac's data directory (storage.path); written to.
    #[arg(long)]
    data: PathBuf,
    /// The seed set whose stations to write (e.g. written by `firmware-sim seeds`).
    #[arg(long)]
    seeds: PathBuf,
    /// Stations (the first of the seed set; 0 = all).
    #[arg(long, default_value_t = 0)]
    stations: usize,
    /// Readings per message.
    #[arg(long, default_value_t = 8)]
    params: usize,
    /// How long to write.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Messages written but not yet durable, at most (ingest's: `mqtt.queue_capacity`).
    #[arg(long)]
    window: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = Config::builtin();
    config.storage.path = args.data.clone();
    let window = args.window.unwrap_or(config.mqtt.queue_capacity).max(1);
    let registry = Registry::load(&args.seeds)
        .with_context(|| format!("cannot load the seeds in {}", args.seeds.display()))?;
    let mut stations: Vec<_> = registry.stations().iter().collect();
    if args.stations > 0 {
        stations.truncate(args.stations);
    }
    if stations.is_empty() {
        bail!("the seed set has no station");
    }
    let store = SqliteStore::open(SqliteConfig::from_config(
        &config.storage,
        &config.quarantine,
    ))?;

    // Each station's records are stamped from now on, a millisecond apart, and numbered
    // from the wall clock in milliseconds, as the load tool numbers them.
    let start_ms = chrono::Utc::now().timestamp_millis();
    let first_seq = u64::try_from(start_ms).unwrap_or(0);
    let mut counters = Sequences::new();
    let mut written = vec![0i64; stations.len()];
    let mut pending: VecDeque<(usize, DurableWait)> = VecDeque::with_capacity(window);
    let mut durable_readings = 0u64;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let mut next = 0usize;
    while Instant::now() < until {
        if pending.len() >= window {
            if let Some((n, wait)) = pending.pop_front() {
                if !wait.wait().await {
                    bail!("the store did not confirm a write");
                }
                durable_readings += n as u64;
            }
        }
        let k = next % stations.len();
        next += 1;
        let station = stations[k];
        let ts = Timestamp::from_millis(start_ms + written[k]);
        let seq = first_seq + written[k] as u64 + 1;
        written[k] += 1;
        counters.check(&station.id, seq);
        let record_window = counters
            .window(&station.id)
            .map(|w| (station.id.clone(), *w));
        let readings: Vec<Reading> = station
            .parameters
            .iter()
            .take(args.params)
            .map(|p| Reading {
                station: station.id.clone(),
                zone: station.zone.clone(),
                param: p.name.clone(),
                ts,
                value: (p.range.min + p.range.max) / 2.0,
                status: Status::Measuring,
            })
            .collect();
        let (done, wait) = quantrac::ack::pair();
        let count = readings.len();
        store
            .write(WriteItem {
                readings,
                presence: Some(PresenceUpdate {
                    station: station.id.clone(),
                    last_seen: Some(Timestamp::now()),
                    gateway: None,
                }),
                record_window,
                done: Some(done),
                ..WriteItem::default()
            })
            .await?;
        pending.push_back((count, wait));
    }
    while let Some((n, wait)) = pending.pop_front() {
        if !wait.wait().await {
            bail!("the store did not confirm a write");
        }
        durable_readings += n as u64;
    }
    let seconds = started.elapsed().as_secs_f64();
    store.close().await?;
    let report = serde_json::json!({
        "stations": stations.len(),
        "params": args.params,
        "window": window,
        "readings_stored": durable_readings,
        "seconds": seconds,
        "stored_per_second": durable_readings as f64 / seconds,
    });
    println!("{report}");
    Ok(())
}
