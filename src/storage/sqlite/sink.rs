//! The embedded store's write path: commits batches in one SQLite transaction each, on the
//! shared writer thread ([`crate::storage::writer`]), which is the only code that writes.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, Transaction};

use super::quarantine::{self, Bounds, Evicted};
use crate::alerts::Alert;
use crate::metrics as m;
use crate::security::sequence::Window;
use crate::storage::writer::Sink;
use crate::storage::{PresenceUpdate, Result, Revision, WriteItem};
use crate::telemetry::{Reading, Timestamp};

/// Readings are written in two steps, because nearly all of them are new: first inserted
/// where their key is free, `CHUNK` to a statement; then, only for a chunk where some key
/// was taken already (a re-sent or corrected reading), each reading of the chunk in order is
/// written over the stored one where it differs, and the revision trigger keeps the version
/// it replaced. Same result as one upsert per reading, at about 1.5 times the rate for new
/// readings (one statement execution per 64 readings instead of one per reading).
const CHUNK: usize = 64;

/// A re-sent reading keeps its first arrival (the `INSERT OR IGNORE`), a corrected one too
/// (the update leaves `arrived` alone): the data was received then.
const INSERT_READING: &str =
    "INSERT OR IGNORE INTO readings (series, ts, value, status, arrived) VALUES (?1, ?2, ?3, ?4, ?5)";

const UPDATE_READING: &str = "UPDATE readings SET value = ?3, status = ?4
     WHERE series = ?1 AND ts = ?2 AND (value IS NOT ?3 OR status IS NOT ?4)";

/// `INSERT_READING` for `CHUNK` readings at once.
fn insert_chunk_sql() -> String {
    let mut sql =
        String::from("INSERT OR IGNORE INTO readings (series, ts, value, status, arrived) VALUES ");
    for i in 0..CHUNK {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?)");
    }
    sql
}

/// A reading as the `readings` table holds it.
struct Row {
    series: i64,
    ts: i64,
    value: f64,
    status: u8,
    /// When the message that brought it arrived (its presence update says).
    arrived: Option<i64>,
}

/// A record (a station's reading time) keeps its first known arrival.
const UPSERT_RECORD: &str = "INSERT INTO records (station, ts, arrived) VALUES (?1, ?2, ?3)
     ON CONFLICT (station, ts) DO UPDATE SET arrived = coalesce(records.arrived, excluded.arrived)";

