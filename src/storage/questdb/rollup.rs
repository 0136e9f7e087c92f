//! The hourly rollup: a QuestDB materialized view of the readings table's hourly sums,
//! counts, minima and maxima per (station, param, status), and the planning that decides
//! which part of an aggregate query reads it.
//!
//! # Why
//! An aggregate over a year read every raw row of the year (210 M rows for 50 stations x 8
//! parameters at one a minute): 0.4-0.7 s on two cores. The view holds one row per series,
//! status and hour (3.5 M a year), and hourly or daily buckets are sums of its rows.
//!
//! # When the view is used
//! - The bucket is a whole number of hours and starts on whole UTC hours (the calendar
//!   offset is whole hours: Vietnam's +7 h is; a +5:30 zone's day is not, and reads raw).
//! - The view has caught up with the table: QuestDB refreshes it after each WAL apply, a
//!   moment later. A query waits up to 250 ms for that; after that ([`Freshness::usable`]
//!   still false) the whole query reads raw rows, so a reading visible in the table is
//!   always in the answer.
//! - Only whole hours come from the view; the partial hours at either end of the range come
//!   from raw rows, and both parts are merged bucket by bucket ([`Merger`]).
//! - Hours before the table's first row are not taken from the view (a dropped partition
//!   stays in the view until the view's own TTL drops it).
//!
//! # Averages
//! The embedded store averages with a compensated sum over raw values. The view keeps
//! QuestDB's compensated `nsum` of each hour; a bucket's sum is the compensated sum of its
//! hours' sums, which differs from the sum over raw values in the last bits at most (the API
//! parity test allows 1e-12 relative). Counts, minima and maxima are exact.

use std::collections::BTreeMap;

use crate::storage::{AggregateQuery, Bucket, SeriesBuckets};
use crate::telemetry::Timestamp;

const HOUR: i64 = 3_600_000;

/// The view over `table`.
pub fn view_name(table: &str) -> String {
    format!("{table}_hourly")
}

/// The view's SELECT. Checked against what the server stores (`materialized_views()`), so
/// that a view left by another version of quantrac is recognised as different.
pub fn view_select(table: &str) -> String {
    format!(
        "SELECT ts, station, param, status, nsum(value) value_sum, count() n, \
         min(value) value_min, max(value) value_max FROM {table} SAMPLE BY 1h"
    )
}

/// The view, partitioned by month, kept at least as long as the table (`ttl_days`; 0: no
/// TTL). A view's TTL is in whole partitions' units.
pub fn view_ddl(table: &str, ttl_days: u64) -> String {
    let ttl = if ttl_days > 0 {
        format!(" TTL {} MONTHS", ttl_days.div_ceil(28))
    } else {
        String::new()
    };
    format!(
        "CREATE MATERIALIZED VIEW IF NOT EXISTS {} AS ({}) PARTITION BY MONTH{ttl}",
        view_name(table),
        view_select(table)
    )
}

/// What `materialized_views()` says of the view at the time of a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// The table transaction the view was last refreshed up to.
    pub refreshed_txn: i64,
    /// The table's last applied transaction (what raw queries see).
    pub applied_txn: i64,
    pub valid: bool,
}

impl Freshness {
    /// Whether the view holds everything a raw query would see.
    pub fn usable(&self) -> bool {
        self.valid && self.refreshed_txn >= self.applied_txn
    }
}

/// A time range `[from, to)` of a query, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
}

/// Which parts of a query read raw rows and which the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub raw: Vec<Range>,
    pub view: Option<Range>,
}

impl Split {
    fn all_raw(q: &AggregateQuery) -> Split {
        Split {
            raw: vec![Range {
                from: q.from.as_millis(),
                to: q.to.as_millis(),
            }],
            view: None,
        }
    }
}

/// Whether buckets of this query are unions of whole UTC hours.
pub fn hour_buckets(q: &AggregateQuery) -> bool {
    q.bucket_ms > 0 && q.bucket_ms % HOUR == 0 && q.align_offset_ms % HOUR == 0
}

