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

const UPSERT_READING: &str =
    "INSERT INTO readings (series, ts, value, status) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (series, ts) DO UPDATE SET value = excluded.value, status = excluded.status
     WHERE value IS NOT excluded.value OR status IS NOT excluded.status";

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
        let mut revisions = 0;
        let mut quarantined = false;
        let mut seen: HashMap<&Arc<str>, Seen<'_>> = HashMap::new();
        {
            let mut upsert = tx.prepare_cached(UPSERT_READING)?;
            for item in batch {
                for r in item.readings.iter().filter(|_| self.readings) {
                    let series = series_id(&tx, &mut self.series, r)?;
                    // The revision trigger's insert counts in the total but not in the
                    // statement's own changes: the difference is the revisions kept.
                    let before = tx.total_changes();
                    let changed = upsert.execute(params![
                        series,
                        r.ts.as_millis(),
                        r.value,
                        r.status.as_u8()
                    ])?;
                    revisions += tx.total_changes() - before - changed as u64;
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
