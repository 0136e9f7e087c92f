//! The index's data: breakpoints and bands, read from `vn_aqi.toml` (data, not code: the
//! decision can be replaced, and operators load the new one).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::registry::Certainty;

/// The file in the seeds directory, and quantrac's built-in copy of it.
pub const FILE: &str = "vn_aqi.toml";
pub const BUILTIN: &str = include_str!("../../seeds/vn_aqi.toml");

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The pollutants of the index, in the decision's order of presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Pollutant {
    #[serde(rename = "PM2.5")]
    Pm25,
    #[serde(rename = "PM10")]
    Pm10,
    O3,
    #[serde(rename = "NO2")]
    No2,
    #[serde(rename = "SO2")]
    So2,
    #[serde(rename = "CO")]
    Co,
}

impl Pollutant {
    pub const ALL: [Pollutant; 6] = [
        Pollutant::Pm25,
        Pollutant::Pm10,
        Pollutant::O3,
        Pollutant::No2,
        Pollutant::So2,
        Pollutant::Co,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Pollutant::Pm25 => "PM2.5",
            Pollutant::Pm10 => "PM10",
            Pollutant::O3 => "O3",
            Pollutant::No2 => "NO2",
            Pollutant::So2 => "SO2",
            Pollutant::Co => "CO",
        }
    }

    /// The pollutant a station parameter measures: its name as in `stations.toml`, or as
    /// Circular 10 files spell it (`PM2,5`).
    pub fn of_param(name: &str) -> Option<Pollutant> {
        match name {
            "PM2.5" | "PM2,5" => Some(Pollutant::Pm25),
            "PM10" => Some(Pollutant::Pm10),
            "O3" => Some(Pollutant::O3),
            "NO2" => Some(Pollutant::No2),
            "SO2" => Some(Pollutant::So2),
            "CO" => Some(Pollutant::Co),
            _ => None,
        }
    }

    pub const fn is_particulate(self) -> bool {
        matches!(self, Pollutant::Pm25 | Pollutant::Pm10)
    }
}

/// A breakpoint scale: a pollutant, and for O3 the averaging time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scale {
    O3OneHour,
    O3EightHours,
    Co,
    So2,
    No2,
    Pm10,
    Pm25,
}

impl Scale {
    const ALL: [Scale; 7] = [
        Scale::O3OneHour,
        Scale::O3EightHours,
        Scale::Co,
        Scale::So2,
        Scale::No2,
        Scale::Pm10,
        Scale::Pm25,
    ];

    /// Its key under `[breakpoints]`.
    pub const fn key(self) -> &'static str {
        match self {
            Scale::O3OneHour => "O3_1h",
            Scale::O3EightHours => "O3_8h",
            Scale::Co => "CO",
            Scale::So2 => "SO2",
            Scale::No2 => "NO2",
            Scale::Pm10 => "PM10",
            Scale::Pm25 => "PM2.5",
        }
    }

    /// The scale of a pollutant's one-hour (or, for PM, NowCast and 24-hour) values.
    pub const fn of(p: Pollutant) -> Scale {
        match p {
            Pollutant::Pm25 => Scale::Pm25,
            Pollutant::Pm10 => Scale::Pm10,
            Pollutant::O3 => Scale::O3OneHour,
            Pollutant::No2 => Scale::No2,
            Pollutant::So2 => Scale::So2,
            Pollutant::Co => Scale::Co,
        }
    }
}

/// A band of the index: its name (English key and Vietnamese), colour and highest AQI.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Band {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
    pub name: String,
    pub name_vi: String,
    pub rgb: [u8; 3],
}

impl Band {
    /// `#rrggbb`.
    pub fn colour(&self) -> String {
        let [r, g, b] = self.rgb;
        format!("#{r:02x}{g:02x}{b:02x}")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    source: String,
    certainty: Certainty,
    indices: Vec<f64>,
    breakpoints: BTreeMap<String, Vec<f64>>,
    band: Vec<Band>,
}

/// The index's breakpoints and bands, checked.
#[derive(Debug, Clone)]
pub struct Table {
    pub source: String,
    pub certainty: Certainty,
    indices: Vec<f64>,
    scales: BTreeMap<Scale, Vec<f64>>,
    bands: Vec<Band>,
}

impl Table {
    /// The built-in copy of `seeds/vn_aqi.toml`.
    #[allow(clippy::expect_used)] // the built-in file is checked by a test
    pub fn builtin() -> Table {
        Table::parse(BUILTIN, "built-in vn_aqi.toml").expect("the built-in VN_AQI table is valid")
    }