/// Splits `q` into raw parts and a view part. `first` is the table's first row (`None`: the
/// table is empty). Pure: the caller has checked that the view is [`Freshness::usable`].
pub fn split(q: &AggregateQuery, first: Option<Timestamp>) -> Split {
    let (from, to) = (q.from.as_millis(), q.to.as_millis());
    let Some(first) = first else {
        return Split::all_raw(q);
    };
    if !hour_buckets(q) {
        return Split::all_raw(q);
    }
    let ceil_hour = |t: i64| t + (HOUR - t.rem_euclid(HOUR)) % HOUR;
    let view_from = ceil_hour(from.max(first.as_millis()));
    let view_to = to - to.rem_euclid(HOUR);
    if view_from >= view_to {
        return Split::all_raw(q);
    }
    let mut raw = Vec::new();
    if from < view_from {
        raw.push(Range {
            from,
            to: view_from,
        });
    }
    if view_to < to {
        raw.push(Range { from: view_to, to });
    }
    Split {
        raw,
        view: Some(Range {
            from: view_from,
            to: view_to,
        }),
    }
}

/// One bucket's partial aggregate from one source.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Partial {
    pub start: Timestamp,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub count: u64,
}

/// A bucket being merged: a compensated (Neumaier) sum, as SQLite's `avg` and QuestDB's
/// `nsum` compute theirs.
#[derive(Debug, Clone, Copy)]
struct Acc {
    sum: f64,
    compensation: f64,
    min: f64,
    max: f64,
    count: u64,
}

impl Acc {
    fn add(&mut self, p: &Partial) {
        let t = self.sum + p.sum;
        if self.sum.abs() >= p.sum.abs() {
            self.compensation += (self.sum - t) + p.sum;
        } else {
            self.compensation += (p.sum - t) + self.sum;
        }
        self.sum = t;
        self.min = self.min.min(p.min);
        self.max = self.max.max(p.max);
        self.count += p.count;
    }
}

/// Merges partial buckets of the query's parameters (from any number of sources, in any
/// order) into [`SeriesBuckets`], one per parameter in the query's order, buckets oldest
/// first.
pub struct Merger {
    params: Vec<String>,
    buckets: BTreeMap<(usize, i64), Acc>,
}

impl Merger {
    pub fn new(params: &[String]) -> Merger {
        Merger {
            params: params.to_vec(),
            buckets: BTreeMap::new(),
        }
    }

    /// Adds a partial bucket of `param`; a parameter not asked for is ignored.
    pub fn add(&mut self, param: &str, p: Partial) {
        let Some(i) = self.params.iter().position(|q| q == param) else {
            return;
        };
        if p.count == 0 {
            return;
        }
        self.buckets
            .entry((i, p.start.as_millis()))
            .and_modify(|acc| acc.add(&p))
            .or_insert(Acc {
                sum: p.sum,
                compensation: 0.0,
                min: p.min,
                max: p.max,
                count: p.count,
            });
    }

