//! The storage test suite against the embedded SQLite store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use quantrac::quarantine::{DeadLetter, QuarantineEntry, Reason, Rejected, Rejection};
use quantrac::storage::conformance::Backend;
use quantrac::storage::sqlite::{SqliteConfig, SqliteStore};
use quantrac::storage::{QuarantineQuery, Store, WriteItem};
use quantrac::telemetry::{Encoding, Timestamp};

/// Each store name is a directory under one temporary directory per test.
struct Sqlite(tempfile::TempDir);

#[async_trait]
impl Backend for Sqlite {
    async fn open(&self, name: &str) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(SqliteConfig::in_dir(self.0.path().join(name))).unwrap())
    }
}

fn backend() -> Option<Sqlite> {
    Some(Sqlite(tempfile::tempdir().unwrap()))
}

quantrac::storage_conformance_tests!(backend());

/// A message from `station` (`None`: no station) with `n` rejections and `payload`.
fn message(station: Option<&str>, n: usize, payload: &[u8], detail: &str) -> Rejected {
    Rejected::new(
        Timestamp::now(),
        "t",
        Some(Encoding::Tt10),
        station.map(str::to_owned),
        payload,
        64,
        (0..n).map(|i| Rejection {
            reason: Reason::OutOfRange,
            station: station.map(str::to_owned),
            param: None,
            ts: None,
            value: None,
            detail: format!("{detail} line {i}"),
        }),
    )
}

async fn write_all(store: &SqliteStore, messages: Vec<Rejected>) {
    for rejected in messages {
        store
            .write(WriteItem {
                rejected: Some(rejected),
                ..WriteItem::default()
            })
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
}

async fn entries(store: &SqliteStore, station: Option<&str>) -> Vec<QuarantineEntry> {
    store
        .quarantine(QuarantineQuery {
            station: station.map(str::to_owned),
            limit: 1000,
            ..QuarantineQuery::default()
        })
        .await
        .unwrap()
        .entries
}

fn details(entries: &[QuarantineEntry]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e.samples[0].detail.as_str())
        .collect()
}

fn store_with(dir: &tempfile::TempDir, capacity: usize, dead_letter_max_bytes: u64) -> SqliteStore {
    let mut config = SqliteConfig::in_dir(dir.path());
    config.quarantine_capacity = capacity;
    config.dead_letter_max_bytes = dead_letter_max_bytes;
    SqliteStore::open(config).unwrap()
}

