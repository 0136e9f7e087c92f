//! The writer thread: the only code that writes to the database.
//!
//! Group commit: the thread blocks for the first command, then takes whatever else is already
//! queued (up to `batch_max_rows` readings) and commits it in one transaction. Under light
//! load every message is committed on its own at once; under heavy load transactions grow,
//! which is what makes SQLite fast. Commands other than writes (flush, prune, close) end a
//! batch, so they are answered only after every write queued before them is committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::SqliteConfig;
use crate::alerts::Alert;
use crate::metrics as m;
use crate::quarantine::Rejected;
use crate::storage::{PresenceUpdate, Result, WriteItem};
use crate::telemetry::{Reading, Timestamp};

// Writes are nearly every command: boxing them would cost an allocation per message to
// save a few hundred bytes per queue slot.
#[allow(clippy::large_enum_variant)]
pub(super) enum Command {
    Write(WriteItem),
    Flush(oneshot::Sender<()>),
    Prune(Timestamp, oneshot::Sender<Result<u64>>),
    Close(oneshot::Sender<()>),
}

const UPSERT_READING: &str =
    "INSERT INTO readings (series, ts, value, status) VALUES (?1, ?2, ?3, ?4)
     ON CONFLICT (series, ts) DO UPDATE SET value = excluded.value, status = excluded.status
     WHERE value IS NOT excluded.value OR status IS NOT excluded.status";

const UPSERT_SERIES: &str = "INSERT INTO series (station, param, zone) VALUES (?1, ?2, ?3)
     ON CONFLICT (station, param) DO UPDATE SET zone = excluded.zone RETURNING id";

const INSERT_QUARANTINE: &str = "INSERT INTO quarantine
     (received_at, topic, encoding, reason, station, param, ts, value, detail, excerpt)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)";

const UPSERT_LAST_SEEN: &str = "INSERT INTO presence (station, last_seen) VALUES (?1, ?2)
     ON CONFLICT (station) DO UPDATE SET last_seen = excluded.last_seen
     WHERE last_seen IS NULL OR excluded.last_seen > last_seen";

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

pub(super) struct Writer {
    conn: Connection,
    series: SeriesIds,
    batch_max_rows: usize,
    quarantine_capacity: i64,
    closing: Arc<AtomicBool>,
}

impl Writer {
    pub(super) fn new(conn: Connection, config: &SqliteConfig, closing: Arc<AtomicBool>) -> Writer {
        Writer {
            conn,
            series: HashMap::new(),
            batch_max_rows: config.batch_max_rows,
            quarantine_capacity: i64::try_from(config.quarantine_capacity).unwrap_or(i64::MAX),
            closing,
        }
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        let mut batch: Vec<WriteItem> = Vec::new();
        while let Some(first) = rx.blocking_recv() {
            let mut next = Some(first);
            let mut rows = 0;
            // Take writes until the batch is full or a non-write command arrives.
            let control = loop {
                match next.take() {
                    Some(Command::Write(item)) => {
                        rows += item.readings.len();
                        batch.push(item);
                    }
                    Some(other) => break Some(other),
                    None => {}
                }
                if rows >= self.batch_max_rows {
                    break None;
                }
                match rx.try_recv() {
                    Ok(cmd) => next = Some(cmd),
                    Err(_) => break None,
                }
            };
            if !batch.is_empty() {
                self.commit_with_retry(&mut batch);
            }
            match control {
                Some(Command::Flush(reply)) => {
                    let _ = reply.send(());
                }
                Some(Command::Prune(cutoff, reply)) => {
                    let _ = reply.send(self.prune(cutoff));
                }
                Some(Command::Close(reply)) => {
                    let _ = reply.send(());
                    break;
                }
                Some(Command::Write(_)) | None => {}
            }
        }
        // Best effort on the way out: a clean WAL makes the next start faster.
        if let Err(e) = self.conn.pragma_update(None, "wal_checkpoint", "TRUNCATE") {
            tracing::debug!(error = %e, "WAL checkpoint at close failed");
        }
    }

