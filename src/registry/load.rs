//! Loading the registry from the seed directory:
//!
//! - `zones.toml`: `[[zone]]` tables;
//! - `stations.toml`: `[[station]]` tables, each with `[[station.parameter]]`;
//! - `limits.csv`: limit profile rows (comment lines start with `#`).
//!
//! Syntax errors stop at the first one (the parser's message has file, line and column);
//! consistency problems are all collected, so an operator fixes a seed set in one pass.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::limits::{Limit, LimitProfile, LimitRow};
use super::{is_valid_id, Location, Parameter, Range, Registry, Station, StationKind, Zone};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("the seeds in {dir} are inconsistent:\n  - {}", problems.join("\n  - "))]
    Invalid { dir: PathBuf, problems: Vec<String> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZonesFile {
    #[serde(default)]
    zone: Vec<ZoneSeed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneSeed {
    id: String,
    name: String,
    province: String,
    authority: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StationsFile {
    #[serde(default)]
    station: Vec<StationSeed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StationSeed {
    id: String,
    zone: String,
    kind: StationKind,
    name: String,
    operator: String,
    location: Location,
    #[serde(with = "humantime_serde")]
    expected_interval: Duration,
    limit_profile: Option<String>,
    #[serde(default = "one")]
    limit_factor: f64,
    #[serde(default)]
    parameter: Vec<ParameterSeed>,
    /// Hex HMAC-SHA256 keys (at least 16 bytes each).
    #[serde(default)]
    signing_keys: Vec<String>,
    #[serde(default)]
    require_signature: bool,
}

/// Smallest HMAC key accepted, in bytes.
const MIN_KEY_BYTES: usize = 16;

fn one() -> f64 {
    1.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterSeed {
    name: String,
    unit: String,
    range: [f64; 2],
}

impl Registry {
    /// Loads and validates the seed files in `dir`.
    pub fn load(dir: &Path) -> Result<Registry> {
        let zones: ZonesFile = read_toml(&dir.join("zones.toml"))?;
        let stations = read_stations(&dir.join("stations.toml"))?;
        let rows = read_limits(&dir.join("limits.csv"))?;
        build(zones, stations, rows).map_err(|problems| Error::Invalid {
            dir: dir.to_owned(),
            problems,
        })
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    toml::from_str(&read_text(path)?).map_err(|e| Error::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Reads `stations.toml` one `[[station]]` block at a time: parsing the whole file at once
/// holds its entire syntax tree, about 40 times the file's size (300 MB for 10,000
/// stations). Each block is a TOML document of its own, so the result is the same; if any
/// block does not parse alone (say, a multi-line string that contains a `[[station]]` line),
/// the whole file is parsed instead, which also gives errors their exact line numbers.
fn read_stations(path: &Path) -> Result<StationsFile> {
    let text = read_text(path)?;
    let mut station = Vec::new();
    let parsed_by_block =
        blocks(&text, "[[station]]").all(|block| match toml::from_str::<StationsFile>(block) {
            Ok(file) => {
                station.extend(file.station);
                true
            }
            Err(_) => false,
        });
    if parsed_by_block {
        return Ok(StationsFile { station });
    }
    toml::from_str(&text).map_err(|e| Error::Syntax {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// `text` cut before every line that starts with `header`: the preamble, then one block per
/// header.
fn blocks<'a>(text: &'a str, header: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // The next header line after the first line of `rest`.
        let mut offset = rest.find('\n').map_or(rest.len(), |i| i + 1);
        while offset < rest.len() {
            let line = &rest[offset..];
            if line.trim_start_matches([' ', '\t']).starts_with(header) {
                break;
            }
            offset += line.find('\n').map_or(line.len(), |i| i + 1);
        }
        let (block, after) = rest.split_at(offset);
        rest = after;
        Some(block)
    })
}

fn read_limits(path: &Path) -> Result<Vec<LimitRow>> {
    let text = read_text(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    reader
        .deserialize()
        .collect::<Result<Vec<LimitRow>, csv::Error>>()
        .map_err(|e| Error::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Checks consistency and resolves limits; returns every problem found.
fn build(
    zones: ZonesFile,
    stations: StationsFile,
    rows: Vec<LimitRow>,
) -> Result<Registry, Vec<String>> {
    let mut problems = Vec::new();
    let profiles = check_profiles(rows, &mut problems);

    let mut zone_ids = HashSet::new();
    let zones: Vec<Zone> = zones
        .zone
        .into_iter()
        .map(|z| {
            check_id("zone", &z.id, &mut problems);
            if !zone_ids.insert(z.id.clone()) {
                problems.push(format!("zone `{}` is defined twice", z.id));
            }
            Zone {
                id: z.id.into(),
                name: z.name,
                province: z.province,
                authority: z.authority,
            }
        })
        .collect();
    let zone_by_id: HashMap<&str, &Arc<str>> = zones.iter().map(|z| (&*z.id, &z.id)).collect();

    let mut station_ids = HashSet::new();
    let mut built = Vec::with_capacity(stations.station.len());
    for seed in stations.station {
        let what = format!("station `{}`", seed.id);
        check_id("station", &seed.id, &mut problems);
        if !station_ids.insert(seed.id.clone()) {
            problems.push(format!("{what} is defined twice"));
        }
        let zone = match zone_by_id.get(seed.zone.as_str()) {
            Some(z) => Arc::clone(z),
            None => {
                problems.push(format!("{what}: zone `{}` is not in zones.toml", seed.zone));
                Arc::from(seed.zone.as_str())
            }
        };
        if seed.expected_interval.is_zero() {
            problems.push(format!("{what}: expected_interval must be positive"));
        }
        if !(seed.limit_factor.is_finite() && seed.limit_factor > 0.0) {
            problems.push(format!("{what}: limit_factor must be a positive number"));
        }
        let mut signing_keys = Vec::new();
        for (i, key) in seed.signing_keys.iter().enumerate() {
            match crate::security::token::unhex(key) {
                Some(bytes) if bytes.len() >= MIN_KEY_BYTES => signing_keys.push(Arc::from(bytes)),
                _ => problems.push(format!(
                    "{what}: signing_keys[{i}] must be hex of at least {MIN_KEY_BYTES} bytes"
                )),
            }
        }
        if seed.require_signature && seed.signing_keys.is_empty() {
            problems.push(format!("{what}: require_signature needs signing_keys"));
        }
        if !(-90.0..=90.0).contains(&seed.location.lat)
            || !(-180.0..=180.0).contains(&seed.location.lon)
        {
            problems.push(format!("{what}: location is not a valid lat/lon"));
        }
        let profile = match &seed.limit_profile {
            Some(id) => match profiles.iter().find(|p| &p.id == id) {
                Some(p) => Some(p),
                None => {
                    problems.push(format!("{what}: limit_profile `{id}` is not in limits.csv"));
                    None
                }
            },
            None => None,
        };
        if seed.parameter.is_empty() {
            problems.push(format!("{what} has no parameters"));
        }
        let mut names = HashSet::new();
        let parameters = seed
            .parameter
            .into_iter()
            .map(|p| {
                let what = format!("{what}, parameter `{}`", p.name);
                if p.name.is_empty() || !names.insert(p.name.clone()) {
                    problems.push(format!("{what}: empty or duplicate parameter name"));
                }
                let [min, max] = p.range;
                if !(min.is_finite() && max.is_finite() && min < max) {
                    problems.push(format!("{what}: range must be [min, max] with min < max"));
                }
                let rows = profile
                    .into_iter()
                    .flat_map(|prof| &prof.rows)
                    .filter(|r| r.parameter == p.name);
                let mut limits = Vec::new();
                for row in rows {
                    if row.unit != p.unit {
                        problems.push(format!(
                            "{what}: unit `{}` differs from the unit `{}` of its limit in profile `{}`",
                            p.unit, row.unit, row.profile
                        ));
                    }
                    limits.push(Limit::from_row(row, seed.limit_factor));
                }
                Parameter {
                    name: p.name.into(),
                    unit: p.unit.into(),
                    range: Range { min, max },
                    limits,
                }
            })
            .collect();
        built.push(Station {
            id: seed.id.into(),
            zone,
            kind: seed.kind,
            name: seed.name,
            operator: seed.operator,
            location: seed.location,
            expected_interval: seed.expected_interval,
            limit_profile: seed.limit_profile,
            limit_factor: seed.limit_factor,
            parameters,
            signing_keys,
            require_signature: seed.require_signature,
        });
    }
    if problems.is_empty() {
        Ok(Registry::from_parts(zones, built, profiles))
    } else {
        Err(problems)
    }
}

fn check_id(what: &str, id: &str, problems: &mut Vec<String>) {
    if !is_valid_id(id) {
        problems.push(format!(
            "{what} id `{id}` must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}} (it appears in MQTT topics)"
        ));
    }
}

fn check_profiles(rows: Vec<LimitRow>, problems: &mut Vec<String>) -> Vec<LimitProfile> {
    let mut profiles: Vec<LimitProfile> = Vec::new();
    for (i, row) in rows.into_iter().enumerate() {
        let what = format!(
            "limits.csv row {} ({} {} {:?})",
            i + 1,
            row.profile,
            row.parameter,
            row.averaging
        );
        if row.lower.is_none() && row.upper.is_none() {
            problems.push(format!("{what}: needs a lower or an upper bound"));
        }
        if let (Some(lo), Some(up)) = (row.lower, row.upper) {
            if lo > up {
                problems.push(format!("{what}: lower bound is above the upper bound"));
            }
        }
        if let (Some(from), Some(to)) = (row.valid_from, row.valid_to) {
            if from > to {
                problems.push(format!("{what}: valid_from is after valid_to"));
            }
        }
        match profiles.iter_mut().find(|p| p.id == row.profile) {
            Some(p) => {
                let overlapping = p.rows.iter().any(|other| {
                    other.parameter == row.parameter
                        && other.averaging == row.averaging
                        && periods_overlap(other, &row)
                });
                if overlapping {
                    problems.push(format!(
                        "{what}: overlaps the validity period of another row for the same parameter and averaging"
                    ));
                }
                p.rows.push(row);
            }
            None => profiles.push(LimitProfile {
                id: row.profile.clone(),
                rows: vec![row],
            }),
        }
    }
    profiles
}

fn periods_overlap(a: &LimitRow, b: &LimitRow) -> bool {
    let starts_before_end = |x: &LimitRow, y: &LimitRow| match (x.valid_from, y.valid_to) {
        (Some(from), Some(to)) => from <= to,
        _ => true,
    };
    starts_before_end(a, b) && starts_before_end(b, a)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::registry::Averaging;

    fn seeds_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")
    }

    #[test]
    fn the_shipped_seeds_load_with_two_zones_and_every_station_kind() {
        let reg = Registry::load(&seeds_dir()).unwrap();
        assert!(reg.zones().len() >= 2);
        assert!(reg.stations().len() >= 6);
        for kind in [
            StationKind::Wastewater,
            StationKind::Emission,
            StationKind::Ambient,
        ] {
            assert!(reg.stations().iter().any(|s| s.kind == kind), "{kind:?}");
        }
    }

    #[test]
    fn a_stations_file_is_cut_into_a_preamble_and_one_block_per_station() {
        let text = "# comment\n[[station]]\nid = \"A\"\n[[station.parameter]]\nname = \"x\"\n  [[station]]\nid = \"B\"\n";
        let parts: Vec<&str> = blocks(text, "[[station]]").collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], "# comment\n");
        assert!(parts[1].starts_with("[[station]]\nid = \"A\"") && parts[1].ends_with("\"x\"\n"));
        assert_eq!(parts[2], "  [[station]]\nid = \"B\"\n");
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn stations_parsed_block_by_block_equal_the_whole_file_parsed_at_once() {
        let path = seeds_dir().join("stations.toml");
        let by_block = read_stations(&path).unwrap();
        let whole: StationsFile = read_toml(&path).unwrap();
        let ids = |f: &StationsFile| {
            f.station
                .iter()
                .map(|s| (s.id.clone(), s.parameter.len(), s.limit_factor))
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&by_block), ids(&whole));
    }

    #[test]
    fn a_block_that_does_not_parse_alone_falls_back_to_the_whole_file_and_its_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stations.toml");
        // A multi-line string holding a header line: not a block boundary.
        let station = "id = \"S\"\nzone = \"Z\"\nkind = \"ambient\"\noperator = \"o\"\nlocation = { lat = 1.0, lon = 2.0 }\nexpected_interval = \"5m\"\n";
        std::fs::write(
            &path,
            format!("[[station]]\n{station}name = \"\"\"two\n[[station]]\nlines\"\"\"\n"),
        )
        .unwrap();
        let file = read_stations(&path).unwrap();
        assert_eq!(file.station.len(), 1);
        assert_eq!(file.station[0].name, "two\n[[station]]\nlines");
        std::fs::write(&path, format!("[[station]]\n{station}name = 3\n")).unwrap();
        let Err(Error::Syntax { message, .. }) = read_stations(&path) else {
            panic!("a syntax error");
        };
        assert!(message.contains("line 8"), "{message}");
    }

    #[test]
    fn station_limits_carry_the_factor_status_and_source() {
        let reg = Registry::load(&seeds_dir()).unwrap();
        let ww = reg.station("DN-AMATA-WW01").unwrap();
        assert_eq!(ww.limit_factor, 0.9);
        let cod = ww.parameter("COD").unwrap();
        let limit = &cod.limits[0];
        assert_eq!(limit.upper, Some(150.0 * 0.9));
        assert_eq!(limit.status, crate::registry::Certainty::S);
        assert!(limit.source.contains("QCVN 40:2011"));
        let ph = ww.parameter("pH").unwrap();
        assert_eq!(
            (ph.limits[0].lower, ph.limits[0].upper),
            (Some(5.5), Some(9.0))
        );
    }

    #[test]
    fn the_pm25_daily_limit_changes_on_the_first_of_january_2026() {
        let reg = Registry::load(&seeds_dir()).unwrap();
        let pm = reg
            .station("DN-AMATA-AQ01")
            .unwrap()
            .parameter("PM2.5")
            .unwrap();
        let daily_on = |y, m, d| {
            let date = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            pm.limits_on(date)
                .find(|l| l.averaging == Averaging::Hour24)
                .and_then(|l| l.upper)
        };
        assert_eq!(daily_on(2025, 12, 31), Some(50.0));
        assert_eq!(daily_on(2026, 1, 1), Some(45.0));
    }

    fn write_seeds(zones: &str, stations: &str, limits: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("zones.toml"), zones).unwrap();
        std::fs::write(dir.path().join("stations.toml"), stations).unwrap();
        std::fs::write(dir.path().join("limits.csv"), limits).unwrap();
        dir
    }

    const HEADER: &str = "profile,parameter,unit,averaging,lower,upper,factor_applies,valid_from,valid_to,status,source\n";

    #[test]
    fn every_inconsistency_is_reported_at_once() {
        let dir = write_seeds(
            "[[zone]]\nid='Z'\nname='z'\nprovince='p'\n",
            r#"
[[station]]
id = "bad id"
zone = "NOPE"
kind = "ambient"
name = "n"
operator = "o"
location = { lat = 1.0, lon = 2.0 }
expected_interval = "5m"
limit_profile = "p1"
[[station.parameter]]
name = "COD"
unit = "g/L"
range = [10, 0]
"#,
            &format!("{HEADER}p1,COD,mg/L,inst,,75,yes,,,S,src\n"),
        );
        let err = Registry::load(dir.path()).unwrap_err().to_string();
        for needle in [
            "station id `bad id` must match",
            "zone `NOPE` is not in zones.toml",
            "range must be [min, max]",
            "unit `g/L` differs from the unit `mg/L`",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_syntax_errors_naming_the_file() {
        let dir = write_seeds(
            "[[zone]]\nid='Z'\nname='z'\nprovince='p'\ncolour='red'\n",
            "",
            HEADER,
        );
        let err = Registry::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("zones.toml") && err.contains("colour"),
            "{err}"
        );

        let dir = write_seeds("", "", &format!("{HEADER}p,COD,mg/L,2h,,1,yes,,,S,s\n"));
        let err = Registry::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("limits.csv") && err.contains("2h"), "{err}");
    }

    #[test]
    fn overlapping_validity_periods_are_refused() {
        let dir = write_seeds(
            "",
            "",
            &format!(
                "{HEADER}p,PM2.5,ug/Nm3,24h,,50,no,,2026-01-31,S,s\np,PM2.5,ug/Nm3,24h,,45,no,2026-01-01,,S,s\n"
            ),
        );
        let err = Registry::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("overlaps"), "{err}");
    }
}
