//! What an operator meets when things go wrong around quantrac (issue 11): a full disk, a
//! damaged database file, a client that opens event stream after event stream, and a
//! station whose record counter has to be started again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{authorized, recent_minute, record, Broker, Service, Site};
use firmware_sim::Encoding;
use quantrac::security::Role;
use quantrac::storage::sqlite::{SqliteConfig, SqliteStore};
use quantrac::storage::{Store, WriteItem};
use quantrac::telemetry::{Reading, Status, Timestamp};
use serde_json::Value;

const ZONE: &str = "BN-VSIP";
const ST: &str = "BN-VSIP-ST01";

// ---------------------------------------------------------------------------------------
// A damaged database page is found at start (item 11).

/// Writes `n` readings into a new readings database in `dir`, and closes it.
async fn database_with_readings(dir: &Path, n: i64) {
    let store = SqliteStore::open(SqliteConfig::in_dir(dir)).unwrap();
    let t0 = Timestamp::now().as_millis() - n * 1000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(5_000) {
        let readings = chunk
            .iter()
            .map(|i| Reading {
                station: ST.into(),
                zone: ZONE.into(),
                param: "SO2".into(),
                ts: Timestamp::from_millis(t0 + i * 1000),
                value: *i as f64,
                status: Status::Measuring,
            })
            .collect();
        store
            .write(WriteItem {
                readings,
                ..WriteItem::default()
            })
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    store.close().await.unwrap();
}

/// Overwrites the page in the middle of the SQLite file at `path` (not the header page),
/// once everything is in the file itself (not in its write-ahead log).
fn damage_a_middle_page(path: &Path) {
    use std::io::{Seek, SeekFrom, Write};
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let len = std::fs::metadata(path).unwrap().len();
    let page = 4096;
    let pages = len / page;
    assert!(pages > 20, "the database has only {pages} pages");
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(pages / 2 * page)).unwrap();
    file.write_all(&vec![0xA5; page as usize]).unwrap();
    file.sync_all().unwrap();
}

