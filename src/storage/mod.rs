//! Storage: the [`Store`] trait every backend implements, the query types the API speaks,
//! and the backends.
//!
//! - [`sqlite`]: the embedded store (default; nothing to install).
//! - [`questdb`]: the production store (readings in QuestDB; alerts and other small mutable
//!   state in the local SQLite database).
//! - [`writer`]: the writer thread every backend shares (group commit, spool, backpressure)
//!   over a backend's [`Sink`](writer::Sink); [`spool`]: the on-disk log that holds writes
//!   while the store is unreachable.
//! - [`faults`]: a sink wrapper that fails on demand, for fault tests.
//! - [`conformance`]: the storage test suite that every backend must pass.
//!
//! # Contract every backend keeps
//! - **Identity.** A reading is keyed by `(station, param, ts)` (milliseconds). Writing the
//!   same key again stores it once; the last value written wins (QuestDB `DEDUP UPSERT`
//!   semantics, so that both backends agree).
//! - **Revisions.** A write that changes the value or status of a stored key keeps the
//!   earlier version ([`Store::revisions`], counted in `quantrac_reading_revisions_total`);
//!   an identical re-send keeps nothing.
//! - **Durability before confirmation.** [`Store::write`] queues an item; the item's
//!   [`Durable`](crate::ack::Durable) is confirmed only once the item is committed so that it
//!   survives a crash. Items are committed in the order they were queued.
//! - **Backpressure.** `write` waits while the backend's queue is full; it never drops.
//! - **Ordering of reads.** Raw pages are ordered by `(ts, param)`; cursors continue strictly
//!   after the last row returned.

pub mod conformance;
pub mod faults;
pub mod integrity;
pub mod questdb;
pub mod spool;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;

use async_trait::async_trait;

use crate::ack::Durable;
use crate::alerts::{Alert, AlertState, Severity};
use crate::quarantine::{DeadLetter, QuarantineEntry, Reason, Rejected};
use crate::security::sequence::Window;
use crate::telemetry::{GatewayState, Reading, Status, Timestamp};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("cannot use the data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the database was written by a newer quantrac (schema {found}, this build reads {supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("the store is shut down")]
    Closed,
    #[error("storage task failed: {0}")]
    Task(String),
    #[error("stored alert {id} cannot be read: {reason}")]
    Corrupt { id: u64, reason: String },
    #[error("spool: {0}")]
    Spool(String),
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The server cannot hold quantrac's data (too old, or a table without deduplication).
    #[error("incompatible store: {0}")]
    Incompatible(String),
    /// A database file failed its start-up check ([`integrity`]).
    #[error(transparent)]
    Integrity(#[from] integrity::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything one ingested message (or one alert engine step) produces, written atomically.
#[derive(Debug, Default)]
pub struct WriteItem {
    pub readings: Vec<Reading>,
    pub rejected: Option<Rejected>,
    pub presence: Option<PresenceUpdate>,
    /// Alerts as they are after this step's events (upserted by id).
    pub alerts: Vec<Alert>,
    /// Alert engine rule state per station (replacing what was stored).
    pub rule_states: Vec<(Arc<str>, Vec<u8>)>,
    /// A station's record-counter window after this message (replacing what was stored):
    /// saved with the readings it let in, restored at start.
    pub record_window: Option<(Arc<str>, Window)>,
    /// A station whose stored record-counter window is removed (an admin reset: the next
    /// record starts a new window, after a restart too).
    pub record_window_reset: Option<Arc<str>>,
    /// Confirmed once the item is durable.
    pub done: Option<Durable>,
}

/// What a message tells about a station's presence.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PresenceUpdate {
    pub station: Arc<str>,
    /// Arrival time of valid data, if the message carried any.
    pub last_seen: Option<Timestamp>,
    /// A gateway announcement from the status topic, with its arrival time.
    pub gateway: Option<(GatewayState, Timestamp)>,
}

/// A station's stored presence (restores [`crate::live`] at start).
#[derive(Debug, Clone, PartialEq)]
pub struct PresenceRow {
    pub station: String,
    pub last_seen: Option<Timestamp>,
    pub gateway: Option<(GatewayState, Timestamp)>,
    /// The station's record-counter window, if it ever sent a `seq`.
    pub record_window: Option<Window>,
}

/// Filter on the Circular 10 status of readings.
pub type StatusFilter = Option<Status>;

/// A page of raw readings of one station.
#[derive(Debug, Clone, PartialEq)]
pub struct RawQuery {
    pub station: String,
    /// Parameters to include (at least one).
    pub params: Vec<String>,
    /// Inclusive start.
    pub from: Timestamp,
    /// Exclusive end.
    pub to: Timestamp,
    /// Continue strictly after this `(ts, param)` (from a cursor).
    pub after: Option<(Timestamp, String)>,
    pub limit: usize,
    pub status: StatusFilter,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredReading {
    pub param: String,
    pub ts: Timestamp,
    pub value: f64,
    pub status: Status,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReadingPage {
    pub readings: Vec<StoredReading>,
    pub has_more: bool,
}

/// The records of one station over `[from, to)` (see [`Store::arrivals`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ArrivalQuery {
    pub station: String,
    pub from: Timestamp,
    pub to: Timestamp,
}

/// One record of a station: a time it has readings for, and when the first of them arrived
/// (`None`: unknown, for readings stored before arrival times were kept).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RecordArrival {
    pub ts: Timestamp,
    pub arrived: Option<Timestamp>,
}

/// Time-bucketed aggregates of one station's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateQuery {
    pub station: String,
    pub params: Vec<String>,
    pub from: Timestamp,
    pub to: Timestamp,
    /// Bucket width in milliseconds.
    pub bucket_ms: i64,
    /// Buckets start where `(ts + align_offset_ms) % bucket_ms == 0`; the UTC offset of the
    /// calendar the buckets follow (Vietnam: 7 h, so day buckets start at local midnight).
    pub align_offset_ms: i64,
    pub status: StatusFilter,
}

