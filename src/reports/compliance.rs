//! Compliance: one parameter's readings over one report period against each of its limit
//! rows, as Circular 24/2017 Art. 58 asks of a receiving center (min, max and means compared
//! with the QCVN limits).
//!
//! - **Readings used**: valid ones (status 00). Calibrating (01) and device-fault (02)
//!   readings are counted apart and judge nothing.
//! - **Coverage**: valid readings against those the station's interval promises over the
//!   period (up to now); below `coverage`, a period without an exceedance is
//!   `insufficient_data`. An exceedance that was measured is `exceeded` whatever the
//!   coverage: it happened.
//! - **Limit rows** are judged only on the local days they are in force (a row's validity
//!   period), each with the station's factor as the registry applied it.
//! - **Instantaneous** rows judge each reading; **1 h** rows each local hour's mean, **8 h**
//!   rows the 8-hour mean ending at each hour, **24 h** rows each local day's mean; a mean
//!   counts only when its window is covered ([`crate::coverage`], the alert rules' rule).
//!   **1 y** rows are not judged in day or month reports.
//! - **Longest exceedance**: the longest run of consecutive exceeding readings (a gap of
//!   more than two intervals or a reading within the limit ends it) or windows.

use chrono::FixedOffset;
use serde::Serialize;

use super::calendar::{local_date, Period};
use crate::registry::{Averaging, Limit, Parameter};
use crate::telemetry::{Status, Timestamp};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// What every judgement of a report shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The station's reporting interval.
    pub interval_ms: i64,
    /// The share of expected readings (and of a window's) that counts as covered.
    pub coverage: f64,
    pub offset: FixedOffset,
    /// Expected readings are counted up to now in a period that has not ended.
    pub now: Timestamp,
}

/// One stored reading of the parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: Timestamp,
    pub value: f64,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Compliant,
    InsufficientData,
    Exceeded,
}

impl Verdict {
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Compliant => "compliant",
            Verdict::InsufficientData => "insufficient_data",
            Verdict::Exceeded => "exceeded",
        }
    }
}

/// A run of consecutive exceedances.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// The first exceeding reading's time (a window's start).
    pub start: Timestamp,
    /// The end of the last one: its time plus one interval (a window's end).
    pub end: Timestamp,
    pub minutes: f64,
    /// Exceeding readings (or windows) in the run.
    pub count: u64,
    /// The largest value (or mean) in it.
    pub peak: f64,
}

/// One limit row's judgement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LimitReport {
    #[serde(flatten)]
    pub limit: Limit,
    /// `readings`, `hourly means`, `8-hour means` or `daily means`.
    pub judged_as: &'static str,
    /// Readings or covered windows judged against the row.
    pub judged: u64,
    pub exceeded: u64,
    /// `exceeded / judged` (`None` when nothing was judged).
    pub share_exceeded: Option<f64>,
    pub longest: Option<Run>,
    pub verdict: Verdict,
}

/// One parameter over one period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamReport {
    pub param: String,
    pub unit: String,
    /// Readings the station's interval promises over the period (up to now).
    pub expected: u64,
    /// Valid readings (status 00).
    pub valid: u64,
    /// Readings excluded: calibrating (01) and device fault (02).
    pub calibrating: u64,
    pub fault: u64,
    /// `valid / expected` (`None` when nothing was expected yet).
    pub coverage: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub limits: Vec<LimitReport>,
    /// The worst of the rows' verdicts.
    pub verdict: Verdict,
}

