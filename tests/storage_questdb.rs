//! The storage test suite against QuestDB.
//!
//! Needs a QuestDB server: set `QUANTRAC_TEST_QUESTDB_URL` to its ILP/HTTP address (e.g.
//! `http://127.0.0.1:9000`) and, if not the default `postgresql://admin:quest@127.0.0.1:8812/qdb`,
//! `QUANTRAC_TEST_QUESTDB_PG`. Without them every test here says it is skipped and passes;
//! the README's QuestDB section shows how to run them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use quantrac::config::Config;
use quantrac::storage::conformance::Backend;
use quantrac::storage::questdb::QuestDbStore;
use quantrac::storage::sqlite::SqliteConfig;
use quantrac::storage::Store;

/// One QuestDB shared by every check (they use their own station ids); each store name has
/// its own local state directory.
struct QuestDb {
    config: quantrac::config::QuestDbConfig,
    dir: tempfile::TempDir,
}

#[async_trait]
impl Backend for QuestDb {
    async fn open(&self, name: &str) -> Arc<dyn Store> {
        let local = SqliteConfig::in_dir(self.dir.path().join(name));
        let store = QuestDbStore::open(
            &self.config,
            local,
            Duration::from_secs(1830 * 86_400),
            None,
        )
        .await
        .expect("QuestDB answers at the configured addresses");
        Arc::new(store)
    }
}

/// One table per run of this binary (the checks use their own station ids within it), so
/// that runs never see each other's rows.
fn table() -> &'static str {
    static TABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("qtest_conformance_{secs}_{}", std::process::id())
    })
}

fn backend() -> Option<QuestDb> {
    let Ok(http) = std::env::var("QUANTRAC_TEST_QUESTDB_URL") else {
        eprintln!("SKIPPED: set QUANTRAC_TEST_QUESTDB_URL (and QUANTRAC_TEST_QUESTDB_PG) to run the storage suite against QuestDB");
        return None;
    };
    let mut config = Config::builtin().storage.questdb;
    config.http = http;
    if let Ok(pg) = std::env::var("QUANTRAC_TEST_QUESTDB_PG") {
        config.pg = pg;
    }
    config.table = table().to_owned();
    Some(QuestDb {
        config,
        dir: tempfile::tempdir().unwrap(),
    })
}

quantrac::storage_conformance_tests!(backend());

// The hourly rollup (src/storage/questdb/rollup.rs): QuestDB-only behaviour.

use quantrac::storage::questdb::read::Source;
use quantrac::storage::{AggregateQuery, Error, SeriesBuckets, WriteItem};
use quantrac::telemetry::{Reading, Status, Timestamp};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;
const VIETNAM: i64 = 7 * HOUR;

/// A store on a table of its own (`label`), so that its rollup can be altered freely.
async fn own_store(
    label: &str,
) -> Option<(
    QuestDbStore,
    quantrac::config::QuestDbConfig,
    tempfile::TempDir,
)> {
    let mut config = backend()?.config;
    config.table = format!("{}_{label}", table());
    let dir = tempfile::tempdir().unwrap();
    let store = QuestDbStore::open(
        &config,
        SqliteConfig::in_dir(dir.path()),
        Duration::from_secs(1830 * 86_400),
        None,
    )
    .await
    .expect("QuestDB answers at the configured addresses");
    Some((store, config, dir))
}

async fn write(store: &QuestDbStore, readings: Vec<Reading>) {
    let (done, wait) = quantrac::ack::pair();
    store
        .write(WriteItem {
            readings,
            done: Some(done),
            ..WriteItem::default()
        })
        .await
        .unwrap();
    assert!(wait.wait().await, "the store confirmed the write");
    store.flush().await.unwrap();
}

