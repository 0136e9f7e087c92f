//! quantrac's own MQTT device endpoint: gateways publish straight into the pipeline, and
//! nothing is acknowledged before it is durable.
//!
//! It is not a general-purpose broker (like the device transports of ThingsBoard or AWS IoT
//! Core): it speaks MQTT 3.1.1 and 5.0 to devices and to inspectors' alert subscribers, and
//! nothing is routed from one client to another. Without a broker in between there is no
//! broker memory that a crash could lose: a PUBACK (QoS 1) or PUBREC (QoS 2) leaves only
//! once every record of its PUBLISH is durably stored or durably quarantined.
//!
//! | module | job |
//! |---|---|
//! | [`codec`] | MQTT 3.1.1 / 5.0 packets (rumqttc's codec) mapped onto one vocabulary |
//! | [`peer`] | who is connected (device, token holder, anonymous) and what it may do |
//! | [`connection`] | one connection: CONNECT, publishes in order, acknowledgements, alerts |
//! | [`sessions`] | open connections by client id (session takeover) |
//!
//! # Sessions
//! quantrac keeps no session state for devices: they only publish, and it stores what it
//! acknowledges. A device that connects with clean session off (clean start off) is told
//! that its session is present, so that it keeps and re-sends its unacknowledged messages
//! after a reconnect, as MQTT asks of it; token holders (subscribers) always start a new
//! session and subscribe again.
//!
//! # Backpressure
//! Per connection, at most `mqtt.endpoint.receive_maximum` messages wait for durability;
//! at that bound the socket is not read, so a flood is held at the devices (TCP) rather
//! than in memory. Across connections, the store's queue holds at most
//! `storage.queue_max_mb` of readings: when it is full, every connection waits before its
//! next message (a flood of large backlogs from many devices is held at the devices too).
//! Connections beyond `max_connections` are closed at once (counted `reason="busy"`).
//!
//! # Stopping
//! [`Endpoint::stop`] stops accepting, then every connection stops reading, waits (at most
//! `drain_limit`) for what it received to be durable, acknowledges it, says "server
//! shutting down" (MQTT 5) and closes. Only then do the store and the rest stop.

pub mod codec;
pub mod connection;
pub mod peer;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{EndpointConfig, MqttConfig};
use crate::ingest::IngestStatus;
use crate::mqtt::devices::Devices;
use crate::notify::Notifier;
use crate::pipeline::Pipeline;
use crate::security::SecurityDb;
use crate::storage::Store;
use peer::Refusal;
use sessions::Sessions;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen for MQTT on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("mqtts: {0}")]
    Tls(#[from] crate::security::tls::TlsError),
}

/// How the endpoint behaves (from `mqtt.endpoint`, `mqtt.topic_prefix` and
/// `mqtt.max_packet_size`).
#[derive(Debug, Clone)]
pub struct Settings {
    pub topic_prefix: String,
    pub allow_anonymous: bool,
    pub receive_maximum: u16,
    pub max_packet_size: usize,
    pub connect_timeout: Duration,
    pub drain_limit: Duration,
}

impl Settings {
    pub fn from_config(mqtt: &MqttConfig) -> Settings {
        let config = &mqtt.endpoint;
        Settings {
            topic_prefix: mqtt.topic_prefix.clone(),
            allow_anonymous: config.allow_anonymous,
            receive_maximum: config.receive_maximum,
            max_packet_size: mqtt.max_packet_size,
            connect_timeout: config.connect_timeout,
            drain_limit: config.drain_limit,
        }
    }
}

/// What every connection shares.
pub struct Shared {
    pub pipeline: Arc<Pipeline>,
    pub store: Arc<dyn Store>,
    pub notifier: Arc<Notifier>,
    /// `devices.toml`; replaced by a reload of the seeds.
    pub devices: ArcSwap<Devices>,
    pub security: SecurityDb,
    pub sessions: Sessions,
    pub settings: Settings,
    /// Messages taken and settled (readiness, stall detection, test progress).
    pub status: Arc<IngestStatus>,
    /// Cancelled by [`Endpoint::stop`].
    pub stop: CancellationToken,
}

