//! The embedded store: SQLite (bundled, WAL mode) in `<storage.path>/quantrac.db`.
//!
//! # Schema (version 6, `PRAGMA user_version`)
//! ```text
//! series     (id INTEGER PRIMARY KEY, station, param, zone, UNIQUE (station, param))
//! readings   (series, ts, value REAL, status 0|1|2, PRIMARY KEY (series, ts)) WITHOUT ROWID
//!             (status check as comparisons, not `IN`: a per-row temporary b-tree) [v6]
//! quarantine (id AUTOINCREMENT, received_at, topic, encoding, reason, station, param, ts,
//!             value, detail, excerpt,
//!             total, reasons JSON, samples JSON, payload_bytes)  one row per message [v4]
//! quarantine_reasons (reason, entry, count) PRIMARY KEY (reason, entry)            [v4]
//! dead_letters (entry PRIMARY KEY, station, bytes, payload BLOB): whole payloads   [v4]
//! presence   (station PRIMARY KEY, last_seen, gateway 'online'|'offline', gateway_at,
//!             record_window: the station's `seq` window, saved with its readings)   [v3]
//! alerts     (id PRIMARY KEY, station, zone, param, rule, kind, severity 0|1|2,
//!             state 'open'|'acknowledged'|'resolved', first_at, last_at, resolved_at,
//!             updated_at, body: the whole alert as JSON)                       [v2]
//! rule_state (station PRIMARY KEY, blob: the alert engine's state, updated_at) [v2]
//! reading_revisions (id, station, param, ts, value, status, replaced_at: earlier versions
//!             of replaced readings, kept by a trigger on `readings`)          [v5]
//! ```
//! Times are UTC epoch milliseconds.
//!
//! # Invariants
//! - A reading's identity `(station, param, ts)` maps to exactly one row: `series` turns
//!   `(station, param)` into a small integer and `readings` is keyed by `(series, ts)`.
//!   Re-writing a key updates the row in place (last write wins), so re-sent data is stored
//!   once. New readings go in 64 to a statement (`INSERT OR IGNORE`); only a statement that
//!   found a key taken is followed by per-reading updates ([`sink`]). The clustered `WITHOUT ROWID` key keeps a series' rows together: range queries
//!   and "latest" are primary-key seeks (see `../shared/reference/storage-notes.md`).
//! - One writer. Only the writer thread ([`writer`]) writes; it commits whole
//!   [`WriteItem`](crate::storage::WriteItem)s, in queue order, in transactions of up to
//!   `storage.batch_max_rows` readings, and confirms an item's `Durable` only after the
//!   commit returned. With `sync = "full"` the commit has reached the disk.
//! - A failed commit is rolled back and retried (with backoff) until it succeeds or the store
//!   is closed: nothing is confirmed that is not stored, and nothing is silently dropped.
//! - Readers use their own read-only connections (WAL lets them run beside the writer) on
//!   tokio's blocking pool, never on the async workers.
//! - `quarantine` holds one row per rejected message and `dead_letters` its whole payload,
//!   written with the message; at most `quarantine.capacity` rows and
//!   `quarantine.dead_letter_max_bytes` of payloads, enforced in the transaction that inserts
//!   new ones by evicting from the station that holds the most, oldest first ([`quarantine`]).
//! - An alert row is the latest state of the alert (upserted by id with every event, in the
//!   same transaction as the readings that caused it); the filter columns repeat fields of
//!   `body` so that listings use indexes.

pub mod quarantine;
mod read;
mod revisions;
mod schema;
mod sink;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};

use super::faults::FaultSwitch;
use super::writer::{Writer, WriterConfig};
use super::{
    AggregateQuery, AlertPage, AlertQuery, ArrivalQuery, Error, LatestRow, PresenceRow,
    QuarantinePage, QuarantineQuery, RawQuery, ReadingPage, RecordArrival, Result, RevisionPage,
    RevisionQuery, SeriesBuckets, Store, WriteItem,
};
use crate::alerts::Alert;
use crate::config::{QuarantineConfig, StorageConfig, SyncMode};
use crate::quarantine::DeadLetter;
use crate::telemetry::Timestamp;
use read::ReadPool;
pub use sink::SqliteSink;

/// Prepared statements the writer connection keeps.
const WRITER_STATEMENTS: usize = 48;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "quantrac.db";

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub dir: PathBuf,
    pub sync: SyncMode,
    pub cache_mb: usize,
    /// Size of the write-ahead log that triggers a checkpoint, MiB.
    pub checkpoint_mb: usize,
    pub quarantine_capacity: usize,
    /// Bytes of whole rejected payloads kept (the dead-letter store).
    pub dead_letter_max_bytes: u64,
    /// How long the start-up `quick_check` may take ([`super::integrity`]; zero: skipped).
    pub integrity_check_timeout: std::time::Duration,
    pub writer: WriterConfig,
}

