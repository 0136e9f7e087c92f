//! Limit profiles: regulatory limit values as data (`seeds/limits.csv`), each row keeping
//! how sure we are of it and where it comes from. Regulations change (QCVN 40:2011 and
//! QCVN 19:2009 were replaced in 2025), so rows carry a validity period and operators load
//! the profile that binds each station.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

/// Over what a limit is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Averaging {
    /// Each reading on its own.
    #[serde(rename = "inst")]
    Instant,
    /// The mean over the last hour.
    #[serde(rename = "1h")]
    Hour1,
    #[serde(rename = "8h")]
    Hour8,
    #[serde(rename = "24h")]
    Hour24,
    /// The mean over a year (compliance reporting, not real-time alerts).
    #[serde(rename = "1y")]
    Year1,
}

impl Averaging {
    /// Length of the averaging window in milliseconds (`None` for instantaneous limits).
    pub const fn window_ms(self) -> Option<i64> {
        const HOUR: i64 = 3_600_000;
        match self {
            Averaging::Instant => None,
            Averaging::Hour1 => Some(HOUR),
            Averaging::Hour8 => Some(8 * HOUR),
            Averaging::Hour24 => Some(24 * HOUR),
            Averaging::Year1 => Some(365 * 24 * HOUR),
        }
    }
}

/// How sure we are of a regulatory value (see `../shared/reference/regulations.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Certainty {
    /// Verified against the official text.
    V,
    /// From secondary sources that agree.
    S,
    /// Not verified.
    NV,
}

/// One row of `seeds/limits.csv`, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRow {
    pub profile: String,
    pub parameter: String,
    pub unit: String,
    pub averaging: Averaging,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    #[serde(with = "yes_no")]
    pub factor_applies: bool,
    pub valid_from: Option<NaiveDate>,
    pub valid_to: Option<NaiveDate>,
    pub status: Certainty,
    pub source: String,
}

/// A named set of limit rows.
#[derive(Debug, Clone, Serialize)]
pub struct LimitProfile {
    pub id: String,
    pub rows: Vec<LimitRow>,
}

/// A limit as it binds one station parameter: the profile row with the station's factor
/// applied to the upper bound where the row allows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limit {
    pub averaging: Averaging,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lower: Option<f64>,
    /// The effective upper bound (`row.upper x factor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper: Option<f64>,
    /// The factor that was applied to the upper bound (1 when the row forbids scaling).
    pub factor: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_from: Option<NaiveDate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<NaiveDate>,
    pub status: Certainty,
    pub source: String,
}

impl Limit {
    pub fn from_row(row: &LimitRow, station_factor: f64) -> Limit {
        let factor = if row.factor_applies {
            station_factor
        } else {
            1.0
        };
        Limit {
            averaging: row.averaging,
            lower: row.lower,
            upper: row.upper.map(|u| u * factor),
            factor,
            valid_from: row.valid_from,
            valid_to: row.valid_to,
            status: row.status,
            source: row.source.clone(),
        }
    }

    /// Whether the limit is in force on `date` (both ends inclusive).
    pub fn applies_on(&self, date: NaiveDate) -> bool {
        self.valid_from.is_none_or(|from| from <= date) && self.valid_to.is_none_or(|to| date <= to)
    }
}

mod yes_no {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *value { "yes" } else { "no" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match String::deserialize(d)?.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => Err(serde::de::Error::custom(format!(
                "factor_applies must be yes or no, found `{other}`"
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(upper: f64, factor_applies: bool) -> LimitRow {
        LimitRow {
            profile: "p".into(),
            parameter: "COD".into(),
            unit: "mg/L".into(),
            averaging: Averaging::Instant,
            lower: None,
            upper: Some(upper),
            factor_applies,
            valid_from: NaiveDate::from_ymd_opt(2026, 1, 1),
            valid_to: None,
            status: Certainty::S,
            source: "test".into(),
        }
    }

    #[test]
    fn the_station_factor_scales_only_rows_that_allow_it() {
        assert_eq!(Limit::from_row(&row(150.0, true), 0.9).upper, Some(135.0));
        assert_eq!(Limit::from_row(&row(9.0, false), 0.9).upper, Some(9.0));
    }

    #[test]
    fn validity_periods_include_both_ends() {
        let l = Limit::from_row(&row(1.0, true), 1.0);
        assert!(!l.applies_on(NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()));
        assert!(l.applies_on(NaiveDate::from_ymd_opt(2026, 1, 1).unwrap()));
    }
}
