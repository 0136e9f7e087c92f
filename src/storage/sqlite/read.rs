//! Queries, on read-only connections from a small pool.
//!
//! Every query is a primary-key seek per series: a station's parameters are looked up in
//! `series`, each series is read in `(series, ts)` order, and multi-parameter pages are merged
//! in memory (each series contributes at most `limit + 1` rows, so the merge is bounded).

use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension};

use super::open_connection;
use crate::alerts::Alert;
use crate::security::sequence::Window;
use crate::storage::{
    AggregateQuery, AlertPage, AlertQuery, ArrivalQuery, Bucket, Error, LatestRow, PresenceRow,
    RawQuery, ReadingPage, RecordArrival, Result, SeriesBuckets, StoredReading,
};
use crate::telemetry::{GatewayState, Status, Timestamp};

/// Idle read connections kept for reuse.
const MAX_IDLE: usize = 8;
/// Page cache per read connection, in MiB.
const READ_CACHE_MB: usize = 8;

pub(super) struct ReadPool {
    path: PathBuf,
    idle: parking_lot::Mutex<Vec<Connection>>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf) -> ReadPool {
        ReadPool {
            path,
            idle: parking_lot::Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on a pooled connection (blocking: call from the blocking pool).
    pub(super) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.idle.lock().pop();
        let conn = match conn {
            Some(c) => c,
            None => open_connection(&self.path, true, READ_CACHE_MB)?,
        };
        let out = f(&conn);
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        out
    }
}

fn series_id(conn: &Connection, station: &str, param: &str) -> Result<Option<i64>> {
    Ok(conn
        .prepare_cached("SELECT id FROM series WHERE station = ?1 AND param = ?2")?
        .query_row(params![station, param], |r| r.get(0))
        .optional()?)
}

fn status_of(code: i64) -> rusqlite::Result<Status> {
    u8::try_from(code)
        .ok()
        .and_then(Status::from_u8)
        .ok_or_else(|| rusqlite::Error::IntegralValueOutOfRange(3, code))
}

pub(super) fn readings(conn: &Connection, q: &RawQuery) -> Result<ReadingPage> {
    let limit = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let status = q.status.map(|s| i64::from(s.as_u8()));
    let mut rows: Vec<StoredReading> = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT ts, value, status FROM readings
         WHERE series = ?1 AND ts >= ?2 AND ts < ?3 AND (?4 IS NULL OR status = ?4)
         ORDER BY ts LIMIT ?5",
    )?;
    for param in &q.params {
        let Some(series) = series_id(conn, &q.station, param)? else {
            continue;
        };
        // Strictly after (ts, param) in (ts, param) order.
        let start = match &q.after {
            Some((ts, after_param)) if param.as_str() > after_param.as_str() => *ts,
            Some((ts, _)) => Timestamp::from_millis(ts.as_millis().saturating_add(1)),
            None => q.from,
        }
        .max(q.from);
        let found = stmt.query_map(
            params![series, start.as_millis(), q.to.as_millis(), status, limit],
            |r| {
                Ok(StoredReading {
                    param: param.clone(),
                    ts: Timestamp::from_millis(r.get(0)?),
                    value: r.get(1)?,
                    status: status_of(r.get(2)?)?,
                })
            },
        )?;
        for row in found {
            rows.push(row?);
        }
    }
    rows.sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.param.cmp(&b.param)));
    let has_more = rows.len() > q.limit;
    rows.truncate(q.limit);
    Ok(ReadingPage {
        readings: rows,
        has_more,
    })
}

pub(super) fn aggregate(conn: &Connection, q: &AggregateQuery) -> Result<Vec<SeriesBuckets>> {
    let status = q.status.map(|s| i64::from(s.as_u8()));
    // Bucket start = shifted - (shifted mod width) - offset, with a non-negative modulo.
    let mut stmt = conn.prepare_cached(
        "SELECT (ts + ?4) - ((((ts + ?4) % ?5) + ?5) % ?5) - ?4 AS start,
                avg(value), min(value), max(value), count(*)
         FROM readings
         WHERE series = ?1 AND ts >= ?2 AND ts < ?3 AND (?6 IS NULL OR status = ?6)
         GROUP BY start ORDER BY start",
    )?;
    let mut out = Vec::with_capacity(q.params.len());
    for param in &q.params {
        let mut buckets = Vec::new();
        if let Some(series) = series_id(conn, &q.station, param)? {
            let found = stmt.query_map(
                params![
                    series,
                    q.from.as_millis(),
                    q.to.as_millis(),
                    q.align_offset_ms,
                    q.bucket_ms,
                    status
                ],
                |r| {
                    Ok(Bucket {
                        start: Timestamp::from_millis(r.get(0)?),
                        avg: r.get(1)?,
                        min: r.get(2)?,
                        max: r.get(3)?,
                        count: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    })
                },
            )?;
            for b in found {
                buckets.push(b?);
            }
        }
        out.push(SeriesBuckets {
            param: param.clone(),
            buckets,
        });
    }
    Ok(out)
}

