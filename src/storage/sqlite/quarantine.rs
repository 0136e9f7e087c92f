//! The quarantine and the dead-letter store in SQLite: one entry per rejected message, its
//! whole payload beside it, both bounded with per-station fairness.
//!
//! ```text
//! quarantine         (id, received_at, topic, encoding, station, reason, param, ts, value,
//!                     detail, excerpt, total, reasons JSON, samples JSON, payload_bytes)
//! quarantine_reasons (reason, entry, count)  PRIMARY KEY (reason, entry): the reason filter
//! dead_letters       (entry PRIMARY KEY, station, bytes, payload BLOB)
//! ```
//!
//! An entry and its payload are written in the transaction that makes the message durable,
//! so a device is never told "received" for a payload that is not kept. Then the bounds are
//! enforced in that same transaction:
//! - more than `quarantine.capacity` entries: the station (or "no station") holding the most
//!   entries gives up its oldest, with their payloads ([`crate::quarantine::fair_cuts`]);
//! - more than `quarantine.dead_letter_max_bytes` of payloads: the station holding the most
//!   bytes gives up its oldest payloads; their entries stay, marked as no longer holding it.
//!
//! Both are counted (`quantrac_quarantine_evicted_total`,
//! `quantrac_dead_letters_dropped_total`) once the commit succeeded.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::metrics as m;
use crate::quarantine::{
    fair_cuts, DeadLetter, Holding, QuarantineEntry, Reason, Rejected, Rejection,
};
use crate::storage::{QuarantinePage, QuarantineQuery, Result};
use crate::telemetry::{Encoding, Timestamp};

/// How much the quarantine may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Entries (messages).
    pub capacity: u64,
    /// Bytes of whole payloads in the dead-letter store.
    pub dead_letter_max_bytes: u64,
}

/// What one commit evicted, counted once it is committed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Entries removed by the capacity bound (their payloads with them).
    pub entries: u64,
    /// Payloads removed by the byte bound (their entries stay).
    pub payloads: u64,
}

impl Evicted {
    pub fn count(self) {
        if self.entries > 0 {
            metrics::counter!(m::QUARANTINE_EVICTED_TOTAL).increment(self.entries);
        }
        if self.payloads > 0 {
            metrics::counter!(m::DEAD_LETTERS_DROPPED_TOTAL).increment(self.payloads);
        }
    }
}

const INSERT_ENTRY: &str = "INSERT INTO quarantine
     (received_at, topic, encoding, station, reason, param, ts, value, detail, excerpt,
      total, reasons, samples, payload_bytes)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)";

const INSERT_REASON: &str =
    "INSERT INTO quarantine_reasons (reason, entry, count) VALUES (?1, ?2, ?3)";

const INSERT_DEAD_LETTER: &str =
    "INSERT INTO dead_letters (entry, station, bytes, payload) VALUES (?1, ?2, ?3, ?4)";

