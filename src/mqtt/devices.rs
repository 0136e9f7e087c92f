//! Devices allowed on the device endpoint: per-gateway credentials (salted hashes) and topic
//! ACLs, from `devices.toml` in the seeds directory. Pure: the endpoint
//! ([`crate::endpoint::peer`]) asks, this answers.
//!
//! ```toml
//! [[device]]
//! username = "gw-amata-01"
//! password_hash = "sha256:<salt hex>:<hash hex>"   # `quantrac device add` makes both
//! stations = ["DN-AMATA-WW01", "DN-AMATA-AQ01"]  # may publish under these stations' topics
//! subscribe = []                                  # topic filters it may subscribe to
//! ```

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use crate::security::token;

/// The file in the seeds directory.
pub const FILE: &str = "devices.toml";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    device: Vec<Seed>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    username: String,
    password_hash: String,
    #[serde(default)]
    stations: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

/// One gateway's credentials and rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub username: String,
    salt: Vec<u8>,
    hash: Vec<u8>,
    pub stations: HashSet<String>,
    pub subscribe: Vec<String>,
}

/// Every device; empty when the file is absent.
#[derive(Debug, Clone, Default)]
pub struct Devices {
    devices: Vec<Device>,
}

/// `sha256:<salt hex>:<hash hex>` of a password.
pub fn hash_password(password: &str) -> Result<String, token::RandomError> {
    let salt = token::random::<16>()?;
    Ok(format!(
        "sha256:{}:{}",
        token::hex(&salt),
        token::hex(&token::hash(&salt, password))
    ))
}

fn parse_hash(text: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut parts = text.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("sha256"), Some(salt), Some(hash), None) => {
            let (salt, hash) = (token::unhex(salt)?, token::unhex(hash)?);
            (hash.len() == 32 && !salt.is_empty()).then_some((salt, hash))
        }
        _ => None,
    }
}