impl AggregateQuery {
    /// The start of the bucket that holds `ts`.
    pub fn bucket_start(&self, ts: Timestamp) -> Timestamp {
        let shifted = ts.as_millis() + self.align_offset_ms;
        Timestamp::from_millis(shifted - shifted.rem_euclid(self.bucket_ms) - self.align_offset_ms)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub start: Timestamp,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub count: u64,
}

/// The non-empty buckets of one parameter, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesBuckets {
    pub param: String,
    pub buckets: Vec<Bucket>,
}

/// The newest stored reading of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestRow {
    pub station: String,
    pub param: String,
    pub ts: Timestamp,
    pub value: f64,
    pub status: Status,
}

/// An earlier version of a stored reading, replaced by a write of the same `(station, param,
/// ts)` with a different value or status.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    pub station: String,
    pub param: String,
    pub ts: Timestamp,
    /// The value and status this version had.
    pub value: f64,
    pub status: Status,
    /// When the store replaced it.
    pub replaced_at: Timestamp,
}

/// Earlier versions of one station's readings whose time is in `[from, to)`, ordered by
/// `(ts, param, replaced_at)`.
#[derive(Debug, Clone, PartialEq)]
pub struct RevisionQuery {
    pub station: String,
    pub params: Vec<String>,
    pub from: Timestamp,
    pub to: Timestamp,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RevisionPage {
    pub revisions: Vec<Revision>,
    pub has_more: bool,
}

/// Quarantine listing, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuarantineQuery {
    /// Entries of messages that came from this station (its topic or file).
    pub station: Option<String>,
    /// Entries with at least one rejection of this reason.
    pub reason: Option<Reason>,
    /// Continue with entries older than this id (from a cursor).
    pub before_id: Option<u64>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QuarantinePage {
    pub entries: Vec<QuarantineEntry>,
    pub has_more: bool,
}

/// Alert listing, newest first. Time bounds select alerts active at some point in
/// `[from, to)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    pub state: Option<AlertState>,
    pub station: Option<String>,
    pub zone: Option<String>,
    /// Minimum severity.
    pub severity: Option<Severity>,
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    pub before_id: Option<u64>,
    pub limit: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertPage {
    pub alerts: Vec<Alert>,
    pub has_more: bool,
}

/// A storage backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Queues an item for durable storage, waiting while the queue is full. The item's
    /// `done` is confirmed after its commit.
    async fn write(&self, item: WriteItem) -> Result<()>;

