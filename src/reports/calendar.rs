//! Report periods on the local calendar (Vietnam: UTC+7, no daylight saving).

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono::{FixedOffset, Months};

use crate::telemetry::Timestamp;

/// How long a report period is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodKind {
    Day,
    Month,
}

impl PeriodKind {
    pub fn parse(text: &str) -> Option<PeriodKind> {
        match text {
            "day" => Some(PeriodKind::Day),
            "month" => Some(PeriodKind::Month),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            PeriodKind::Day => "day",
            PeriodKind::Month => "month",
        }
    }
}

/// One report period `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The local date of `ts`.
pub fn local_date(ts: Timestamp, offset: &FixedOffset) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(ts.as_millis())
        .unwrap_or_default()
        .with_timezone(offset)
        .date_naive()
}

fn midnight(date: NaiveDate, offset: &FixedOffset) -> Timestamp {
    let local = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    let ms = offset
        .from_local_datetime(&local)
        .single()
        .map_or(0, |t| t.timestamp_millis());
    Timestamp::from_millis(ms)
}

/// The periods that overlap `[from, to)`, each whole: the first holds `from`.
pub fn periods(
    kind: PeriodKind,
    from: Timestamp,
    to: Timestamp,
    offset: &FixedOffset,
) -> Vec<Period> {
    let mut date = local_date(from, offset);
    if kind == PeriodKind::Month {
        date = date.with_day(1).unwrap_or(date);
    }
    let mut out = Vec::new();
    loop {
        let start = midnight(date, offset);
        if start >= to {
            break;
        }
        let next = match kind {
            PeriodKind::Day => date.succ_opt(),
            PeriodKind::Month => date.checked_add_months(Months::new(1)),
        };
        let Some(next) = next else {
            break;
        };
        out.push(Period {
            start,
            end: midnight(next, offset),
        });
        date = next;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vietnam() -> FixedOffset {
        FixedOffset::east_opt(7 * 3600).unwrap()
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn months_start_at_local_midnight_of_the_first_and_cover_the_range() {
        let p = periods(
            PeriodKind::Month,
            at("2026-01-15T10:00:00+07:00"),
            at("2026-03-01T00:00:00+07:00"),
            &vietnam(),
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].start, at("2026-01-01T00:00:00+07:00"));
        assert_eq!(p[0].end, at("2026-02-01T00:00:00+07:00"));
        assert_eq!(p[1].end, at("2026-03-01T00:00:00+07:00"));
    }

    #[test]
    fn a_local_day_starts_at_17_00_utc_the_day_before() {
        let p = periods(
            PeriodKind::Day,
            at("2026-01-01T00:30:00+07:00"),
            at("2026-01-01T00:31:00+07:00"),
            &vietnam(),
        );
        assert_eq!(
            p,
            [Period {
                start: at("2025-12-31T17:00:00Z"),
                end: at("2026-01-01T17:00:00Z")
            }]
        );
        assert_eq!(
            local_date(at("2025-12-31T17:00:00Z"), &vietnam()).to_string(),
            "2026-01-01"
        );
    }
}
