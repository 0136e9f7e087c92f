//! The QuestDB table, created at start with explicit DDL (never by ILP auto-creation, which
//! would guess column types and skip deduplication).

use super::rollup;
use crate::storage::{Error, Result};

/// The readings table. `ttl_days`: partitions older than this are dropped (none if 0).
///
/// Clause order is QuestDB's parser's, not the one its CREATE TABLE page shows: after
/// `PARTITION BY` it reads TTL, then WAL, then WITH, IN VOLUME and DEDUP (SqlParser
/// `parseCreateTable`; its tests write `partition by day ttl 2 days wal`). `WAL TTL n DAYS`
/// fails with an unexpected token. SYMBOL CAPACITY is a sizing hint (at least 2; more distinct
/// values still fit) and CACHE keeps the symbol table in memory, which QuestDB allows up to a
/// capacity far above these.
pub fn readings_ddl(table: &str, ttl_days: u64) -> String {
    let ttl = if ttl_days > 0 {
        format!(" TTL {ttl_days} DAYS")
    } else {
        String::new()
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
            ts TIMESTAMP,
            station SYMBOL CAPACITY 16384 CACHE,
            zone SYMBOL CAPACITY 1024 CACHE,
            param SYMBOL CAPACITY 256 CACHE,
            status SYMBOL CAPACITY 4 CACHE,
            value DOUBLE,
            arrived TIMESTAMP
        ) TIMESTAMP(ts) PARTITION BY DAY{ttl} WAL
        DEDUP UPSERT KEYS(ts, station, param)"
    )
}

/// The oldest QuestDB quantrac runs on: ILP protocol version 2 (binary doubles, exact
/// microsecond timestamps) came with 9.0, as did every clause of the table above (DEDUP from
/// 7.3, TTL from 8.1).
pub const MIN_VERSION: (u32, u32) = (9, 0);

/// `(major, minor)` from QuestDB's `build()` text, e.g. "Build Information: QuestDB
/// 9.2.4-SNAPSHOT, JDK 17.0.15, Commit Hash dea82b0...". The name comes from the server's
/// jar manifest (`Implementation-Title`): releases say "QuestDB", builds without it
/// "questdb"; both are read.
pub fn parse_version(build: &str) -> Option<(u32, u32)> {
    const NAME: &str = "questdb ";
    let at = build.to_ascii_lowercase().find(NAME)?;
    let rest = &build[at + NAME.len()..];
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn incompatible(problem: String) -> Error {
    Error::Incompatible(format!(
        "{problem}; quantrac needs QuestDB {}.{} or later (tested with 9.2.4), with \
         WAL tables and DEDUP",
        MIN_VERSION.0, MIN_VERSION.1
    ))
}

/// Refuses a server older than [`MIN_VERSION`] (or one that does not say its version).
pub async fn check_version(client: &tokio_postgres::Client) -> Result<String> {
    let build: String = match client.query_one("SELECT build()", &[]).await {
        Ok(row) => row
            .try_get(0)
            .map_err(|e| incompatible(format!("unreadable build(): {e}")))?,
        Err(e) => {
            return Err(incompatible(format!(
                "the server does not answer `SELECT build()` ({})",
                super::read::error_chain(&e)
            )))
        }
    };
    match parse_version(&build) {
        Some(v) if v >= MIN_VERSION => Ok(build),
        Some((major, minor)) => Err(incompatible(format!(
            "the server is QuestDB {major}.{minor} (`{build}`)"
        ))),
        None => Err(incompatible(format!("unrecognised build() `{build}`"))),
    }
}

/// Creates what is missing. Safe to run at every start. An existing table is left as it is
/// (IF NOT EXISTS): a changed TTL is not applied to it. A table that exists without what
/// quantrac relies on (designated timestamp `ts`, WAL, DEDUP) is refused: with it the service
/// would store duplicates or read stale data.
pub async fn create(client: &tokio_postgres::Client, table: &str, ttl_days: u64) -> Result<()> {
    client
        .batch_execute(&readings_ddl(table, ttl_days))
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot create the QuestDB table: {}",
                super::read::error_chain(&e)
            ))
        })?;
    let row = client
        .query_opt(
            "SELECT designatedTimestamp, walEnabled, dedup FROM tables() WHERE table_name = $1::varchar",
            &[&table],
        )
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot read the QuestDB table list: {}",
                super::read::error_chain(&e)
            ))
        })?;
    let Some(row) = row else {
        return Err(incompatible(format!("table `{table}` was not created")));
    };
    let designated: Option<String> = row.try_get(0).ok();
    let wal: bool = row.try_get(1).unwrap_or(false);
    let dedup: bool = row.try_get(2).unwrap_or(false);
    if designated.as_deref() != Some("ts") || !wal || !dedup {
        return Err(incompatible(format!(
            "table `{table}` exists without TIMESTAMP(ts), WAL and DEDUP UPSERT KEYS(ts, station, param) \
             (designated timestamp {designated:?}, WAL {wal}, DEDUP {dedup}); drop or rename it"
        )));
    }
    // Tables created before arrival times were kept get the column; their rows have none
    // (unknown arrival), as on the embedded store. (QuestDB refuses an ALTER that changes
    // nothing on a WAL table, `IF NOT EXISTS` included: look first.)
    let columns =
        format!("SELECT \"column\" FROM table_columns('{table}') WHERE \"column\" = 'arrived'");
    let has_arrival = client.query_opt(&columns, &[]).await.map_err(|e| {
        Error::Unavailable(format!(
            "cannot read the QuestDB table's columns: {}",
            super::read::error_chain(&e)
        ))
    })?;
    if has_arrival.is_none() {
        client
            .batch_execute(&format!("ALTER TABLE {table} ADD COLUMN arrived TIMESTAMP"))
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot add the arrival column to the QuestDB table: {}",
                    super::read::error_chain(&e)
                ))
            })?;
    }
    Ok(())
}

