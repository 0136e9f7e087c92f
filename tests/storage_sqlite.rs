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
