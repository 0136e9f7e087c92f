//! Query-string parsing with errors that name the parameter.
//!
//! Handlers take the raw query string and pull typed values out of [`Params`]; whatever is
//! left when they finish is an unknown parameter and answered 400, so a typo (`statoin=`) is
//! never silently ignored. The parsers are pure functions, unit-tested and fuzzable.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{FixedOffset, NaiveDate};

use super::error::{ApiError, ApiResult};
use crate::telemetry::{Status, Timestamp};

/// The parameters of one request.
#[derive(Debug)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> ApiResult<Params> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::bad("query", format!("cannot decode the query string: {e}")))?;
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            if values.contains_key(&name) {
                return Err(ApiError::BadParameter {
                    parameter: "query".into(),
                    message: format!("parameter `{name}` is given twice"),
                });
            }
            if value.is_empty() {
                return Err(ApiError::BadParameter {
                    message: "is empty: give a value or leave the parameter out".into(),
                    parameter: name.into(),
                });
            }
            values.insert(name, value);
        }
        Ok(Params { values })
    }

    /// Takes a parameter (never empty: [`Params::parse`] refuses empty values).
    pub fn take(&mut self, name: &'static str) -> Option<String> {
        self.values.remove(name)
    }

    pub fn required(&mut self, name: &'static str) -> ApiResult<String> {
        self.take(name)
            .ok_or_else(|| ApiError::bad(name, "is required"))
    }

    /// Fails on any parameter no one took.
    pub fn finish(self) -> ApiResult<()> {
        match self.values.keys().next() {
            None => Ok(()),
            Some(name) => Err(ApiError::BadParameter {
                parameter: "query".into(),
                message: format!("unknown parameter `{name}`"),
            }),
        }
    }
}

/// A time: RFC 3339 with an offset, integer epoch milliseconds, or a date (`YYYY-MM-DD`,
/// midnight at `offset`), within the years 1970 to 9999.
/// Times taken from clients: years 1970 to 9999 (outside, 400).
pub const EARLIEST_MS: i64 = 0;
/// 9999-12-31T23:59:59.999Z.
pub const LATEST_MS: i64 = 253_402_300_799_999;

pub fn time(name: &'static str, text: &str, offset: &FixedOffset) -> ApiResult<Timestamp> {
    let ts = parse_time(name, text, offset)?;
    if (EARLIEST_MS..=LATEST_MS).contains(&ts.as_millis()) {
        Ok(ts)
    } else {
        Err(ApiError::bad(
            name,
            format!("`{text}` is outside the years 1970 to 9999"),
        ))
    }
}

fn parse_time(name: &'static str, text: &str, offset: &FixedOffset) -> ApiResult<Timestamp> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(Timestamp::from_millis(ms));
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        let local_ms = date
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis();
        return Ok(Timestamp::from_millis(
            local_ms.saturating_sub(i64::from(offset.local_minus_utc()) * 1000),
        ));
    }
    Timestamp::parse_rfc3339(text).map_err(|_| {
        ApiError::bad(
            name,
            format!("`{text}` is not a time: use RFC 3339 with an offset (2026-11-26T10:00:00+07:00), epoch milliseconds, or a date (2026-11-26)"),
        )
    })
}

/// The `[from, to)` range of a query: `to` defaults to now, `from` to `to - default_range`;
/// `from < to` and the span may not exceed `max_range`.
pub fn range(
    params: &mut Params,
    offset: &FixedOffset,
    now: Timestamp,
    default_range: Duration,
    max_range: Duration,
) -> ApiResult<(Timestamp, Timestamp)> {
    let to = match params.take("to") {
        Some(t) => time("to", &t, offset)?,
        None => now,
    };
    let from = match params.take("from") {
        Some(f) => time("from", &f, offset)?,
        None => to.saturating_sub(default_range),
    };
    if from >= to {
        return Err(ApiError::bad("from", "must be before `to`"));
    }
    let span = to.as_millis().saturating_sub(from.as_millis());
    if span > crate::telemetry::time::duration_ms(max_range) {
        return Err(ApiError::bad(
            "to",
            format!(
                "the range spans more than the maximum of {}",
                describe(max_range)
            ),
        ));
    }
    Ok((from, to))
}

/// A duration for messages: whole days as "366 days", anything else as humantime writes it.
fn describe(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(86_400) && d.subsec_nanos() == 0 {
        format!("{} days", secs / 86_400)
    } else {
        humantime::format_duration(d).to_string()
    }
}

/// A positive integer no larger than `max`.
pub fn bounded(name: &'static str, text: &str, max: usize) -> ApiResult<usize> {
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(
            name,
            format!("must be an integer from 1 to {max}"),
        )),
    }
}

/// `status=00|01|02|all`.
pub fn status(text: &str) -> ApiResult<Option<Status>> {
    if text == "all" {
        return Ok(None);
    }
    Status::from_code(text)
        .map(Some)
        .ok_or_else(|| ApiError::bad("status", "must be 00, 01, 02 or all"))
}

/// Bucket widths offered by the API.
pub fn bucket(text: &str) -> ApiResult<Duration> {
    let minutes = match text {
        "1m" => 1,
        "5m" => 5,
        "15m" => 15,
        "1h" => 60,
        "1d" => 24 * 60,
        _ => {
            return Err(ApiError::bad(
                "bucket",
                "must be one of 1m, 5m, 15m, 1h, 1d",
            ))
        }
    };
    Ok(Duration::from_secs(minutes * 60))
}