/// `quantrac serve` on the data in `data`, its stderr captured.
fn serve_command(data: &Path) -> Command {
    let api = quantrac::mqtt::free_local_addr().unwrap().to_string();
    let mqtt = quantrac::mqtt::free_local_addr().unwrap().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_quantrac"));
    command
        .arg("serve")
        .env("QUANTRAC_STORAGE__PATH", data)
        .env("QUANTRAC_API__LISTEN", api)
        .env("QUANTRAC_MQTT__ENDPOINT__LISTEN", mqtt)
        .env("QUANTRAC_REGISTRY__SEEDS", common::seeds())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// Runs `command` until it exits (at most `within`); its status and stderr. A process still
/// running then is killed and reported as `None`.
fn run_until_exit(
    mut command: Command,
    within: Duration,
) -> (Option<std::process::ExitStatus>, String) {
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, log.join().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_page_in_the_middle_of_the_database_stops_the_start_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    database_with_readings(data.path(), 60_000).await;
    let file = data.path().join(quantrac::storage::sqlite::DB_FILE);
    damage_a_middle_page(&file);

    let (status, log) = run_until_exit(serve_command(data.path()), Duration::from_secs(30));
    let status =
        status.unwrap_or_else(|| panic!("quantrac kept running on a damaged database:\n{log}"));
    assert!(!status.success(), "quantrac exited 0:\n{log}");
    assert!(
        log.contains(&file.display().to_string()),
        "the error names the file:\n{log}"
    );
    assert!(
        log.contains("quick_check"),
        "the error says which check failed:\n{log}"
    );
    assert!(
        log.contains(".recover"),
        "the error says what to do:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_security_database_stops_the_start_naming_the_file() {
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("security.db");
    {
        let db = quantrac::security::SecurityDb::open(&file).unwrap();
        for i in 0..600 {
            db.create_token(&format!("token number {i}"), Role::Viewer, "test", None)
                .unwrap();
        }
    }
    damage_a_middle_page(&file);

    let (status, log) = run_until_exit(serve_command(data.path()), Duration::from_secs(30));
    let status =
        status.unwrap_or_else(|| panic!("quantrac kept running on a damaged database:\n{log}"));
    assert!(!status.success(), "quantrac exited 0:\n{log}");
    assert!(
        log.contains(&file.display().to_string()),
        "the error names the file:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// Event streams are capped per token (item 9).

/// Opens the alert event stream; the response once its head arrived.
async fn open_stream(http: &reqwest::Client, base: &str) -> reqwest::Response {
    http.get(format!("{base}/api/v1/alerts/stream"))
        .send()
        .await
        .expect("the API answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_gets_at_most_its_share_of_event_streams_and_a_closed_stream_frees_its_slot() {
    let site = Site::new(Broker::Embedded, "streams");
    let svc = site.start().await;
    let viewer = svc.client_with_role(Role::Viewer);
    let per_token = svc.running.config().api.max_streams_per_token;

    let mut open = Vec::new();
    for _ in 0..per_token {
        let stream = open_stream(&viewer, &svc.base).await;
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    let refused = open_stream(&viewer, &svc.base).await;
    assert_eq!(
        refused.status(),
        429,
        "stream {} of one token",
        per_token + 1
    );
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams", "{body}");

    // Another token still gets streams: the cap is per token.
    let other = svc.client_with_role(Role::Viewer);
    let theirs = open_stream(&other, &svc.base).await;
    assert_eq!(theirs.status(), 200);
    let metrics = svc.metrics_text().await;
    let gauge = format!("quantrac_api_streams_open {}", per_token + 1);
    assert!(metrics.contains(&gauge), "{gauge} in\n{metrics}");

    // Closing one stream frees its slot, once the server has seen the client go.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = open_stream(&viewer, &svc.base).await;
        if again.status() == 200 {
            open.push(again);
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            Instant::now() < deadline,
            "the closed stream's slot was not freed within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(open);
    drop(theirs);
    svc.stop().await;
}

// ---------------------------------------------------------------------------------------
// A full disk (item 4).

/// A small tmpfs mounted on a directory of its own, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` (said loudly) where mounting is not allowed (not root, no tmpfs).
    fn mount(megabytes: u32) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::piped())
            .output();
        match mounted {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            Ok(out) => {
                eprintln!(
                    "SKIPPED: cannot mount a tmpfs to fill (needs root): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("SKIPPED: cannot run mount to make a disk to fill: {e}");
                None
            }
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// Fills the disk with a file of zeros until the file system says it is full.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 * 1024];
        loop {
            match file.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // Whatever is left is smaller than a block: take it byte by byte.
        while file.write_all(&[0]).is_ok() {}
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// `/readyz` of `base`: status and body.
async fn readiness(base: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Waits (bounded) until `/readyz` answers something `wanted` accepts.
async fn wait_readiness(base: &str, what: &str, wanted: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = readiness(base).await;
        if wanted(status, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within 30 s: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_reads_working_and_readiness_says_the_store_is_unwritable() {
    let Some(disk) = SmallDisk::mount(24) else {
        return;
    };
    let site = Site::new(Broker::Embedded, "full-disk");
    let mut config = site.config();
    config.storage.path = disk.path();
    let svc = Service::start(config).await;
    // A token never used yet: its first use records the time of use.
    let (token, _) = svc
        .running
        .security()
        .create_token("a wall display", Role::Viewer, "test", None)
        .unwrap();
    let viewer = authorized(&token);
    let t0 = recent_minute(30);

    let filler = disk.fill();
    let stations = viewer
        .get(format!("{}/api/v1/stations", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(stations.status(), 200, "{}", stations.text().await.unwrap());
    let readings = viewer
        .get(format!(
            "{}/api/v1/readings?station={ST}&param=SO2&from={t0}&to={}",
            svc.base,
            t0 + 3_600_000
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(readings.status(), 200, "{}", readings.text().await.unwrap());
    let metrics = viewer
        .get(format!("{}/metrics", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);

    // New data cannot be committed: readiness says so, and why.
    let gw = svc.publisher().await;
    let rec = record(ST, t0, 1, &[("SO2", 12.5, "mg/Nm3")]);
    gw.publish_records(ZONE, ST, Encoding::Json, &[rec])
        .await
        .unwrap();
    let body = wait_readiness(
        &svc.base,
        "readiness says the store is unwritable",
        |status, b| {
            status == 503
                && b["store"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("unwritable"))
        },
    )
    .await;
    assert!(body["store"].as_str().unwrap().contains("full"), "{body}");

    // Room again: the held reading is committed and readiness comes back.
    std::fs::remove_file(filler).unwrap();
    wait_readiness(
        &svc.base,
        "readiness comes back once the disk has room",
        |status, b| status == 200 && b["store"] == "ok",
    )
    .await;
    gw.wait_acked().await.unwrap();
    svc.wait_processed(1).await;
    let readings: Value = viewer
        .get(format!(
            "{}/api/v1/readings?station={ST}&param=SO2&from={t0}&to={}",
            svc.base,
            t0 + 3_600_000
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        readings["readings"].as_array().map(Vec::len),
        Some(1),
        "{readings}"
    );
    gw.disconnect().await.unwrap();
    svc.stop().await;
    drop(disk);
}