    pub fn finish(self) -> Vec<SeriesBuckets> {
        let mut out: Vec<SeriesBuckets> = self
            .params
            .into_iter()
            .map(|param| SeriesBuckets {
                param,
                buckets: Vec::new(),
            })
            .collect();
        for ((i, start), acc) in self.buckets {
            if let Some(series) = out.get_mut(i) {
                series.buckets.push(Bucket {
                    start: Timestamp::from_millis(start),
                    avg: (acc.sum + acc.compensation) / acc.count as f64,
                    min: acc.min,
                    max: acc.max,
                    count: acc.count,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Status;

    const DAY: i64 = 24 * HOUR;
    const VIETNAM: i64 = 7 * HOUR;

    fn query(from: i64, to: i64, bucket_ms: i64, align_offset_ms: i64) -> AggregateQuery {
        AggregateQuery {
            station: "S".into(),
            params: vec!["COD".into(), "pH".into()],
            from: Timestamp::from_millis(from),
            to: Timestamp::from_millis(to),
            bucket_ms,
            align_offset_ms,
            status: Some(Status::Measuring),
        }
    }

    fn range(from: i64, to: i64) -> Range {
        Range { from, to }
    }

    #[test]
    fn whole_hours_come_from_the_view_and_the_partial_hours_at_the_ends_from_raw_rows() {
        let t0 = 1_000 * DAY;
        let q = query(t0 + 10 * 60_000, t0 + 5 * HOUR + 1, HOUR, VIETNAM);
        let s = split(&q, Some(Timestamp::from_millis(0)));
        assert_eq!(s.view, Some(range(t0 + HOUR, t0 + 5 * HOUR)));
        assert_eq!(
            s.raw,
            vec![
                range(t0 + 10 * 60_000, t0 + HOUR),
                range(t0 + 5 * HOUR, t0 + 5 * HOUR + 1)
            ]
        );
        // Vietnam days (buckets starting 17:00 UTC) over aligned bounds: the view alone.
        let days = query(t0 - VIETNAM, t0 + 30 * DAY - VIETNAM, DAY, VIETNAM);
        let s = split(&days, Some(Timestamp::from_millis(0)));
        assert_eq!(s.view, Some(range(t0 - VIETNAM, t0 + 30 * DAY - VIETNAM)));
        assert!(s.raw.is_empty());
    }

    #[test]
    fn buckets_that_are_not_unions_of_utc_hours_read_raw_rows_only() {
        let t0 = 1_000 * DAY;
        let first = Some(Timestamp::from_millis(0));
        for q in [
            query(t0, t0 + DAY, 15 * 60_000, VIETNAM),
            // A +05:30 zone's days start at 18:30 UTC.
            query(t0, t0 + 10 * DAY, DAY, 5 * HOUR + 30 * 60_000),
            // Less than one whole hour in the range.
            query(t0 + 1, t0 + HOUR + 5, HOUR, 0),
        ] {
            let s = split(&q, first);
            assert_eq!(s.view, None, "{q:?}");
            assert_eq!(s.raw, vec![range(q.from.as_millis(), q.to.as_millis())]);
        }
        assert_eq!(split(&query(t0, t0 + DAY, HOUR, 0), None).view, None);
    }

    #[test]
    fn hours_before_the_tables_first_row_are_not_read_from_the_view() {
        let t0 = 1_000 * DAY;
        let q = query(t0, t0 + 10 * HOUR, HOUR, 0);
        let s = split(&q, Some(Timestamp::from_millis(t0 + 3 * HOUR + 7)));
        assert_eq!(s.view, Some(range(t0 + 4 * HOUR, t0 + 10 * HOUR)));
        assert_eq!(s.raw, vec![range(t0, t0 + 4 * HOUR)]);
    }

    #[test]
    fn a_stale_or_invalid_view_is_not_used() {
        let fresh = Freshness {
            refreshed_txn: 7,
            applied_txn: 7,
            valid: true,
        };
        assert!(fresh.usable());
        assert!(!Freshness {
            refreshed_txn: 6,
            ..fresh
        }
        .usable());
        assert!(!Freshness {
            valid: false,
            ..fresh
        }
        .usable());
    }

    #[test]
    fn partial_buckets_merge_into_exact_counts_and_extremes_and_a_compensated_average() {
        let mut m = Merger::new(&["COD".to_owned(), "pH".to_owned()]);
        let at = Timestamp::from_millis;
        let p = |start, sum, min, max, count| Partial {
            start: at(start),
            sum,
            min,
            max,
            count,
        };
        m.add("pH", p(HOUR, 14.0, 7.0, 7.0, 2));
        m.add("COD", p(HOUR, 1e16, 1e16, 1e16, 1));
        m.add("COD", p(0, 3.0, 1.0, 2.0, 2));
        m.add("COD", p(HOUR, 1.0, 1.0, 1.0, 1));
        m.add("COD", p(HOUR, -1e16, -1e16, -1e16, 1));
        m.add("other", p(0, 1.0, 1.0, 1.0, 1));
        let out = m.finish();
        assert_eq!(out[0].param, "COD");
        assert_eq!(out[0].buckets.len(), 2);
        assert_eq!(out[0].buckets[0].start, at(0), "oldest first");
        let b = &out[0].buckets[1];
        assert_eq!((b.min, b.max, b.count), (-1e16, 1e16, 3));
        // A naive sum loses the 1 next to 1e16.
        assert_eq!(b.avg, 1.0 / 3.0);
        assert_eq!(out[1].buckets[0].avg, 7.0);
    }
}
