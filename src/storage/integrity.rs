//! The start-up check of every SQLite file quantrac opens: `PRAGMA quick_check`, bounded in
//! time.
//!
//! A damaged page would otherwise go unnoticed until a query reads it (a readings range
//! answered 500 "malformed", hours later), while `/readyz` said all was well. `quick_check`
//! reads every page of the file and checks the b-tree structure (not that index entries match
//! their rows, which `integrity_check` also compares, at a higher cost). It runs before
//! anything else touches the file; a damaged file stops the start with an error that names it
//! and says what to do (`docs/operations.md`).
//!
//! The check reads and checks every page: 4 to 6 s for 200 MB (8 million readings) as
//! measured on a two-core test machine, so a multi-gigabyte embedded store takes minutes. It is
//! cut short after `storage.integrity_check_timeout` (a timer interrupts the statement), which
//! is logged: the start goes on with the file only partly checked.
//! A timeout of zero skips the check.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::Connection;

/// How many problems `quick_check` reports at most (the first ones say enough).
const MAX_PROBLEMS: u32 = 20;

/// What the check found in a file it could read to the end (or until cut short).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Every page was read and the structure is sound.
    Sound { took: Duration },
    /// The check ran out of time: the file was only partly checked.
    CutShort { after: Duration },
    /// The check is turned off (a timeout of zero).
    Skipped,
}

/// A file that failed the check: quantrac refuses to start on it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} is damaged: PRAGMA quick_check found: {problems}. quantrac does not start on a \
     damaged database. Restore the file from the last backup, or salvage what it holds: stop \
     quantrac, `sqlite3 {path} .recover | sqlite3 {path}.recovered`, keep the damaged file \
     aside and put the recovered one in its place (docs/operations.md, \"A damaged database\")"
)]
pub struct Damaged {
    pub path: PathBuf,
    /// What `quick_check` said, joined with `; `.
    pub problems: String,
}

/// Why the check could not be made.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Damaged(#[from] Damaged),
    #[error("cannot check {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// Runs `PRAGMA quick_check` on `conn` (the database at `path`), stopped after `limit`.
/// Logs the outcome: a check cut short as a warning, a damaged file as an error.
pub fn quick_check(conn: &Connection, path: &Path, limit: Duration) -> Result<Checked, Error> {
    if limit.is_zero() {
        tracing::warn!(file = %path.display(), "integrity check skipped (storage.integrity_check_timeout = 0)");
        return Ok(Checked::Skipped);
    }
    let started = Instant::now();
    let (stop, stopped) = mpsc::channel::<()>();
    let interrupt = conn.get_interrupt_handle();
    // The timer interrupts the check at the deadline, unless the check is over first (the
    // sender is dropped). SQLite ignores an interrupt on a connection with no statement
    // running, so one that lands before the check's statement has started (a thread
    // descheduled between here and there) would be lost: past the deadline the timer
    // repeats it every millisecond until the check ends. One that arrives after the
    // statement ended is harmless for the same reason.
    let timer = std::thread::Builder::new()
        .name("integrity-timer".into())
        .spawn(move || {
            let mut wait = limit;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                interrupt.interrupt();
                wait = Duration::from_millis(1);
            }
        });
    let outcome = problems(conn);
    drop(stop);
    if let Ok(timer) = timer {
        let _ = timer.join();
    }
    let took = started.elapsed();
    match outcome {
        Ok(found) if found.is_empty() => {
            tracing::info!(file = %path.display(), took = ?took, "integrity check passed");
            Ok(Checked::Sound { took })
        }
        Ok(found) => {
            let damaged = Damaged {
                path: path.to_owned(),
                problems: found.join("; "),
            };
            tracing::error!(file = %path.display(), problems = %damaged.problems, "DATABASE DAMAGED: integrity check failed");
            Err(damaged.into())
        }
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
            tracing::warn!(file = %path.display(), after = ?took,
                "integrity check cut short by storage.integrity_check_timeout: the file was only partly checked");
            Ok(Checked::CutShort { after: took })
        }
        // A file SQLite cannot even read as a database is damaged too.
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseCorrupt) => {
            let damaged = Damaged {
                path: path.to_owned(),
                problems: e.to_string(),
            };
            tracing::error!(file = %path.display(), problems = %damaged.problems, "DATABASE DAMAGED: integrity check failed");
            Err(damaged.into())
        }
        Err(source) => Err(Error::Sqlite {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The problems `quick_check` lists (none: its single row is `ok`).
fn problems(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA quick_check({MAX_PROBLEMS})"))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut found = Vec::new();
    for row in rows {
        let line = row?;
        if line != "ok" {
            found.push(crate::text::escape(&line).into_owned());
        }
    }
    Ok(found)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A database of `rows` rows in `dir` (200,000: about 4,000 pages, some milliseconds to
    /// check).
    fn database(dir: &Path, rows: u32) -> PathBuf {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO t SELECT i, printf('value number %d', i) FROM n;"
        ))
        .unwrap();
        path
    }

    fn damage_middle_page(path: &Path) {
        use std::io::{Seek, SeekFrom, Write};
        let pages = std::fs::metadata(path).unwrap().len() / 4096;
        let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        file.seek(SeekFrom::Start(pages / 2 * 4096)).unwrap();
        file.write_all(&[0xA5; 4096]).unwrap();
    }

    #[test]
    fn a_sound_file_passes_and_a_damaged_page_is_named_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = database(dir.path(), 200_000);
        let conn = Connection::open(&path).unwrap();
        let checked = quick_check(&conn, &path, Duration::from_secs(30)).unwrap();
        assert!(matches!(checked, Checked::Sound { .. }), "{checked:?}");
        drop(conn);

        damage_middle_page(&path);
        let conn = Connection::open(&path).unwrap();
        let err = quick_check(&conn, &path, Duration::from_secs(30)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Damaged(_)), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains(".recover"), "{message}");
    }

    #[test]
    fn a_check_that_runs_out_of_time_is_cut_short_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        // Tens of milliseconds to check. A loaded CI run once sent the one interrupt before
        // the check's statement had started, and the check ran to the end (437 ms): the
        // timer now repeats it.
        let path = database(dir.path(), 1_500_000);
        let conn = Connection::open(&path).unwrap();
        let checked = quick_check(&conn, &path, Duration::from_micros(500)).unwrap();
        assert!(matches!(checked, Checked::CutShort { .. }), "{checked:?}");
        // The connection works normally afterwards.
        let n: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1_500_000);
        assert_eq!(
            quick_check(&conn, &path, Duration::ZERO).unwrap(),
            Checked::Skipped
        );
    }
}