/// The running endpoint.
pub struct Endpoint {
    pub shared: Arc<Shared>,
    /// Where devices connect (plain MQTT).
    pub listen: SocketAddr,
    /// The mqtts listener, if configured.
    pub tls_listen: Option<SocketAddr>,
    tracker: TaskTracker,
}

impl Endpoint {
    /// Binds the listeners and starts accepting. Readiness (`/readyz`) follows.
    pub async fn start(
        config: &EndpointConfig,
        shared: Shared,
        listen: SocketAddr,
    ) -> Result<Endpoint, Error> {
        let shared = Arc::new(shared);
        let tracker = TaskTracker::new();
        let limit = Arc::new(Semaphore::new(config.max_connections));
        let listener = bind(listen).await?;
        let listen = listener.local_addr().map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
        tracker.spawn(accept(
            listener,
            None,
            shared.clone(),
            limit.clone(),
            tracker.clone(),
        ));
        let mut tls_listen = None;
        if let (Some(addr), Some(files)) = (config.tls_listen, &config.tls) {
            let tls = crate::security::tls::server_config(&files.cert, &files.key, &[b"mqtt"])?;
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            let listener = bind(addr).await?;
            tls_listen = listener.local_addr().ok();
            tracker.spawn(accept(
                listener,
                Some(acceptor),
                shared.clone(),
                limit,
                tracker.clone(),
            ));
        }
        shared.status.set_listening(true);
        tracing::info!(%listen, tls = ?tls_listen, "MQTT device endpoint listening");
        Ok(Endpoint {
            shared,
            listen,
            tls_listen,
            tracker,
        })
    }

    /// Stops accepting; every connection acknowledges what it received once durable and
    /// closes. Returns when all have (bounded by `drain_limit` per connection).
    pub async fn stop(&self) {
        self.shared.status.set_listening(false);
        self.shared.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Swaps in a reloaded `devices.toml` (open connections check it at their next packet).
    pub fn reload_devices(&self, devices: Arc<Devices>) {
        self.shared.devices.store(devices);
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

/// Accepts connections until the endpoint stops.
async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shared.stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, _addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, mostly: wait a little rather than spin.
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            Refusal::Busy.count();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        // Two kinds of task, not one that may do either: a task's memory is that of its
        // largest state, and a TLS connection's (6.7 KB) is twice a plain one's; with
        // 10,000 devices connected that is 35 MB.
        match tls.clone() {
            None => {
                tracker.spawn(async move {
                    let _permit = permit;
                    connection::serve(stream, shared).await;
                });
            }
            Some(acceptor) => {
                tracker.spawn(async move {
                    let _permit = permit;
                    let timeout = shared.settings.connect_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => connection::serve(stream, shared).await,
                        _ => Refusal::Protocol.count(),
                    }
                });
            }
        }
    }
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::net::TcpStream;
    use tokio_rustls::server::TlsStream;

    /// The memory of the future `serve` returns for a stream of type `S`.
    fn task_size<S, F, Fut>(_serve: F) -> usize
    where
        F: Fn(S, Arc<super::Shared>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every connected device holds one such task (10,000 devices x 1 KB is 10 MB), and a
    /// plain connection's task is spawned apart from a TLS one's, which is twice as large.
    #[test]
    fn a_plain_device_connections_task_stays_below_4_kb() {
        let plain = task_size(super::connection::serve::<TcpStream>);
        let tls = task_size(super::connection::serve::<TlsStream<TcpStream>>);
        assert!(plain < 4096, "{plain} bytes per plain connection");
        assert!(tls < 8192, "{tls} bytes per TLS connection");
    }
}
