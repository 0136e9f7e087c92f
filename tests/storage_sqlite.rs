//! The storage test suite against the embedded SQLite store.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use quantrac::storage::conformance::Backend;
use quantrac::storage::sqlite::{SqliteConfig, SqliteStore};
use quantrac::storage::Store;

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

/// Specific to the embedded store: the quarantine keeps only the newest entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantine_keeps_only_the_newest_capacity_entries() {
    use quantrac::quarantine::{Reason, Rejected, Rejection};
    use quantrac::storage::{QuarantineQuery, WriteItem};
    use quantrac::telemetry::Timestamp;

    let dir = tempfile::tempdir().unwrap();
    let mut config = SqliteConfig::in_dir(dir.path());
    config.quarantine_capacity = 5;
    let store = SqliteStore::open(config).unwrap();
    for i in 0..12 {
        store
            .write(WriteItem {
                rejected: Some(Rejected {
                    received_at: Timestamp::now(),
                    topic: "t".into(),
                    encoding: None,
                    excerpt: String::new(),
                    rejections: vec![Rejection {
                        reason: Reason::MalformedPayload,
                        station: None,
                        param: None,
                        ts: None,
                        value: None,
                        detail: format!("entry {i}"),
                    }],
                }),
                ..WriteItem::default()
            })
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    let page = store
        .quarantine(QuarantineQuery {
            limit: 100,
            ..QuarantineQuery::default()
        })
        .await
        .unwrap();
    let details: Vec<&str> = page
        .entries
        .iter()
        .map(|e| e.rejection.detail.as_str())
        .collect();
    assert_eq!(
        details,
        ["entry 11", "entry 10", "entry 9", "entry 8", "entry 7"]
    );
    store.close().await.unwrap();
}
