//! Queries over the PostgreSQL wire protocol. Every value from a request is a bind
//! parameter; the only text put into SQL is made here from validated numbers (a bucket
//! width, a calendar offset, a row limit) or from the registry's parameter count.

use chrono::{DateTime, NaiveDateTime};
use deadpool_postgres::ClientWrapper;

use super::rollup::{self, Freshness, Merger, Partial, Range};
use super::sql::Args;

use crate::storage::{
    AggregateQuery, ArrivalQuery, Error, LatestRow, RawQuery, ReadingPage, RecordArrival, Result,
    SeriesBuckets, StoredReading,
};
use crate::telemetry::{Status, Timestamp};

fn pg_error(e: impl std::error::Error + 'static) -> Error {
    Error::Unavailable(format!("QuestDB query: {}", error_chain(&e)))
}

/// An error with its causes. tokio-postgres displays a server error as just "db error" (and a
/// type mismatch as "error deserializing column 0"): what QuestDB said, or which types did
/// not match, is only in the source chain.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        // Some wrappers (deadpool) already print their cause.
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

fn query_error(text: String) -> Error {
    Error::Unavailable(format!("QuestDB query: {text}"))
}

/// The message of an error QuestDB returned, if the error came from QuestDB.
fn server_message(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|db| db.message())
}

/// A timestamp as QuestDB's TIMESTAMP (UTC, microseconds).
pub fn naive(ts: Timestamp) -> NaiveDateTime {
    DateTime::from_timestamp_millis(ts.as_millis())
        .unwrap_or_default()
        .naive_utc()
}

fn millis(t: NaiveDateTime) -> Timestamp {
    Timestamp::from_millis(t.and_utc().timestamp_millis())
}

fn status_of(code: &str) -> Result<Status> {
    Status::from_code(code).ok_or_else(|| query_error(format!("unexpected status `{code}`")))
}

/// A SAMPLE BY width from milliseconds: whole minutes or hours that divide a day.
///
/// QuestDB floors calendar-aligned buckets from 1970-01-01 plus the WITH OFFSET, which is a
/// time of day; the embedded store floors from 1970-01-01 minus the zone's UTC offset. The
/// two agree only when the width divides a day (every width the API offers does): a `7h` or
/// `2d` bucket would start at different times in the two stores, so it is refused.
pub fn sample_width(bucket_ms: i64) -> Result<String> {
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;
    match bucket_ms {
        DAY => Ok("1d".to_owned()),
        b if b > 0 && DAY % b == 0 && b % HOUR == 0 => Ok(format!("{}h", b / HOUR)),
        b if b > 0 && DAY % b == 0 && b % MIN == 0 => Ok(format!("{}m", b / MIN)),
        b => Err(query_error(format!(
            "unsupported bucket of {b} ms (whole minutes that divide a day)"
        ))),
    }
}

/// ALIGN TO CALENDAR WITH OFFSET for buckets that start at local midnight of a zone that is
/// `align_offset_ms` ahead of UTC: that midnight is at `-align_offset` UTC, as HH:MM in a day.
/// Without TIME ZONE, QuestDB returns the bucket starts in UTC (its SAMPLE BY reference,
/// "WITH OFFSET": `'02:00'` makes day buckets start at 02:00 UTC).
pub fn calendar_offset(align_offset_ms: i64) -> Result<String> {
    if align_offset_ms % 60_000 != 0 {
        return Err(query_error(format!(
            "unsupported calendar offset of {align_offset_ms} ms (whole minutes only)"
        )));
    }
    let minutes = (-align_offset_ms / 60_000).rem_euclid(1440);
    Ok(format!("{:02}:{:02}", minutes / 60, minutes % 60))
}

