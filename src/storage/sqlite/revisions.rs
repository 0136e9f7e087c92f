//! Reading the revision history: earlier versions of readings that a write with the same
//! `(station, param, ts)` replaced (schema version 5, `reading_revisions`). Both backends
//! keep it in the SQLite database: the embedded store by a trigger on `readings`, the QuestDB
//! store through [`super::SqliteSink::keep_revisions`].

use rusqlite::{params, Connection};

use crate::storage::{Result, Revision, RevisionPage, RevisionQuery};
use crate::telemetry::{Status, Timestamp};

pub(super) fn revisions(conn: &Connection, q: &RevisionQuery) -> Result<RevisionPage> {
    let limit = i64::try_from(q.limit.saturating_add(1)).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT ts, value, status, replaced_at FROM reading_revisions
         WHERE station = ?1 AND param = ?2 AND ts >= ?3 AND ts < ?4
         ORDER BY ts, replaced_at, id LIMIT ?5",
    )?;
    let mut rows = Vec::new();
    for param in &q.params {
        let found = stmt.query_map(
            params![
                q.station,
                param,
                q.from.as_millis(),
                q.to.as_millis(),
                limit
            ],
            |r| {
                let code: i64 = r.get(2)?;
                Ok(Revision {
                    station: q.station.clone(),
                    param: param.clone(),
                    ts: Timestamp::from_millis(r.get(0)?),
                    value: r.get(1)?,
                    status: u8::try_from(code)
                        .ok()
                        .and_then(Status::from_u8)
                        .ok_or(rusqlite::Error::IntegralValueOutOfRange(2, code))?,
                    replaced_at: Timestamp::from_millis(r.get(3)?),
                })
            },
        )?;
        for row in found {
            rows.push(row?);
        }
    }
    rows.sort_by(|a, b| (a.ts, &a.param, a.replaced_at).cmp(&(b.ts, &b.param, b.replaced_at)));
    let has_more = rows.len() > q.limit;
    rows.truncate(q.limit);
    Ok(RevisionPage {
        revisions: rows,
        has_more,
    })
}
