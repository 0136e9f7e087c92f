//! The SQLite schema and its migrations (`PRAGMA user_version` holds the version).

use rusqlite::Connection;

use crate::storage::{Error, Result};

/// The schema version this build writes.
pub const VERSION: i64 = 8;

const V1: &str = "
CREATE TABLE series (
    id      INTEGER PRIMARY KEY,
    station TEXT NOT NULL,
    param   TEXT NOT NULL,
    zone    TEXT NOT NULL,
    UNIQUE (station, param)
);
CREATE TABLE readings (
    series INTEGER NOT NULL REFERENCES series (id),
    ts     INTEGER NOT NULL,
    value  REAL    NOT NULL,
    status INTEGER NOT NULL CHECK (status IN (0, 1, 2)),
    PRIMARY KEY (series, ts)
) WITHOUT ROWID;
CREATE TABLE quarantine (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at INTEGER NOT NULL,
    topic       TEXT    NOT NULL,
    encoding    TEXT,
    reason      TEXT    NOT NULL,
    station     TEXT,
    param       TEXT,
    ts          INTEGER,
    value       REAL,
    detail      TEXT    NOT NULL,
    excerpt     TEXT    NOT NULL
);
CREATE INDEX quarantine_by_station ON quarantine (station, id);
CREATE TABLE presence (
    station    TEXT PRIMARY KEY,
    last_seen  INTEGER,
    gateway    TEXT CHECK (gateway IN ('online', 'offline')),
    gateway_at INTEGER
) WITHOUT ROWID;
";

