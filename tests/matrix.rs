//! The fault matrix (issue 11; the table with its counts is in `docs/reliability.md`).
//!
//! Each cell is one way in combined with one fault. An open-loop gateway written with
//! paho-mqtt (a client nobody here wrote: `tests/clients/paho_flood.py`) publishes
//! [`records`] JSON records, one per QoS 1 message, as fast as it is acknowledged, and writes
//! down every record it got a PUBACK for. quantrac runs as a child process (`quantrac serve`)
//! with queues of 64 and a device window of 16, so the flood is over ten times every queue
//! (Mosquitto's window of 1,000 included). The fault hits once a fifth of the flood is
//! acknowledged. Every cell asserts:
//!
//! - every acknowledged record is stored, and each record exactly once (`N` distinct rows);
//! - ingest resumes by itself: the gateway gets all `N` acknowledgements without help;
//! - readiness told the truth: never "ready" while no commit could succeed (QuestDB
//!   stopped), "unwritable" while commits failed (disk full), and ready with ingest `ok` at
//!   the end.
//!
//! Ways in: the device endpoint (`endpoint`), an external Mosquitto (`mosquitto`), and the
//! device endpoint into QuestDB (`questdb`, when `QUANTRAC_TEST_QUESTDB_URL` is set; the
//! QuestDB outage and broker restart are in `tests/faults_questdb.rs`). Faults: `kill -9`,
//! SIGTERM, SIGSTOP for 30 s, a broker restart (Mosquitto only: the endpoint *is* quantrac),
//! a backlog queued while quantrac was down, and a full disk then freed (a tmpfs; root only,
//! skipped loudly otherwise).
//!
//! `QUANTRAC_TEST_MATRIX_RECORDS` sets the flood size (default 20,000) for the large runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::processes::{serve_command, spawn, terminate, wait_ready, Api, PrivateMosquitto};

const ZONE: &str = "BN-VSIP";
const ST: &str = "BN-VSIP-ST01";

