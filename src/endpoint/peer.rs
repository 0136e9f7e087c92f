//! Who is on a connection, and what it may do. Pure: the connection asks, this answers.
//!
//! - a **device** (gateway) logs in with its `devices.toml` credentials; it may publish
//!   under its own stations' topics only, and subscribe only to the alert filters listed in
//!   its `subscribe` entry;
//! - an **inspector's client** logs in with any user name and an API token of viewer role
//!   or above as the password; it may subscribe to the alert topics (all of them, or a
//!   zone's or a station's subtree) and publish nothing;
//! - **anonymous** clients are refused, except where `mqtt.endpoint.allow_anonymous` is set
//!   (the demo, tests): they may publish any v1 telemetry or status topic and subscribe to
//!   the alert topics.

use crate::mqtt::devices::{Device, Devices};
use crate::security::Role;

/// The authenticated party of a connection.
#[derive(Debug, Clone)]
pub enum Peer {
    Anonymous,
    Device(Device),
    /// An API token's holder (`name` is the token's name).
    Inspector {
        name: String,
        role: Role,
    },
}

/// Why a client is refused or cut off, as counted in `quantrac_mqtt_refused_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Protocol,
    BadClientId,
    Anonymous,
    BadCredentials,
    WillNotAllowed,
    PublishNotAllowed,
    SubscribeNotAllowed,
    /// The device was removed, or its password changed, by a reload of `devices.toml`.
    Revoked,
    /// quantrac is not ready to take data yet, or is shutting down.
    Unavailable,
    /// `mqtt.endpoint.max_connections` reached.
    Busy,
    KeepAlive,
    TooLarge,
}

impl Refusal {
    pub const fn code(self) -> &'static str {
        match self {
            Refusal::Protocol => "protocol",
            Refusal::BadClientId => "bad_client_id",
            Refusal::Anonymous => "anonymous",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::WillNotAllowed => "will_not_allowed",
            Refusal::PublishNotAllowed => "publish_not_allowed",
            Refusal::SubscribeNotAllowed => "subscribe_not_allowed",
            Refusal::Revoked => "revoked",
            Refusal::Unavailable => "unavailable",
            Refusal::Busy => "busy",
            Refusal::KeepAlive => "keep_alive",
            Refusal::TooLarge => "too_large",
        }
    }

    /// Counts it.
    pub fn count(self) {
        metrics::counter!(crate::metrics::MQTT_REFUSED_TOTAL, "reason" => self.code()).increment(1);
    }
}

/// The topic after `prefix` (and its `/`), if it is under it.
fn unprefixed<'a>(prefix: &str, topic: &'a str) -> Option<&'a str> {
    if prefix.is_empty() {
        Some(topic)
    } else {
        topic.strip_prefix(prefix)?.strip_prefix('/')
    }
}

/// Whether `topic` is a well-formed topic *name* (MQTT: not empty, no wildcard, no NUL).
pub fn valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

/// Whether `filter` lies inside the alert topics `quantrac/v1/alerts/...` (after `prefix`),
/// wildcards allowed only at that level or below.
pub fn is_alert_filter(prefix: &str, filter: &str) -> bool {
    let Some(rest) = unprefixed(prefix, filter) else {
        return false;
    };
    let Some(below) = rest.strip_prefix("quantrac/v1/alerts") else {
        return false;
    };
    match below.strip_prefix('/') {
        // `quantrac/v1/alerts/#`, `.../{zone}/#`, `.../{zone}/{station}`, `.../+/{station}`
        Some(levels) => {
            let levels: Vec<&str> = levels.split('/').collect();
            levels.len() <= 2
                && levels.iter().enumerate().all(|(i, l)| {
                    !l.is_empty()
                        && (*l == "+"
                            || (*l == "#" && i == levels.len() - 1)
                            || !l.contains(['+', '#', '\0']))
                })
        }
        None => below.is_empty(),
    }
}

/// Whether an MQTT topic filter matches a topic name (`+` one level, `#` the rest).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

impl Peer {
    /// Authenticates CONNECT credentials. `allow_anonymous`: clients without credentials
    /// are let in (the demo). `token`: checks an API token, `Some(name, role)` if valid.
    pub fn authenticate(
        devices: &Devices,
        username: Option<&str>,
        password: Option<&str>,
        allow_anonymous: bool,
        token: impl FnOnce(&str) -> Option<(String, Role)>,
    ) -> Result<Peer, Refusal> {
        match (username, password) {
            (None, None) if allow_anonymous => Ok(Peer::Anonymous),
            (None, None) => Err(Refusal::Anonymous),
            (username, Some(password)) => {
                if let Some(device) = username.and_then(|u| devices.authenticate(u, password)) {
                    return Ok(Peer::Device(device.clone()));
                }
                match token(password) {
                    Some((name, role)) if role >= Role::Viewer => {
                        Ok(Peer::Inspector { name, role })
                    }
                    _ => Err(Refusal::BadCredentials),
                }
            }
            (Some(_), None) => Err(Refusal::BadCredentials),
        }
    }

