//! MQTT topic names: `[prefix/]quantrac/v1/{zone}/{station}/...`.
//!
//! The prefix lets one broker carry several deployments (`site-a/quantrac/v1/...`); it is
//! joined with a single `/` whatever slashes the operator typed around it.

use super::Encoding;

/// `[prefix/]quantrac/v1/{zone}/{station}/telemetry/{json|bincode|tt10}`.
pub fn telemetry_topic(
    prefix: Option<&str>,
    zone: &str,
    station: &str,
    encoding: Encoding,
) -> String {
    format!(
        "{}quantrac/v1/{zone}/{station}/telemetry/{}",
        prefix_part(prefix),
        encoding.as_str()
    )
}

/// `[prefix/]quantrac/v1/{zone}/{station}/status`.
pub fn status_topic(prefix: Option<&str>, zone: &str, station: &str) -> String {
    format!("{}quantrac/v1/{zone}/{station}/status", prefix_part(prefix))
}

fn prefix_part(prefix: Option<&str>) -> String {
    match prefix.map(|p| p.trim_matches('/')) {
        Some(p) if !p.is_empty() => format!("{p}/"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telemetry_topic_without_prefix_follows_the_contract() {
        assert_eq!(
            telemetry_topic(None, "DN-AMATA", "DN-AMATA-WW01", Encoding::Bincode),
            "quantrac/v1/DN-AMATA/DN-AMATA-WW01/telemetry/bincode"
        );
    }

    #[test]
    fn a_prefix_is_joined_with_exactly_one_slash() {
        for prefix in ["site-a", "site-a/", "/site-a/"] {
            assert_eq!(
                status_topic(Some(prefix), "BN-VSIP", "BN-VSIP-AQ01"),
                "site-a/quantrac/v1/BN-VSIP/BN-VSIP-AQ01/status"
            );
        }
        assert_eq!(
            telemetry_topic(Some(""), "Z", "S", Encoding::Tt10),
            "quantrac/v1/Z/S/telemetry/tt10"
        );
    }
}
