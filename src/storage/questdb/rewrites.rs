//! Keeping the earlier version of a reading that QuestDB would overwrite without a trace.
//!
//! The readings table deduplicates on `(ts, station, param)` with UPSERT, so a write of a
//! stored key with another value replaces the stored row. Readings are evidence, so the writer
//! finds such writes before sending a batch and keeps the version they replace as a revision
//! in the SQLite state database (as the embedded store's trigger does).
//!
//! Asking QuestDB about every reading would cost a query per batch. Instead the writer knows
//! the newest time it has stored for each series (read once at start with `LATEST ON`, then
//! kept as batches go out): a reading newer than that cannot replace anything, which is every
//! reading of live traffic. Only the others (re-sends, backlogs, corrections) are looked up,
//! one range query per series, after waiting until QuestDB shows what was already sent
//! ([`read::applied`]). Readings of one batch that share a key are compared with each other.
//!
//! The writer runs this for every batch, so the common case is kept cheap: a batch whose
//! every reading is newer than its series' stored newest and than the batch's earlier
//! readings of that series (live traffic) is known to replace nothing after one pass over
//! it, with Fx hashing of the interned names (SipHash on these maps was a quarter of the
//! writer thread under load).

use std::collections::HashMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use chrono::NaiveDateTime;
use deadpool_postgres::Pool;

use super::read::{self, naive};
use super::sql::Args;
use crate::storage::{Error, LatestRow, Result, Revision, WriteItem};
use crate::telemetry::{Reading, Status, Timestamp};

/// A version of a reading: value and status.
type Version = (f64, Status);

/// A series' stored versions by time, as looked up for one batch.
type Stored = HashMap<(Arc<str>, Arc<str>), HashMap<i64, Version>>;

/// The newest time stored per station, then parameter (epoch milliseconds).
type Newest = FxHashMap<Arc<str>, FxHashMap<Arc<str>, i64>>;

/// Per series, the time range of the readings to look up.
type Ranges = FxHashMap<(Arc<str>, Arc<str>), (i64, i64)>;

pub struct Rewrites {
    newest: Newest,
    pool: Pool,
    runtime: tokio::runtime::Handle,
    table: String,
}

impl Rewrites {
    /// `latest` is the table's newest reading per series, read at start.
    pub fn new(
        pool: Pool,
        runtime: tokio::runtime::Handle,
        table: String,
        latest: Vec<LatestRow>,
    ) -> Rewrites {
        let mut newest = Newest::default();
        for row in latest {
            newest
                .entry(row.station.into())
                .or_default()
                .insert(row.param.into(), row.ts.as_millis());
        }
        Rewrites {
            newest,
            pool,
            runtime,
            table,
        }
    }

    /// The stored versions that the readings of `items` replace, in the order they are
    /// replaced. Runs on the writer thread (it blocks on the runtime for the lookups).
    pub fn find(&self, items: &[WriteItem], now: Timestamp) -> Result<Vec<Revision>> {
        let readings: Vec<&Reading> = items.iter().flat_map(|i| &i.readings).collect();
        let Scan { ranges, repeats } = scan(&self.newest, &readings);
        if ranges.is_empty() && !repeats {
            // Every reading is the newest of its series so far: nothing to replace.
            return Ok(Vec::new());
        }
        let stored = if ranges.is_empty() {
            Stored::new()
        } else {
            self.runtime.block_on(self.look_up(ranges))?
        };
        Ok(replaced(&readings, &stored, now))
    }

    /// Remembers the newest times of a batch that was stored.
    pub fn stored(&mut self, items: &[WriteItem]) {
        for r in items.iter().flat_map(|i| &i.readings) {
            let ts = r.ts.as_millis();
            match self.newest.get_mut(&*r.station) {
                Some(params) => match params.get_mut(&*r.param) {
                    Some(newest) => *newest = (*newest).max(ts),
                    None => {
                        params.insert(r.param.clone(), ts);
                    }
                },
                None => {
                    let mut params = FxHashMap::default();
                    params.insert(r.param.clone(), ts);
                    self.newest.insert(r.station.clone(), params);
                }
            }
        }
    }