const INSERT_REVISION: &str = "INSERT INTO reading_revisions
     (station, param, ts, value, status, replaced_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

const UPSERT_SERIES: &str = "INSERT INTO series (station, param, zone) VALUES (?1, ?2, ?3)
     ON CONFLICT (station, param) DO UPDATE SET zone = excluded.zone RETURNING id";

/// A station's newest arrival (kept if newer) and record-counter window (kept unless none
/// came), once per batch.
const UPSERT_SEEN: &str = "INSERT INTO presence (station, last_seen, record_window)
     VALUES (?1, ?2, ?3)
     ON CONFLICT (station) DO UPDATE SET
       last_seen = CASE WHEN last_seen IS NULL OR excluded.last_seen > last_seen
                        THEN excluded.last_seen ELSE last_seen END,
       record_window = coalesce(excluded.record_window, record_window)";

/// An admin reset of a station's record counter.
const CLEAR_WINDOW: &str = "UPDATE presence SET record_window = NULL WHERE station = ?1";

const UPSERT_ALERT: &str = "INSERT INTO alerts
     (id, station, zone, param, rule, kind, severity, state, first_at, last_at, resolved_at, updated_at, body)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
     ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state,
       last_at = excluded.last_at, resolved_at = excluded.resolved_at,
       updated_at = excluded.updated_at, body = excluded.body";

const UPSERT_RULE_STATE: &str =
    "INSERT INTO rule_state (station, blob, updated_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (station) DO UPDATE SET blob = excluded.blob, updated_at = excluded.updated_at";

const UPSERT_GATEWAY: &str = "INSERT INTO presence (station, gateway, gateway_at) VALUES (?1, ?2, ?3)
     ON CONFLICT (station) DO UPDATE SET gateway = excluded.gateway, gateway_at = excluded.gateway_at";

/// Series ids by station then parameter, so that lookups take `&str` without allocating.
type SeriesIds = HashMap<Arc<str>, HashMap<Arc<str>, i64>>;

/// Writes to the database over the writer connection.
pub struct SqliteSink {
    conn: Connection,
    series: SeriesIds,
    /// The batch's readings, kept between batches for its capacity.
    rows: Vec<Row>,
    /// The batch's records: `(station, ts, arrival)`, one per reading time of a station.
    records: Vec<(Arc<str>, i64, Option<i64>)>,
    insert_chunk: String,
    quarantine: Bounds,
    /// Whether readings are stored here (no: another backend holds them, and this database
    /// keeps the rest: alerts, quarantine, presence, rule state).
    readings: bool,
}

impl SqliteSink {
    pub(super) fn new(conn: Connection, quarantine: Bounds) -> SqliteSink {
        SqliteSink {
            conn,
            series: HashMap::new(),
            rows: Vec::new(),
            records: Vec::new(),
            insert_chunk: insert_chunk_sql(),
            quarantine,
            readings: true,
        }
    }

    /// Everything but readings.
    pub(super) fn without_readings(mut self) -> SqliteSink {
        self.readings = false;
        self
    }
    /// Commits `batch` in one transaction; returns the readings stored and what the
    /// quarantine's bounds evicted (to be counted once committed).
    pub fn transact(&mut self, batch: &[WriteItem]) -> rusqlite::Result<(usize, Evicted)> {
        let tx = self.conn.transaction()?;
        let mut rows = 0;
        let mut quarantined = false;
        let mut seen: HashMap<&Arc<str>, Seen<'_>> = HashMap::new();
        self.rows.clear();
        self.records.clear();
        {
            for item in batch {
                let arrived = item
                    .presence
                    .as_ref()
                    .and_then(|p| p.last_seen)
                    .map(Timestamp::as_millis);
                for r in item.readings.iter().filter(|_| self.readings) {
                    self.rows.push(Row {
                        series: series_id(&tx, &mut self.series, r)?,
                        ts: r.ts.as_millis(),
                        value: r.value,
                        status: r.status.as_u8(),
                        arrived,
                    });
                    // A record's readings come together: one entry per record.
                    let ts = r.ts.as_millis();
                    if self
                        .records
                        .last()
                        .is_none_or(|(s, t, _)| *t != ts || *s != r.station)
                    {
                        self.records.push((r.station.clone(), ts, arrived));
                    }
                }
                rows += item.readings.len();
                if let Some(rejected) = &item.rejected {
                    quarantine::insert(&tx, rejected)?;
                    quarantined = true;
                }
                if let Some(p) = &item.presence {
                    record_presence(&tx, p, &mut seen)?;
                }
                if let Some((station, window)) = &item.record_window {
                    // Items come in the order they were validated: the last window is newest.
                    let entry = seen.entry(station).or_default();
                    entry.window = Some(window);
                    entry.cleared = false;
                }
                if let Some(station) = &item.record_window_reset {
                    // An admin reset: the stored window goes, unless a later item brings a
                    // new one.
                    let entry = seen.entry(station).or_default();
                    entry.window = None;
                    entry.cleared = true;
                }
                for alert in &item.alerts {
                    upsert_alert(&tx, alert)?;
                }
                for (station, blob) in &item.rule_states {
                    tx.prepare_cached(UPSERT_RULE_STATE)?.execute(params![
                        &**station,
                        blob,
                        Timestamp::now().as_millis()
                    ])?;
                }
            }
        }
        let revisions = write_rows(&tx, &self.rows, &self.insert_chunk)?;
        {
            let mut record = tx.prepare_cached(UPSERT_RECORD)?;
            for (station, ts, arrived) in &self.records {
                record.execute(params![&**station, ts, arrived])?;
            }
        }
        for (station, seen) in seen {
            let window = seen.window.map(Window::to_bytes);
            tx.prepare_cached(UPSERT_SEEN)?.execute(params![
                &**station,
                seen.last.map(Timestamp::as_millis),
                window.as_ref().map(|w| w.as_slice()),
            ])?;
            if seen.cleared {
                tx.prepare_cached(CLEAR_WINDOW)?.execute([&**station])?;
            }
        }
        let evicted = if quarantined {
            quarantine::enforce(&tx, self.quarantine)?
        } else {
            Evicted::default()
        };
        tx.commit()?;
        if revisions > 0 {
            metrics::counter!(m::READING_REVISIONS_TOTAL).increment(revisions);
        }
        Ok((rows, evicted))
    }

    /// Keeps the earlier version of a reading that a backend storing readings elsewhere
    /// found replaced (the embedded store's trigger does this itself).
    pub fn keep_revisions(&mut self, revisions: &[Revision]) -> rusqlite::Result<()> {
        if revisions.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT_REVISION)?;
            for r in revisions {
                insert.execute(params![
                    r.station,
                    r.param,
                    r.ts.as_millis(),
                    r.value,
                    r.status.as_u8(),
                    r.replaced_at.as_millis()
                ])?;
            }
        }
        tx.commit()?;
        metrics::counter!(m::READING_REVISIONS_TOTAL).increment(revisions.len() as u64);
        Ok(())
    }

    fn delete_older(&mut self, cutoff: Timestamp) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let deleted = tx.execute(
            "DELETE FROM readings WHERE series IN (SELECT id FROM series) AND ts < ?1",
            [cutoff.as_millis()],
        )?;
        // Per station (the key's prefix), not a scan of the whole table.
        tx.execute(
            "DELETE FROM records WHERE station IN (SELECT DISTINCT station FROM series) AND ts < ?1",
            [cutoff.as_millis()],
        )?;
        // Earlier versions go with the readings they were replaced in.
        tx.execute(
            "DELETE FROM reading_revisions WHERE ts < ?1",
            [cutoff.as_millis()],
        )?;
        tx.commit()?;
        Ok(deleted as u64)
    }
}