impl SqliteConfig {
    pub fn from_config(storage: &StorageConfig, quarantine: &QuarantineConfig) -> SqliteConfig {
        SqliteConfig {
            dir: storage.path.clone(),
            sync: storage.sync,
            cache_mb: storage.cache_mb,
            checkpoint_mb: storage.checkpoint_mb,
            quarantine_capacity: quarantine.capacity,
            dead_letter_max_bytes: quarantine.dead_letter_max_bytes,
            integrity_check_timeout: storage.integrity_check_timeout,
            writer: super::writer_config(storage),
        }
    }

    fn quarantine_bounds(&self) -> quarantine::Bounds {
        quarantine::Bounds {
            capacity: u64::try_from(self.quarantine_capacity).unwrap_or(u64::MAX),
            dead_letter_max_bytes: self.dead_letter_max_bytes,
        }
    }

    /// Defaults suitable for tests and tools: a directory and nothing else (no spool).
    pub fn in_dir(dir: impl Into<PathBuf>) -> SqliteConfig {
        SqliteConfig {
            dir: dir.into(),
            sync: SyncMode::Normal,
            cache_mb: 16,
            checkpoint_mb: 40,
            quarantine_capacity: 10_000,
            dead_letter_max_bytes: 256 * 1024 * 1024,
            integrity_check_timeout: std::time::Duration::from_secs(60),
            writer: WriterConfig {
                queue_capacity: 1024,
                queue_max_bytes: 64 * 1024 * 1024,
                batch_max_rows: 50_000,
                batch_max_delay: std::time::Duration::ZERO,
                spool: None,
            },
        }
    }
}

/// The embedded SQLite store. Cheap to share behind an `Arc`.
pub struct SqliteStore {
    writer: Writer,
    reader: StateReader,
}

/// Opens the database for writing, checks it (`quick_check`, bounded in time) and brings its
/// schema up to date.
fn open_writable(config: &SqliteConfig) -> Result<(Connection, PathBuf)> {
    std::fs::create_dir_all(&config.dir).map_err(|source| Error::DataDir {
        path: config.dir.clone(),
        source,
    })?;
    let path = config.dir.join(DB_FILE);
    let mut conn = open_connection(&path, false, config.cache_mb)?;
    // Before anything reads or migrates it: a damaged file stops the start here, named.
    super::integrity::quick_check(&conn, &path, config.integrity_check_timeout)?;
    let sync = match config.sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let checkpoint_bytes = i64::try_from(config.checkpoint_mb.saturating_mul(1 << 20));
    let pages = checkpoint_bytes.unwrap_or(i64::MAX) / page_size.max(512);
    conn.pragma_update(None, "wal_autocheckpoint", pages.max(1))?;
    // The writer's statements (readings, state, alerts, quarantine, revisions) number
    // about 25: rusqlite's default cache of 16 would prepare some again and again.
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
    schema::migrate(&mut conn)?;
    Ok((conn, path))
}

impl SqliteStore {
    /// Opens (creating if needed) the database and starts the writer thread.
    pub fn open(config: SqliteConfig) -> Result<SqliteStore> {
        SqliteStore::open_with(config, None)
    }

    /// As [`SqliteStore::open`], with commits that fail while `faults` says so (tests).
    pub fn open_with(config: SqliteConfig, faults: Option<&FaultSwitch>) -> Result<SqliteStore> {
        let (conn, path) = open_writable(&config)?;
        let mut sink: Box<dyn super::writer::Sink> =
            Box::new(SqliteSink::new(conn, config.quarantine_bounds()));
        if let Some(switch) = faults {
            sink = switch.wrap(sink);
        }
        let writer = Writer::start("sqlite-writer", sink, config.writer.clone())?;
        Ok(SqliteStore {
            writer,
            reader: StateReader(Arc::new(ReadPool::new(path))),
        })
    }

    /// A sink for everything but readings on this database, and a reader of it, for a
    /// backend that keeps its readings elsewhere (QuestDB).
    pub fn state_parts(config: &SqliteConfig) -> Result<(SqliteSink, StateReader)> {
        let (conn, path) = open_writable(config)?;
        let sink = SqliteSink::new(conn, config.quarantine_bounds()).without_readings();
        Ok((sink, StateReader(Arc::new(ReadPool::new(path)))))
    }