    /// Whether it may publish on `topic` (a well-formed name, checked before).
    pub fn may_publish(&self, prefix: &str, topic: &str) -> bool {
        match self {
            Peer::Anonymous => unprefixed(prefix, topic).is_some_and(|t| {
                t.starts_with("quantrac/v1/") && !t.starts_with("quantrac/v1/alerts")
            }),
            Peer::Device(device) => device.may_publish(prefix, topic),
            Peer::Inspector { .. } => false,
        }
    }

    /// Whether it may subscribe to `filter`.
    pub fn may_subscribe(&self, prefix: &str, filter: &str) -> bool {
        if !is_alert_filter(prefix, filter) {
            return false;
        }
        match self {
            Peer::Anonymous | Peer::Inspector { .. } => true,
            Peer::Device(device) => device.may_subscribe(filter),
        }
    }

    /// What the log calls it.
    pub fn describe(&self) -> String {
        match self {
            Peer::Anonymous => "anonymous".to_owned(),
            Peer::Device(d) => format!("device {}", d.username),
            Peer::Inspector { name, .. } => format!("token {name}"),
        }
    }

    /// After a reload of `devices.toml`: a device with its current rights, or `None` when it
    /// was removed or its password changed (its connection must end).
    pub fn refreshed(&self, devices: &Devices) -> Option<Peer> {
        match self {
            Peer::Device(d) => devices.current(d).map(|d| Peer::Device(d.clone())),
            other => Some(other.clone()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn devices() -> Devices {
        let hash = crate::mqtt::devices::hash_password("pw").unwrap();
        Devices::parse(&format!(
            "[[device]]\nusername = \"gw1\"\npassword_hash = \"{hash}\"\nstations = [\"S1\"]\nsubscribe = [\"quantrac/v1/alerts/Z/S1\"]\n"
        ))
        .unwrap()
    }

    fn no_token(_: &str) -> Option<(String, Role)> {
        None
    }

    #[test]
    fn a_device_logs_in_with_its_password_and_publishes_only_for_its_stations() {
        let peer =
            Peer::authenticate(&devices(), Some("gw1"), Some("pw"), false, no_token).unwrap();
        assert!(peer.may_publish("", "quantrac/v1/Z/S1/telemetry/json"));
        assert!(!peer.may_publish("", "quantrac/v1/Z/S2/telemetry/json"));
        assert!(peer.may_subscribe("", "quantrac/v1/alerts/Z/S1"));
        assert!(!peer.may_subscribe("", "quantrac/v1/alerts/#"));
    }

    #[test]
    fn a_wrong_password_or_no_credentials_are_refused_with_their_reason() {
        let d = devices();
        assert_eq!(
            Peer::authenticate(&d, Some("gw1"), Some("bad"), false, no_token).unwrap_err(),
            Refusal::BadCredentials
        );
        assert_eq!(
            Peer::authenticate(&d, None, None, false, no_token).unwrap_err(),
            Refusal::Anonymous
        );
        assert!(matches!(
            Peer::authenticate(&d, None, None, true, no_token),
            Ok(Peer::Anonymous)
        ));
    }

    #[test]
    fn an_api_token_as_password_may_follow_alerts_and_publish_nothing() {
        let peer = Peer::authenticate(&devices(), Some("anyone"), Some("qt_x"), false, |_| {
            Some(("duty".into(), Role::Viewer))
        })
        .unwrap();
        assert!(peer.may_subscribe("", "quantrac/v1/alerts/#"));
        assert!(peer.may_subscribe("", "quantrac/v1/alerts/DN-AMATA/#"));
        assert!(!peer.may_subscribe("", "quantrac/v1/DN-AMATA/#"));
        assert!(!peer.may_subscribe("", "#"));
        assert!(!peer.may_publish("", "quantrac/v1/Z/S1/telemetry/json"));
    }

    #[test]
    fn alert_filters_stay_inside_the_alert_subtree() {
        for ok in [
            "quantrac/v1/alerts/#",
            "quantrac/v1/alerts/Z/#",
            "quantrac/v1/alerts/Z/S1",
            "quantrac/v1/alerts/+/S1",
            "p/quantrac/v1/alerts/#",
        ] {
            let prefix = if ok.starts_with("p/") { "p" } else { "" };
            assert!(is_alert_filter(prefix, ok), "{ok}");
        }
        for bad in [
            "#",
            "quantrac/#",
            "quantrac/v1/alerts/Z/S1/extra",
            "quantrac/v1/alerts/#/x",
            "quantrac/v1/alertsX/#",
            "quantrac/v1/alerts/Z/S#",
        ] {
            assert!(!is_alert_filter("", bad), "{bad}");
        }
    }

    #[test]
    fn filters_match_topics_level_by_level() {
        assert!(filter_matches("a/#", "a/b/c"));
        assert!(filter_matches("a/+/c", "a/b/c"));
        assert!(!filter_matches("a/+", "a/b/c"));
        assert!(filter_matches("a/b", "a/b"));
        assert!(!filter_matches("a/b", "a/b/c"));
    }

    #[test]
    fn wildcards_and_nul_are_not_topic_names() {
        assert!(valid_topic_name("quantrac/v1/Z/S/telemetry/json"));
        for bad in ["", "quantrac/v1/+/S/telemetry/json", "#", "a/b\0"] {
            assert!(!valid_topic_name(bad), "{bad:?}");
        }
    }
}