fn to_sql_error(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes one message's entry, its reason index rows and its payload.
pub fn insert(tx: &Transaction<'_>, rejected: &Rejected) -> rusqlite::Result<()> {
    let first = rejected.first();
    let reasons: serde_json::Map<String, serde_json::Value> = rejected
        .counts
        .iter()
        .map(|(r, n)| (r.code().to_owned(), serde_json::Value::from(*n)))
        .collect();
    let reasons = serde_json::to_string(&reasons).map_err(to_sql_error)?;
    let samples = serde_json::to_string(&rejected.samples).map_err(to_sql_error)?;
    let headline = first
        .map(|f| f.reason)
        .or_else(|| rejected.counts.first().map(|(r, _)| *r))
        .unwrap_or(Reason::MalformedPayload);
    tx.prepare_cached(INSERT_ENTRY)?.execute(params![
        rejected.received_at.as_millis(),
        rejected.topic,
        rejected.encoding.map(|e| e.as_str()),
        rejected.station,
        headline.code(),
        first.and_then(|f| f.param.as_deref()),
        first.and_then(|f| f.ts).map(Timestamp::as_millis),
        first.and_then(|f| f.value).filter(|v| v.is_finite()),
        first.map(|f| f.detail.as_str()).unwrap_or(""),
        rejected.excerpt,
        to_i64(rejected.total()),
        reasons,
        samples,
        rejected.payload.as_ref().map(|p| p.len() as i64),
    ])?;
    let entry = tx.last_insert_rowid();
    let mut reason = tx.prepare_cached(INSERT_REASON)?;
    for (r, n) in &rejected.counts {
        reason.execute(params![r.code(), entry, to_i64(*n)])?;
    }
    if let Some(payload) = &rejected.payload {
        tx.prepare_cached(INSERT_DEAD_LETTER)?.execute(params![
            entry,
            rejected.station,
            payload.len() as i64,
            payload
        ])?;
    }
    Ok(())
}

/// Per-station holdings: `(station, Holding)`.
fn holdings(tx: &Transaction<'_>, sql: &str) -> rusqlite::Result<Vec<(Option<String>, Holding)>> {
    let mut stmt = tx.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, Option<String>>(0)?,
            Holding {
                weight: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                oldest: r.get(2)?,
            },
        ))
    })?;
    rows.collect()
}

/// The stations to cut and by how much, when `holdings` exceed `bound`.
fn plan(holdings: Vec<(Option<String>, Holding)>, bound: u64) -> Vec<(Option<String>, u64)> {
    let total: u64 = holdings.iter().map(|(_, h)| h.weight).sum();
    if total <= bound {
        return Vec::new();
    }
    let weights: Vec<Holding> = holdings.iter().map(|(_, h)| *h).collect();
    let cuts = fair_cuts(&weights, total - bound);
    holdings
        .into_iter()
        .zip(cuts)
        .filter(|(_, cut)| *cut > 0)
        .map(|((station, _), cut)| (station, cut))
        .collect()
}