/// Creates the hourly rollup view ([`super::rollup`]) if missing, and checks that the one
/// found is quantrac's: a view of that name over another table or with another query is
/// refused (drop it, or turn `storage.questdb.hourly_rollup` off). A server that cannot
/// create it (materialized views disabled, `cairo.mat.view.enabled=false`) is refused
/// clearly. A view QuestDB marked invalid (its table was truncated, for one) is rebuilt in
/// the background; aggregates read raw rows until it has caught up.
pub async fn create_rollup(
    client: &tokio_postgres::Client,
    table: &str,
    ttl_days: u64,
) -> Result<()> {
    let view = rollup::view_name(table);
    let off = "or set storage.questdb.hourly_rollup = false";
    if let Err(e) = client
        .batch_execute(&rollup::view_ddl(table, ttl_days))
        .await
    {
        return Err(Error::Incompatible(format!(
            "QuestDB cannot create the materialized view `{view}` (hourly aggregates of `{table}`): {}; \
             quantrac needs materialized views (QuestDB 8.3 or later, cairo.mat.view.enabled=true), {off}",
            super::read::error_chain(&e)
        )));
    }
    let row = client
        .query_opt(
            "SELECT base_table_name, view_sql, view_status, invalidation_reason \
             FROM materialized_views() WHERE view_name = $1::varchar",
            &[&view],
        )
        .await
        .map_err(|e| {
            Error::Unavailable(format!(
                "cannot read QuestDB's materialized views: {}",
                super::read::error_chain(&e)
            ))
        })?;
    let Some(row) = row else {
        return Err(Error::Incompatible(format!(
            "`{view}` exists but is not a materialized view; drop or rename it, {off}"
        )));
    };
    let text = |i: usize| -> String {
        row.try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    let (base, sql, status) = (text(0), text(1), text(2));
    if !base.eq_ignore_ascii_case(table) || sql.trim() != rollup::view_select(table) {
        return Err(Error::Incompatible(format!(
            "the materialized view `{view}` is not quantrac's hourly rollup of `{table}` \
             (over `{base}`: `{sql}`); drop it (quantrac creates it again), {off}"
        )));
    }
    if status == "invalid" {
        tracing::warn!(
            view = %view,
            reason = %crate::text::escape(&text(3)),
            "QuestDB marked the hourly rollup invalid; rebuilding it (aggregates read raw rows meanwhile)"
        );
        client
            .batch_execute(&format!("REFRESH MATERIALIZED VIEW {view} FULL"))
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot rebuild the materialized view `{view}`: {}",
                    super::read::error_chain(&e)
                ))
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_deduplicated_on_the_reading_identity_and_partitioned_by_day() {
        let ddl = readings_ddl("readings", 1830);
        assert!(ddl.contains("TIMESTAMP(ts) PARTITION BY DAY TTL 1830 DAYS WAL\n"));
        assert!(ddl.contains("DEDUP UPSERT KEYS(ts, station, param)"));
        let plain = readings_ddl("readings", 0);
        assert!(!plain.contains("TTL"));
        assert!(plain.contains("TIMESTAMP(ts) PARTITION BY DAY WAL\n"));
        assert!(ddl.starts_with("CREATE TABLE IF NOT EXISTS readings ("));
    }

    #[test]
    fn the_version_is_read_from_the_build_text() {
        let build = "Build Information: questdb 9.2.4-SNAPSHOT, JDK 17.0.15, Commit Hash dea82b0";
        assert_eq!(parse_version(build), Some((9, 2)));
        assert_eq!(
            parse_version("Build Information: questdb 8.3.1, JDK 17"),
            Some((8, 3))
        );
        assert_eq!(
            parse_version("Build Information: QuestDB 9.2.4-SNAPSHOT, JDK 17.0.15"),
            Some((9, 2)),
            "the name as a release's manifest spells it"
        );
        assert!(parse_version("PostgreSQL 12.3").is_none());
        assert!(Some((8, 3)) < Some(MIN_VERSION));
    }
}