/// QuestDB refreshes the view after applying a write and tells no one: poll its state.
async fn wait_rollup_fresh(store: &QuestDbStore) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !store.rollup_fresh().await.unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollup caught up within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sql(config: &quantrac::config::QuestDbConfig, statement: &str) {
    let (client, conn) = tokio_postgres::connect(&config.pg, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute(statement).await.unwrap();
}

/// Three days of readings every 7 minutes, ending now-ish, three parameters, some
/// calibrating (01) or faulty (02), values with long fractions.
fn three_days(station: &str, end: i64) -> Vec<Reading> {
    let start = end - 3 * DAY;
    (0..)
        .map(|i| start + i * 7 * MINUTE)
        .take_while(|t| *t < end)
        .enumerate()
        .flat_map(|(i, t)| {
            ["COD", "TSS", "pH"]
                .into_iter()
                .enumerate()
                .map(move |(p, param)| {
                    let x = (i * 31 + p * 7) as f64;
                    Reading {
                        station: station.into(),
                        zone: "TZ".into(),
                        param: param.into(),
                        ts: Timestamp::from_millis(t),
                        value: (x.sin() + 1.1) * 97.3 + x / 7.0,
                        status: match (i + p) % 11 {
                            3 => Status::Calibrating,
                            7 => Status::DeviceError,
                            _ => Status::Measuring,
                        },
                    }
                })
        })
        .collect()
}

/// Same buckets, counts, minima and maxima; averages within 1e-12 (relative).
fn assert_same(what: &str, a: &[SeriesBuckets], b: &[SeriesBuckets]) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.param, y.param, "{what}");
        assert_eq!(x.buckets.len(), y.buckets.len(), "{what} {}", x.param);
        for (p, q) in x.buckets.iter().zip(&y.buckets) {
            assert_eq!(
                (p.start, p.count, p.min, p.max),
                (q.start, q.count, q.min, q.max),
                "{what} {}",
                x.param
            );
            assert!(
                (p.avg - q.avg).abs() <= 1e-12 * p.avg.abs().max(1.0),
                "{what} {}: avg {} / {}",
                x.param,
                p.avg,
                q.avg
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_of_whole_hours_come_from_the_hourly_rollup_and_equal_the_raw_answer() {
    let Some((store, _config, _dir)) = own_store("rollup").await else {
        return;
    };
    let now = Timestamp::now().as_millis();
    let end = now - now % MINUTE - 10 * MINUTE;
    let station = "T-rollup-equal";
    write(&store, three_days(station, end)).await;
    wait_rollup_fresh(&store).await;
    let params: Vec<String> = ["COD", "TSS", "pH", "none"].map(String::from).to_vec();
    let query = |from: i64, to: i64, bucket_ms: i64, status: Option<Status>| AggregateQuery {
        station: station.to_owned(),
        params: params.clone(),
        from: Timestamp::from_millis(from),
        to: Timestamp::from_millis(to),
        bucket_ms,
        align_offset_ms: VIETNAM,
        status,
    };
    let vn_midnight = |t: i64| t - (t + VIETNAM).rem_euclid(DAY);
    let cases = [
        // Hourly, the range cut mid-hour at both ends: partial hours come from raw rows.
        (
            query(
                end - 3 * DAY + 13 * MINUTE,
                end,
                HOUR,
                Some(Status::Measuring),
            ),
            Source::Rollup,
        ),
        (query(end - 3 * DAY, end, HOUR, None), Source::Rollup),
        (
            query(
                end - 2 * DAY,
                end - 5 * HOUR,
                3 * HOUR,
                Some(Status::Calibrating),
            ),
            Source::Rollup,
        ),
        // Vietnam days over whole days, and over a range that ends mid-day.
        (
            query(
                vn_midnight(end) - 2 * DAY,
                vn_midnight(end) + DAY,
                DAY,
                None,
            ),
            Source::Rollup,
        ),
        (
            query(end - 3 * DAY + 1, end - 1, DAY, Some(Status::DeviceError)),
            Source::Rollup,
        ),
        // 15-minute buckets are not unions of hours.
        (query(end - DAY, end, 15 * MINUTE, None), Source::Raw),
    ];
    for (q, expected) in cases {
        let (rolled, source) = store.aggregate_from(q.clone(), true).await.unwrap();
        let (raw, raw_source) = store.aggregate_from(q.clone(), false).await.unwrap();
        assert_eq!(source, expected, "{q:?}");
        assert_eq!(raw_source, Source::Raw);
        assert!(!raw[0].buckets.is_empty(), "{q:?} has data");
        assert!(raw[3].buckets.is_empty(), "no data, no buckets");
        assert_same(&format!("{q:?}"), &raw, &rolled);
    }
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_rollup_has_not_caught_up_with_is_in_every_aggregate_all_the_same() {
    let Some((store, config, _dir)) = own_store("stale").await else {
        return;
    };
    let now = Timestamp::now().as_millis();
    let end = now - now % MINUTE - 10 * MINUTE;
    let station = "T-rollup-stale";
    write(&store, three_days(station, end)).await;
    wait_rollup_fresh(&store).await;
    let view = quantrac::storage::questdb::rollup::view_name(&config.table);
    // The view no longer follows the table: every write from now on is one it lacks.
    sql(
        &config,
        &format!("ALTER MATERIALIZED VIEW {view} SET REFRESH MANUAL"),
    )
    .await;
    let q = AggregateQuery {
        station: station.to_owned(),
        params: vec!["COD".to_owned()],
        from: Timestamp::from_millis(end - 3 * DAY),
        to: Timestamp::from_millis(end),
        bucket_ms: DAY,
        align_offset_ms: VIETNAM,
        status: None,
    };
    let (before, source) = store.aggregate_from(q.clone(), true).await.unwrap();
    assert_eq!(source, Source::Rollup);
    // A late reading (a gateway's backlog) into an hour the view already holds.
    let late = Timestamp::from_millis(end - 2 * DAY + 30_000);
    write(
        &store,
        vec![Reading {
            station: station.into(),
            zone: "TZ".into(),
            param: "COD".into(),
            ts: late,
            value: 1e6,
            status: Status::Measuring,
        }],
    )
    .await;
    let (after, source) = store.aggregate_from(q.clone(), true).await.unwrap();
    assert_eq!(source, Source::Raw, "the stale view is not read");
    let bucket = |s: &[SeriesBuckets]| {
        s[0].buckets
            .iter()
            .find(|b| b.start == q.bucket_start(late))
            .cloned()
            .unwrap()
    };
    assert_eq!(bucket(&after).count, bucket(&before).count + 1);
    assert_eq!(bucket(&after).max, 1e6);
    sql(
        &config,
        &format!("REFRESH MATERIALIZED VIEW {view} INCREMENTAL"),
    )
    .await;
    wait_rollup_fresh(&store).await;
    let (refreshed, source) = store.aggregate_from(q.clone(), true).await.unwrap();
    assert_eq!(source, Source::Rollup);
    assert_same("refreshed", &after, &refreshed);
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_start_on_a_server_where_the_rollup_name_is_taken_is_refused_with_the_way_out() {
    let Some(mut config) = backend().map(|b| b.config) else {
        return;
    };
    config.table = format!("{}_taken", table());
    let view = quantrac::storage::questdb::rollup::view_name(&config.table);
    sql(
        &config,
        &format!("CREATE TABLE {view} (ts TIMESTAMP) TIMESTAMP(ts)"),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let opened = QuestDbStore::open(
        &config,
        SqliteConfig::in_dir(dir.path()),
        Duration::from_secs(1830 * 86_400),
        None,
    )
    .await;
    match opened {
        Err(Error::Incompatible(message)) => {
            assert!(message.contains(&view), "{message}");
            assert!(message.contains("hourly_rollup = false"), "{message}");
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("started without its rollup"),
    }
    // Off, the name does not matter.
    config.hourly_rollup = false;
    let store = QuestDbStore::open(
        &config,
        SqliteConfig::in_dir(dir.path()),
        Duration::from_secs(1830 * 86_400),
        None,
    )
    .await
    .unwrap();
    assert!(!store.rollup_fresh().await.unwrap());
    store.close().await.unwrap();
}