pub(super) fn latest(conn: &Connection) -> Result<Vec<LatestRow>> {
    let mut series = conn.prepare_cached("SELECT id, station, param FROM series")?;
    let all: Vec<(i64, String, String)> = series
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    // One primary-key seek per series: "max(ts) GROUP BY" would scan every row.
    let mut newest = conn.prepare_cached(
        "SELECT ts, value, status FROM readings WHERE series = ?1 ORDER BY ts DESC LIMIT 1",
    )?;
    let mut out = Vec::with_capacity(all.len());
    for (id, station, param) in all {
        let row = newest
            .query_row([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, f64>(1)?,
                    status_of(r.get(2)?)?,
                ))
            })
            .optional()?;
        if let Some((ts, value, status)) = row {
            out.push(LatestRow {
                station,
                param,
                ts: Timestamp::from_millis(ts),
                value,
                status,
            });
        }
    }
    Ok(out)
}

pub(super) fn presence(conn: &Connection) -> Result<Vec<PresenceRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT station, last_seen, gateway, gateway_at, record_window FROM presence",
    )?;
    let rows = stmt.query_map([], |r| {
        let gateway: Option<String> = r.get(2)?;
        let at: Option<i64> = r.get(3)?;
        let gateway = match (
            gateway
                .as_deref()
                .map(str::as_bytes)
                .and_then(GatewayState::parse),
            at,
        ) {
            (Some(state), Some(at)) => Some((state, Timestamp::from_millis(at))),
            _ => None,
        };
        let station: String = r.get(0)?;
        let saved: Option<Vec<u8>> = r.get(4)?;
        let record_window = saved.and_then(|bytes| {
            let window = Window::from_bytes(&bytes);
            if window.is_none() {
                tracing::warn!(station, bytes = bytes.len(),
                    "stored record-counter window has the wrong size: the station's counter starts afresh");
            }
            window
        });
        Ok(PresenceRow {
            station,
            last_seen: r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
            gateway,
            record_window,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn alert_from(id: i64, body: &str) -> Result<Alert> {
    serde_json::from_str(body).map_err(|e| Error::Corrupt {
        id: u64::try_from(id).unwrap_or(0),
        reason: e.to_string(),
    })
}

fn alerts_of(rows: Vec<(i64, String)>) -> Result<Vec<Alert>> {
    rows.iter()
        .map(|(id, body)| alert_from(*id, body))
        .collect()
}

pub(super) fn alerts(conn: &Connection, q: &AlertQuery) -> Result<AlertPage> {
    let limit = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let before = q.before_id.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(
        "SELECT id, body FROM alerts
         WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR station = ?2)
           AND (?3 IS NULL OR zone = ?3) AND (?4 IS NULL OR severity >= ?4)
           AND (?5 IS NULL OR resolved_at IS NULL OR resolved_at >= ?5)
           AND (?6 IS NULL OR first_at < ?6)
           AND (?7 IS NULL OR id < ?7)
         ORDER BY id DESC LIMIT ?8",
    )?;
    let rows: Vec<(i64, String)> = stmt
        .query_map(
            params![
                q.state.map(|s| s.as_str()),
                q.station,
                q.zone,
                q.severity.map(|s| s as u8),
                q.from.map(Timestamp::as_millis),
                q.to.map(Timestamp::as_millis),
                before,
                limit
            ],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    let mut alerts = alerts_of(rows)?;
    let has_more = alerts.len() > q.limit;
    alerts.truncate(q.limit);
    Ok(AlertPage { alerts, has_more })
}

pub(super) fn alert(conn: &Connection, id: u64) -> Result<Option<Alert>> {
    let id = i64::try_from(id).unwrap_or(i64::MAX);
    let body: Option<String> = conn
        .prepare_cached("SELECT body FROM alerts WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    body.map(|b| alert_from(id, &b)).transpose()
}

pub(super) fn active_alerts(conn: &Connection) -> Result<Vec<Alert>> {
    let rows: Vec<(i64, String)> = conn
        .prepare_cached("SELECT id, body FROM alerts WHERE state <> 'resolved' ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    alerts_of(rows)
}

pub(super) fn max_alert_id(conn: &Connection) -> Result<u64> {
    let id: Option<i64> = conn.query_row("SELECT max(id) FROM alerts", [], |r| r.get(0))?;
    Ok(id.and_then(|i| u64::try_from(i).ok()).unwrap_or(0))
}

pub(super) fn rule_states(conn: &Connection) -> Result<Vec<(String, Vec<u8>)>> {
    let rows = conn
        .prepare_cached("SELECT station, blob FROM rule_state")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

/// A station's records in `[from, to)` with their first known arrival (the `records` table,
/// kept with the readings: one primary-key range).
pub(super) fn arrivals(conn: &Connection, q: &ArrivalQuery) -> Result<Vec<RecordArrival>> {
    let mut stmt = conn.prepare_cached(
        "SELECT ts, arrived FROM records WHERE station = ?1 AND ts >= ?2 AND ts < ?3 ORDER BY ts",
    )?;
    let rows = stmt.query_map(
        params![q.station, q.from.as_millis(), q.to.as_millis()],
        |r| {
            Ok(RecordArrival {
                ts: Timestamp::from_millis(r.get(0)?),
                arrived: r.get::<_, Option<i64>>(1)?.map(Timestamp::from_millis),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}
