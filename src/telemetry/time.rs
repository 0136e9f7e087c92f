//! Millisecond timestamps.
//!
//! Everything inside quantrac is UTC milliseconds since the Unix epoch: a reading's identity
//! is `(station, param, ts)` at that precision. Offsets only matter at the edges: parsing
//! (RFC 3339 with an offset, or Vietnam local time in tt10) and display (the API's offset).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Vietnam's offset from UTC (UTC+7, no daylight saving time).
pub const VIETNAM_OFFSET_SECS: i32 = 7 * 3600;

/// The Vietnam offset as a chrono offset (checked at compile time).
pub const VIETNAM: FixedOffset = match FixedOffset::east_opt(VIETNAM_OFFSET_SECS) {
    Some(offset) => offset,
    None => panic!("UTC+7 is a valid offset"),
};

/// UTC as a chrono fixed offset.
pub const UTC: FixedOffset = match FixedOffset::east_opt(0) {
    Some(offset) => offset,
    None => panic!("UTC is a valid offset"),
};

/// A point in time: UTC milliseconds since the Unix epoch. Serialized as that integer
/// (internal records); responses format it with [`Timestamp::to_rfc3339`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// Why a time string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("`{0}` is not an RFC 3339 time with an offset (e.g. 2026-11-26T10:05:00+07:00)")]
    Rfc3339(String),
    #[error("time is out of the supported range")]
    OutOfRange,
}

impl Timestamp {
    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub fn now() -> Timestamp {
        Timestamp(Utc::now().timestamp_millis())
    }

    /// Parses RFC 3339 with a mandatory offset (`Z` or `+07:00`); sub-millisecond digits are
    /// truncated.
    pub fn parse_rfc3339(text: &str) -> Result<Timestamp, TimeError> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| Timestamp(t.timestamp_millis()))
            .map_err(|_| TimeError::Rfc3339(text.to_owned()))
    }

    /// Converts a wall-clock time in Vietnam (UTC+7) to a timestamp.
    pub fn from_vietnam_local(local: NaiveDateTime) -> Timestamp {
        let utc_ms = local.and_utc().timestamp_millis();
        Timestamp(utc_ms - i64::from(VIETNAM_OFFSET_SECS) * 1000)
    }

    /// Midnight (00:00 Vietnam time) that starts `date`.
    pub fn vietnam_midnight(date: NaiveDate) -> Timestamp {
        Timestamp::from_vietnam_local(date.and_time(chrono::NaiveTime::MIN))
    }

    /// Formats as RFC 3339 in the given offset, with milliseconds only when non-zero.
    pub fn to_rfc3339(self, offset: &FixedOffset) -> String {
        match offset.timestamp_millis_opt(self.0).single() {
            Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            // Out of chrono's range (hundreds of thousands of years; inputs are bounded well
            // inside it): the nearest time chrono can write, still RFC 3339.
            None => {
                let nearest = if self.0 < 0 {
                    chrono::DateTime::<chrono::Utc>::MIN_UTC
                } else {
                    chrono::DateTime::<chrono::Utc>::MAX_UTC
                };
                nearest.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            }
        }
    }

    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_ms(d)))
    }

    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_ms(d)))
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339(&UTC))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offset_is_converted_to_utc_milliseconds() {
        let t = Timestamp::parse_rfc3339("2026-11-26T10:05:00+07:00").unwrap();
        assert_eq!(t.as_millis(), 1_795_662_300_000);
        let z = Timestamp::parse_rfc3339("2026-11-26T03:05:00Z").unwrap();
        assert_eq!(t, z);
    }

    #[test]
    fn rfc3339_without_offset_is_refused() {
        assert!(Timestamp::parse_rfc3339("2026-11-26T10:05:00").is_err());
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn sub_millisecond_digits_are_truncated() {
        let t = Timestamp::parse_rfc3339("2026-11-26T03:05:00.123999Z").unwrap();
        assert_eq!(t.as_millis() % 1000, 123);
    }

    #[test]
    fn vietnam_local_time_is_seven_hours_ahead_of_utc() {
        let local = NaiveDate::from_ymd_opt(2026, 11, 26)
            .unwrap()
            .and_hms_opt(10, 5, 0)
            .unwrap();
        assert_eq!(
            Timestamp::from_vietnam_local(local).as_millis(),
            1_795_662_300_000
        );
    }

    #[test]
    fn formatting_uses_the_requested_offset_and_hides_zero_milliseconds() {
        let t = Timestamp::from_millis(1_795_662_300_000);
        assert_eq!(t.to_rfc3339(&VIETNAM), "2026-11-26T10:05:00+07:00");
        let t = Timestamp::from_millis(1_795_662_300_250);
        assert_eq!(t.to_string(), "2026-11-26T03:05:00.250Z");
    }
}