    /// Bytes waiting in the spool (the store was unreachable).
    pub fn spool_bytes(&self) -> u64 {
        self.writer.spool_bytes()
    }
}

/// Reads the state another backend keeps in SQLite: alerts, quarantine, presence, rule state.
#[derive(Clone)]
pub struct StateReader(Arc<ReadPool>);

impl StateReader {
    /// Runs `f` on a pooled read-only connection, on the blocking pool.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let pool = self.0.clone();
        tokio::task::spawn_blocking(move || pool.with(f))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    pub async fn presence(&self) -> Result<Vec<PresenceRow>> {
        self.read(read::presence).await
    }

    pub async fn quarantine(&self, query: QuarantineQuery) -> Result<QuarantinePage> {
        self.read(move |c| quarantine::list(c, &query)).await
    }

    pub async fn dead_letter(&self, id: u64) -> Result<DeadLetter> {
        self.read(move |c| quarantine::dead_letter(c, id)).await
    }

    pub async fn alerts(&self, query: AlertQuery) -> Result<AlertPage> {
        self.read(move |c| read::alerts(c, &query)).await
    }

    pub async fn revisions(&self, query: RevisionQuery) -> Result<RevisionPage> {
        self.read(move |c| revisions::revisions(c, &query)).await
    }

    pub async fn alert(&self, id: u64) -> Result<Option<Alert>> {
        self.read(move |c| read::alert(c, id)).await
    }

    pub async fn active_alerts(&self) -> Result<Vec<Alert>> {
        self.read(read::active_alerts).await
    }

    pub async fn max_alert_id(&self) -> Result<u64> {
        self.read(read::max_alert_id).await
    }

    pub async fn rule_states(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.read(read::rule_states).await
    }
}

/// Opens a connection with the settings every connection shares.
fn open_connection(path: &Path, read_only: bool, cache_mb: usize) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    if !read_only {
        // WAL: readers never block the writer and the writer never blocks readers.
        conn.pragma_update(None, "journal_mode", "WAL")?;
    }
    let cache_kib = i64::try_from(cache_mb.saturating_mul(1024)).unwrap_or(i64::MAX);
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

#[async_trait]
impl Store for SqliteStore {
    async fn write(&self, item: WriteItem) -> Result<()> {
        self.writer.write(item).await
    }

    async fn flush(&self) -> Result<()> {
        self.writer.flush().await
    }

    async fn readings(&self, query: RawQuery) -> Result<ReadingPage> {
        self.reader.read(move |c| read::readings(c, &query)).await
    }

    async fn aggregate(&self, query: AggregateQuery) -> Result<Vec<SeriesBuckets>> {
        self.reader.read(move |c| read::aggregate(c, &query)).await
    }

    async fn arrivals(&self, query: ArrivalQuery) -> Result<Vec<RecordArrival>> {
        self.reader.read(move |c| read::arrivals(c, &query)).await
    }

    async fn latest(&self) -> Result<Vec<LatestRow>> {
        self.reader.read(read::latest).await
    }

    async fn presence(&self) -> Result<Vec<PresenceRow>> {
        self.reader.presence().await
    }

    async fn quarantine(&self, query: QuarantineQuery) -> Result<QuarantinePage> {
        self.reader.quarantine(query).await
    }

    async fn dead_letter(&self, id: u64) -> Result<DeadLetter> {
        self.reader.dead_letter(id).await
    }

    async fn revisions(&self, query: RevisionQuery) -> Result<RevisionPage> {
        self.reader.revisions(query).await
    }

    async fn alerts(&self, query: AlertQuery) -> Result<AlertPage> {
        self.reader.alerts(query).await
    }

    async fn alert(&self, id: u64) -> Result<Option<Alert>> {
        self.reader.alert(id).await
    }

    async fn active_alerts(&self) -> Result<Vec<Alert>> {
        self.reader.active_alerts().await
    }

    async fn max_alert_id(&self) -> Result<u64> {
        self.reader.max_alert_id().await
    }

    async fn rule_states(&self) -> Result<Vec<(String, Vec<u8>)>> {
        self.reader.rule_states().await
    }

    async fn prune(&self, cutoff: Timestamp) -> Result<u64> {
        self.writer.prune(cutoff).await
    }

    async fn ping(&self) -> Result<()> {
        if self.writer.is_closed() {
            return Err(Error::Closed);
        }
        self.reader
            .read(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    fn write_failure(&self) -> Option<String> {
        self.writer.write_failure()
    }

    async fn close(&self) -> Result<()> {
        self.writer.close().await
    }
}