/// A cursor of the readings endpoint: the `(ts, param)` of the last row of a page.
pub fn encode_reading_cursor(ts: Timestamp, param: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("r1:{}:{param}", ts.as_millis()))
}

pub fn decode_reading_cursor(text: &str) -> ApiResult<(Timestamp, String)> {
    let invalid = || ApiError::bad("cursor", "is not a cursor returned by this endpoint");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    let decoded = String::from_utf8(bytes).map_err(|_| invalid())?;
    let rest = decoded.strip_prefix("r1:").ok_or_else(invalid)?;
    let (ts, param) = rest.split_once(':').ok_or_else(invalid)?;
    let ts = ts.parse::<i64>().map_err(|_| invalid())?;
    Ok((Timestamp::from_millis(ts), param.to_owned()))
}

/// A cursor of the quarantine endpoint: the id of the last entry of a page.
pub fn encode_id_cursor(id: u64) -> String {
    URL_SAFE_NO_PAD.encode(format!("q1:{id}"))
}

pub fn decode_id_cursor(text: &str) -> ApiResult<u64> {
    let invalid = || ApiError::bad("cursor", "is not a cursor returned by this endpoint");
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
    String::from_utf8(bytes)
        .ok()
        .and_then(|s| s.strip_prefix("q1:").and_then(|id| id.parse().ok()))
        .ok_or_else(invalid)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::telemetry::time::VIETNAM;

    fn message(e: ApiError) -> String {
        e.to_string()
    }

    #[test]
    fn unknown_and_repeated_parameters_are_refused() {
        let mut p = Params::parse(Some("station=S&statoin=x")).unwrap();
        assert_eq!(p.take("station").as_deref(), Some("S"));
        assert!(message(p.finish().unwrap_err()).contains("unknown parameter `statoin`"));
        let err = Params::parse(Some("a=1&a=2")).unwrap_err();
        assert!(message(err).contains("given twice"));
    }

    #[test]
    fn times_accept_rfc3339_epoch_milliseconds_and_local_dates() {
        let t = time("from", "2026-11-26T10:05:00+07:00", &VIETNAM).unwrap();
        assert_eq!(t.as_millis(), 1_795_662_300_000);
        assert_eq!(time("from", "1795662300000", &VIETNAM).unwrap(), t);
        let midnight = time("from", "2026-11-26", &VIETNAM).unwrap();
        assert_eq!(
            midnight.as_millis(),
            1_795_662_300_000 - (10 * 60 + 5) * 60_000
        );
        let err = message(time("to", "26/11/2026", &VIETNAM).unwrap_err());
        assert!(err.starts_with("to:"), "{err}");
    }

    #[test]
    fn ranges_default_to_the_last_day_and_are_bounded() {
        let now = Timestamp::from_millis(10 * 86_400_000);
        let day = Duration::from_secs(86_400);
        let mut p = Params::parse(None).unwrap();
        let (from, to) = range(&mut p, &VIETNAM, now, day, day * 7).unwrap();
        assert_eq!((from.as_millis(), to), (9 * 86_400_000, now));
        let mut p = Params::parse(Some("from=5000&to=4000")).unwrap();
        assert!(message(range(&mut p, &VIETNAM, now, day, day).unwrap_err()).starts_with("from:"));
        let mut p = Params::parse(Some("from=0&to=864000000")).unwrap();
        let err = message(range(&mut p, &VIETNAM, now, day, day).unwrap_err());
        assert!(err.contains("maximum of 1 days"), "{err}");
    }

    #[test]
    fn empty_values_are_refused_naming_the_parameter() {
        let err = Params::parse(Some("station=S&from=")).unwrap_err();
        match &err {
            ApiError::BadParameter { parameter, .. } => assert_eq!(parameter, "from"),
            other => panic!("{other:?}"),
        }
        assert!(message(err).contains("empty"));
        assert!(Params::parse(Some("limit")).is_err());
    }

    #[test]
    fn times_outside_the_years_1970_to_9999_are_refused() {
        for absurd in [
            "9223372036854775807",
            "-1",
            "253402300800000",
            "+10000-01-02",
            "1969-12-31T23:59:59Z",
        ] {
            let err = time("to", absurd, &VIETNAM).unwrap_err();
            assert!(message(err).starts_with("to:"), "{absurd}");
        }
        assert_eq!(time("to", "0", &VIETNAM).unwrap().as_millis(), 0);
        let last = time("to", "9999-12-31T23:59:59.999Z", &VIETNAM).unwrap();
        assert_eq!(last.as_millis(), LATEST_MS);
    }

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let c = encode_reading_cursor(Timestamp::from_millis(42), "PM2.5");
        assert_eq!(
            decode_reading_cursor(&c).unwrap(),
            (Timestamp::from_millis(42), "PM2.5".into())
        );
        assert!(decode_reading_cursor("nonsense!").is_err());
        assert!(decode_reading_cursor(&encode_id_cursor(3)).is_err());
        assert_eq!(decode_id_cursor(&encode_id_cursor(3)).unwrap(), 3);
    }

    #[test]
    fn limits_buckets_and_statuses_are_checked() {
        assert_eq!(bounded("limit", "10", 100).unwrap(), 10);
        for bad in ["0", "101", "-1", "ten"] {
            assert!(bounded("limit", bad, 100).is_err(), "{bad}");
        }
        assert_eq!(bucket("15m").unwrap(), Duration::from_secs(900));
        assert!(bucket("2h").is_err());
        assert_eq!(status("all").unwrap(), None);
        assert_eq!(status("01").unwrap(), Some(Status::Calibrating));
        assert!(status("1").is_err());
    }
}
