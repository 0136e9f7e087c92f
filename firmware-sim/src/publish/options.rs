//! Where and how to connect: the broker URL, credentials and TLS roots, turned into rumqttc
//! options.
//!
//! TLS uses rustls with the *ring* provider only, so that the default build needs no system
//! library and no C toolchain beyond ring's own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use super::{Error, Result};

/// Largest MQTT packet sent or received (a backlog flush can be a few hundred KiB).
pub const MAX_PACKET_SIZE: usize = 4 * 1024 * 1024;
/// Capacity of the queue between `publish_*` calls and the event loop: enough to flood
/// without making callers wait on every message, small enough to bound memory.
pub const REQUEST_CAPACITY: usize = 1000;

/// How to reach the broker. Its `Debug` output hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// `mqtt://host:port` (plain TCP, default port 1883) or `mqtts://host:port` (TLS, 8883).
    pub url: String,
    /// MQTT client id; must be unique on the broker.
    pub client_id: String,
    /// Optional user name.
    pub username: Option<String>,
    /// Optional password (sent only with a user name).
    pub password: Option<String>,
    /// PEM file of the CA certificates to trust for `mqtts://` (else the system roots).
    pub ca_file: Option<PathBuf>,
    /// Prefix before `quantrac/v1/...` in every topic built by the publisher.
    pub topic_prefix: Option<String>,
    /// QoS 1 messages in flight before the publisher waits for acknowledgements.
    pub inflight: u16,
    /// MQTT keep-alive (zero disables; otherwise at least one second).
    pub keep_alive: Duration,
}

impl std::fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("ca_file", &self.ca_file)
            .field("topic_prefix", &self.topic_prefix)
            .field("inflight", &self.inflight)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl BrokerOptions {
    /// Options with no credentials, no prefix, 100 messages in flight and a 30 s keep-alive.
    pub fn new(url: impl Into<String>, client_id: impl Into<String>) -> Self {
        BrokerOptions {
            url: url.into(),
            client_id: client_id.into(),
            username: None,
            password: None,
            ca_file: None,
            topic_prefix: None,
            inflight: 100,
            keep_alive: Duration::from_secs(30),
        }
    }

    /// The rumqttc options: clean session, large packets, TLS when the URL asks for it.
    pub(super) fn mqtt_options(&self) -> Result<MqttOptions> {
        let endpoint = Endpoint::parse(&self.url)?;
        let mut options = MqttOptions::new(&self.client_id, endpoint.host, endpoint.port);
        options
            .set_clean_session(true)
            .set_keep_alive(keep_alive(self.keep_alive))
            .set_inflight(self.inflight.max(1))
            .set_max_packet_size(MAX_PACKET_SIZE, MAX_PACKET_SIZE)
            .set_request_channel_capacity(REQUEST_CAPACITY);
        if let Some(username) = &self.username {
            options.set_credentials(username, self.password.clone().unwrap_or_default());
        }
        if endpoint.tls {
            let config = tls_config(self.ca_file.as_deref())?;
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(config),
            )));
        }
        Ok(options)
    }
}

/// rumqttc rejects keep-alives between zero and one second (it panics): round them up.
fn keep_alive(requested: Duration) -> Duration {
    if requested.is_zero() {
        requested
    } else {
        requested.max(Duration::from_secs(1))
    }
}

/// A parsed broker URL.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Endpoint> {
        let invalid = |why: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: why.to_owned(),
        };
        let (scheme, rest) = url
            .trim()
            .split_once("://")
            .ok_or_else(|| invalid("expected mqtt://host:port or mqtts://host:port"))?;
        let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" | "tls" => (true, 8883),
            _ => return Err(invalid("the scheme must be mqtt or mqtts")),
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            // [::1]:1883: keep the brackets so that "host:port" stays unambiguous.
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| invalid("unclosed [ in the host"))?;
            (format!("[{addr}]"), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host.to_owned(), Some(port)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(invalid("the host is empty"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| invalid("the port is not a number"))?,
            None => default_port,
        };
        Ok(Endpoint { tls, host, port })
    }
}

/// A rustls client configuration with the ring provider and the given (or system) roots.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| Error::CaFile {
                path: path.to_owned(),
                source,
            })?;
            let mut count = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|source| Error::CaFile {
                    path: path.to_owned(),
                    source,
                })?;
                roots.add(cert).map_err(Error::Tls)?;
                count += 1;
            }
            if count == 0 {
                return Err(Error::NoCertificates(path.to_owned()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for error in &native.errors {
                tracing::warn!(%error, "cannot load a system root certificate");
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            tracing::debug!(added, ignored, "loaded system root certificates");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(Error::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn endpoint(url: &str) -> Endpoint {
        Endpoint::parse(url).unwrap()
    }

    #[test]
    fn broker_urls_give_transport_host_and_port() {
        let plain = endpoint("mqtt://127.0.0.1:1883");
        assert_eq!(
            (plain.tls, plain.host.as_str(), plain.port),
            (false, "127.0.0.1", 1883)
        );
        let tls = endpoint("mqtts://broker.example");
        assert_eq!(
            (tls.tls, tls.host.as_str(), tls.port),
            (true, "broker.example", 8883)
        );
        let v6 = endpoint("mqtt://[::1]:1884/");
        assert_eq!((v6.host.as_str(), v6.port), ("[::1]", 1884));
    }

    #[test]
    fn bad_broker_urls_are_rejected_with_a_reason() {
        for url in [
            "127.0.0.1:1883",
            "http://host",
            "mqtt://",
            "mqtt://host:port",
        ] {
            let error = Endpoint::parse(url).unwrap_err();
            assert!(matches!(error, Error::InvalidUrl { .. }), "{url}: {error}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let mut options = BrokerOptions::new("mqtt://h", "c");
        options.password = Some("hunter2".into());
        let text = format!("{options:?}");
        assert!(
            !text.contains("hunter2") && text.contains("<hidden>"),
            "{text}"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let path = std::env::temp_dir().join(format!("fs-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = tls_config(Some(&path)).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(error, Error::NoCertificates(_)), "{error}");
    }

    #[test]
    fn mqtts_builds_a_rustls_transport_with_system_roots() {
        let options = BrokerOptions::new("mqtts://localhost:8883", "t")
            .mqtt_options()
            .unwrap();
        assert!(matches!(options.transport(), Transport::Tls(_)));
        assert_eq!(options.keep_alive(), Duration::from_secs(30));
    }
}