    async fn look_up(&self, ranges: Ranges) -> Result<Stored> {
        let client = self.pool.get().await.map_err(lookup_error)?;
        // What the previous batches sent must be visible before asking what is stored.
        read::wait_applied(&client, &self.table).await?;
        let mut stored = Stored::new();
        for ((station, param), (from, to)) in ranges {
            let (station_text, param_text) = (station.to_string(), param.to_string());
            let (from, to) = (
                naive(Timestamp::from_millis(from)),
                naive(Timestamp::from_millis(to)),
            );
            let mut args = Args::new();
            let sql = format!(
                "SELECT ts, value, status FROM {} WHERE {} AND {} AND ts >= {} AND ts <= {}",
                self.table,
                args.symbol_eq("station", &station_text),
                args.symbol_eq("param", &param_text),
                args.bind(&from),
                args.bind(&to),
            );
            let rows = client
                .query(&sql, args.values())
                .await
                .map_err(lookup_error)?;
            let versions = stored.entry((station, param)).or_default();
            for row in rows {
                let ts: NaiveDateTime = row.try_get(0).map_err(lookup_error)?;
                let code: String = row.try_get(2).map_err(lookup_error)?;
                let status = Status::from_code(&code).ok_or_else(|| {
                    Error::Unavailable(format!("QuestDB lookup: unexpected status `{code}`"))
                })?;
                versions.insert(
                    ts.and_utc().timestamp_millis(),
                    (row.try_get(1).map_err(lookup_error)?, status),
                );
            }
        }
        Ok(stored)
    }
}

fn lookup_error(e: impl std::error::Error + 'static) -> Error {
    Error::Unavailable(format!("QuestDB lookup: {}", read::error_chain(&e)))
}

/// What one pass over a batch finds.
struct Scan {
    /// Per series, the time range of the readings that may replace a stored one: those not
    /// newer than the newest time stored for their series.
    ranges: Ranges,
    /// Whether a reading is not newer than an earlier reading of its series in the batch
    /// (it may share that one's key).
    repeats: bool,
}

fn scan(newest: &Newest, readings: &[&Reading]) -> Scan {
    let mut ranges = Ranges::default();
    let mut batch_newest: FxHashMap<(&str, &str), i64> = FxHashMap::default();
    let mut repeats = false;
    for r in readings {
        let ts = r.ts.as_millis();
        let stored = newest
            .get(&*r.station)
            .and_then(|params| params.get(&*r.param));
        if stored.is_some_and(|&n| ts <= n) {
            let range = ranges
                .entry((r.station.clone(), r.param.clone()))
                .or_insert((ts, ts));
            range.0 = range.0.min(ts);
            range.1 = range.1.max(ts);
        }
        match batch_newest.entry((&*r.station, &*r.param)) {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                repeats |= ts <= *e.get();
                *e.get_mut() = (*e.get()).max(ts);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(ts);
            }
        }
    }
    Scan { ranges, repeats }
}