pub async fn readings(
    client: &tokio_postgres::Client,
    table: &str,
    q: &RawQuery,
) -> Result<ReadingPage> {
    if q.params.is_empty() {
        return Ok(ReadingPage {
            readings: Vec::new(),
            has_more: false,
        });
    }
    let from = naive(q.from);
    let to = naive(q.to);
    let status = q.status.map(|s| s.code().to_owned());
    let after = q.after.as_ref().map(|(ts, p)| (naive(*ts), p.clone()));
    let mut args = Args::new();
    let mut sql = format!(
        "SELECT ts, param, value, status FROM {table}
         WHERE {} AND ts >= {} AND ts < {} AND {}",
        args.symbol_eq("station", &q.station),
        args.bind(&from),
        args.bind(&to),
        args.in_list("param", &q.params),
    );
    if let Some(s) = &status {
        sql.push_str(&format!(" AND {}", args.symbol_eq("status", s)));
    }
    if let Some((ts, p)) = &after {
        // Each use of the cursor time is its own parameter: reusing one number twice is
        // not something QuestDB documents. The plain `ts >= cursor` is redundant for the
        // result but not for the plan: QuestDB derives the scanned interval only from
        // conjunctions on `ts`, not from the OR, and without it a page deep in a year
        // scanned the year from `from` (about 0.7 s on 210 M rows; 4 ms with it,
        // benches/questdb_year.rs).
        sql.push_str(&format!(
            " AND ts >= {} AND (ts > {} OR (ts = {} AND param > {}))",
            args.bind(ts),
            args.bind(ts),
            args.bind(ts),
            args.bind_varchar(p),
        ));
    }
    // One row more than the page shows whether there is more. A number we format, not a
    // bind parameter: QuestDB's LIMIT takes both, but this keeps the statement simple.
    sql.push_str(&format!(
        " ORDER BY ts, param LIMIT {}",
        q.limit.saturating_add(1)
    ));
    let rows = client.query(&sql, args.values()).await.map_err(pg_error)?;
    let mut readings = Vec::with_capacity(rows.len());
    for row in rows {
        let ts: NaiveDateTime = row.try_get(0).map_err(pg_error)?;
        let code: String = row.try_get(3).map_err(pg_error)?;
        readings.push(StoredReading {
            param: row.try_get(1).map_err(pg_error)?,
            ts: millis(ts),
            value: row.try_get(2).map_err(pg_error)?,
            status: status_of(&code)?,
        });
    }
    let has_more = readings.len() > q.limit;
    readings.truncate(q.limit);
    Ok(ReadingPage { readings, has_more })
}

/// Where an aggregate's rows came from (for tests and the bench).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Raw rows only: the rollup is off, stale, or the buckets are not whole UTC hours.
    Raw,
    /// The hourly rollup for whole hours, raw rows for partial hours at the ends (if any).
    Rollup,
}

/// The query's buckets, from the hourly rollup `view` where it can answer (see
/// [`rollup`](super::rollup)) and from raw rows otherwise. `view` is `None` when the
/// rollup is off.
pub async fn aggregate(
    client: &ClientWrapper,
    table: &str,
    view: Option<&str>,
    q: &AggregateQuery,
) -> Result<(Vec<SeriesBuckets>, Source)> {
    if q.params.is_empty() {
        return Ok((Merger::new(&q.params).finish(), Source::Raw));
    }
    // Checked before SQL is written from them, whichever source answers.
    sample_width(q.bucket_ms)?;
    calendar_offset(q.align_offset_ms)?;
    let split = match view {
        Some(view) if rollup::hour_buckets(q) => {
            // One round trip: both statements are pipelined on the connection.
            let (mut fresh, first) =
                tokio::try_join!(freshness(client, view), first_ts(client, table))?;
            // Under steady ingest the view trails each WAL apply by a refresh (milliseconds to
            // tens of them): a short wait for it beats scanning raw rows (seconds over a
            // year). QuestDB signals neither, so its state is polled.
            let deadline = std::time::Instant::now() + ROLLUP_WAIT;
            while first.is_some()
                && fresh.valid
                && !fresh.usable()
                && std::time::Instant::now() < deadline
            {
                tokio::time::sleep(ROLLUP_POLL).await;
                fresh = freshness(client, view).await?;
            }
            if fresh.usable() {
                rollup::split(q, first)
            } else {
                rollup::split(q, None)
            }
        }
        _ => rollup::split(q, None),
    };
    let mut parts = Vec::with_capacity(3);
    for range in &split.raw {
        parts.push(partials(client, table, RAW_AGGREGATES, q, *range));
    }
    let source = match (view, split.view) {
        (Some(view), Some(range)) => {
            parts.push(partials(client, view, ROLLUP_AGGREGATES, q, range));
            Source::Rollup
        }
        _ => Source::Raw,
    };
    let mut merger = Merger::new(&q.params);
    for rows in futures_util::future::try_join_all(parts).await? {
        for (param, partial) in rows {
            merger.add(&param, partial);
        }
    }
    Ok((merger.finish(), source))
}

