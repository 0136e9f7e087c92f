//! MQTT plumbing shared by ingest (quantrac's subscription) and the alert publisher: client
//! options (credentials, TLS), and the embedded broker with its guard ([`guard`]: device
//! credentials and topic ACLs from [`devices`]).

mod broker;
pub mod devices;
pub mod gate;
pub mod guard;
mod tls;

use rumqttc::{MqttOptions, TlsConfiguration, Transport};

pub use broker::{free_local_addr, port_is_free, start as start_embedded_broker, Embedded};

use crate::config::{BrokerAddress, MqttConfig};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("port {0} is already in use")]
    PortInUse(std::net::SocketAddr),
    #[error("the embedded MQTT broker did not start listening on {0}")]
    BrokerNotListening(std::net::SocketAddr),
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
