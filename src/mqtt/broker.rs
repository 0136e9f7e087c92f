//! The embedded MQTT broker (rumqttd), so that one command runs everything.
//!
//! rumqttd runs on its own threads and has no shutdown: it lives as long as the process.
//! It reports a failed bind only in its log, so [`start`] checks the port first and then
//! waits until the port is bound (probing with a bind of its own, not a connection, which
//! rumqttd would log as a broken client).
//!
//! No-loss settings (see `../shared/reference/stack-notes.md`): a subscriber that falls
//! behind by more than `segment_count x segment_size` bytes loses messages, so these are
//! configurable, and quantrac's own subscription keeps up by design (ack after store).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

use super::Error;
use crate::config::EmbeddedBrokerConfig;

/// Whether `addr` can be bound right now.
pub fn port_is_free(addr: SocketAddr) -> bool {
    TcpListener::bind(addr).is_ok()
}

/// A free port on the loopback interface (bound then released: a tiny race is possible).
pub fn free_local_addr() -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(Error::Io)?;
    listener.local_addr().map_err(Error::Io)
}

/// Starts the broker on `config.listen` and returns once it accepts connections.
pub fn start(config: &EmbeddedBrokerConfig) -> Result<SocketAddr, Error> {
    let addr = config.listen;
    if !port_is_free(addr) {
        return Err(Error::PortInUse(addr));
    }
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        max_payload_size: config.max_payload_size,
        // rumqttd calls it inflight, but it is how many packets it reads from a connection
        // at a time; its QoS 1 window towards each subscriber is fixed at 100.
        max_inflight_count: config.read_batch,
        auth: None,
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
    wait_until_bound(addr, Duration::from_secs(10))?;
    tracing::info!(%addr, "embedded MQTT broker listening");
    Ok(addr)
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