    /// `vn_aqi.toml` from the seeds directory, or the built-in copy when it has none.
    pub fn load(seeds: &Path) -> Result<Table, Error> {
        let path = seeds.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Table::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Table::builtin()),
            Err(source) => Err(Error::Read {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    pub fn parse(text: &str, path: &str) -> Result<Table, Error> {
        let invalid = |message: String| Error::Invalid {
            path: path.to_owned(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if file.indices.len() < 2 || !increasing(&file.indices) {
            return Err(invalid(
                "`indices` must be at least two increasing values".into(),
            ));
        }
        let mut scales = BTreeMap::new();
        for scale in Scale::ALL {
            let points = file
                .breakpoints
                .get(scale.key())
                .ok_or_else(|| invalid(format!("[breakpoints] has no `{}`", scale.key())))?;
            if points.len() < 2 || points.len() > file.indices.len() || !increasing(points) {
                return Err(invalid(format!(
                    "[breakpoints] `{}` must be 2 to {} increasing concentrations",
                    scale.key(),
                    file.indices.len()
                )));
            }
            scales.insert(scale, points.clone());
        }
        if let Some(unknown) = file
            .breakpoints
            .keys()
            .find(|k| !Scale::ALL.iter().any(|s| s.key() == k.as_str()))
        {
            return Err(invalid(format!(
                "[breakpoints] `{unknown}` is not a scale of the index"
            )));
        }
        let bands = file.band;
        let ordered = bands.windows(2).all(|w| match (w[0].max, w[1].max) {
            (Some(a), Some(b)) => a < b,
            (Some(_), None) => true,
            (None, _) => false,
        });
        if bands.is_empty() || !ordered || bands.last().is_some_and(|b| b.max.is_some()) {
            return Err(invalid(
                "[[band]] must be in increasing `max`, the last one without `max`".into(),
            ));
        }
        Ok(Table {
            source: file.source,
            certainty: file.certainty,
            indices: file.indices,
            scales,
            bands,
        })
    }

    /// The sub-index of concentration `c` (ug/m3) on `scale`, not rounded: linear between the
    /// breakpoints around it, the last segment extended above the last one, except on the
    /// 8-hour O3 scale, whose values above its last breakpoint do not count (`None`, as for
    /// a negative or non-finite concentration).
    pub fn sub_index(&self, scale: Scale, c: f64) -> Option<f64> {
        let points = self.scales.get(&scale)?;
        if !c.is_finite() || c < 0.0 {
            return None;
        }
        let last = points.len() - 1;
        if scale == Scale::O3EightHours && c > points[last] {
            return None;
        }
        let i = points[..last].iter().rposition(|&bp| bp <= c).unwrap_or(0);
        let (lo, hi) = (points[i], points[i + 1]);
        let (ilo, ihi) = (self.indices[i], self.indices[i + 1]);
        Some((ihi - ilo) / (hi - lo) * (c - lo) + ilo)
    }

    /// The band of a (rounded) AQI.
    pub fn band(&self, aqi: u32) -> &Band {
        self.bands
            .iter()
            .find(|b| b.max.is_none_or(|max| aqi <= max))
            .unwrap_or(&self.bands[self.bands.len() - 1])
    }
}

fn increasing(values: &[f64]) -> bool {
    values.iter().all(|v| v.is_finite()) && values.windows(2).all(|w| w[0] < w[1])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_table_is_valid_and_is_the_seeds_file() {
        let t = Table::builtin();
        assert_eq!(t.certainty, Certainty::S);
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let loaded = Table::load(&seeds).unwrap();
        assert_eq!(loaded.scales, t.scales);
    }

    #[test]
    fn sub_indices_interpolate_between_breakpoints() {
        let t = Table::builtin();
        // The decision's worked examples (../shared/reference/regulations.md).
        let close = |scale, c, want: f64| {
            let got = t.sub_index(scale, c).unwrap();
            assert!((got - want).abs() < 1e-9, "{scale:?} {c}: {got} != {want}");
        };
        close(Scale::O3OneHour, 136.1, 42.531_25);
        close(Scale::No2, 118.7, 59.35);
        close(Scale::Pm25, 20.3, 40.6);
        close(Scale::O3EightHours, 89.3, 44.65);
        close(Scale::Pm25, 55.7, 109.5);
        close(Scale::Pm25, 0.0, 0.0);
        close(Scale::Pm25, 25.0, 50.0);
        // Above the last breakpoint the last segment goes on.
        close(Scale::Pm25, 650.0, 600.0);
    }

    #[test]
    fn an_eight_hour_ozone_value_above_its_scale_does_not_count() {
        let t = Table::builtin();
        assert!(t.sub_index(Scale::O3EightHours, 400.0).is_some());
        assert_eq!(t.sub_index(Scale::O3EightHours, 400.1), None);
        assert_eq!(t.sub_index(Scale::Pm10, -1.0), None);
        assert_eq!(t.sub_index(Scale::Pm10, f64::NAN), None);
    }

    #[test]
    fn bands_follow_the_rounded_index() {
        let t = Table::builtin();
        assert_eq!(t.band(0).name, "good");
        assert_eq!(t.band(50).name, "good");
        assert_eq!(t.band(51).name, "moderate");
        assert_eq!(t.band(110).name, "poor");
        assert_eq!(t.band(301).name_vi, "Nguy hại");
        assert_eq!(t.band(900).name, "hazardous");
        assert_eq!(t.band(60).colour(), "#ffff00");
    }

    #[test]
    fn a_table_with_a_missing_scale_or_unordered_breakpoints_is_refused_with_the_key() {
        let without = BUILTIN.replace("SO2 = [0, 125, 350, 550, 800, 1600, 2100, 2630]\n", "");
        let e = Table::parse(&without, "t.toml").unwrap_err().to_string();
        assert!(e.contains("`SO2`"), "{e}");
        let unordered = BUILTIN.replace("PM10 = [0, 50, 150,", "PM10 = [0, 150, 50,");
        let e = Table::parse(&unordered, "t.toml").unwrap_err().to_string();
        assert!(e.contains("`PM10`"), "{e}");
    }
}
