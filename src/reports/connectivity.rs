//! Connectivity: whether a station's data really reaches the center, and in time. The
//! mission's own measure (all automatic monitoring data, live), per station and period, and
//! rolled up per zone and for the whole center.
//!
//! - **Expected** records: the period's length (up to now, for the current one) over the
//!   station's `expected_interval`. Declared maintenance is not subtracted (not modelled).
//! - **Received**: distinct record times with readings in the period (any status: a
//!   calibrating station is connected).
//! - **On time**: received within [`ON_TIME_MS`] of its measurement time (Circular 10:
//!   each result within 5 minutes); a record whose arrival is unknown (stored before arrival
//!   times were kept) is counted apart, neither on time nor late.
//! - **Gaps**: stretches without a record longer than one and a half intervals, the period's
//!   start and end included; the longest is reported with how many records it misses.

use serde::Serialize;

use super::calendar::Period;
use crate::storage::RecordArrival;
use crate::telemetry::Timestamp;

/// A record is on time when it arrives within this of its measurement time.
pub const ON_TIME_MS: i64 = 5 * 60_000;

/// A stretch without records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gap {
    /// When the first missing record was due.
    pub start: Timestamp,
    /// The next record's time (or the period's end).
    pub end: Timestamp,
    pub minutes: f64,
    /// Records missing in it.
    pub missing: u64,
}

/// One station over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connectivity {
    pub expected: u64,
    pub received: u64,
    pub on_time: u64,
    pub late: u64,
    pub arrival_unknown: u64,
    /// `received / expected`, at most 1 (`None` when nothing was expected yet).
    pub completeness: Option<f64>,
    /// `on_time / (on_time + late)` (`None` when no arrival is known).
    pub timeliness: Option<f64>,
    pub gaps: u64,
    pub longest_gap: Option<Gap>,
}

impl Connectivity {
    /// Every expected record received.
    pub fn complete(&self) -> bool {
        self.expected > 0 && self.received >= self.expected
    }
}

/// `records` are the station's, in time order (those outside the period are ignored).
pub fn evaluate(
    records: &[RecordArrival],
    period: Period,
    interval_ms: i64,
    now: Timestamp,
) -> Connectivity {
    let interval = interval_ms.max(1);
    let until = period.end.min(now).max(period.start).as_millis();
    let start = period.start.as_millis();
    let expected = ((until - start) / interval) as u64;
    let (mut received, mut on_time, mut late, mut unknown) = (0u64, 0u64, 0u64, 0u64);
    let mut gaps = 0u64;
    let mut longest: Option<Gap> = None;
    // The record before the period, as if the station had sent it on time.
    let mut previous = start - interval;
    let mut gap_until = |from: i64, to: i64, gaps: &mut u64| {
        if to - from > interval + interval / 2 {
            *gaps += 1;
            let gap = Gap {
                start: Timestamp::from_millis(from + interval),
                end: Timestamp::from_millis(to),
                minutes: (to - from - interval) as f64 / 60_000.0,
                missing: ((to - from) as f64 / interval as f64).round() as u64 - 1,
            };
            if longest.as_ref().is_none_or(|l| gap.minutes > l.minutes) {
                longest = Some(gap);
            }
        }
    };
    for r in records
        .iter()
        .filter(|r| r.ts >= period.start && r.ts.as_millis() < until)
    {
        received += 1;
        match r.arrived {
            Some(a) if a.as_millis() - r.ts.as_millis() <= ON_TIME_MS => on_time += 1,
            Some(_) => late += 1,
            None => unknown += 1,
        }
        gap_until(previous, r.ts.as_millis(), &mut gaps);
        previous = r.ts.as_millis();
    }
    // Up to the period's end (or now): the record after it would be due at `until`.
    gap_until(previous, until, &mut gaps);
    Connectivity {
        expected,
        received,
        on_time,
        late,
        arrival_unknown: unknown,
        completeness: (expected > 0).then(|| (received as f64 / expected as f64).min(1.0)),
        timeliness: (on_time + late > 0).then(|| on_time as f64 / (on_time + late) as f64),
        gaps,
        longest_gap: longest,
    }
}

/// Stations rolled up (a zone, or the whole center).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rollup {
    pub stations: u64,
    /// Stations that sent every expected record.
    pub stations_complete: u64,
    pub share_stations_complete: Option<f64>,
    pub expected: u64,
    pub received: u64,
    /// `received / expected` over the stations (each station's received counted up to its
    /// expected).
    pub completeness: Option<f64>,
    pub on_time: u64,
    pub late: u64,
    pub arrival_unknown: u64,
    /// Share of the data with a known arrival that was received on time.
    pub timeliness: Option<f64>,
}