/// Version 2: alerts and the alert engine's rule state.
const V2: &str = "
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY,
    station     TEXT    NOT NULL,
    zone        TEXT    NOT NULL,
    param       TEXT,
    rule        TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    severity    INTEGER NOT NULL CHECK (severity IN (0, 1, 2)),
    state       TEXT    NOT NULL CHECK (state IN ('open', 'acknowledged', 'resolved')),
    first_at    INTEGER NOT NULL,
    last_at     INTEGER NOT NULL,
    resolved_at INTEGER,
    updated_at  INTEGER NOT NULL,
    body        TEXT    NOT NULL
);
CREATE INDEX alerts_active ON alerts (state) WHERE state <> 'resolved';
CREATE INDEX alerts_by_station ON alerts (station, id);
CREATE TABLE rule_state (
    station    TEXT PRIMARY KEY,
    blob       BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 3: each station's record-counter window (`seq`), saved with the readings it let in
/// (layout: [`crate::security::sequence::Window::to_bytes`]).
const V3: &str = "
ALTER TABLE presence ADD COLUMN record_window BLOB;
";

/// Version 4: one quarantine entry per message (counts per reason, sample rejections) and the
/// dead-letter store of whole payloads. The columns of version 1 stay: `reason`, `param`,
/// `ts`, `value` and `detail` now hold the message's first rejection, and `station` the
/// station the message came from. Rows of version 3 (one per rejection) become entries of
/// one rejection each (`reasons` and `samples` NULL: read from those columns), without a
/// payload (`payload_bytes` NULL).
const V4: &str = "
ALTER TABLE quarantine ADD COLUMN total INTEGER NOT NULL DEFAULT 1;
ALTER TABLE quarantine ADD COLUMN reasons TEXT;
ALTER TABLE quarantine ADD COLUMN samples TEXT;
ALTER TABLE quarantine ADD COLUMN payload_bytes INTEGER;
CREATE TABLE quarantine_reasons (
    reason TEXT    NOT NULL,
    entry  INTEGER NOT NULL,
    count  INTEGER NOT NULL,
    PRIMARY KEY (reason, entry)
) WITHOUT ROWID;
CREATE INDEX quarantine_reasons_by_entry ON quarantine_reasons (entry);
INSERT INTO quarantine_reasons (reason, entry, count) SELECT reason, id, 1 FROM quarantine;
CREATE TABLE dead_letters (
    entry   INTEGER PRIMARY KEY,
    station TEXT,
    bytes   INTEGER NOT NULL,
    payload BLOB    NOT NULL
);
CREATE INDEX dead_letters_by_station ON dead_letters (station, entry, bytes);
";

/// Version 5: earlier versions of readings that were replaced by a different value or status
/// (evidence in enforcement cases must not change without a trace). Keyed by station and
/// parameter rather than the series id, so that a backend keeping readings elsewhere
/// (QuestDB) records its revisions here too. The trigger keeps the embedded store's upsert a
/// single statement: it fires only when the upsert's `WHERE` let a changed row through.
const V5: &str = "
CREATE TABLE reading_revisions (
    id          INTEGER PRIMARY KEY,
    station     TEXT    NOT NULL,
    param       TEXT    NOT NULL,
    ts          INTEGER NOT NULL,
    value       REAL    NOT NULL,
    status      INTEGER NOT NULL CHECK (status IN (0, 1, 2)),
    replaced_at INTEGER NOT NULL
);
CREATE INDEX reading_revisions_by_key ON reading_revisions (station, param, ts);
CREATE TRIGGER readings_keep_revision AFTER UPDATE OF value, status ON readings
BEGIN
    INSERT INTO reading_revisions (station, param, ts, value, status, replaced_at)
    SELECT station, param, old.ts, old.value, old.status,
           CAST(unixepoch('subsec') * 1000 AS INTEGER)
    FROM series WHERE id = old.series;
END;
";

/// Version 6: the readings' status check written as comparisons. SQLite evaluates
/// `status IN (0, 1, 2)` by building a temporary b-tree of the list for every statement
/// execution, which cost 40% of the embedded store's insert rate (one execution per reading).
/// The new check accepts exactly the same values, so every stored row still satisfies it,
/// and SQLite documents editing `sqlite_schema` for such a change ("Making Other Kinds Of
/// Table Schema Changes"): instant on any size of table, where rebuilding the table would
/// rewrite every reading.
const V6_OLD_CHECK: &str = "CHECK (status IN (0, 1, 2))";
const V6_NEW_CHECK: &str = "CHECK (status = 0 OR status = 1 OR status = 2)";

fn v6(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let sql: String = tx.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'readings'",
        [],
        |r| r.get(0),
    )?;
    if !sql.contains(V6_OLD_CHECK) {
        // A database someone changed by hand: leave it as it is (only slower).
        tracing::warn!("readings table without the expected status check; left unchanged");
        return Ok(());
    }
    let schema_version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.pragma_update(None, "writable_schema", true)?;
    tx.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'readings'",
        [sql.replace(V6_OLD_CHECK, V6_NEW_CHECK)],
    )?;
    tx.pragma_update(None, "schema_version", schema_version + 1)?;
    tx.pragma_update(None, "writable_schema", false)?;
    Ok(())
}

/// Version 7: when each reading arrived (epoch milliseconds; the arrival of the message that
/// first brought it), for the connectivity report. Rows stored before have none (`NULL`):
/// their arrival is unknown, and the report says so rather than guess. Adding a nullable
/// column only changes the table's definition: instant on any size of table.
const V7: &str = "ALTER TABLE readings ADD COLUMN arrived INTEGER;";

/// Version 8: one row per record (a station's reading time) with its first arrival, written
/// with the readings: the connectivity report reads these instead of every reading (a
/// year of the whole seed fleet: 3.15 M records against 22.6 M readings). Filled from the
/// stored readings once, by the migration (a minute or so for tens of millions of readings).
const V8: &str = "
CREATE TABLE records (
    station TEXT    NOT NULL,
    ts      INTEGER NOT NULL,
    arrived INTEGER,
    PRIMARY KEY (station, ts)
) WITHOUT ROWID;
INSERT INTO records (station, ts, arrived)
    SELECT s.station, r.ts, MIN(r.arrived) FROM readings r JOIN series s ON s.id = r.series
    GROUP BY s.station, r.ts;
";