impl Sink for SqliteSink {
    fn commit(&mut self, items: &[WriteItem]) -> Result<usize> {
        let (rows, evicted) = self.transact(items).inspect_err(|_| {
            // Ids created in the failed transaction were rolled back with it.
            self.series.clear();
        })?;
        evicted.count();
        Ok(rows)
    }

    fn prune(&mut self, cutoff: Timestamp) -> Result<u64> {
        self.delete_older(cutoff)
    }

    fn close(&mut self) {
        // Best effort on the way out: a clean WAL makes the next start faster.
        if let Err(e) = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::debug!(error = %e, "WAL checkpoint at close failed");
        }
    }
}

/// Writes `rows` in order (see [`CHUNK`]); returns how many replaced a different stored
/// version (each kept as a revision by the trigger).
fn write_rows(tx: &Transaction<'_>, rows: &[Row], insert_chunk: &str) -> rusqlite::Result<u64> {
    let mut revisions = 0;
    let mut update = tx.prepare_cached(UPDATE_READING)?;
    let mut overwrite = |r: &Row| -> rusqlite::Result<()> {
        revisions += update.execute(params![r.series, r.ts, r.value, r.status])? as u64;
        Ok(())
    };
    for chunk in rows.chunks(CHUNK) {
        if chunk.len() == CHUNK {
            let mut insert = tx.prepare_cached(insert_chunk)?;
            for (i, r) in chunk.iter().enumerate() {
                insert.raw_bind_parameter(5 * i + 1, r.series)?;
                insert.raw_bind_parameter(5 * i + 2, r.ts)?;
                insert.raw_bind_parameter(5 * i + 3, r.value)?;
                insert.raw_bind_parameter(5 * i + 4, r.status)?;
                insert.raw_bind_parameter(5 * i + 5, r.arrived)?;
            }
            if insert.raw_execute()? < CHUNK {
                // Readings of the chunk that were ignored are written over their key, in
                // order; the ones just inserted find themselves and change nothing.
                chunk.iter().try_for_each(&mut overwrite)?;
            }
        } else {
            let mut insert = tx.prepare_cached(INSERT_READING)?;
            for r in chunk {
                if insert.execute(params![r.series, r.ts, r.value, r.status, r.arrived])? == 0 {
                    overwrite(r)?;
                }
            }
        }
    }
    Ok(revisions)
}

fn series_id(tx: &Transaction<'_>, cache: &mut SeriesIds, r: &Reading) -> rusqlite::Result<i64> {
    if let Some(&id) = cache
        .get(&*r.station)
        .and_then(|params| params.get(&*r.param))
    {
        return Ok(id);
    }
    let id: i64 = tx
        .prepare_cached(UPSERT_SERIES)?
        .query_row(params![&*r.station, &*r.param, &*r.zone], |row| row.get(0))?;
    cache
        .entry(r.station.clone())
        .or_default()
        .insert(r.param.clone(), id);
    Ok(id)
}

fn upsert_alert(tx: &Transaction<'_>, a: &Alert) -> rusqlite::Result<()> {
    let body = serde_json::to_string(a)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    tx.prepare_cached(UPSERT_ALERT)?.execute(params![
        i64::try_from(a.id).unwrap_or(i64::MAX),
        &*a.station,
        &*a.zone,
        a.param.as_deref(),
        &*a.rule,
        a.kind.as_str(),
        a.severity as u8,
        a.state.as_str(),
        a.first_at.as_millis(),
        a.last_at.as_millis(),
        a.resolved_at.map(Timestamp::as_millis),
        a.updated_at.as_millis(),
        body,
    ])?;
    Ok(())
}

/// What a batch tells about one station, written once at its end.
#[derive(Default)]
struct Seen<'a> {
    last: Option<Timestamp>,
    window: Option<&'a Window>,
    /// The stored window is to be removed (an admin reset).
    cleared: bool,
}

fn record_presence<'a>(
    tx: &Transaction<'_>,
    p: &'a PresenceUpdate,
    seen: &mut HashMap<&'a Arc<str>, Seen<'a>>,
) -> rusqlite::Result<()> {
    if let Some(at) = p.last_seen {
        let entry = seen.entry(&p.station).or_default();
        entry.last = entry.last.max(Some(at));
    }
    if let Some((state, at)) = p.gateway {
        tx.prepare_cached(UPSERT_GATEWAY)?.execute(params![
            &*p.station,
            state.as_str(),
            at.as_millis()
        ])?;
    }
    Ok(())
}