/// The flood's size: over ten times every queue.
fn records() -> usize {
    std::env::var("QUANTRAC_TEST_MATRIX_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    Endpoint,
    Mosquitto,
    QuestDb,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Term,
    Stop,
    BrokerRestart,
    Backlog,
    DiskFull,
    /// The store itself is unreachable for 60 s (QuestDB stopped; the embedded store has no
    /// outage of its own but a full disk).
    StoreDown,
}

/// One quantrac, started and started again on the same data, ports and broker.
struct Cell {
    data: PathBuf,
    _data_dir: Option<tempfile::TempDir>,
    api: String,
    base: String,
    mqtt: String,
    prefix: String,
    broker: Option<PrivateMosquitto>,
    questdb: Option<quantrac::config::QuestDbConfig>,
}

impl Cell {
    fn new(way: Way, label: &str, data: Option<PathBuf>) -> Option<Cell> {
        let questdb = match way {
            Way::QuestDb => Some(common::questdb(label)?),
            _ => None,
        };
        let (data, dir) = match data {
            Some(path) => (path, None),
            None => {
                let dir = tempfile::tempdir().unwrap();
                (dir.path().to_owned(), Some(dir))
            }
        };
        let api = quantrac::mqtt::free_local_addr().unwrap().to_string();
        Some(Cell {
            data,
            _data_dir: dir,
            base: format!("http://{api}"),
            api,
            mqtt: quantrac::mqtt::free_local_addr().unwrap().to_string(),
            prefix: common::unique(label),
            broker: (way == Way::Mosquitto).then(PrivateMosquitto::start),
            questdb,
        })
    }

    fn command(&self) -> Command {
        let mut command = serve_command(&self.data, &self.api, &self.prefix);
        command
            .env("QUANTRAC_STORAGE__QUEUE_CAPACITY", "64")
            .env("QUANTRAC_MQTT__QUEUE_CAPACITY", "64")
            .env("QUANTRAC_MQTT__ENDPOINT__RECEIVE_MAXIMUM", "16")
            .env("QUANTRAC_MQTT__STALL_AFTER", "10s");
        match &self.broker {
            Some(broker) => command.env("QUANTRAC_MQTT__URL", broker.url()),
            None => command
                .env("QUANTRAC_MQTT__ENDPOINT__LISTEN", &self.mqtt)
                .env("QUANTRAC_MQTT__ENDPOINT__ALLOW_ANONYMOUS", "true"),
        };
        if let Some(q) = &self.questdb {
            command
                .env("QUANTRAC_STORAGE__BACKEND", "questdb")
                .env("QUANTRAC_STORAGE__QUESTDB__HTTP", &q.http)
                .env("QUANTRAC_STORAGE__QUESTDB__PG", &q.pg)
                .env("QUANTRAC_STORAGE__QUESTDB__TABLE", &q.table);
        }
        command
    }

    async fn serve(&self) -> common::processes::Served {
        let served = spawn(self.command());
        wait_ready(&self.base).await;
        served
    }

    /// Where the gateway publishes: quantrac's endpoint, or the broker.
    fn gateway_port(&self) -> String {
        match &self.broker {
            Some(broker) => broker.port.to_string(),
            None => self.mqtt.rsplit_once(':').unwrap().1.to_owned(),
        }
    }

    fn flood(&self, t0: i64, n: usize, acked: &Path) -> tokio::process::Child {
        let topic = format!("{}/quantrac/v1/{ZONE}/{ST}/telemetry/json", self.prefix);
        tokio::process::Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/paho_flood.py"))
            .args(["--port", &self.gateway_port(), "--version", "5"])
            .args(["--topic", &topic, "--station", ST, "--param", "SO2"])
            .args(["--unit", "mg/Nm3", "--t0", &t0.to_string()])
            .args(["--count", &n.to_string(), "--timeout", "400"])
            .arg("--out")
            .arg(acked)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn acked_count(file: &Path) -> usize {
    std::fs::read_to_string(file)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Waits (bounded) until the gateway has `n` acknowledgements; it is another process, whose
/// progress shows only in its file.
async fn wait_acked(file: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked_count(file) < n {
        assert!(
            Instant::now() < deadline,
            "the gateway got only {} acknowledgements",
            acked_count(file)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `/readyz` said, sampled every 100 ms: `None` when it did not answer within 1 s.
type Samples = Arc<Mutex<Vec<(Instant, Option<(u16, serde_json::Value)>)>>>;

fn sample_readiness(base: String, stop: tokio_util::sync::CancellationToken) -> Samples {
    let samples: Samples = Arc::default();
    let out = samples.clone();
    tokio::spawn(async move {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        while !stop.is_cancelled() {
            let answer = match http.get(format!("{base}/readyz")).send().await {
                Ok(r) => {
                    let code = r.status().as_u16();
                    Some((code, r.json().await.unwrap_or_default()))
                }
                Err(_) => None,
            };
            out.lock().unwrap().push((Instant::now(), answer));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    samples
}

/// A tmpfs of `mib` MiB for a data directory (root only), unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(mib: u32) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    /// Fills what is left with a ballast file.
    fn fill(&self) -> PathBuf {
        let ballast = self.0.path().join("ballast");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1M"])
            .arg(format!("of={}", ballast.display()))
            .stderr(Stdio::null())
            .status();
        ballast
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn run(script: &Path) {
    let status = Command::new(script).status().unwrap();
    assert!(status.success(), "{} failed", script.display());
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The QuestDB cells share one server, and the store-down cell stops it: that cell runs
/// alone (write), the others beside each other (read).
static QUESTDB: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Runs one cell of the matrix; prints its counts for the report (`MATRIX | ...`).
async fn cell(way: Way, fault: Fault) {
    let (_alone, _beside) = match (way, fault) {
        (Way::QuestDb, Fault::StoreDown) => (Some(QUESTDB.write().await), None),
        (Way::QuestDb, _) => (None, Some(QUESTDB.read().await)),
        _ => (None, None),
    };
    let label = format!("{way:?}-{fault:?}").to_lowercase();
    let tmpfs = if fault == Fault::DiskFull {
        match Tmpfs::mount(64) {
            Some(t) => Some(t),
            None => {
                eprintln!("SKIPPED {label}: mounting a tmpfs needs root");
                return;
            }
        }
    } else {
        None
    };
    let control = if fault == Fault::StoreDown {
        match std::env::var("QUANTRAC_TEST_QUESTDB_CONTROL") {
            Ok(dir) => Some(PathBuf::from(dir)),
            Err(_) => {
                eprintln!(
                    "SKIPPED {label}: QUANTRAC_TEST_QUESTDB_CONTROL (stop.sh, start.sh) is not set"
                );
                return;
            }
        }
    } else {
        None
    };
    let data = tmpfs.as_ref().map(|t| t.0.path().join("data"));
    let Some(mut cell) = Cell::new(way, &label, data) else {
        eprintln!("SKIPPED {label}: QUANTRAC_TEST_QUESTDB_URL is not set");
        return;
    };
    std::fs::create_dir_all(&cell.data).unwrap();
    let n = records();
    // A second apart, all in the past: `n` seconds back from two hours ago.
    let t0 = common::recent_minute(120) - n as i64 * 1000;
    let scratch = tempfile::tempdir().unwrap();
    let acked_file = scratch.path().join("acked.txt");
    let started = Instant::now();

    let mut quantrac = cell.serve().await;
    let reader = Api::for_data(&cell.data, &cell.base);
    let stop_sampling = tokio_util::sync::CancellationToken::new();
    let samples = sample_readiness(cell.base.clone(), stop_sampling.clone());
    let mut outage: Option<(Instant, Instant)> = None;

    let flood = if fault == Fault::Backlog {
        // quantrac goes down first (its Mosquitto session stays); the whole flood queues up
        // (in Mosquitto, or at the device that cannot connect), then quantrac comes back.
        terminate(&quantrac.child);
        let (status, log) = quantrac.finish();
        assert!(status.success(), "{log}");
        let flood = cell.flood(t0, n, &acked_file);
        let queued = if way == Way::Mosquitto { n } else { 0 };
        wait_acked(&acked_file, queued).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        quantrac = cell.serve().await;
        flood
    } else {
        let flood = cell.flood(t0, n, &acked_file);
        wait_acked(&acked_file, n / 5).await;
        match fault {
            Fault::Kill => {
                quantrac.kill();
                quantrac = cell.serve().await;
            }
            Fault::Term => {
                terminate(&quantrac.child);
                let (status, log) = quantrac.finish();
                assert!(status.success(), "SIGTERM is an orderly stop: {log}");
                quantrac = cell.serve().await;
            }
            Fault::Stop => {
                signal(quantrac.child.id(), "STOP");
                tokio::time::sleep(Duration::from_secs(30)).await;
                signal(quantrac.child.id(), "CONT");
            }
            Fault::BrokerRestart => cell.broker.as_mut().unwrap().restart(),
            Fault::DiskFull => {
                let ballast = tmpfs.as_ref().unwrap().fill();
                let from = Instant::now();
                // Long enough for commits to fail and readiness to be sampled.
                tokio::time::sleep(Duration::from_secs(5)).await;
                std::fs::remove_file(&ballast).unwrap();
                outage = Some((from, Instant::now()));
            }
            Fault::StoreDown => {
                let control = control.as_ref().unwrap();
                run(&control.join("stop.sh"));
                let from = Instant::now();
                tokio::time::sleep(Duration::from_secs(60)).await;
                run(&control.join("start.sh"));
                outage = Some((from, Instant::now()));
            }
            Fault::Backlog => unreachable!(),
        }
        flood
    };

    let out = tokio::time::timeout(Duration::from_secs(420), flood.wait_with_output())
        .await
        .expect("the flood ends")
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).trim().to_owned();
    assert!(
        out.status.success(),
        "{label}: ingest resumed by itself and every record was acknowledged: {said}"
    );
    // Acknowledged is durable; stored readings are visible once the pipeline let them out.
    let to = t0 + n as i64 * 1000;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (times, rows) = loop {
        let (times, rows) = reader.stored_times(ST, "SO2", t0, to).await;
        if times.len() >= n || Instant::now() > deadline {
            break (times, rows);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let acked: Vec<i64> = std::fs::read_to_string(&acked_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut lost: Vec<i64> = acked
        .iter()
        .filter(|t| !times.contains(t))
        .map(|t| (t - t0) / 1000)
        .collect();
    lost.sort_unstable();
    let missing = lost.len();
    wait_ready(&cell.base).await;
    stop_sampling.cancel();
    let (code, ready) = {
        let r = reqwest::get(format!("{}/readyz", cell.base)).await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    };
    let samples = samples.lock().unwrap().clone();
    let said_ready_while_down = outage.map_or(0, |(from, to)| {
        samples
            .iter()
            .filter(|(at, s)| {
                // A commit needs a moment to fail once the disk is full.
                *at > from + Duration::from_secs(2)
                    && *at < to
                    && s.as_ref().is_some_and(|(code, _)| *code == 200)
            })
            .count()
    });
    let said_unwritable = samples
        .iter()
        .filter(|(_, s)| {
            s.as_ref().is_some_and(|(_, b)| {
                b["store"]
                    .as_str()
                    .is_some_and(|t| t.contains("unwritable"))
            })
        })
        .count();
    eprintln!(
        "MATRIX | {way:?} | {fault:?} | records {n} | acknowledged {} | stored {} distinct, {rows} rows | acknowledged but missing {missing} | readiness samples {} (unwritable {said_unwritable}) | {:.0} s",
        acked.len(),
        times.len(),
        samples.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        missing,
        0,
        "{label}: acknowledged records lost (by index: first {:?}, last {:?}); quantrac's log:\n{}",
        lost.first(),
        lost.last(),
        {
            terminate(&quantrac.child);
            quantrac.finish().1
        }
    );
    assert_eq!(acked.len(), n, "{label}: every record acknowledged once");
    assert_eq!(
        (times.len(), rows),
        (n, n),
        "{label}: each record stored once"
    );
    assert_eq!(code, 200, "{label}: ready at the end: {ready}");
    assert_eq!(ready["ingest"], "ok", "{label}: {ready}");
    // QuestDB stopped: no commit can succeed, so "ready" would be a lie. A full disk can
    // still take a commit now and then (SQLite reuses free pages of its files), and readiness
    // rightly says ready after one: there it must say unwritable when commits fail.
    if fault == Fault::StoreDown {
        assert_eq!(
            said_ready_while_down, 0,
            "{label}: ready while the store could not write"
        );
    }
    if fault == Fault::DiskFull {
        assert!(
            said_unwritable > 0,
            "{label}: readiness never said the store was unwritable"
        );
    }
    terminate(&quantrac.child);
    let (status, log) = quantrac.finish();
    assert!(status.success(), "{label}: {log}");
    drop(cell);
    drop(tmpfs);
}

macro_rules! matrix {
    ($($name:ident: $way:ident x $fault:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                cell(Way::$way, Fault::$fault).await;
            }
        )*
    };
}

matrix! {
    endpoint_kill_9_loses_nothing_acknowledged: Endpoint x Kill,
    endpoint_sigterm_loses_nothing_acknowledged: Endpoint x Term,
    endpoint_sigstop_for_30_s_loses_nothing_acknowledged: Endpoint x Stop,
    endpoint_backlog_held_at_the_device_while_down_is_stored_whole: Endpoint x Backlog,
    endpoint_full_disk_then_freed_loses_nothing_acknowledged: Endpoint x DiskFull,
    mosquitto_kill_9_loses_nothing_acknowledged: Mosquitto x Kill,
    mosquitto_sigterm_loses_nothing_acknowledged: Mosquitto x Term,
    mosquitto_sigstop_for_30_s_loses_nothing_acknowledged: Mosquitto x Stop,
    mosquitto_broker_restart_loses_nothing_acknowledged: Mosquitto x BrokerRestart,
    mosquitto_backlog_queued_while_down_is_stored_whole: Mosquitto x Backlog,
    mosquitto_full_disk_then_freed_loses_nothing_acknowledged: Mosquitto x DiskFull,
    questdb_kill_9_loses_nothing_acknowledged: QuestDb x Kill,
    questdb_sigterm_loses_nothing_acknowledged: QuestDb x Term,
    questdb_backlog_held_at_the_device_while_down_is_stored_whole: QuestDb x Backlog,
    questdb_sigstop_for_30_s_loses_nothing_acknowledged: QuestDb x Stop,
    questdb_stopped_for_60_s_loses_nothing_acknowledged: QuestDb x StoreDown,
}
