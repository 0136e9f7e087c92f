//! The registry: zones, stations, their parameters and the limits that bind them.
//!
//! Loaded from the seed files in `seeds/` (see [`load`]) and swapped atomically on reload
//! (`SIGHUP` or the admin endpoint), so readers never lock: the ingest path holds an
//! `Arc<Registry>` for the duration of one message. Identifiers are `Arc<str>` so validated
//! readings can share them without allocating.

mod limits;
mod load;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

pub use limits::{Averaging, Certainty, Limit, LimitProfile, LimitRow};
pub use load::{Error, Result};

/// All zones, stations and limit profiles, validated.
#[derive(Debug, Default)]
pub struct Registry {
    zones: Vec<Zone>,
    stations: Vec<Station>,
    by_id: HashMap<Arc<str>, usize>,
    profiles: Vec<LimitProfile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Zone {
    pub id: Arc<str>,
    pub name: String,
    pub province: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// What a station monitors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StationKind {
    /// An industrial wastewater outfall.
    Wastewater,
    /// A stack (flue gas) emission point.
    Emission,
    /// An ambient air quality station.
    Ambient,
}

impl StationKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            StationKind::Wastewater => "wastewater",
            StationKind::Emission => "emission",
            StationKind::Ambient => "ambient",
        }
    }

    pub fn parse(text: &str) -> Option<StationKind> {
        match text {
            "wastewater" => Some(StationKind::Wastewater),
            "emission" => Some(StationKind::Emission),
            "ambient" => Some(StationKind::Ambient),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Station {
    pub id: Arc<str>,
    pub zone: Arc<str>,
    pub kind: StationKind,
    pub name: String,
    pub operator: String,
    pub location: Location,
    #[serde(with = "humantime_serde")]
    pub expected_interval: Duration,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_profile: Option<String>,
    pub limit_factor: f64,
    pub parameters: Vec<Parameter>,
    /// HMAC-SHA256 keys that may sign this station's records (two while a key is rotated).
    /// Secret: never serialized.
    #[serde(skip)]
    pub signing_keys: Vec<Arc<[u8]>>,
    /// Records without a valid signature are refused.
    pub require_signature: bool,
}

impl Station {
    /// The configured parameter with this symbol. A linear scan: stations have about ten.
    pub fn parameter(&self, name: &str) -> Option<&Parameter> {
        self.parameters.iter().find(|p| &*p.name == name)
    }
}

/// Physical measuring range of a sensor: readings outside it are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    pub min: f64,
    pub max: f64,
}

impl Range {
    pub fn contains(&self, value: f64) -> bool {
        self.min <= value && value <= self.max
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Parameter {
    pub name: Arc<str>,
    pub unit: Arc<str>,
    pub range: Range,
    /// Limits of the station's profile for this parameter, with the station factor applied.
    pub limits: Vec<Limit>,
}

impl Parameter {
    /// The limits in force on `date` (Vietnam local date).
    pub fn limits_on(&self, date: NaiveDate) -> impl Iterator<Item = &Limit> {
        self.limits.iter().filter(move |l| l.applies_on(date))
    }
}

impl Registry {
    /// Builds a registry from already-validated parts (used by the loader and by tests).
    pub(crate) fn from_parts(
        zones: Vec<Zone>,
        stations: Vec<Station>,
        profiles: Vec<LimitProfile>,
    ) -> Self {
        let by_id = stations
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        Registry {
            zones,
            stations,
            by_id,
            profiles,
        }
    }

    pub fn station(&self, id: &str) -> Option<&Station> {
        self.by_id.get(id).map(|&i| &self.stations[i])
    }

    pub fn stations(&self) -> &[Station] {
        &self.stations
    }

    pub fn zones(&self) -> &[Zone] {
        &self.zones
    }

    pub fn zone(&self, id: &str) -> Option<&Zone> {
        self.zones.iter().find(|z| &*z.id == id)
    }

    pub fn profiles(&self) -> &[LimitProfile] {
        &self.profiles
    }

    /// A one-line summary for logs and `check-config`.
    pub fn summary(&self) -> String {
        let parameters: usize = self.stations.iter().map(|s| s.parameters.len()).sum();
        let limits: usize = self
            .stations
            .iter()
            .flat_map(|s| &s.parameters)
            .map(|p| p.limits.len())
            .sum();
        format!(
            "{} zones, {} stations, {} parameters, {} limit profiles ({} station limits)",
            self.zones.len(),
            self.stations.len(),
            parameters,
            self.profiles.len(),
            limits
        )
    }
}

/// Whether `id` is a valid registry id: `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`. Ids starting with
/// `_` or `-` are reserved (quantrac's own topics use them, e.g. [`crate::telemetry::topic::FENCE_ZONE`]).
pub fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}
