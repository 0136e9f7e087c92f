//! Faults on the QuestDB backend: nothing acknowledged is lost, nothing is stored twice.
//!
//! - `quantrac serve` is killed with SIGKILL in the middle of a load through a Mosquitto of
//!   the test's own, then restarted: exactly the readings published are in QuestDB.
//! - QuestDB itself is stopped under load and started again: the spool takes the writes
//!   meanwhile, replays them, and QuestDB ends with every reading once.
//! - The MQTT broker (a Mosquitto with persistence) is restarted in the middle of a load:
//!   every reading is in QuestDB, once.
//!
//! Needs `QUANTRAC_TEST_QUESTDB_URL` (and `QUANTRAC_TEST_QUESTDB_PG`) and `mosquitto`
//! installed. The outage test also needs `QUANTRAC_TEST_QUESTDB_CONTROL`: a directory
//! with `stop.sh` and `start.sh` that stop and start that QuestDB (it stops the server that
//! every QuestDB test uses: the tests here run one at a time, and no other QuestDB suite
//! should run beside this one). `QUANTRAC_TEST_QUESTDB_OUTAGE` sets the outage
//! in seconds (60). Counts are read from QuestDB itself (`/exec`), not through quantrac.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::processes::{wait_ready, PrivateMosquitto};
use firmware_sim::{BrokerOptions, Encoding, Publisher};
use quantrac::config::QuestDbConfig;

const ZONE: &str = "BN-VSIP";

/// One test at a time: the outage test stops the QuestDB every test here writes to, and a
/// test running beside it would see that outage as its own failure.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const ST: &str = "BN-VSIP-ST01";

async fn publish(gw: &Publisher, t0: i64, range: std::ops::Range<u64>) {
    for i in range {
        let rec = common::record(
            ST,
            t0 + i as i64 * 1000,
            i,
            &[("SO2", (i % 400) as f64, "mg/Nm3")],
        );
        gw.publish_records(ZONE, ST, Encoding::Json, &[rec])
            .await
            .unwrap();
    }
}

/// `(rows, distinct reading times)` in the test's table, asked of QuestDB over HTTP; `None`
/// while QuestDB does not answer (or the table is not there yet).
async fn counts(q: &QuestDbConfig) -> Option<(u64, u64)> {
    let sql = format!("SELECT count(), count_distinct(ts) FROM {}", q.table);
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/exec", q.http))
        .query(&[("query", sql.as_str())])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let row = body["dataset"].get(0)?;
    Some((row[0].as_u64()?, row[1].as_u64().unwrap_or(0)))
}