/// Creates or upgrades the schema. Refuses a database from a newer build.
pub fn migrate(conn: &mut Connection) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    for (version, ddl) in [(1, V1), (2, V2), (3, V3), (4, V4), (5, V5)] {
        if found < version {
            let tx = conn.transaction()?;
            tx.execute_batch(ddl)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
        }
    }
    if found < 6 {
        let tx = conn.transaction()?;
        v6(&tx)?;
        tx.pragma_update(None, "user_version", 6)?;
        tx.commit()?;
    }
    if found < 7 {
        let tx = conn.transaction()?;
        tx.execute_batch(V7)?;
        tx.pragma_update(None, "user_version", 7)?;
        tx.commit()?;
    }
    if found < 8 {
        let tx = conn.transaction()?;
        tx.execute_batch(V8)?;
        tx.pragma_update(None, "user_version", 8)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::quarantine::{DeadLetter, Reason};
    use crate::storage::sqlite::quarantine;
    use crate::storage::QuarantineQuery;

    #[test]
    fn quarantine_rows_of_version_3_become_entries_of_one_rejection_without_payload() {
        let mut conn = Connection::open_in_memory().unwrap();
        for ddl in [V1, V2, V3] {
            conn.execute_batch(ddl).unwrap();
        }
        conn.pragma_update(None, "user_version", 3).unwrap();
        conn.execute_batch(
            "INSERT INTO quarantine (received_at, topic, encoding, reason, station, param, ts,
                                     value, detail, excerpt)
             VALUES (1, 't', 'json', 'unit_mismatch', 'S', 'COD', 5, 1.5, 'unit `g/L`', '{x'),
                    (2, 't', NULL, 'unknown_topic', NULL, NULL, NULL, NULL, 'no', 'y');",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let page = quarantine::list(
            &conn,
            &QuarantineQuery {
                reason: Some(Reason::UnitMismatch),
                limit: 10,
                ..QuarantineQuery::default()
            },
        )
        .unwrap();
        assert_eq!(page.entries.len(), 1, "the reason filter sees old rows");
        let e = &page.entries[0];
        assert_eq!(e.counts, [(Reason::UnitMismatch, 1)]);
        assert_eq!(e.station.as_deref(), Some("S"));
        assert_eq!(e.samples[0].detail, "unit `g/L`");
        assert_eq!(e.samples[0].value, Some(1.5));
        assert_eq!(e.excerpt, "{x");
        assert_eq!((e.payload_bytes, e.payload_held), (None, false));
        assert_eq!(
            quarantine::dead_letter(&conn, e.id).unwrap(),
            DeadLetter::Evicted
        );
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
    }

    #[test]
    fn version_6_keeps_every_reading_and_still_refuses_a_status_outside_0_to_2() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v5.db");
        let mut conn = Connection::open(&path).unwrap();
        for ddl in [V1, V2, V3, V4, V5] {
            conn.execute_batch(ddl).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        conn.execute_batch(
            "INSERT INTO series (id, station, param, zone) VALUES (1, 'S', 'COD', 'Z');
             INSERT INTO readings VALUES (1, 10, 1.5, 0), (1, 20, 2.5, 2);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        drop(conn);

        // A new connection reads the edited schema from the file.
        let conn = Connection::open(&path).unwrap();
        let sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'readings'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(sql.contains(V6_NEW_CHECK), "{sql}");
        let ok: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM readings", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        for bad in ["3", "-1", "1.5", "'x'"] {
            let refused = conn.execute(
                &format!(
                    "INSERT INTO readings (series, ts, value, status) VALUES (1, 30, 1.0, {bad})"
                ),
                [],
            );
            assert!(
                matches!(&refused, Err(e) if e.to_string().contains("CHECK")),
                "status {bad}: {refused:?}"
            );
        }
        conn.execute(
            "INSERT INTO readings (series, ts, value, status) VALUES (1, 30, 1.0, 1)",
            [],
        )
        .unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, VERSION);
        // Version 8: their record is listed, its arrival unknown too.
        let records: i64 = conn
            .query_row(
                "SELECT count(*) FROM records WHERE station = 'S' AND arrived IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            records, 2,
            "ts 10 and 20 (30 was written by hand after the migration)"
        );
        // Version 7: the readings kept have no arrival time (unknown, not "on time").
        let unknown: i64 = conn
            .query_row(
                "SELECT count(*) FROM readings WHERE ts IN (10, 20) AND arrived IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unknown, 2);
    }
}
