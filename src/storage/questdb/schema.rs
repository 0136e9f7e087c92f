//! The QuestDB table, created at start with explicit DDL (never by ILP auto-creation, which
//! would guess column types and skip deduplication).

use crate::storage::{Error, Result};

/// The readings table. `ttl_days`: partitions older than this are dropped (none if 0).
///
/// Clause order is QuestDB's parser's, not the one its CREATE TABLE page shows: after
/// `PARTITION BY` it reads TTL, then WAL, then WITH, IN VOLUME and DEDUP (SqlParser
/// `parseCreateTable`; its tests write `partition by day ttl 2 days wal`). `WAL TTL n DAYS`
/// fails with an unexpected token. SYMBOL CAPACITY is a sizing hint (at least 2; more distinct
/// values still fit) and CACHE keeps the symbol table in memory, which QuestDB allows up to a
/// capacity far above these.
pub fn readings_ddl(ttl_days: u64) -> String {
    let ttl = if ttl_days > 0 {
        format!(" TTL {ttl_days} DAYS")
    } else {
        String::new()
    };
    format!(
        "CREATE TABLE IF NOT EXISTS readings (
            ts TIMESTAMP,
            station SYMBOL CAPACITY 16384 CACHE,
            zone SYMBOL CAPACITY 1024 CACHE,
            param SYMBOL CAPACITY 256 CACHE,
            status SYMBOL CAPACITY 4 CACHE,
            value DOUBLE
        ) TIMESTAMP(ts) PARTITION BY DAY{ttl} WAL
        DEDUP UPSERT KEYS(ts, station, param)"
    )
}

/// Creates what is missing. Safe to run at every start. An existing table is left as it is
/// (IF NOT EXISTS): a changed TTL is not applied to it.
pub async fn create(client: &tokio_postgres::Client, ttl_days: u64) -> Result<()> {
    client
        .batch_execute(&readings_ddl(ttl_days))
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot create the QuestDB table: {}",
                super::read::error_chain(&e)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_deduplicated_on_the_reading_identity_and_partitioned_by_day() {
        let ddl = readings_ddl(1830);
        assert!(ddl.contains("TIMESTAMP(ts) PARTITION BY DAY TTL 1830 DAYS WAL\n"));
        assert!(ddl.contains("DEDUP UPSERT KEYS(ts, station, param)"));
        let plain = readings_ddl(0);
        assert!(!plain.contains("TTL"));
        assert!(plain.contains("TIMESTAMP(ts) PARTITION BY DAY WAL\n"));
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS readings ("));
    }
}