/// Judges `parameter` over `period`. `samples` are its readings in time order, from 7 hours
/// before the period (8-hour windows) to its end. `None` when no limit row of the parameter
/// is in force on any day of the period.
pub fn evaluate(
    parameter: &Parameter,
    samples: &[Sample],
    period: Period,
    s: &Settings,
) -> Option<ParamReport> {
    let in_period = |x: &&Sample| x.ts >= period.start && x.ts < period.end;
    let days = days_of(period, &s.offset);
    let rows: Vec<&Limit> = parameter
        .limits
        .iter()
        .filter(|l| l.averaging != Averaging::Year1)
        .filter(|l| days.iter().any(|d| l.applies_on(*d)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let (mut valid, mut calibrating, mut fault) = (0u64, 0u64, 0u64);
    let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for x in samples.iter().filter(in_period) {
        match x.status {
            Status::Measuring => {
                valid += 1;
                min = min.min(x.value);
                max = max.max(x.value);
                sum += x.value;
            }
            Status::Calibrating => calibrating += 1,
            Status::DeviceError => fault += 1,
        }
    }
    let until = period.end.min(s.now).max(period.start);
    let expected = ((until.as_millis() - period.start.as_millis()) / s.interval_ms.max(1)) as u64;
    let coverage = (expected > 0).then(|| valid as f64 / expected as f64);
    let covered = coverage.is_some_and(|c| c >= s.coverage);
    let limits: Vec<LimitReport> = rows
        .into_iter()
        .map(|limit| judge(limit, samples, period, s, covered))
        .collect();
    let verdict = limits
        .iter()
        .map(|l| l.verdict)
        .max()
        .unwrap_or(Verdict::InsufficientData);
    Some(ParamReport {
        param: parameter.name.to_string(),
        unit: parameter.unit.to_string(),
        expected,
        valid,
        calibrating,
        fault,
        coverage,
        min: (valid > 0).then_some(min),
        max: (valid > 0).then_some(max),
        mean: (valid > 0).then(|| sum / valid as f64),
        limits,
        verdict,
    })
}

/// The local dates a period spans.
fn days_of(period: Period, offset: &FixedOffset) -> Vec<chrono::NaiveDate> {
    let mut days = Vec::new();
    let mut t = period.start.as_millis();
    while t < period.end.as_millis() {
        days.push(local_date(Timestamp::from_millis(t), offset));
        t += DAY;
    }
    days
}

fn outside(limit: &Limit, value: f64) -> bool {
    limit.upper.is_some_and(|u| value > u) || limit.lower.is_some_and(|l| value < l)
}

/// A value judged: when, over what span, and the value.
struct Judged {
    start: i64,
    end: i64,
    value: f64,
}

fn judge(
    limit: &Limit,
    samples: &[Sample],
    period: Period,
    s: &Settings,
    covered: bool,
) -> LimitReport {
    let in_force = |ts: i64| limit.applies_on(local_date(Timestamp::from_millis(ts), &s.offset));
    let valid: Vec<&Sample> = samples
        .iter()
        .filter(|x| x.status == Status::Measuring)
        .collect();
    let (judged_as, values): (&'static str, Vec<Judged>) = match limit.averaging {
        Averaging::Instant => (
            "readings",
            valid
                .iter()
                .filter(|x| x.ts >= period.start && x.ts < period.end)
                .map(|x| Judged {
                    start: x.ts.as_millis(),
                    end: x.ts.as_millis() + s.interval_ms,
                    value: x.value,
                })
                .collect(),
        ),
        Averaging::Hour1 => ("hourly means", windows(&valid, period, HOUR, HOUR, s)),
        Averaging::Hour8 => ("8-hour means", windows(&valid, period, 8 * HOUR, HOUR, s)),
        Averaging::Hour24 | Averaging::Year1 => {
            ("daily means", windows(&valid, period, DAY, DAY, s))
        }
    };
    let mut judged = 0u64;
    let mut exceeded = 0u64;
    let mut longest: Option<Run> = None;
    let mut run: Option<Run> = None;
    let mut last: Option<&Judged> = None;
    // Consecutive: readings at most two intervals apart (one missing reading does not end a
    // run); windows one step apart (a window without enough readings ends it).
    let consecutive = |prev: &Judged, v: &Judged| match limit.averaging {
        Averaging::Instant => v.start - prev.start <= 2 * s.interval_ms,
        _ => v.end - prev.end <= step_of(limit.averaging),
    };
    // A reading is judged by the rows in force on its day; a window by those in force on the
    // day it ends in (the 8 hours ending 01:00 belong to the day they end in).
    let day_of = |v: &Judged| match limit.averaging {
        Averaging::Instant => v.start,
        _ => v.end - 1,
    };
    for v in values.iter().filter(|v| in_force(day_of(v))) {
        judged += 1;
        let apart = last.is_none_or(|prev| !consecutive(prev, v));
        last = Some(v);
        if outside(limit, v.value) {
            exceeded += 1;
            match run.as_mut() {
                Some(r) if !apart => {
                    r.end = Timestamp::from_millis(v.end);
                    r.count += 1;
                    r.peak = r.peak.max(v.value);
                }
                _ => {
                    close(&mut run, &mut longest);
                    run = Some(Run {
                        start: Timestamp::from_millis(v.start),
                        end: Timestamp::from_millis(v.end),
                        minutes: 0.0,
                        count: 1,
                        peak: v.value,
                    });
                }
            }
        } else {
            close(&mut run, &mut longest);
        }
    }
    close(&mut run, &mut longest);
    let verdict = if exceeded > 0 {
        Verdict::Exceeded
    } else if !covered || judged == 0 {
        Verdict::InsufficientData
    } else {
        Verdict::Compliant
    };
    LimitReport {
        limit: limit.clone(),
        judged_as,
        judged,
        exceeded,
        share_exceeded: (judged > 0).then(|| exceeded as f64 / judged as f64),
        longest,
        verdict,
    }
}

/// How far apart consecutive windows of an averaged row end.
const fn step_of(averaging: Averaging) -> i64 {
    match averaging {
        Averaging::Hour24 | Averaging::Year1 => DAY,
        _ => HOUR,
    }
}

/// Ends the current run, keeping it if it is the longest so far.
fn close(run: &mut Option<Run>, longest: &mut Option<Run>) {
    if let Some(mut r) = run.take() {
        r.minutes = (r.end.as_millis() - r.start.as_millis()) as f64 / 60_000.0;
        if longest.as_ref().is_none_or(|l| r.minutes > l.minutes) {
            *longest = Some(r);
        }
    }
}

/// Covered means of windows `width` long, one every `step`, each ending within the period
/// (aligned on local hours or days).
fn windows(valid: &[&Sample], period: Period, width: i64, step: i64, s: &Settings) -> Vec<Judged> {
    let mut out = Vec::new();
    let mut end = period.start.as_millis() + step;
    let mut lo = 0;
    // Only windows that have ended: a day's mean is not judged before the day is over.
    let last_end = period.end.min(s.now).as_millis();
    while end <= last_end {
        let start = end - width;
        while lo < valid.len() && valid[lo].ts.as_millis() < start {
            lo += 1;
        }
        let (mut n, mut sum) = (0u64, 0.0);
        for x in valid[lo..].iter().take_while(|x| x.ts.as_millis() < end) {
            n += 1;
            sum += x.value;
        }
        if crate::coverage::covered(n, width, s.interval_ms, s.coverage) {
            out.push(Judged {
                start,
                end,
                value: sum / n as f64,
            });
        }
        end += step;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::registry::{Certainty, Range};
    use chrono::NaiveDate;

    const MIN5: i64 = 300_000;

    fn vietnam() -> FixedOffset {
        FixedOffset::east_opt(7 * 3600).unwrap()
    }

    fn limit(averaging: Averaging, upper: f64, from: Option<&str>, to: Option<&str>) -> Limit {
        let date = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
        Limit {
            averaging,
            lower: None,
            upper: Some(upper),
            factor: 1.0,
            valid_from: from.map(date),
            valid_to: to.map(date),
            status: Certainty::S,
            source: format!("test {upper}"),
        }
    }

    fn parameter(limits: Vec<Limit>) -> Parameter {
        Parameter {
            name: "COD".into(),
            unit: "mg/L".into(),
            range: Range {
                min: 0.0,
                max: 1000.0,
            },
            limits,
        }
    }

    fn settings(now: i64) -> Settings {
        Settings {
            interval_ms: MIN5,
            coverage: 0.75,
            offset: vietnam(),
            now: Timestamp::from_millis(now),
        }
    }

    /// A local day (2026-01-10) of 5-minute readings, `value(k)` for the k-th.
    fn day(value: impl Fn(i64) -> (f64, Status)) -> (Period, Vec<Sample>) {
        let start = Timestamp::parse_rfc3339("2026-01-10T00:00:00+07:00").unwrap();
        let period = Period {
            start,
            end: Timestamp::from_millis(start.as_millis() + DAY),
        };
        let samples = (0..288)
            .map(|k| {
                let (value, status) = value(k);
                Sample {
                    ts: Timestamp::from_millis(start.as_millis() + k * MIN5),
                    value,
                    status,
                }
            })
            .collect();
        (period, samples)
    }

    /// The local day 2026-01-10 and the 7 hours before it, every 5 minutes: `value(k)` for
    /// the k-th reading from the day's start (negative before it).
    fn day_with_lookback(value: impl Fn(i64) -> f64) -> (Period, Vec<Sample>) {
        let start = Timestamp::parse_rfc3339("2026-01-10T00:00:00+07:00")
            .unwrap()
            .as_millis();
        let samples = (-84..288)
            .map(|k| Sample {
                ts: Timestamp::from_millis(start + k * MIN5),
                value: value(k),
                status: Status::Measuring,
            })
            .collect();
        let period = Period {
            start: Timestamp::from_millis(start),
            end: Timestamp::from_millis(start + DAY),
        };
        (period, samples)
    }

    #[test]
    fn readings_above_an_instant_limit_are_counted_with_the_longest_run_and_excluded_statuses_apart(
    ) {
        let (period, samples) = day(|k| match k {
            10..=12 => (120.0, Status::Measuring),
            50 => (130.0, Status::Measuring),
            60..=71 => (500.0, Status::Calibrating),
            72 => (0.0, Status::DeviceError),
            _ => (40.0, Status::Measuring),
        });
        let p = parameter(vec![limit(Averaging::Instant, 100.0, None, None)]);
        let r = evaluate(&p, &samples, period, &settings(i64::MAX)).unwrap();
        assert_eq!(
            (r.expected, r.valid, r.calibrating, r.fault),
            (288, 275, 12, 1)
        );
        assert_eq!((r.min, r.max), (Some(40.0), Some(130.0)));
        let l = &r.limits[0];
        assert_eq!(
            (l.judged, l.exceeded, l.verdict),
            (275, 4, Verdict::Exceeded)
        );
        let run = l.longest.as_ref().unwrap();
        assert_eq!((run.count, run.minutes, run.peak), (3, 15.0, 120.0));
        assert_eq!(run.start.as_millis(), period.start.as_millis() + 10 * MIN5);
        assert_eq!(r.verdict, Verdict::Exceeded);
    }

    #[test]
    fn a_day_within_its_limits_is_compliant_and_one_with_too_few_readings_is_insufficient() {
        let (period, samples) = day(|_| (40.0, Status::Measuring));
        let p = parameter(vec![limit(Averaging::Instant, 100.0, None, None)]);
        let r = evaluate(&p, &samples, period, &settings(i64::MAX)).unwrap();
        assert_eq!(r.verdict, Verdict::Compliant);
        let few: Vec<Sample> = samples.iter().step_by(2).copied().collect();
        let r = evaluate(&p, &few, period, &settings(i64::MAX)).unwrap();
        assert_eq!(r.coverage, Some(0.5));
        assert_eq!(r.verdict, Verdict::InsufficientData);
    }

    #[test]
    fn hourly_means_are_judged_only_when_the_hour_is_covered() {
        // Hour 3 averages 150 (above 100); hour 5 has 8 readings of 500 (not covered: 9 needed).
        let (period, samples) = day(|k| match (k / 12, k % 12) {
            (3, _) => (150.0, Status::Measuring),
            (5, 0..=7) => (500.0, Status::Measuring),
            (5, _) => (0.0, Status::DeviceError),
            _ => (40.0, Status::Measuring),
        });
        let p = parameter(vec![limit(Averaging::Hour1, 100.0, None, None)]);
        let r = evaluate(&p, &samples, period, &settings(i64::MAX)).unwrap();
        let l = &r.limits[0];
        assert_eq!((l.judged_as, l.judged, l.exceeded), ("hourly means", 23, 1));
        let run = l.longest.as_ref().unwrap();
        assert_eq!((run.minutes, run.peak), (60.0, 150.0));
    }

    #[test]
    fn a_limit_row_applies_only_on_the_days_it_is_in_force() {
        // PM2.5 24 h: 50 until 2025-12-31, 45 from 2026-01-01 (QCVN 05:2023); a mean of 47.
        let rows = vec![
            limit(Averaging::Hour24, 50.0, None, Some("2025-12-31")),
            limit(Averaging::Hour24, 45.0, Some("2026-01-01"), None),
        ];
        let p = parameter(rows);
        let (period, samples) = day(|_| (47.0, Status::Measuring));
        let r = evaluate(&p, &samples, period, &settings(i64::MAX)).unwrap();
        assert_eq!(r.limits.len(), 1, "only the row in force in 2026");
        assert_eq!(r.limits[0].limit.upper, Some(45.0));
        assert_eq!(r.limits[0].verdict, Verdict::Exceeded);
    }

    #[test]
    fn eight_hour_windows_are_judged_by_the_rows_in_force_on_the_day_they_end_in() {
        // The new row from 2026-01-10: every window ending that day is judged by it, those
        // starting the day before included.
        let (period, samples) = day_with_lookback(|_| 40.0);
        let p = parameter(vec![
            limit(Averaging::Hour8, 100.0, None, Some("2026-01-09")),
            limit(Averaging::Hour8, 30.0, Some("2026-01-10"), None),
        ]);
        let r = evaluate(&p, &samples, period, &settings(i64::MAX)).unwrap();
        assert_eq!(r.limits.len(), 1);
        assert_eq!((r.limits[0].judged, r.limits[0].exceeded), (24, 24));
    }

    #[test]
    fn a_day_not_over_yet_has_no_daily_mean_and_a_gap_in_windows_ends_a_run() {
        let (period, samples) = day(|k| match k / 12 {
            2 | 4 => (150.0, Status::Measuring),
            3 => (0.0, Status::DeviceError),
            _ => (40.0, Status::Measuring),
        });
        let noon = period.start.as_millis() + DAY / 2;
        let p = parameter(vec![
            limit(Averaging::Hour24, 100.0, None, None),
            limit(Averaging::Hour1, 100.0, None, None),
        ]);
        let r = evaluate(&p, &samples, period, &settings(noon)).unwrap();
        let daily = r
            .limits
            .iter()
            .find(|l| l.limit.averaging == Averaging::Hour24)
            .unwrap();
        assert_eq!(daily.judged, 0, "the day is not over at noon");
        let hourly = r
            .limits
            .iter()
            .find(|l| l.limit.averaging == Averaging::Hour1)
            .unwrap();
        assert_eq!(hourly.exceeded, 2);
        assert_eq!(
            hourly.longest.as_ref().unwrap().count,
            1,
            "hour 3 had no mean: two runs"
        );
    }

    #[test]
    fn a_parameter_without_a_limit_in_force_is_not_reported() {
        let p = parameter(vec![limit(
            Averaging::Instant,
            1.0,
            None,
            Some("2020-01-01"),
        )]);
        let (period, samples) = day(|_| (40.0, Status::Measuring));
        assert_eq!(evaluate(&p, &samples, period, &settings(i64::MAX)), None);
    }

    #[test]
    fn eight_hour_means_use_the_hours_before_the_period() {
        // 7 hours before the day at 200, then 40: the windows ending 01:00 .. 07:00 average
        // above 100 (the one ending 01:00: (7 x 200 + 40) / 8 = 180).
        let (period, samples) = day_with_lookback(|k| if k < 0 { 200.0 } else { 40.0 });
        let p = parameter(vec![limit(Averaging::Hour8, 100.0, None, None)]);
        let r = evaluate(&p, &samples, period, &settings(i64::MAX)).unwrap();
        let l = &r.limits[0];
        assert_eq!(
            (l.judged, l.exceeded),
            (24, 4),
            "windows ending 01:00 to 04:00"
        );
        assert_eq!(l.longest.as_ref().unwrap().peak, 180.0);
        assert_eq!(r.valid, 288, "only the day's readings are counted as used");
    }
}
