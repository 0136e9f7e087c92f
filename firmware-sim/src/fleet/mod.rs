//! The simulated fleet, read from the service's seed files (`seeds/stations.toml` and
//! `seeds/limits.csv`).
//!
//! A real gateway is configured with its station id, zone and parameter list; the simulator
//! reads the same registry so that what it sends is what the center expects. It reads only
//! the keys it needs and ignores the rest (the registry belongs to the service and grows on
//! its own schedule), and it knows each parameter's current upper limit so that it can
//! produce realistic episodes that cross it.

pub mod generate;
mod limits;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::vntime;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A seed file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `stations.toml` is not valid TOML of the expected shape.
    #[error("invalid stations file: {0}")]
    Stations(#[from] toml::de::Error),
    /// `limits.csv` has a row that cannot be read.
    #[error("invalid limits file: {0}")]
    Limits(#[from] csv::Error),
    /// A limit row has a bad field.
    #[error("invalid limits file, row {row}: {message}")]
    LimitRow {
        /// 1-based row number among data rows.
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// A station's `expected_interval` is not a positive duration such as `5m`.
    #[error("station {station}: signing_keys[0] is not hex")]
    Key {
        /// The station.
        station: String,
    },
    #[error("station {station}: invalid expected_interval `{value}`")]
    Interval {
        /// The station id.
        station: String,
        /// The text found.
        value: String,
    },
    /// A parameter's range is empty, inverted or not finite.
    #[error("station {station}, parameter {param}: invalid range [{min}, {max}]")]
    Range {
        /// The station id.
        station: String,
        /// The parameter symbol.
        param: String,
        /// Lower end.
        min: f64,
        /// Upper end.
        max: f64,
    },
    /// The stations file lists no station.
    #[error("no station in the stations file")]
    Empty,
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The stations that the simulator can impersonate, in seed-file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// One entry per `[[station]]`.
    pub stations: Vec<StationSpec>,
}

/// What a gateway knows about its station.
#[derive(Debug, Clone, PartialEq)]
pub struct StationSpec {
    /// Registry id (appears in topics and records).
    pub id: String,
    /// Zone id (appears in topics).
    pub zone: String,
    /// `wastewater`, `emission` or `ambient`.
    pub kind: String,
    /// How often the station reports.
    pub expected_interval: Duration,
    /// Configured parameters, in registry order.
    pub parameters: Vec<ParamSpec>,
    /// The key the station signs its records with (the first of `signing_keys`), if any.
    pub signing_key: Option<Vec<u8>>,
}

/// One configured parameter, with the limit in force today.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// Parameter symbol (`COD`, `PM2.5`, ...).
    pub name: String,
    /// Unit the gateway sends.
    pub unit: String,
    /// Physical range of the sensor `(min, max)`; values outside are rejected by the center.
    pub range: (f64, f64),
    /// Upper limit (already multiplied by the station's `limit_factor` where it applies).
    pub upper_limit: Option<f64>,
    /// Lower limit (pH).
    pub lower_limit: Option<f64>,
}

impl Fleet {
    /// Reads `stations.toml` and `limits.csv` from `seeds_dir`, with the limits valid today
    /// (Vietnam date). A missing `limits.csv` means no limits.
    pub fn load(seeds_dir: &Path) -> Result<Fleet> {
        let stations = read(&seeds_dir.join("stations.toml"))?;
        let limits_path = seeds_dir.join("limits.csv");
        let limits = if limits_path.exists() {
            read(&limits_path)?
        } else {
            String::new()
        };
        Fleet::parse(&stations, &limits, vntime::today())
    }

    /// Builds the fleet from the text of the two seed files, with the limits valid on `today`.
    pub fn parse(stations_toml: &str, limits_csv: &str, today: NaiveDate) -> Result<Fleet> {
        let file: StationsFile = toml::from_str(stations_toml)?;
        if file.station.is_empty() {
            return Err(Error::Empty);
        }
        let limits = limits::Limits::parse(limits_csv)?;
        let stations = file
            .station
            .into_iter()
            .map(|station| station.into_spec(&limits, today))
            .collect::<Result<Vec<_>>>()?;
        Ok(Fleet { stations })
    }

    /// The station with this id.
    pub fn station(&self, id: &str) -> Option<&StationSpec> {
        self.stations.iter().find(|s| s.id == id)
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// The subset of `stations.toml` that a gateway needs; other keys are ignored on purpose.
#[derive(Deserialize)]
struct StationsFile {
    #[serde(default)]
    station: Vec<StationToml>,
}

#[derive(Deserialize)]
struct StationToml {
    id: String,
    zone: String,
    kind: String,
    expected_interval: String,
    limit_profile: Option<String>,
    limit_factor: Option<f64>,
    #[serde(default)]
    parameter: Vec<ParamToml>,
    #[serde(default)]
    signing_keys: Vec<String>,
}

#[derive(Deserialize)]
struct ParamToml {
    name: String,
    unit: String,
    range: (f64, f64),
}

impl StationToml {
    fn into_spec(self, limits: &limits::Limits, today: NaiveDate) -> Result<StationSpec> {
        let expected_interval = humantime::parse_duration(self.expected_interval.trim())
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Error::Interval {
                station: self.id.clone(),
                value: self.expected_interval.clone(),
            })?;
        let factor = self.limit_factor.unwrap_or(1.0);
        let parameters = self
            .parameter
            .into_iter()
            .map(|p| {
                let (min, max) = p.range;
                if !(min.is_finite() && max.is_finite() && min < max) {
                    return Err(Error::Range {
                        station: self.id.clone(),
                        param: p.name,
                        min,
                        max,
                    });
                }
                let limit = self
                    .limit_profile
                    .as_deref()
                    .and_then(|profile| limits.select(profile, &p.name, &p.unit, today));
                Ok(ParamSpec {
                    upper_limit: limit.and_then(|l| l.upper_with(factor)),
                    lower_limit: limit.and_then(|l| l.lower),
                    name: p.name,
                    unit: p.unit,
                    range: (min, max),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let signing_key = match self.signing_keys.first() {
            Some(text) => Some(crate::sign::key_from_hex(text).ok_or_else(|| Error::Key {
                station: self.id.clone(),
            })?),
            None => None,
        };
        Ok(StationSpec {
            id: self.id,
            zone: self.zone,
            kind: self.kind,
            expected_interval,
            parameters,
            signing_key,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seeds() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds")
    }

    fn seed_fleet(today: NaiveDate) -> Fleet {
        let stations = std::fs::read_to_string(seeds().join("stations.toml")).unwrap();
        let limits = std::fs::read_to_string(seeds().join("limits.csv")).unwrap();
        Fleet::parse(&stations, &limits, today).unwrap()
    }

    fn param<'a>(fleet: &'a Fleet, station: &str, name: &str) -> &'a ParamSpec {
        let station = fleet.station(station).unwrap();
        station.parameters.iter().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn the_seed_fleet_loads_with_every_station_and_parameter() {
        let fleet = Fleet::load(&seeds()).unwrap();
        assert_eq!(fleet.stations.len(), 6);
        let ww = fleet.station("DN-AMATA-WW01").unwrap();
        assert_eq!(ww.zone, "DN-AMATA");
        assert_eq!(ww.kind, "wastewater");
        assert_eq!(ww.expected_interval, Duration::from_secs(300));
        assert_eq!(ww.parameters.len(), 6);
        assert_eq!(ww.parameters[1].unit, "°C");
        assert_eq!(ww.parameters[0].range, (0.0, 5000.0));
    }

    #[test]
    fn upper_limits_are_scaled_by_the_station_factor_when_the_row_says_so() {
        let fleet = seed_fleet(NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
        let cod = param(&fleet, "DN-AMATA-WW01", "COD");
        assert!((cod.upper_limit.unwrap() - 135.0).abs() < 1e-9);
        let ph = param(&fleet, "DN-AMATA-WW01", "pH");
        assert_eq!((ph.lower_limit, ph.upper_limit), (Some(5.5), Some(9.0)));
        let dust = param(&fleet, "BN-VSIP-ST01", "Dust");
        assert!((dust.upper_limit.unwrap() - 160.0).abs() < 1e-9);
        assert_eq!(param(&fleet, "DN-AMATA-WW01", "Flow").upper_limit, None);
    }

    #[test]
    fn the_shortest_averaging_window_valid_today_is_chosen() {
        let after = seed_fleet(NaiveDate::from_ymd_opt(2026, 11, 26).unwrap());
        assert_eq!(
            param(&after, "BN-VSIP-AQ01", "PM2.5").upper_limit,
            Some(45.0)
        );
        assert_eq!(
            param(&after, "BN-VSIP-AQ01", "SO2").upper_limit,
            Some(350.0)
        );
        assert_eq!(
            param(&after, "BN-VSIP-AQ01", "CO").upper_limit,
            Some(30000.0)
        );
        let before = seed_fleet(NaiveDate::from_ymd_opt(2025, 6, 1).unwrap());
        assert_eq!(
            param(&before, "BN-VSIP-AQ01", "PM2.5").upper_limit,
            Some(50.0)
        );
    }

    #[test]
    fn unknown_keys_are_ignored_and_a_bad_interval_is_reported() {
        let toml = r#"
            [[station]]
            id = "S1"
            zone = "Z"
            kind = "ambient"
            expected_interval = "soon"
            colour = "blue"
        "#;
        let error = Fleet::parse(toml, "", NaiveDate::MIN).unwrap_err();
        assert!(matches!(error, Error::Interval { .. }), "{error}");
    }
}
