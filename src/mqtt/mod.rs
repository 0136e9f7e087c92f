//! MQTT plumbing shared by ingest (quantrac's subscription to an external broker) and the
//! alert publisher: client options (credentials, TLS), and the device list ([`devices`]:
//! credentials and topic ACLs) that the device endpoint ([`crate::endpoint`]) checks.

pub mod devices;
mod tls;

use std::net::{SocketAddr, TcpListener};

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use crate::config::{BrokerAddress, MqttConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Devices(#[from] devices::Error),
}

/// How a client keeps its session with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    /// Clean session off, manual acknowledgements: the broker keeps QoS 1 messages for us
    /// while we are away, and we acknowledge only what is stored (ingest).
    Persistent,
    /// A fresh session each time (publishers).
    Clean,
}

/// Client options for `client_id` on the configured broker.
pub fn options(
    address: &BrokerAddress,
    mqtt: &MqttConfig,
    client_id: &str,
    session: Session,
) -> Result<MqttOptions, Error> {
    let mut options = MqttOptions::new(client_id, &address.host, address.port);
    options
        .set_clean_session(session == Session::Clean)
        .set_manual_acks(session == Session::Persistent)
        .set_keep_alive(mqtt.keep_alive)
        .set_max_packet_size(mqtt.max_packet_size, mqtt.max_packet_size)
        .set_request_channel_capacity(mqtt.queue_capacity)
        .set_inflight(100);
    if let (Some(user), password) = (&mqtt.username, &mqtt.password) {
        options.set_credentials(user, password.clone().unwrap_or_default());
    }
    if address.tls {
        let tls = tls::client_config(mqtt.ca_file.as_deref())?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    Ok(options)
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
