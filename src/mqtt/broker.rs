//! The embedded MQTT broker (rumqttd), so that one command runs everything.
//!
//! rumqttd listens on a loopback port with a random per-process password; devices reach it
//! through the [`guard`](super::guard) on `mqtt.embedded.listen` (and `tls_listen`), which
//! checks their credentials and topics. quantrac's own clients use the loopback port.
//!
//! rumqttd runs on its own threads and has no shutdown: it lives as long as the process; the
//! guard runs on the caller's tokio runtime. rumqttd reports a failed bind only in its log, so
//! [`start`] waits until its port is bound (probing with a bind of its own, not a connection,
//! which rumqttd would log as a broken client).
//!
//! No-loss settings (see `../shared/reference/stack-notes.md`): a subscriber that falls
//! behind by more than `segment_count x segment_size` bytes loses messages, so these are
//! configurable, and quantrac's own subscription keeps up by design (ack after store).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::devices::Devices;
use super::guard::{self, Guard};
use super::Error;
use crate::config::EmbeddedBrokerConfig;

/// A running embedded broker.
pub struct Embedded {
    /// Where devices connect (the guard).
    pub listen: SocketAddr,
    /// The guard's mqtts listener, if configured.
    pub tls_listen: Option<SocketAddr>,
    /// rumqttd itself, for quantrac's own clients, and their credentials.
    pub internal: SocketAddr,
    pub internal_login: (String, String),
    pub guard: Arc<Guard>,
}

fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Error> {
    let listener = TcpListener::bind(addr).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => Error::PortInUse(addr),
        _ => Error::Io(e),
    })?;
    listener.set_nonblocking(true).map_err(Error::Io)?;
    tokio::net::TcpListener::from_std(listener).map_err(Error::Io)
}

/// Whether `addr` can be bound right now.
pub fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// A free port on the loopback interface (bound then released: a tiny race is possible).
pub fn free_local_addr() -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::Io)?;
    listener.local_addr().map_err(Error::Io)
}

/// Starts the broker with its guard on `config.listen` (and `config.tls_listen`) and returns
/// once both accept connections. Must run inside a tokio runtime (the guard's tasks).
pub fn start(
    config: &EmbeddedBrokerConfig,
    devices: Devices,
    topic_prefix: &str,
) -> Result<Embedded, Error> {
    let public = bind(config.listen)?;
    let listen = public.local_addr().map_err(Error::Io)?;
    let tls = match (&config.tls_listen, &config.tls) {
        (Some(addr), Some(files)) => {
            let server = crate::security::tls::server_config(&files.cert, &files.key, &[])
                .map_err(|e| Error::Tls(e.to_string()))?;
            let listener = bind(*addr)?;
            let local = listener.local_addr().map_err(Error::Io)?;
            Some((listener, tokio_rustls::TlsAcceptor::from(server), local))
        }
        _ => None,
    };
    if !config.allow_anonymous && devices.is_empty() {
        tracing::warn!(
            "the embedded broker refuses anonymous clients and devices.toml lists no device: \
             no gateway can connect (quantrac device add, or mqtt.embedded.allow_anonymous)"
        );
    }
    let internal = free_local_addr()?;
    let secret = crate::security::token::random::<24>().map_err(|e| Error::Tls(e.to_string()))?;
    let internal_login = (
        "quantrac-internal".to_owned(),
        crate::security::token::hex(&secret),
    );
    start_rumqttd(config, internal, &internal_login)?;
    let guard = Arc::new(Guard {
        devices: ArcSwap::from_pointee(devices),
        allow_anonymous: config.allow_anonymous,
        topic_prefix: topic_prefix.to_owned(),
        max_packet_size: config.max_payload_size + 1024,
        internal,
        internal_login: internal_login.clone(),
        gate: Arc::new(super::gate::Gate::new(super::gate::pace_limit(
            config.segment_size,
            config.segment_count,
        ))),
    });
    tokio::spawn(guard::serve(public, guard.clone()));
    let tls_listen = tls.map(|(listener, acceptor, local)| {
        tokio::spawn(guard::serve_tls(listener, acceptor, guard.clone()));
        local
    });
    tracing::info!(%listen, tls = ?tls_listen, anonymous = config.allow_anonymous,
        devices = guard.devices.load().len(), "embedded MQTT broker listening");
    Ok(Embedded {
        listen,
        tls_listen,
        internal,
        internal_login,
        guard,
    })
}

/// rumqttd on the loopback `addr`, accepting only `login`.
fn start_rumqttd(
    config: &EmbeddedBrokerConfig,
    addr: SocketAddr,
    login: &(String, String),
) -> Result<(), Error> {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: config.max_payload_size,
        // rumqttd calls it inflight, but it is how many packets it reads from a connection
        // at a time; its QoS 1 window towards each subscriber is fixed at 100.
        max_inflight_count: config.read_batch,
        auth: Some(HashMap::from([login.clone()])),
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = RouterConfig {
        max_connections: config.max_connections,
        max_outgoing_packet_count: 200,
        max_segment_size: config.segment_size,
        max_segment_count: config.segment_count,
        ..RouterConfig::default()
    };
    let broker_config = Config {
        router,
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..Config::default()
    };
    let mut broker = rumqttd::Broker::new(broker_config);
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(Error::Io)?;
    wait_until_bound(addr, Duration::from_secs(10))
}

fn wait_until_bound(addr: SocketAddr, within: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(2);
    loop {
        if !port_is_free(addr) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::BrokerNotListening(addr));
        }
        // rumqttd offers no readiness signal: poll, backing off gently.
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