    /// Resolves once everything queued before the call is durable, and visible to reads
    /// unless it is waiting in the spool.
    async fn flush(&self) -> Result<()>;

    /// A page of raw readings ordered by `(ts, param)`.
    async fn readings(&self, query: RawQuery) -> Result<ReadingPage>;

    /// The station's records (distinct reading times) in time order, each with the earliest
    /// arrival of its readings: what the connectivity report counts.
    async fn arrivals(&self, query: ArrivalQuery) -> Result<Vec<RecordArrival>>;

    /// Aggregates per bucket for each parameter of the query (parameters without data are
    /// returned with no buckets).
    async fn aggregate(&self, query: AggregateQuery) -> Result<Vec<SeriesBuckets>>;

    /// The newest reading of every stored series.
    async fn latest(&self) -> Result<Vec<LatestRow>>;

    /// The stored presence of every station seen.
    async fn presence(&self) -> Result<Vec<PresenceRow>>;

    /// Earlier versions of readings that were replaced (revision history).
    async fn revisions(&self, query: RevisionQuery) -> Result<RevisionPage>;

    /// Quarantine entries (one per rejected message), newest first.
    async fn quarantine(&self, query: QuarantineQuery) -> Result<QuarantinePage>;

    /// The whole payload of quarantine entry `id`, from the dead-letter store.
    async fn dead_letter(&self, id: u64) -> Result<DeadLetter>;

    /// Alerts, newest first.
    async fn alerts(&self, query: AlertQuery) -> Result<AlertPage>;

    /// One alert by id.
    async fn alert(&self, id: u64) -> Result<Option<Alert>>;

    /// Every open or acknowledged alert (restores the alert engine at start).
    async fn active_alerts(&self) -> Result<Vec<Alert>>;

    /// The highest alert id ever stored (0 if none).
    async fn max_alert_id(&self) -> Result<u64>;

    /// The alert engine's saved rule state, per station.
    async fn rule_states(&self) -> Result<Vec<(String, Vec<u8>)>>;

    /// Deletes readings older than `cutoff`; returns how many.
    async fn prune(&self, cutoff: Timestamp) -> Result<u64>;

    /// Checks the store answers (readiness).
    async fn ping(&self) -> Result<()>;

    /// Why the store does not take writes now (its last commit failed: a full disk, an I/O
    /// error), or `None` while it does. Reads may still work (readiness reports both).
    fn write_failure(&self) -> Option<String> {
        None
    }

    /// Commits what is queued and stops the writer. Later writes fail with `Closed`.
    async fn close(&self) -> Result<()>;
}

/// Writer settings from the `[storage]` section (shared by every backend).
pub fn writer_config(storage: &crate::config::StorageConfig) -> writer::WriterConfig {
    writer::WriterConfig {
        queue_capacity: storage.queue_capacity,
        queue_max_bytes: storage.queue_max_mb.saturating_mul(1024 * 1024),
        batch_max_rows: storage.batch_max_rows,
        batch_max_delay: storage.batch_max_delay,
        spool: storage.spool.enabled.then(|| {
            let dir = if storage.spool.path.as_os_str().is_empty() {
                storage.path.join("spool")
            } else {
                storage.spool.path.clone()
            };
            (dir, storage.spool.max_bytes)
        }),
    }
}