/// How long an aggregate waits for a lagging rollup before reading raw rows instead.
const ROLLUP_WAIT: std::time::Duration = std::time::Duration::from_millis(250);
const ROLLUP_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Sum, minimum, maximum and count of raw values. The sum is compensated (`nsum`,
/// Neumaier), as SQLite's `avg` (3.43+) sums: QuestDB's own `avg` sums naively and differs
/// in the last bits, and both stores must give the same answer (tests/parity_questdb.rs).
const RAW_AGGREGATES: &str = "nsum(value), min(value), max(value), count()";
/// The same from the rollup's hourly rows.
const ROLLUP_AGGREGATES: &str = "nsum(value_sum), min(value_min), max(value_max), sum(n)";

/// The buckets of `q` over `range` of `source` (the table or the rollup), as partial
/// aggregates to merge.
async fn partials(
    client: &ClientWrapper,
    source: &str,
    aggregates: &str,
    q: &AggregateQuery,
    range: Range,
) -> Result<Vec<(String, Partial)>> {
    let from = naive(Timestamp::from_millis(range.from));
    let to = naive(Timestamp::from_millis(range.to));
    let status = q.status.map(|s| s.code().to_owned());
    let mut args = Args::new();
    let mut sql = format!(
        "SELECT ts, param, {aggregates} FROM {source}
         WHERE {} AND ts >= {} AND ts < {} AND {}",
        args.symbol_eq("station", &q.station),
        args.bind(&from),
        args.bind(&to),
        args.in_list("param", &q.params),
    );
    if let Some(s) = &status {
        sql.push_str(&format!(" AND {}", args.symbol_eq("status", s)));
    }
    sql.push_str(&format!(
        " SAMPLE BY {} ALIGN TO CALENDAR WITH OFFSET '{}'",
        sample_width(q.bucket_ms)?,
        calendar_offset(q.align_offset_ms)?
    ));
    // Prepared once per connection: a cache hit saves the Parse round trip.
    let statement = client.prepare_cached(&sql).await.map_err(pg_error)?;
    let rows = client
        .query(&statement, args.values())
        .await
        .map_err(pg_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let start: NaiveDateTime = row.try_get(0).map_err(pg_error)?;
        let count: i64 = row.try_get(5).map_err(pg_error)?;
        out.push((
            row.try_get(1).map_err(pg_error)?,
            Partial {
                start: millis(start),
                sum: row.try_get(2).map_err(pg_error)?,
                min: row.try_get(3).map_err(pg_error)?,
                max: row.try_get(4).map_err(pg_error)?,
                count: u64::try_from(count).unwrap_or(0),
            },
        ));
    }
    Ok(out)
}

/// How far the rollup `view` has caught up with its table. A view QuestDB does not list
/// (dropped by hand) is treated as invalid: raw rows answer.
pub async fn freshness(client: &ClientWrapper, view: &str) -> Result<Freshness> {
    let statement = client
        .prepare_cached(
            "SELECT refresh_base_table_txn, base_table_txn, view_status \
             FROM materialized_views() WHERE view_name = $1::varchar",
        )
        .await
        .map_err(pg_error)?;
    let row = client
        .query_opt(&statement, &[&view])
        .await
        .map_err(pg_error)?;
    let Some(r) = row else {
        return Ok(Freshness {
            refreshed_txn: -1,
            applied_txn: 0,
            valid: false,
        });
    };
    let status: Option<String> = r.try_get(2).map_err(pg_error)?;
    Ok(Freshness {
        refreshed_txn: r
            .try_get::<_, Option<i64>>(0)
            .map_err(pg_error)?
            .unwrap_or(-1),
        applied_txn: r
            .try_get::<_, Option<i64>>(1)
            .map_err(pg_error)?
            .unwrap_or(0),
        valid: status.as_deref() != Some("invalid"),
    })
}

/// The time of the table's first row (its oldest partition's first), `None` if empty.
async fn first_ts(client: &ClientWrapper, table: &str) -> Result<Option<Timestamp>> {
    let statement = client
        .prepare_cached(&format!("SELECT ts FROM {table} LIMIT 1"))
        .await
        .map_err(pg_error)?;
    let row = client.query_opt(&statement, &[]).await.map_err(pg_error)?;
    match row {
        Some(r) => Ok(Some(millis(r.try_get(0).map_err(pg_error)?))),
        None => Ok(None),
    }
}

pub async fn latest(client: &tokio_postgres::Client, table: &str) -> Result<Vec<LatestRow>> {
    // Once at start, to warm the live cache; "latest" requests are served from that cache
    // (LATEST ON scans back through stale series).
    let sql = format!(
        "SELECT station, param, ts, value, status FROM {table} LATEST ON ts PARTITION BY station, param"
    );
    let rows = client.query(&sql, &[]).await.map_err(pg_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let ts: NaiveDateTime = row.try_get(2).map_err(pg_error)?;
        let code: String = row.try_get(4).map_err(pg_error)?;
        out.push(LatestRow {
            station: row.try_get(0).map_err(pg_error)?,
            param: row.try_get(1).map_err(pg_error)?,
            ts: millis(ts),
            value: row.try_get(3).map_err(pg_error)?,
            status: status_of(&code)?,
        });
    }
    Ok(out)
}

/// A station's records in `[from, to)`: each distinct reading time, with the earliest known
/// arrival of its readings (`min` skips rows without one).
pub async fn arrivals(
    client: &tokio_postgres::Client,
    table: &str,
    q: &ArrivalQuery,
) -> Result<Vec<RecordArrival>> {
    let (from, to) = (naive(q.from), naive(q.to));
    let mut args = Args::new();
    let sql = format!(
        "SELECT ts, min(arrived) FROM {table} WHERE {} AND ts >= {} AND ts < {} ORDER BY ts",
        args.symbol_eq("station", &q.station),
        args.bind(&from),
        args.bind(&to),
    );
    let rows = client.query(&sql, args.values()).await.map_err(pg_error)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let ts: NaiveDateTime = row.try_get(0).map_err(pg_error)?;
        let arrived: Option<NaiveDateTime> = row.try_get(1).map_err(pg_error)?;
        out.push(RecordArrival {
            ts: millis(ts),
            arrived: arrived.map(millis),
        });
    }
    Ok(out)
}

