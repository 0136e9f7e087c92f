//! The v1 topic tree: `[prefix/]quantrac/v1/{zone}/{station}/telemetry/{encoding}` and
//! `[prefix/]quantrac/v1/{zone}/{station}/status`.

use super::Encoding;

/// The fixed root of every v1 topic (after the optional deployment prefix).
pub const ROOT: &str = "quantrac/v1";

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    Telemetry(Encoding),
    Status,
}

/// A parsed inbound topic, borrowing from the topic string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topic<'a> {
    pub zone: &'a str,
    pub station: &'a str,
    pub kind: TopicKind,
}

/// A topic that is not a v1 inbound topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a quantrac/v1 telemetry or status topic")]
pub struct TopicError(pub String);

impl<'a> Topic<'a> {
    /// Parses `topic` under `prefix` (`""` for none, otherwise without a trailing slash).
    pub fn parse(prefix: &str, topic: &'a str) -> Result<Topic<'a>, TopicError> {
        let err = || TopicError(topic.to_owned());
        let rest = if prefix.is_empty() {
            topic
        } else {
            topic
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('/'))
                .ok_or_else(err)?
        };
        let rest = rest
            .strip_prefix(ROOT)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(err)?;
        let mut levels = rest.split('/');
        let zone = levels.next().filter(|z| !z.is_empty()).ok_or_else(err)?;
        let station = levels.next().filter(|s| !s.is_empty()).ok_or_else(err)?;
        let kind = match (levels.next(), levels.next(), levels.next()) {
            (Some("status"), None, None) => TopicKind::Status,
            (Some("telemetry"), Some(enc), None) => {
                TopicKind::Telemetry(Encoding::from_topic_level(enc).ok_or_else(err)?)
            }
            _ => return Err(err()),
        };
        Ok(Topic {
            zone,
            station,
            kind,
        })
    }
}

/// The subscription filters quantrac needs under `prefix`.
pub fn subscriptions(prefix: &str) -> Vec<String> {
    inbound(prefix, "+", "+")
}

/// Every inbound topic (or filter) of `station` in `zone`: telemetry in each encoding, then
/// status.
pub fn inbound(prefix: &str, zone: &str, station: &str) -> Vec<String> {
    let root = if prefix.is_empty() {
        ROOT.to_owned()
    } else {
        format!("{prefix}/{ROOT}")
    };
    let mut topics: Vec<String> = Encoding::ALL
        .iter()
        .map(|e| format!("{root}/{zone}/{station}/telemetry/{e}"))
        .collect();
    topics.push(format!("{root}/{zone}/{station}/status"));
    topics
}

/// The topic on which quantrac publishes alert events for a station.
pub fn alert_topic(prefix: &str, zone: &str, station: &str) -> String {
    if prefix.is_empty() {
        format!("{ROOT}/alerts/{zone}/{station}")
    } else {
        format!("{prefix}/{ROOT}/alerts/{zone}/{station}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_topics_name_zone_station_and_encoding() {
        let t = Topic::parse("", "quantrac/v1/DN-AMATA/DN-AMATA-WW01/telemetry/bincode").unwrap();
        assert_eq!(t.zone, "DN-AMATA");
        assert_eq!(t.station, "DN-AMATA-WW01");
        assert_eq!(t.kind, TopicKind::Telemetry(Encoding::Bincode));
    }

    #[test]
    fn status_topics_parse_under_a_prefix() {
        let t = Topic::parse("site-a", "site-a/quantrac/v1/Z/S/status").unwrap();
        assert_eq!(t.kind, TopicKind::Status);
        assert!(Topic::parse("site-b", "site-a/quantrac/v1/Z/S/status").is_err());
    }

    #[test]
    fn other_topics_are_refused() {
        for bad in [
            "quantrac/v1/Z/S/telemetry/xml",
            "quantrac/v1/Z/S/telemetry",
            "quantrac/v1/Z/S/status/extra",
            "quantrac/v1/Z//status",
            "quantrac/v2/Z/S/status",
            "quantrac/v1/alerts/Z/S",
        ] {
            assert!(Topic::parse("", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subscriptions_cover_every_encoding_and_the_status_topic() {
        let subs = subscriptions("");
        assert_eq!(subs.len(), 4);
        assert!(subs.contains(&"quantrac/v1/+/+/telemetry/tt10".to_owned()));
        assert!(subs.contains(&"quantrac/v1/+/+/status".to_owned()));
        assert_eq!(subscriptions("p")[0], "p/quantrac/v1/+/+/telemetry/json");
    }
}