impl Rollup {
    pub fn add(&mut self, c: &Connectivity) {
        self.stations += 1;
        self.stations_complete += u64::from(c.complete());
        self.expected += c.expected;
        self.received += c.received.min(c.expected);
        self.on_time += c.on_time;
        self.late += c.late;
        self.arrival_unknown += c.arrival_unknown;
        self.share_stations_complete = Some(self.stations_complete as f64 / self.stations as f64);
        self.completeness =
            (self.expected > 0).then(|| self.received as f64 / self.expected as f64);
        self.timeliness = (self.on_time + self.late > 0)
            .then(|| self.on_time as f64 / (self.on_time + self.late) as f64);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIN5: i64 = 300_000;
    const DAY: i64 = 86_400_000;

    fn day() -> Period {
        let start = Timestamp::parse_rfc3339("2026-01-10T00:00:00+07:00").unwrap();
        Period {
            start,
            end: Timestamp::from_millis(start.as_millis() + DAY),
        }
    }

    fn records(period: Period, keep: impl Fn(i64) -> Option<Option<i64>>) -> Vec<RecordArrival> {
        (0..288)
            .filter_map(|k| {
                let ts = period.start.as_millis() + k * MIN5;
                keep(k).map(|delay| RecordArrival {
                    ts: Timestamp::from_millis(ts),
                    arrived: delay.map(|d| Timestamp::from_millis(ts + d)),
                })
            })
            .collect()
    }

    #[test]
    fn a_station_that_sends_everything_on_time_is_complete_and_timely_without_gaps() {
        let p = day();
        let c = evaluate(
            &records(p, |_| Some(Some(10_000))),
            p,
            MIN5,
            Timestamp::from_millis(i64::MAX),
        );
        assert_eq!(
            (c.expected, c.received, c.on_time, c.late, c.gaps),
            (288, 288, 288, 0, 0)
        );
        assert_eq!((c.completeness, c.timeliness), (Some(1.0), Some(1.0)));
        assert!(c.complete());
    }

    #[test]
    fn an_hour_missing_is_one_gap_of_twelve_records_and_late_ones_count_apart() {
        let p = day();
        // 10:00-10:55 missing; 14:00-14:55 arrive 6 minutes late; 20:00 arrival unknown.
        let rs = records(p, |k| match k {
            120..=131 => None,
            168..=179 => Some(Some(6 * 60_000)),
            240 => Some(None),
            _ => Some(Some(1_000)),
        });
        let c = evaluate(&rs, p, MIN5, Timestamp::from_millis(i64::MAX));
        assert_eq!((c.received, c.late, c.arrival_unknown), (276, 12, 1));
        assert_eq!(c.on_time, 263);
        assert_eq!(c.gaps, 1);
        let gap = c.longest_gap.clone().unwrap();
        assert_eq!((gap.missing, gap.minutes), (12, 60.0));
        assert_eq!(gap.start.as_millis(), p.start.as_millis() + 120 * MIN5);
        assert!(!c.complete());
        assert!((c.timeliness.unwrap() - 263.0 / 275.0).abs() < 1e-12);
    }

    #[test]
    fn silence_at_the_start_and_at_the_end_are_gaps_and_the_current_period_counts_to_now() {
        let p = day();
        let rs = records(p, |k| (12..100).contains(&k).then_some(Some(0)));
        let now = Timestamp::from_millis(p.start.as_millis() + 144 * MIN5);
        let c = evaluate(&rs, p, MIN5, now);
        assert_eq!(c.expected, 144, "up to now");
        assert_eq!(c.gaps, 2);
        assert_eq!(c.longest_gap.unwrap().missing, 44, "from 100 to 143");
    }

    #[test]
    fn a_rollup_counts_complete_stations_and_data_received_on_time() {
        let p = day();
        let full = evaluate(
            &records(p, |_| Some(Some(0))),
            p,
            MIN5,
            Timestamp::from_millis(i64::MAX),
        );
        let half = evaluate(
            &records(p, |k| (k % 2 == 0).then_some(Some(10 * 60_000))),
            p,
            MIN5,
            Timestamp::from_millis(i64::MAX),
        );
        let mut r = Rollup::default();
        r.add(&full);
        r.add(&half);
        assert_eq!((r.stations, r.stations_complete), (2, 1));
        assert_eq!(r.share_stations_complete, Some(0.5));
        assert_eq!(r.completeness, Some(432.0 / 576.0));
        assert_eq!(r.timeliness, Some(288.0 / 432.0));
    }
}
