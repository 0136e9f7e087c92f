//! Store batch writes: how fast the embedded store commits batches of readings, through the
//! writer thread, as ingest hands them over (one item per message of 8 readings).
//!
//! The database holds 1,000 stations x 8 parameters (8,000 series) with 50 readings each
//! before measuring, and every batch writes the next reading of 50 or 500 stations (400 or
//! 4,000 rows: the sizes quantrac's group commit reaches behind a QoS 1 window of 100 and of
//! 1,000 messages), then waits until the batch is durable: one transaction per batch.
//! `storage.sync` is "full", the default, unless the case says "normal".
//!
//! The `+presence` and `+presence+counter` cases write what ingest writes with each message
//! besides its readings: the station's last arrival and, for stations that number their
//! records, its record-counter window (`security::sequence`); their ratio to the plain case of
//! the same batch size is the cost of that state.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quantrac::config::SyncMode;
use quantrac::security::sequence::Sequences;
use quantrac::storage::sqlite::{SqliteConfig, SqliteStore};
use quantrac::storage::{PresenceUpdate, Store, WriteItem};
use quantrac::telemetry::{Reading, Status, Timestamp};

const STATIONS: usize = 1000;
const PARAMS: [&str; 8] = ["COD", "TSS", "NH4", "TN", "TP", "pH", "Temp", "Flow"];
const T0: i64 = 1_795_626_000_000;

/// The fleet's names, shared like the registry shares them.
struct Fleet {
    zone: Arc<str>,
    stations: Vec<Arc<str>>,
    params: Vec<Arc<str>>,
}

impl Fleet {
    fn new() -> Fleet {
        Fleet {
            zone: Arc::from("Z"),
            stations: (0..STATIONS)
                .map(|s| Arc::from(format!("S{s:05}")))
                .collect(),
            params: PARAMS.iter().map(|p| Arc::from(*p)).collect(),
        }
    }

    /// The message of station `s` at minute `minute`: 8 readings, and the state `extra`
    /// says ingest writes with them.
    fn message(&self, s: usize, minute: i64, extra: Extra, counters: &mut Sequences) -> WriteItem {
        let ts = Timestamp::from_millis(T0 + minute * 60_000);
        let station = &self.stations[s];
        let presence = (extra != Extra::None).then(|| PresenceUpdate {
            station: station.clone(),
            last_seen: Some(ts),
            gateway: None,
        });
        let record_window = (extra == Extra::PresenceAndCounter).then(|| {
            counters.check(station, minute as u64);
            (
                station.clone(),
                *counters.window(station).expect("just counted"),
            )
        });
        WriteItem {
            presence,
            record_window,
            readings: self
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| Reading {
                    station: self.stations[s].clone(),
                    zone: self.zone.clone(),
                    param: p.clone(),
                    ts,
                    value: (s * 8 + i) as f64 + minute as f64 / 100.0,
                    status: Status::Measuring,
                })
                .collect(),
            ..WriteItem::default()
        }
    }
}

/// What each message writes besides its readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    Presence,
    PresenceAndCounter,
}

impl Extra {
    fn label(self) -> &'static str {
        match self {
            Extra::None => "",
            Extra::Presence => "+presence",
            Extra::PresenceAndCounter => "+presence+counter",
        }
    }
}

/// Writes `items` and waits until all are durable.
async fn commit(store: &SqliteStore, items: Vec<WriteItem>) {
    let mut waits = Vec::with_capacity(items.len());
    for mut item in items {
        let (done, durable) = quantrac::ack::pair();
        item.done = Some(done);
        store.write(item).await.unwrap();
        waits.push(durable);
    }
    for w in waits {
        assert!(w.wait().await, "the batch is durable");
    }
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fleet = Fleet::new();
    let mut group = c.benchmark_group("store_write");
    for (sync, messages, extra) in [
        (SyncMode::Full, 50usize, Extra::None),
        (SyncMode::Full, 50, Extra::Presence),
        (SyncMode::Full, 50, Extra::PresenceAndCounter),
        (SyncMode::Full, 500, Extra::None),
        (SyncMode::Normal, 50, Extra::None),
    ] {
        let mut counters = Sequences::new();
        let dir = tempfile::tempdir().unwrap();
        let mut config = SqliteConfig::in_dir(dir.path());
        config.sync = sync;
        config.cache_mb = 64;
        // One commit per batch: the writer commits when it holds exactly the batch.
        config.writer.batch_max_rows = messages * PARAMS.len();
        config.writer.batch_max_delay = Duration::from_secs(5);
        let store = SqliteStore::open(config).unwrap();
        // 50 minutes of history for every series.
        runtime.block_on(async {
            for m in 0..50 {
                for chunk in 0..STATIONS / messages {
                    let items = (chunk * messages..(chunk + 1) * messages)
                        .map(|s| fleet.message(s, m, extra, &mut counters))
                        .collect();
                    commit(&store, items).await;
                }
            }
        });
        // The next minute of each station.
        let mut minutes = vec![50i64; STATIONS];
        let mut next_station = 0usize;
        let label = format!("{sync:?}").to_lowercase();
        group.throughput(Throughput::Elements((messages * PARAMS.len()) as u64));
        group.bench_function(
            BenchmarkId::new(
                format!("sync_{label}{}", extra.label()),
                messages * PARAMS.len(),
            ),
            |b| {
                b.iter_custom(|iterations| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iterations {
                        let items: Vec<WriteItem> = (0..messages)
                            .map(|k| {
                                let s = (next_station + k) % STATIONS;
                                minutes[s] += 1;
                                fleet.message(s, minutes[s], extra, &mut counters)
                            })
                            .collect();
                        next_station = (next_station + messages) % STATIONS;
                        let started = Instant::now();
                        runtime.block_on(commit(&store, items));
                        spent += started.elapsed();
                    }
                    spent
                })
            },
        );
        runtime.block_on(store.close()).unwrap();
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