/// How long [`wait_applied`] waits for QuestDB to apply what it acknowledged.
const APPLY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until every committed write to `table` is visible to queries ([`applied`]).
pub async fn wait_applied(client: &tokio_postgres::Client, table: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    while !applied(client, table).await? {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Unavailable(
                "QuestDB did not apply its WAL in time".into(),
            ));
        }
        // QuestDB offers no notification for WAL apply: poll its own bookkeeping.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Whether every committed write to `readings` is visible to queries.
///
/// In `wal_tables()`, `writerTxn` is the last transaction readers see and `sequencerTxn` the
/// last one committed to the WAL; equal means every row is visible (QuestDB cookbook, "Check
/// transaction applied after ingestion"). The lag column is left out on purpose: its name
/// changed between versions (`writerLagTxnCount`, later `bufferedTxnSize`). A suspended table
/// never catches up, so it is an error rather than something to wait for.
pub async fn applied(client: &tokio_postgres::Client, table: &str) -> Result<bool> {
    let row = client
        .query_opt(
            "SELECT suspended, writerTxn, sequencerTxn FROM wal_tables() WHERE name = $1::varchar",
            &[&table],
        )
        .await
        .map_err(pg_error)?;
    let Some(r) = row else {
        return Ok(true);
    };
    let suspended: bool = r.try_get(0).map_err(pg_error)?;
    if suspended {
        return Err(Error::Unavailable(format!(
            "QuestDB suspended WAL apply of table `{table}` (see wal_tables(); \
             ALTER TABLE {table} RESUME WAL once the cause is fixed)"
        )));
    }
    let writer: i64 = r.try_get(1).map_err(pg_error)?;
    let sequencer: i64 = r.try_get(2).map_err(pg_error)?;
    Ok(writer >= sequencer)
}

