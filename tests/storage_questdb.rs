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