    /// Commits `batch`, retrying with backoff on failure, then confirms every item. If the
    /// store is closing while commits fail, gives up: the items' `Durable`s are dropped
    /// unconfirmed and ingest withholds their acknowledgements.
    fn commit_with_retry(&mut self, batch: &mut Vec<WriteItem>) {
        let mut backoff = Duration::from_millis(50);
        loop {
            let started = Instant::now();
            match self.commit(batch) {
                Ok(rows) => {
                    metrics::histogram!(m::STORE_COMMIT_SECONDS)
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!(m::STORE_BATCH_ROWS).record(rows as f64);
                    metrics::counter!(m::STORE_READINGS_TOTAL).increment(rows as u64);
                    for item in batch.drain(..) {
                        if let Some(done) = item.done {
                            done.confirm();
                        }
                    }
                    return;
                }
                Err(e) => {
                    // Ids created in the failed transaction were rolled back with it.
                    self.series.clear();
                    metrics::counter!(m::STORE_ERRORS_TOTAL).increment(1);
                    if self.closing.load(Ordering::SeqCst) {
                        tracing::error!(error = %e, items = batch.len(),
                            "store commit failed while closing; the data stays unacknowledged at the broker");
                        batch.clear();
                        return;
                    }
                    tracing::error!(error = %e, items = batch.len(), retry_in = ?backoff,
                        "store commit failed; retrying (ingest waits meanwhile)");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn commit(&mut self, batch: &[WriteItem]) -> rusqlite::Result<usize> {
        let tx = self.conn.transaction()?;
        let mut rows = 0;
        let mut quarantined = false;
        let mut last_seen: HashMap<&Arc<str>, Timestamp> = HashMap::new();
        {
            let mut upsert = tx.prepare_cached(UPSERT_READING)?;
            for item in batch {
                for r in &item.readings {
                    let series = series_id(&tx, &mut self.series, r)?;
                    upsert.execute(params![series, r.ts.as_millis(), r.value, r.status.as_u8()])?;
                }
                rows += item.readings.len();
                if let Some(rejected) = &item.rejected {
                    insert_rejected(&tx, rejected)?;
                    quarantined = true;
                }
                if let Some(p) = &item.presence {
                    record_presence(&tx, p, &mut last_seen)?;
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
        for (station, seen) in last_seen {
            tx.prepare_cached(UPSERT_LAST_SEEN)?
                .execute(params![&**station, seen.as_millis()])?;
        }
        if quarantined {
            tx.execute(
                "DELETE FROM quarantine WHERE id <= (SELECT max(id) FROM quarantine) - ?1",
                [self.quarantine_capacity],
            )?;
        }
        tx.commit()?;
        Ok(rows)
    }

    fn prune(&mut self, cutoff: Timestamp) -> Result<u64> {
        let tx = self.conn.transaction()?;
        let deleted = tx.execute(
            "DELETE FROM readings WHERE series IN (SELECT id FROM series) AND ts < ?1",
            [cutoff.as_millis()],
        )?;
        tx.commit()?;
        Ok(deleted as u64)
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

fn insert_rejected(tx: &Transaction<'_>, rejected: &Rejected) -> rusqlite::Result<()> {
    let mut insert = tx.prepare_cached(INSERT_QUARANTINE)?;
    for r in &rejected.rejections {
        insert.execute(params![
            rejected.received_at.as_millis(),
            rejected.topic,
            rejected.encoding.map(|e| e.as_str()),
            r.reason.code(),
            r.station,
            r.param,
            r.ts.map(Timestamp::as_millis),
            r.value.filter(|v| v.is_finite()),
            r.detail,
            rejected.excerpt,
        ])?;
    }
    Ok(())
}

fn record_presence<'a>(
    tx: &Transaction<'_>,
    p: &'a PresenceUpdate,
    last_seen: &mut HashMap<&'a Arc<str>, Timestamp>,
) -> rusqlite::Result<()> {
    if let Some(seen) = p.last_seen {
        let entry = last_seen.entry(&p.station).or_insert(seen);
        *entry = (*entry).max(seen);
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
