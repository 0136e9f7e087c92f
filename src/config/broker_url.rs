//! Broker URLs: `mqtt://host[:port]` (plain TCP, port 1883 by default) or
//! `mqtts://host[:port]` (TLS, port 8883 by default).

use std::fmt;

/// Where the external broker is and whether to use TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("`{0}` is not a URL like mqtt://host:1883 or mqtts://host:8883")]
    Syntax(String),
    #[error("scheme `{0}` is not supported: use mqtt:// or mqtts://")]
    Scheme(String),
    #[error("a broker URL has no path, query or credentials (use mqtt.username/password)")]
    Extra,
}

impl BrokerAddress {
    pub fn parse(url: &str) -> Result<BrokerAddress, UrlError> {
        let uri: axum::http::Uri = url.parse().map_err(|_| UrlError::Syntax(url.to_owned()))?;
        let tls = match uri.scheme_str() {
            Some("mqtt") | Some("tcp") => false,
            Some("mqtts") | Some("ssl") => true,
            Some(other) => return Err(UrlError::Scheme(other.to_owned())),
            None => return Err(UrlError::Syntax(url.to_owned())),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| UrlError::Syntax(url.to_owned()))?;
        if authority.as_str().contains('@') || uri.query().is_some() || uri.path().len() > 1 {
            return Err(UrlError::Extra);
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(UrlError::Syntax(url.to_owned()));
        }
        Ok(BrokerAddress {
            tls,
            host: host.to_owned(),
            port: authority
                .port_u16()
                .unwrap_or(if tls { 8883 } else { 1883 }),
        })
    }
}

impl fmt::Display for BrokerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn schemes_select_tls_and_default_ports() {
        let a = BrokerAddress::parse("mqtt://127.0.0.1").unwrap();
        assert_eq!((a.tls, a.port), (false, 1883));
        let a = BrokerAddress::parse("mqtts://broker.example.vn:9883").unwrap();
        assert_eq!(
            (a.tls, a.host.as_str(), a.port),
            (true, "broker.example.vn", 9883)
        );
        let a = BrokerAddress::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!(a.host, "::1");
        assert_eq!(a.to_string(), "mqtt://[::1]:1884");
    }

    #[test]
    fn other_forms_are_refused_with_a_reason() {
        assert!(matches!(
            BrokerAddress::parse("http://x"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            BrokerAddress::parse("mqtt://u:p@x"),
            Err(UrlError::Extra)
        ));
        assert!(matches!(
            BrokerAddress::parse("mqtt://x/topic"),
            Err(UrlError::Extra)
        ));
        assert!(BrokerAddress::parse("127.0.0.1:1883").is_err());
    }
}