/// Walks a batch in order: each reading replaces the version before it (an earlier reading
/// of the batch with the same key, else the stored one); a replaced version that differs is
/// a revision.
fn replaced(readings: &[&Reading], stored: &Stored, now: Timestamp) -> Vec<Revision> {
    let mut current: FxHashMap<(&str, &str, i64), Version> = FxHashMap::default();
    let mut out = Vec::new();
    for r in readings {
        let ts = r.ts.as_millis();
        let key = (&*r.station, &*r.param, ts);
        let before = current.get(&key).copied().or_else(|| {
            stored
                .get(&(r.station.clone(), r.param.clone()))
                .and_then(|versions| versions.get(&ts).copied())
        });
        if let Some((value, status)) = before {
            // Compared as SQLite compares REAL values, like the embedded store's upsert.
            #[allow(clippy::float_cmp)]
            let same = value == r.value && status == r.status;
            if !same {
                out.push(Revision {
                    station: r.station.to_string(),
                    param: r.param.to_string(),
                    ts: r.ts,
                    value,
                    status,
                    replaced_at: now,
                });
            }
        }
        current.insert(key, (r.value, r.status));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reading(param: &str, ts: i64, value: f64, status: Status) -> Reading {
        Reading {
            station: "S".into(),
            zone: "Z".into(),
            param: param.into(),
            ts: Timestamp::from_millis(ts),
            value,
            status,
        }
    }

    #[test]
    fn a_changed_value_replaces_the_stored_version_and_an_identical_one_nothing() {
        let mut stored = Stored::new();
        stored
            .entry(("S".into(), "COD".into()))
            .or_default()
            .extend([
                (1_000, (900.0, Status::Measuring)),
                (2_000, (5.0, Status::Measuring)),
            ]);
        let batch = [
            reading("COD", 1_000, 20.0, Status::Measuring),
            reading("COD", 2_000, 5.0, Status::Measuring),
            reading("COD", 3_000, 1.0, Status::Measuring),
        ];
        let refs: Vec<&Reading> = batch.iter().collect();
        let found = replaced(&refs, &stored, Timestamp::from_millis(9));
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].ts.as_millis(), found[0].value), (1_000, 900.0));
        assert_eq!(found[0].replaced_at, Timestamp::from_millis(9));
    }

    #[test]
    fn readings_of_one_batch_with_one_key_replace_each_other_in_order() {
        let batch = [
            reading("pH", 1_000, 7.0, Status::Measuring),
            reading("pH", 1_000, 7.0, Status::Calibrating),
            reading("pH", 1_000, 7.0, Status::Calibrating),
            reading("pH", 1_000, 8.0, Status::Calibrating),
        ];
        let refs: Vec<&Reading> = batch.iter().collect();
        let found: Vec<Version> = replaced(&refs, &Stored::new(), Timestamp::from_millis(0))
            .iter()
            .map(|r| (r.value, r.status))
            .collect();
        assert_eq!(
            found,
            [(7.0, Status::Measuring), (7.0, Status::Calibrating)]
        );
    }

    fn newest(station: &str, param: &str, ts: i64) -> Newest {
        let mut params = FxHashMap::default();
        params.insert(param.into(), ts);
        let mut newest = Newest::default();
        newest.insert(station.into(), params);
        newest
    }

    #[test]
    fn only_readings_not_newer_than_the_stored_newest_are_looked_up() {
        let newest = newest("S", "COD", 5_000);
        let batch = [
            reading("COD", 6_000, 1.0, Status::Measuring),
            reading("COD", 4_000, 1.0, Status::Measuring),
            reading("COD", 5_000, 1.0, Status::Measuring),
            reading("pH", 1_000, 1.0, Status::Measuring),
        ];
        let refs: Vec<&Reading> = batch.iter().collect();
        let found = scan(&newest, &refs).ranges;
        assert_eq!(
            found.len(),
            1,
            "a series never stored has nothing to replace"
        );
        assert_eq!(found[&("S".into(), "COD".into())], (4_000, 5_000));
    }

    #[test]
    fn a_batch_of_readings_each_newer_than_its_series_so_far_has_no_repeats() {
        let newest = newest("S", "COD", 5_000);
        let live = [
            reading("COD", 6_000, 1.0, Status::Measuring),
            reading("pH", 6_000, 1.0, Status::Measuring),
            reading("COD", 7_000, 1.0, Status::Measuring),
        ];
        let refs: Vec<&Reading> = live.iter().collect();
        let found = scan(&newest, &refs);
        assert!(found.ranges.is_empty() && !found.repeats);

        let resent = [
            reading("pH", 6_000, 1.0, Status::Measuring),
            reading("pH", 6_000, 2.0, Status::Measuring),
        ];
        let refs: Vec<&Reading> = resent.iter().collect();
        let found = scan(&newest, &refs);
        assert!(found.ranges.is_empty(), "pH was never stored");
        assert!(
            found.repeats,
            "the second pH at 6,000 may replace the first"
        );
    }
}