/// Specific to the embedded store: the quarantine keeps only the newest entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_keeps_only_the_newest_capacity_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, 5, 1 << 20);
    let messages = (0..12)
        .map(|i| message(None, 1, b"x", &format!("entry {i}")))
        .collect();
    write_all(&store, messages).await;
    assert_eq!(
        details(&entries(&store, None).await),
        [
            "entry 11 line 0",
            "entry 10 line 0",
            "entry 9 line 0",
            "entry 8 line 0",
            "entry 7 line 0"
        ]
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_of_100000_rejections_is_one_entry_and_other_stations_entries_survive() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, 10_000, 1 << 30);
    let mut messages = vec![
        message(Some("A"), 1, b"a", "A's evidence"),
        message(None, 1, b"?", "no station's evidence"),
    ];
    let flood = "COD\t9999\tmg/L\t20261126100500\t00\n".repeat(100_000);
    messages.push(message(Some("B"), 100_000, flood.as_bytes(), "B"));
    write_all(&store, messages).await;
    let b = entries(&store, Some("B")).await;
    assert_eq!(b.len(), 1, "one entry for the message");
    assert_eq!(b[0].counts, [(Reason::OutOfRange, 100_000)]);
    assert_eq!(b[0].total(), 100_000);
    assert_eq!(b[0].samples.len(), quantrac::quarantine::SAMPLES);
    assert_eq!(b[0].payload_bytes, Some(flood.len() as u64));
    assert_eq!(
        details(&entries(&store, Some("A")).await),
        ["A's evidence line 0"]
    );
    assert_eq!(entries(&store, None).await.len(), 3, "nothing was evicted");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_station_over_capacity_evicts_only_its_own_oldest_entries() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, 6, 1 << 20);
    let mut messages = vec![
        message(Some("A"), 1, b"a", "A0"),
        message(None, 1, b"?", "none0"),
        message(Some("A"), 1, b"a", "A1"),
    ];
    messages.extend((0..20).map(|i| message(Some("NOISY"), 3, b"n", &format!("N{i}"))));
    write_all(&store, messages).await;
    let all = entries(&store, None).await;
    assert_eq!(all.len(), 6, "the bound holds");
    assert_eq!(
        details(&entries(&store, Some("A")).await),
        ["A1 line 0", "A0 line 0"]
    );
    let noisy = entries(&store, Some("NOISY")).await;
    assert_eq!(
        details(&noisy),
        ["N19 line 0", "N18 line 0", "N17 line 0"],
        "the noisy station keeps its newest"
    );
    assert!(
        !noisy.iter().any(|e| !e.payload_held),
        "payloads go with their entries"
    );
    // Once the noisy station is down to the others' level, they share the eviction.
    write_all(
        &store,
        vec![
            message(Some("A"), 1, b"a", "A2"),
            message(Some("A"), 1, b"a", "A3"),
        ],
    )
    .await;
    let a = entries(&store, Some("A")).await;
    let noisy = entries(&store, Some("NOISY")).await;
    assert_eq!(
        (a.len(), noisy.len()),
        (2, 3),
        "{:?}",
        details(&entries(&store, None).await)
    );
    assert_eq!(details(&a), ["A3 line 0", "A2 line 0"]);
    assert_eq!(
        details(&entries(&store, None).await).last(),
        Some(&"none0 line 0")
    );
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_store_drops_the_oldest_payloads_beyond_its_bound_and_counts_them() {
    let metrics = quantrac::metrics::prometheus().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(&dir, 100, 1_000);
    // A small payload of station A, then five of 300 bytes from B: 1,600 bytes for 1,000.
    let mut messages = vec![message(Some("A"), 1, &[7u8; 100], "A")];
    messages.extend((0..5u8).map(|i| message(Some("B"), 1, &[i; 300], &format!("B{i}"))));
    write_all(&store, messages).await;
    let b = entries(&store, Some("B")).await;
    assert_eq!(b.len(), 5, "entries stay when their payload goes");
    let held: Vec<bool> = b.iter().map(|e| e.payload_held).collect();
    assert_eq!(
        held,
        [true, true, true, false, false],
        "B's two oldest dropped"
    );
    assert_eq!(
        store.dead_letter(b[4].id).await.unwrap(),
        DeadLetter::Evicted
    );
    assert_eq!(
        store.dead_letter(b[0].id).await.unwrap(),
        DeadLetter::Held {
            encoding: Some(Encoding::Tt10),
            payload: vec![4u8; 300]
        }
    );
    let a = entries(&store, Some("A")).await;
    assert!(
        a[0].payload_held,
        "the station holding the most bytes gave them up"
    );
    let text = metrics.render();
    let dropped = text
        .lines()
        .find(|l| l.starts_with("quantrac_dead_letters_dropped_total"))
        .unwrap_or_default();
    assert_eq!(dropped, "quantrac_dead_letters_dropped_total 2");
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_entry_and_its_payload_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = store_with(&dir, 10, 1 << 20);
        write_all(
            &store,
            vec![message(Some("A"), 2, &[0, 159, 146, 150], "A")],
        )
        .await;
        store.close().await.unwrap();
    }
    let store = store_with(&dir, 10, 1 << 20);
    let a = entries(&store, Some("A")).await;
    assert_eq!(a[0].total(), 2);
    assert_eq!(
        store.dead_letter(a[0].id).await.unwrap(),
        DeadLetter::Held {
            encoding: Some(Encoding::Tt10),
            payload: vec![0, 159, 146, 150]
        }
    );
    store.close().await.unwrap();
}
