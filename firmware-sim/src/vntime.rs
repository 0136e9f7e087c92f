//! Vietnam local time: UTC+7 all year (no daylight saving).
//!
//! The contract sends instants as UTC milliseconds or RFC 3339 with an offset, but two things
//! are local: the tt10 timestamps (Circular 10 files carry local wall time without an offset)
//! and the rhythm of a plant (shifts, calibration "once a day", regulatory "valid from" dates).

use chrono::{DateTime, FixedOffset, NaiveDate, Offset as _, Utc};

/// Seconds east of UTC.
pub(crate) const OFFSET_SECONDS: i32 = 7 * 3600;
/// Milliseconds east of UTC.
pub(crate) const OFFSET_MS: i64 = OFFSET_SECONDS as i64 * 1000;
/// One day in milliseconds.
pub(crate) const DAY_MS: i64 = 86_400_000;

/// The UTC+7 offset.
pub(crate) fn offset() -> FixedOffset {
    // 7 h is always a valid offset; the fallback only satisfies the type.
    FixedOffset::east_opt(OFFSET_SECONDS).unwrap_or_else(|| Utc.fix())
}

/// `ts_ms` as a Vietnam local date-time, or `None` when outside chrono's range.
pub(crate) fn local(ts_ms: i64) -> Option<DateTime<FixedOffset>> {
    DateTime::<Utc>::from_timestamp_millis(ts_ms).map(|utc| utc.with_timezone(&offset()))
}

/// Milliseconds since local midnight (0 ..= 86_399_999).
pub(crate) fn ms_of_local_day(ts_ms: i64) -> i64 {
    (ts_ms + OFFSET_MS).rem_euclid(DAY_MS)
}

/// Today's date in Vietnam.
pub(crate) fn today() -> NaiveDate {
    Utc::now().with_timezone(&offset()).date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_midnight_is_seventeen_hundred_utc_the_day_before() {
        // 2026-11-25T17:00:00Z = 2026-11-26T00:00:00+07:00
        let ts = 1_795_626_000_000;
        assert_eq!(ms_of_local_day(ts), 0);
        let local = local(ts).map(|t| t.to_rfc3339());
        assert_eq!(local.as_deref(), Some("2026-11-26T00:00:00+07:00"));
    }
}