/// Brings the quarantine and the dead-letter store back within `bounds`.
pub fn enforce(tx: &Transaction<'_>, bounds: Bounds) -> rusqlite::Result<Evicted> {
    let mut evicted = Evicted::default();
    let entries = holdings(
        tx,
        "SELECT station, count(*), min(id) FROM quarantine GROUP BY station",
    )?;
    for (station, cut) in plan(entries, bounds.capacity) {
        let ids: Vec<i64> = tx
            .prepare_cached("SELECT id FROM quarantine WHERE station IS ?1 ORDER BY id LIMIT ?2")?
            .query_map(params![station, to_i64(cut)], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for id in ids {
            tx.prepare_cached("DELETE FROM quarantine WHERE id = ?1")?
                .execute([id])?;
            tx.prepare_cached("DELETE FROM quarantine_reasons WHERE entry = ?1")?
                .execute([id])?;
            tx.prepare_cached("DELETE FROM dead_letters WHERE entry = ?1")?
                .execute([id])?;
            evicted.entries += 1;
        }
    }
    let payloads = holdings(
        tx,
        "SELECT station, sum(bytes), min(entry) FROM dead_letters GROUP BY station",
    )?;
    for (station, cut) in plan(payloads, bounds.dead_letter_max_bytes) {
        let oldest: Vec<(i64, i64)> = tx
            .prepare_cached(
                "SELECT entry, bytes FROM dead_letters WHERE station IS ?1 ORDER BY entry",
            )?
            .query_map(params![station], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut freed = 0u64;
        for (entry, bytes) in oldest {
            if freed >= cut {
                break;
            }
            tx.prepare_cached("DELETE FROM dead_letters WHERE entry = ?1")?
                .execute([entry])?;
            freed += u64::try_from(bytes).unwrap_or(0);
            evicted.payloads += 1;
        }
    }
    Ok(evicted)
}

/// Entries newest first, filtered by station (the message's) and by reason (any of its).
pub fn list(conn: &Connection, q: &QuarantineQuery) -> Result<QuarantinePage> {
    let limit = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let before = q.before_id.map(|id| i64::try_from(id).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(
        "SELECT q.id, q.received_at, q.topic, q.encoding, q.station, q.reason, q.param, q.ts,
                q.value, q.detail, q.excerpt, q.reasons, q.samples, q.payload_bytes,
                d.entry IS NOT NULL
         FROM quarantine q LEFT JOIN dead_letters d ON d.entry = q.id
         WHERE (?1 IS NULL OR q.station = ?1)
           AND (?2 IS NULL OR EXISTS (SELECT 1 FROM quarantine_reasons r
                                      WHERE r.reason = ?2 AND r.entry = q.id))
           AND (?3 IS NULL OR q.id < ?3)
         ORDER BY q.id DESC LIMIT ?4",
    )?;
    let rows = stmt.query_map(
        params![q.station, q.reason.map(Reason::code), before, limit],
        entry_of,
    )?;
    let mut entries: Vec<QuarantineEntry> = rows.collect::<rusqlite::Result<_>>()?;
    let has_more = entries.len() > q.limit;
    entries.truncate(q.limit);
    Ok(QuarantinePage { entries, has_more })
}

fn entry_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<QuarantineEntry> {
    let id: i64 = r.get(0)?;
    let station: Option<String> = r.get(4)?;
    let reason: String = r.get(5)?;
    let reason = Reason::parse(&reason).unwrap_or(Reason::MalformedPayload);
    let encoding: Option<String> = r.get(3)?;
    let reasons: Option<String> = r.get(11)?;
    let samples: Option<String> = r.get(12)?;
    let counts = match reasons.as_deref().map(parse_counts) {
        Some(Some(counts)) => counts,
        // Schema 3 rows: one rejection, in the row's own columns.
        _ => vec![(reason, 1)],
    };
    let samples = match samples
        .as_deref()
        .map(serde_json::from_str::<Vec<Rejection>>)
    {
        Some(Ok(samples)) => samples,
        other => {
            if let Some(Err(e)) = other {
                tracing::warn!(entry = id, error = %e, "stored quarantine samples cannot be read: showing the first rejection only");
            }
            vec![Rejection {
                reason,
                station: station.clone(),
                param: r.get(6)?,
                ts: r.get::<_, Option<i64>>(7)?.map(Timestamp::from_millis),
                value: r.get(8)?,
                detail: r.get(9)?,
            }]
        }
    };
    Ok(QuarantineEntry {
        id: u64::try_from(id).unwrap_or(0),
        received_at: Timestamp::from_millis(r.get(1)?),
        topic: r.get(2)?,
        encoding: encoding.as_deref().and_then(Encoding::from_topic_level),
        station,
        excerpt: r.get(10)?,
        counts,
        samples,
        payload_bytes: r
            .get::<_, Option<i64>>(13)?
            .and_then(|n| u64::try_from(n).ok()),
        payload_held: r.get(14)?,
    })
}

/// `{"code": count, ...}` in [`Reason::ALL`] order; `None` if unreadable.
fn parse_counts(text: &str) -> Option<Vec<(Reason, u64)>> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
    let counts: Vec<(Reason, u64)> = Reason::ALL
        .iter()
        .filter_map(|r| Some((*r, map.get(r.code())?.as_u64()?)))
        .collect();
    (!counts.is_empty()).then_some(counts)
}

/// The whole payload of entry `id`.
pub fn dead_letter(conn: &Connection, id: u64) -> Result<DeadLetter> {
    let id = i64::try_from(id).unwrap_or(i64::MAX);
    let row: Option<(Option<String>, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT q.encoding, d.payload
             FROM quarantine q LEFT JOIN dead_letters d ON d.entry = q.id WHERE q.id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(match row {
        None => DeadLetter::Unknown,
        Some((_, None)) => DeadLetter::Evicted,
        Some((encoding, Some(payload))) => DeadLetter::Held {
            encoding: encoding.as_deref().and_then(Encoding::from_topic_level),
            payload,
        },
    })
}
