//! The rows of `limits.csv` and the choice of the one limit a simulated gateway aims at.
//!
//! A station is judged against several rows per parameter (instantaneous, hourly, daily,
//! yearly means, some valid only from a date). The simulator needs one number to shape its
//! episodes: the `inst` row if there is one, else the shortest averaging window, among the
//! rows valid today.

use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;

use super::{Error, Result};

/// All rows of the limits file.
pub(super) struct Limits {
    rows: Vec<LimitRow>,
}

/// The bounds of one chosen row.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limit {
    pub(super) lower: Option<f64>,
    upper: Option<f64>,
    factor_applies: bool,
}

impl Limit {
    /// The upper bound, scaled by the station's factor when the row says it applies.
    pub(super) fn upper_with(self, factor: f64) -> Option<f64> {
        self.upper
            .map(|u| if self.factor_applies { u * factor } else { u })
    }
}

struct LimitRow {
    profile: String,
    parameter: String,
    unit: String,
    /// Averaging window; zero for `inst`.
    window: Duration,
    valid_from: Option<NaiveDate>,
    valid_to: Option<NaiveDate>,
    limit: Limit,
}

#[derive(Deserialize)]
struct CsvRow {
    profile: String,
    parameter: String,
    unit: String,
    averaging: String,
    lower: String,
    upper: String,
    factor_applies: String,
    valid_from: String,
    valid_to: String,
}

impl Limits {
    pub(super) fn parse(text: &str) -> Result<Limits> {
        let mut reader = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .flexible(true)
            .from_reader(text.as_bytes());
        let mut rows = Vec::new();
        for (index, row) in reader.deserialize::<CsvRow>().enumerate() {
            rows.push(LimitRow::from_csv(row?, index + 1)?);
        }
        Ok(Limits { rows })
    }

    /// The limit a gateway aims at for `parameter` of `profile` on `today`, if any.
    pub(super) fn select(
        &self,
        profile: &str,
        parameter: &str,
        unit: &str,
        today: NaiveDate,
    ) -> Option<Limit> {
        self.rows
            .iter()
            .filter(|r| r.profile == profile && r.parameter == parameter && r.unit == unit)
            .filter(|r| r.valid_from.is_none_or(|from| from <= today))
            .filter(|r| r.valid_to.is_none_or(|to| today <= to))
            .min_by_key(|r| r.window)
            .map(|r| r.limit)
    }
}

impl LimitRow {
    fn from_csv(row: CsvRow, number: usize) -> Result<LimitRow> {
        let bad = |message: String| Error::LimitRow {
            row: number,
            message,
        };
        let number_field = |name: &str, text: &str| -> Result<Option<f64>> {
            if text.is_empty() {
                return Ok(None);
            }
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(Some)
                .ok_or_else(|| bad(format!("{name} `{text}` is not a number")))
        };
        let date_field = |name: &str, text: &str| -> Result<Option<NaiveDate>> {
            if text.is_empty() {
                return Ok(None);
            }
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(Some)
                .map_err(|_| bad(format!("{name} `{text}` is not a YYYY-MM-DD date")))
        };
        let window = if row.averaging.eq_ignore_ascii_case("inst") {
            Duration::ZERO
        } else {
            humantime::parse_duration(&row.averaging).map_err(|_| {
                bad(format!(
                    "averaging `{}` is not inst or a window",
                    row.averaging
                ))
            })?
        };
        let factor_applies = match row.factor_applies.to_ascii_lowercase().as_str() {
            "yes" => true,
            "no" | "" => false,
            other => return Err(bad(format!("factor_applies `{other}` is not yes or no"))),
        };
        Ok(LimitRow {
            window,
            valid_from: date_field("valid_from", &row.valid_from)?,
            valid_to: date_field("valid_to", &row.valid_to)?,
            limit: Limit {
                lower: number_field("lower", &row.lower)?,
                upper: number_field("upper", &row.upper)?,
                factor_applies,
            },
            profile: row.profile,
            parameter: row.parameter,
            unit: row.unit,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CSV: &str = "# comment\n\
        profile,parameter,unit,averaging,lower,upper,factor_applies,valid_from,valid_to,status,source\n\
        p,X,u,24h,,100,no,,,S,src\n\
        p,X,u,1h,,300,no,,,S,src\n\
        p,X,u,1y,,40,no,,,S,src\n\
        p,Y,u,24h,,50,yes,,2025-12-31,S,src\n\
        p,Y,u,24h,,45,yes,2026-01-01,,S,src\n\
        p,Y,u,inst,,70,yes,2027-01-01,,S,src\n";

    #[test]
    fn an_hourly_row_wins_over_daily_and_yearly_ones() {
        let limits = Limits::parse(CSV).unwrap();
        let day = NaiveDate::from_ymd_opt(2026, 5, 1).unwrap();
        let x = limits.select("p", "X", "u", day).unwrap();
        assert_eq!(x.upper_with(2.0), Some(300.0));
    }

    #[test]
    fn only_rows_valid_on_the_day_are_considered() {
        let limits = Limits::parse(CSV).unwrap();
        let y = |d| limits.select("p", "Y", "u", d).unwrap().upper_with(0.5);
        assert_eq!(
            y(NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()),
            Some(25.0)
        );
        assert_eq!(y(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()), Some(22.5));
        assert_eq!(y(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()), Some(35.0));
    }

    #[test]
    fn a_row_with_a_bad_number_is_reported_with_its_position() {
        let bad =
            "profile,parameter,unit,averaging,lower,upper,factor_applies,valid_from,valid_to\n\
                   p,X,u,inst,,ten,no,,\n";
        let error = Limits::parse(bad).err().unwrap();
        assert!(matches!(error, Error::LimitRow { row: 1, .. }), "{error}");
    }
}