/// Waits (bounded) until QuestDB holds `n` rows; returns the last counts seen.
async fn wait_rows(q: &QuestDbConfig, n: u64, within: Duration) -> (u64, u64) {
    let deadline = Instant::now() + within;
    loop {
        let got = counts(q).await.unwrap_or((0, 0));
        if got.0 >= n || Instant::now() > deadline {
            return got;
        }
        // Another server, no signal to wait on: poll it.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn serve(data: &Path, api: &str, broker: &str, prefix: &str, q: &QuestDbConfig) -> Child {
    Command::new(env!("CARGO_BIN_EXE_quantrac"))
        .arg("serve")
        .env("QUANTRAC_STORAGE__PATH", data)
        .env("QUANTRAC_STORAGE__BACKEND", "questdb")
        .env("QUANTRAC_STORAGE__QUESTDB__HTTP", &q.http)
        .env("QUANTRAC_STORAGE__QUESTDB__PG", &q.pg)
        .env("QUANTRAC_STORAGE__QUESTDB__TABLE", &q.table)
        .env("QUANTRAC_API__LISTEN", api)
        .env("QUANTRAC_MQTT__URL", broker)
        .env("QUANTRAC_MQTT__CLIENT_ID", format!("quantrac-{prefix}"))
        .env("QUANTRAC_MQTT__TOPIC_PREFIX", prefix)
        .env("QUANTRAC_REGISTRY__SEEDS", common::seeds())
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_a_load_then_restart_leaves_exactly_every_reading_in_questdb() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(q) = common::questdb("kill") else {
        return;
    };
    let broker = PrivateMosquitto::start();
    let data = tempfile::tempdir().unwrap();
    let api = quantrac::mqtt::free_local_addr().unwrap().to_string();
    let base = format!("http://{api}");
    let prefix = common::unique("qkill");
    let mut quantrac = serve(data.path(), &api, &broker.url(), &prefix, &q);
    wait_ready(&base).await;

    let mut opts = BrokerOptions::new(broker.url(), common::unique("gw"));
    opts.topic_prefix = Some(prefix.clone());
    opts.inflight = 200;
    let gw = Publisher::connect(opts).await.unwrap();
    let t0 = common::recent_minute(120);
    const N: u64 = 3000;
    let load = async { publish(&gw, t0, 0..N).await };
    let killer = async {
        let mut before = 0;
        while before < 500 {
            before = counts(&q).await.unwrap_or((0, 0)).0;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        quantrac.kill().unwrap();
        let _ = quantrac.wait();
        eprintln!("SIGKILL with {before} of {N} readings in QuestDB");
    };
    tokio::join!(load, killer);
    tokio::time::timeout(Duration::from_secs(60), gw.wait_acked())
        .await
        .unwrap()
        .unwrap();
    // A gateway re-sending the first thousand after the restart: stored once.
    let mut quantrac = serve(data.path(), &api, &broker.url(), &prefix, &q);
    wait_ready(&base).await;
    publish(&gw, t0, 0..1000).await;
    gw.wait_acked().await.unwrap();
    let (rows, distinct) = wait_rows(&q, N, Duration::from_secs(90)).await;
    // Let the re-sent rows land too before counting for the last time.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rows_after, distinct_after) = counts(&q).await.unwrap();
    eprintln!(
        "published {N} (+1000 re-sent); in QuestDB after the kill and restart: {rows} rows, \
         {distinct} distinct; 2 s later {rows_after} rows, {distinct_after} distinct"
    );
    assert_eq!((rows_after, distinct_after), (N, N));
    quantrac.kill().unwrap();
    let _ = quantrac.wait();
    gw.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_in_the_middle_of_a_load_loses_nothing_in_questdb() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(q) = common::questdb("brestart") else {
        return;
    };
    let mut broker = PrivateMosquitto::start();
    let site = common::Site::new(common::Broker::Embedded, "qbrestart");
    let mut config = site.config();
    config.mqtt.url = Some(broker.url());
    config.storage.backend = quantrac::config::Backend::Questdb;
    config.storage.questdb = q.clone();
    let svc = common::Service::start(config).await;
    let mut opts = BrokerOptions::new(broker.url(), common::unique("gw"));
    opts.topic_prefix = Some(site.prefix.clone());
    let gw = Publisher::connect(opts).await.unwrap();
    let t0 = common::recent_minute(120);
    const N: u64 = 1000;
    publish(&gw, t0, 0..N / 2).await;
    gw.wait_acked().await.unwrap();
    broker.restart();
    publish(&gw, t0, N / 2..N).await;
    tokio::time::timeout(Duration::from_secs(60), gw.wait_acked())
        .await
        .unwrap()
        .unwrap();
    let (rows, distinct) = wait_rows(&q, N, Duration::from_secs(60)).await;
    // Redelivered messages (QoS 1 after the restart) land too before the last count.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rows_after, distinct_after) = counts(&q).await.unwrap();
    eprintln!(
        "published {N} across a broker restart; in QuestDB: {rows} rows, {distinct} distinct; \
         2 s later {rows_after} rows, {distinct_after} distinct"
    );
    assert_eq!((rows_after, distinct_after), (N, N));
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

fn control() -> Option<PathBuf> {
    match std::env::var("QUANTRAC_TEST_QUESTDB_CONTROL") {
        Ok(dir) => Some(PathBuf::from(dir)),
        Err(_) => {
            eprintln!(
                "SKIPPED: set QUANTRAC_TEST_QUESTDB_CONTROL to a directory with stop.sh and \
                 start.sh for the QuestDB under test to run the outage test"
            );
            None
        }
    }
}

fn run(script: &Path) {
    let status = Command::new(script).status().unwrap();
    assert!(status.success(), "{} failed", script.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questdb_stopped_under_load_then_started_again_loses_and_duplicates_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let Some(q) = common::questdb("outage") else {
        return;
    };
    let Some(control) = control() else {
        return;
    };
    let outage = std::env::var("QUANTRAC_TEST_QUESTDB_OUTAGE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60u64);
    let site = common::Site::new(common::Broker::Embedded, "qoutage");
    let mut config = site.config();
    config.storage.backend = quantrac::config::Backend::Questdb;
    config.storage.questdb = q.clone();
    config.storage.questdb.request_timeout = Duration::from_secs(2);
    let svc = common::Service::start(config).await;
    let gw = svc.publisher().await;
    let t0 = common::recent_minute(180);
    const N: u64 = 3000;
    publish(&gw, t0, 0..1000).await;
    svc.wait_processed(1000).await;
    run(&control.join("stop.sh"));
    let down = Instant::now();
    // Under load while QuestDB is down, spread over the outage.
    let per_second = 1000 / outage.max(1);
    let mut next = 1000;
    while down.elapsed() < Duration::from_secs(outage) {
        let upto = (next + per_second.max(1)).min(2000);
        publish(&gw, t0, next..upto).await;
        next = upto;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    publish(&gw, t0, next..2000).await;
    svc.wait_processed(2000).await;
    let metrics = svc.metrics_text().await;
    let spooled = metric(&metrics, "quantrac_spool_bytes");
    eprintln!("QuestDB down {outage} s: 2000 acknowledged, spool {spooled} bytes");
    assert!(spooled > 0.0, "the writes went to the spool");
    // The same readings again while it is down (re-sent): still stored once.
    publish(&gw, t0, 1500..2000).await;
    run(&control.join("start.sh"));
    publish(&gw, t0, 2000..N).await;
    svc.wait_processed(N + 500).await;
    let (rows, distinct) = wait_rows(&q, N, Duration::from_secs(120)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut spool = f64::MAX;
    while spool > 0.0 && Instant::now() < deadline {
        spool = metric(&svc.metrics_text().await, "quantrac_spool_bytes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "after QuestDB came back: {rows} rows, {distinct} distinct times of {N}; spool {spool} bytes"
    );
    assert_eq!((rows, distinct), (N, N));
    assert_eq!(spool, 0.0, "the spool drained");
    gw.disconnect().await.unwrap();
    svc.stop().await;
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}
