//! Circular 10 files through the FTP endpoint into the embedded store, against the store
//! alone writing the same rows the same way, in one run.
//!
//! - **ftp**: quantrac in process (embedded store, `storage.sync` as given), its FTP endpoint
//!   on loopback; `SESSIONS` Python `ftplib` clients (tests/ftp_client.py) each upload
//!   `FILES_PER_SESSION` files of one record (6 readings) over one session, one file after
//!   the other, each waiting for its 226 (sent once the file is durable), as loggers do.
//! - **store**: the same rows as one `WriteItem` per file, written by `SESSIONS` concurrent
//!   writers that each wait for durability before the next item: the store's rate at the same
//!   concurrency, without FTP, decoding, validation or alerts.
//!
//! Run: `cargo bench --bench ftp_upload` (well under a minute). Prints files/s, readings/s
//! and the ratio.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{FixedOffset, TimeZone};
use quantrac::config::{Config, SyncMode};
use quantrac::storage::sqlite::{SqliteConfig, SqliteStore};
use quantrac::storage::{Store, WriteItem};
use quantrac::telemetry::{Reading, Status, Timestamp};

const SESSIONS: usize = 8;
const FILES_PER_SESSION: usize = 250;
const PARAMS: [(&str, &str, f64); 6] = [
    ("Flow", "m3/h", 120.0),
    ("Temp", "°C", 28.5),
    ("pH", "pH", 7.1),
    ("TSS", "mg/L", 40.0),
    ("COD", "mg/L", 60.0),
    ("NH4", "mg/L", 3.0),
];
const USER: &str = "bench-logger";
const PASSWORD: &str = "bench-password";

fn local(ms: i64) -> String {
    let vn = FixedOffset::east_opt(7 * 3600).unwrap();
    vn.timestamp_millis_opt(ms)
        .unwrap()
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// The time of file `i` of session `k`: one minute apart, all in the recent past.
fn time_of(t0: i64, k: usize, i: usize) -> i64 {
    t0 + ((k * FILES_PER_SESSION + i) as i64) * 60_000
}

fn seeds(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    let seeds = dir.join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, seeds.join(path.file_name().unwrap())).unwrap();
    }
    let hash = quantrac::mqtt::devices::hash_password(PASSWORD).unwrap();
    std::fs::write(
        seeds.join("devices.toml"),
        format!("[[device]]\nusername = \"{USER}\"\npassword_hash = \"{hash}\"\nstations = [\"DN-AMATA-WW01\"]\n"),
    )
    .unwrap();
    seeds
}

/// Writes each session's files and the list of them; returns the list files.
fn outbox(dir: &Path, t0: i64) -> Vec<PathBuf> {
    (0..SESSIONS)
        .map(|k| {
            let out = dir.join(format!("outbox{k}"));
            std::fs::create_dir_all(&out).unwrap();
            let mut list = String::new();
            for i in 0..FILES_PER_SESSION {
                let t = local(time_of(t0, k, i));
                let path = out.join(format!("DN_AMATA_WW01_{t}.txt"));
                let body: String = PARAMS
                    .iter()
                    .map(|(p, u, v)| format!("{p}\t{v}\t{u}\t{t}\t00\r\n"))
                    .collect();
                std::fs::write(&path, body).unwrap();
                list.push_str(&format!("{}\n", path.display()));
            }
            let list_file = dir.join(format!("list{k}.txt"));
            std::fs::write(&list_file, list).unwrap();
            list_file
        })
        .collect()
}

async fn through_ftp(sync: SyncMode, t0: i64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::builtin();
    config.api.listen = "127.0.0.1:0".parse().unwrap();
    config.storage.path = dir.path().join("data");
    config.storage.sync = sync;
    config.registry.seeds = seeds(dir.path());
    config.mqtt.endpoint.listen = quantrac::mqtt::free_local_addr().unwrap();
    config.ftp.enabled = true;
    config.ftp.listen = "127.0.0.1:0".parse().unwrap();
    config.ftp.passive_port_first = 40000;
    config.ftp.passive_port_last = 48999;
    let running = quantrac::app::start(config).await.unwrap();
    running.wait_ready().await;
    let port = running.ftp_addr.unwrap().port().to_string();
    let lists = outbox(dir.path(), t0);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ftp_client.py");

    let started = Instant::now();
    let children: Vec<_> = lists
        .iter()
        .map(|list| {
            std::process::Command::new("python3")
                .arg(&script)
                .args(["--port", &port, "--user", USER, "--password", PASSWORD])
                .arg("--files-from")
                .arg(list)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs = tokio::task::spawn_blocking(move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let elapsed = started.elapsed();
    let confirmed: usize = outputs
        .iter()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains("\t226"))
                .count()
        })
        .sum();
    assert_eq!(
        confirmed,
        SESSIONS * FILES_PER_SESSION,
        "every upload got its 226"
    );
    running.stop().await;
    elapsed
}

async fn store_alone(sync: SyncMode, t0: i64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let builtin = Config::builtin();
    let mut storage = builtin.storage;
    storage.path = dir.path().to_owned();
    storage.sync = sync;
    let store = Arc::new(
        SqliteStore::open_with(
            SqliteConfig::from_config(&storage, &builtin.quarantine),
            None,
        )
        .unwrap(),
    );
    let (station, zone): (Arc<str>, Arc<str>) = ("DN-AMATA-WW01".into(), "DN-AMATA".into());
    let params: Vec<Arc<str>> = PARAMS.iter().map(|(p, _, _)| Arc::from(*p)).collect();
    let started = Instant::now();
    let writers: Vec<_> = (0..SESSIONS)
        .map(|k| {
            let (store, station, zone, params) =
                (store.clone(), station.clone(), zone.clone(), params.clone());
            tokio::spawn(async move {
                for i in 0..FILES_PER_SESSION {
                    let ts = Timestamp::from_millis(time_of(t0, k, i));
                    let readings = params
                        .iter()
                        .zip(PARAMS)
                        .map(|(p, (_, _, v))| Reading {
                            station: station.clone(),
                            zone: zone.clone(),
                            param: p.clone(),
                            ts,
                            value: v,
                            status: Status::Measuring,
                        })
                        .collect();
                    let (done, durable) = quantrac::ack::pair();
                    let item = WriteItem {
                        readings,
                        done: Some(done),
                        ..WriteItem::default()
                    };
                    store.write(item).await.unwrap();
                    assert!(durable.wait().await);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();
    store.close().await.unwrap();
    elapsed
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let files = (SESSIONS * FILES_PER_SESSION) as f64;
    let readings = files * PARAMS.len() as f64;
    println!(
        "ftp_upload: {SESSIONS} sessions x {FILES_PER_SESSION} files x {} readings",
        PARAMS.len()
    );
    for sync in [SyncMode::Full, SyncMode::Normal] {
        let now = chrono::Utc::now().timestamp_millis();
        let t0 = now - now % 60_000 - (files as i64 + 60) * 60_000;
        let store = runtime.block_on(store_alone(sync, t0));
        let ftp = runtime.block_on(through_ftp(sync, t0));
        let rate = |d: Duration| (files / d.as_secs_f64(), readings / d.as_secs_f64());
        let (sf, sr) = rate(store);
        let (ff, fr) = rate(ftp);
        println!(
            "sync={sync:?}: store alone {sf:.0} files/s ({sr:.0} readings/s) in {store:.2?}; \
             through FTP {ff:.0} files/s ({fr:.0} readings/s) in {ftp:.2?}; ratio {:.0}%",
            100.0 * ff / sf
        );
    }
}