impl Devices {
    /// Reads `devices.toml` from `seeds` (no file: no devices).
    pub fn load(seeds: &Path) -> Result<Devices, Error> {
        let path = seeds.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Devices::default()),
            Err(source) => {
                return Err(Error::Read {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Devices::parse(&text).map_err(|message| Error::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Devices, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut devices = Vec::with_capacity(file.device.len());
        let mut names = HashSet::new();
        for seed in file.device {
            if seed.username.is_empty() || seed.username.contains(['+', '$', '#', '/', ':']) {
                return Err(format!(
                    "device `{}`: a username is not empty and has none of + $ # / :",
                    seed.username
                ));
            }
            if !names.insert(seed.username.clone()) {
                return Err(format!("device `{}` is listed twice", seed.username));
            }
            let (salt, hash) = parse_hash(&seed.password_hash).ok_or_else(|| {
                format!(
                    "device `{}`: password_hash must be sha256:<salt hex>:<64 hex> (`quantrac device add` makes it)",
                    seed.username
                )
            })?;
            devices.push(Device {
                username: seed.username,
                salt,
                hash,
                stations: seed.stations.into_iter().collect(),
                subscribe: seed.subscribe,
            });
        }
        Ok(Devices { devices })
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// `device` as this (reloaded) list has it: its rights may have changed; `None` when it
    /// was removed or its password changed, so that its open connection must end.
    pub fn current(&self, device: &Device) -> Option<&Device> {
        self.devices
            .iter()
            .find(|d| d.username == device.username)
            .filter(|d| d.salt == device.salt && d.hash == device.hash)
    }

    /// The first `(device, station)` whose station `known` does not know, if any.
    pub fn unknown_station(&self, known: impl Fn(&str) -> bool) -> Option<(&str, &str)> {
        self.devices.iter().find_map(|d| {
            d.stations
                .iter()
                .find(|s| !known(s))
                .map(|s| (d.username.as_str(), s.as_str()))
        })
    }

    /// The device named `username` (its credentials already checked).
    pub fn get(&self, username: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.username == username)
    }

    /// The device with these credentials, if they are right.
    pub fn authenticate(&self, username: &str, password: &str) -> Option<&Device> {
        self.devices
            .iter()
            .find(|d| d.username == username)
            .filter(|d| token::matches(&d.salt, password, &d.hash))
    }
}

impl Device {
    /// Whether the device may publish on `topic`: a v1 topic (after `prefix`) of one of its
    /// stations.
    pub fn may_publish(&self, prefix: &str, topic: &str) -> bool {
        let rest = if prefix.is_empty() {
            Some(topic)
        } else {
            topic.strip_prefix(prefix).and_then(|t| t.strip_prefix('/'))
        };
        let Some(rest) = rest else {
            return false;
        };
        let mut levels = rest.split('/');
        match (levels.next(), levels.next(), levels.next(), levels.next()) {
            (Some("quantrac"), Some("v1"), Some(_zone), Some(station)) => {
                self.stations.contains(station)
            }
            _ => false,
        }
    }

    /// Whether the device may subscribe to `filter` (listed in its `subscribe`).
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.subscribe.iter().any(|f| f == filter)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn devices(password: &str) -> Devices {
        let text = format!(
            "[[device]]\nusername = \"gw1\"\npassword_hash = \"{}\"\nstations = [\"S1\"]\nsubscribe = [\"quantrac/v1/alerts/#\"]\n",
            hash_password(password).unwrap()
        );
        Devices::parse(&text).unwrap()
    }

    #[test]
    fn a_device_authenticates_with_its_password_only() {
        let d = devices("correct horse");
        assert!(d.authenticate("gw1", "correct horse").is_some());
        assert!(d.authenticate("gw1", "correct hors").is_none());
        assert!(d.authenticate("gw2", "correct horse").is_none());
    }

    #[test]
    fn a_device_publishes_only_under_its_own_stations() {
        let d = devices("p");
        let gw = d.authenticate("gw1", "p").unwrap();
        assert!(gw.may_publish("", "quantrac/v1/Z/S1/telemetry/json"));
        assert!(gw.may_publish("", "quantrac/v1/Z/S1/status"));
        assert!(!gw.may_publish("", "quantrac/v1/Z/S2/telemetry/json"));
        assert!(
            !gw.may_publish("", "quantrac/v1/alerts/Z/S1"),
            "alerts are quantrac's"
        );
        assert!(!gw.may_publish("", "elsewhere/S1"));
        assert!(gw.may_publish("site", "site/quantrac/v1/Z/S1/telemetry/json"));
        assert!(!gw.may_publish("site", "quantrac/v1/Z/S1/telemetry/json"));
        assert!(gw.may_subscribe("quantrac/v1/alerts/#"));
        assert!(!gw.may_subscribe("#"));
    }

    #[test]
    fn after_a_reload_a_device_keeps_its_connection_only_with_the_same_password() {
        let before = devices("p");
        let gw = before.authenticate("gw1", "p").unwrap().clone();
        let same = before.clone();
        assert_eq!(same.current(&gw), Some(&gw));
        let rotated = devices("p");
        assert!(
            rotated.current(&gw).is_none(),
            "a new salt and hash: a new password"
        );
        let widened = format!(
            "[[device]]\nusername = \"gw1\"\npassword_hash = \"sha256:{}:{}\"\nstations = [\"S1\", \"S2\"]\n",
            token::hex(&gw.salt),
            token::hex(&gw.hash)
        );
        let widened = Devices::parse(&widened).unwrap();
        let now = widened.current(&gw).unwrap();
        assert!(now.may_publish("", "quantrac/v1/Z/S2/telemetry/json"));
        assert!(Devices::default().current(&gw).is_none(), "removed");
    }

    #[test]
    fn malformed_hashes_and_duplicates_are_refused_with_the_device_named() {
        let bad = "[[device]]\nusername = \"gw1\"\npassword_hash = \"plain\"\n";
        assert!(Devices::parse(bad).unwrap_err().contains("gw1"));
        let hash = hash_password("x").unwrap();
        let twice = format!(
            "[[device]]\nusername = \"a\"\npassword_hash = \"{hash}\"\n[[device]]\nusername = \"a\"\npassword_hash = \"{hash}\"\n"
        );
        assert!(Devices::parse(&twice).unwrap_err().contains("twice"));
    }
}