/// The statement that drops the day partitions lying wholly before `cutoff`.
///
/// QuestDB evaluates DROP PARTITION's WHERE on each partition's timestamp, which is the
/// partition's start: `ts < cutoff` would also drop the day holding `cutoff`, readings after
/// it included. Comparing with the start of the cutoff's UTC day drops whole days only; the
/// older part of the cutoff's day goes with a later prune.
pub fn drop_partitions_sql(table: &str, cutoff: Timestamp) -> String {
    const DAY: i64 = 86_400_000;
    let ms = cutoff.as_millis();
    let day = Timestamp::from_millis(ms - ms.rem_euclid(DAY));
    // A timestamp we format ourselves; DDL takes no bind parameters.
    let at = naive(day).format("%Y-%m-%dT%H:%M:%S%.6fZ");
    format!("ALTER TABLE {table} DROP PARTITION WHERE ts < '{at}'")
}

/// Drops the day partitions that end before `cutoff` (QuestDB has no row deletes). On a WAL
/// table the drop is applied asynchronously, like a write.
pub async fn drop_before(
    client: &tokio_postgres::Client,
    table: &str,
    cutoff: Timestamp,
) -> Result<()> {
    match client
        .batch_execute(&drop_partitions_sql(table, cutoff))
        .await
    {
        Ok(()) => Ok(()),
        // Nothing old enough to drop: QuestDB refuses the statement with this message.
        Err(e)
            if server_message(&e)
                .is_some_and(|m| m.contains("no partitions matched WHERE clause")) =>
        {
            Ok(())
        }
        Err(e) => Err(pg_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_widths_and_calendar_offsets_are_written_from_numbers() {
        assert_eq!(sample_width(60_000).ok().as_deref(), Some("1m"));
        assert_eq!(sample_width(900_000).ok().as_deref(), Some("15m"));
        assert_eq!(sample_width(3_600_000).ok().as_deref(), Some("1h"));
        assert_eq!(sample_width(86_400_000).ok().as_deref(), Some("1d"));
        assert!(sample_width(1_500).is_err());
        // Widths that do not divide a day would start buckets elsewhere than SQLite does.
        assert!(sample_width(7 * 3_600_000).is_err());
        assert!(sample_width(2 * 86_400_000).is_err());
        assert!(sample_width(7 * 60_000).is_err());
        // Vietnam (+07:00): local midnight is 17:00 UTC.
        assert_eq!(
            calendar_offset(7 * 3_600_000).ok().as_deref(),
            Some("17:00")
        );
        assert_eq!(calendar_offset(0).ok().as_deref(), Some("00:00"));
        assert_eq!(
            calendar_offset(-3 * 3_600_000 - 1_800_000).ok().as_deref(),
            Some("03:30")
        );
        assert!(calendar_offset(1_000).is_err());
    }

    #[test]
    fn prune_drops_only_days_that_end_before_the_cutoff() {
        // 2024-01-05T12:00Z: the partition of 2024-01-05 holds readings after the cutoff.
        let cutoff = Timestamp::from_millis(1_704_456_000_000);
        assert_eq!(
            drop_partitions_sql("readings", cutoff),
            "ALTER TABLE readings DROP PARTITION WHERE ts < '2024-01-05T00:00:00.000000Z'"
        );
        let midnight = Timestamp::from_millis(1_704_412_800_000);
        assert!(
            drop_partitions_sql("readings", midnight).ends_with("'2024-01-05T00:00:00.000000Z'")
        );
    }
}
