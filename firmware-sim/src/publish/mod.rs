//! Publishing over MQTT as a gateway does: QoS 1, in order, counted until acknowledged.
//!
//! A [`Publisher`] owns a rumqttc client whose event loop runs on its own tokio task
//! (`driver`). Callers only enqueue requests, so they never block the event loop; the task
//! counts PUBACKs into a `watch` channel, which is what [`Publisher::wait_acked`] awaits (no
//! polling). When the link drops, the task reconnects with a short backoff and re-sends what
//! the broker had not acknowledged, in order, so a flapping link loses nothing.

mod driver;
mod options;
mod subscribe;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::encode::{self, Encoding};
use crate::record::Record;

pub use options::{BrokerOptions, MAX_PACKET_SIZE, REQUEST_CAPACITY};
pub use subscribe::Subscription;

use driver::Link;

/// How long [`Publisher::connect`] waits for the broker's CONNACK.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Publisher::disconnect`] waits for outstanding acknowledgements.
pub const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The broker URL cannot be used.
    #[error("invalid broker url `{url}`: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The CA file cannot be read.
    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error("no certificate in CA file {0}")]
    NoCertificates(std::path::PathBuf),
    /// rustls refused the configuration or a certificate.
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// The broker answered the CONNECT with a refusal (bad credentials, not authorized...).
    #[error("broker refused the connection: {0}")]
    Refused(String),
    /// The TLS handshake with the broker failed (e.g. an unknown certificate issuer).
    #[error("TLS handshake with the broker failed: {0}")]
    TlsHandshake(String),
    /// No CONNACK within [`CONNECT_TIMEOUT`].
    #[error("broker not reachable within {timeout:?}: {last_error}")]
    Unreachable {
        /// How long we tried.
        timeout: Duration,
        /// The last connection error.
        last_error: String,
    },
    /// The request was rejected by the client (e.g. a topic with wildcards).
    #[error("cannot publish: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// The event loop task has stopped.
    #[error("the MQTT event loop has stopped")]
    Stopped,
    /// Not every message was acknowledged in time.
    #[error("{unacked} of {published} messages not acknowledged within {timeout:?}")]
    Unacked {
        /// Messages published.
        published: u64,
        /// Messages still unacknowledged.
        unacked: u64,
        /// How long we waited.
        timeout: Duration,
    },
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connected MQTT publisher (one client, one event loop task).
///
/// Dropping it stops the event loop at once; use [`Publisher::disconnect`] to finish cleanly.
pub struct Publisher {
    client: AsyncClient,
    topic_prefix: Option<String>,
    published: AtomicU64,
    acked: watch::Receiver<u64>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic_prefix", &self.topic_prefix)
            .field("published", &self.published())
            .field("acked", &self.acked())
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Connects and waits for the CONNACK: fails at once if the broker refuses the
    /// connection or the TLS handshake fails, or after [`CONNECT_TIMEOUT`] if it cannot be
    /// reached (network errors are retried until then, e.g. while a broker starts). Clean
    /// session; later drops are reconnected automatically.
    pub async fn connect(options: BrokerOptions) -> Result<Publisher> {
        let mqtt = options.mqtt_options()?;
        let (client, eventloop) = AsyncClient::new(mqtt, REQUEST_CAPACITY);
        let (acked_tx, acked) = watch::channel(0);
        let (link_tx, mut link) = watch::channel(Link::Connecting);
        let stop = CancellationToken::new();
        let task = tokio::spawn(driver::drive(eventloop, acked_tx, link_tx, stop.clone()));
        let publisher = Publisher {
            client,
            topic_prefix: options
                .topic_prefix
                .filter(|p| !p.trim_matches('/').is_empty()),
            published: AtomicU64::new(0),
            acked,
            stop,
            task: Some(task),
        };
        let ready =
            link.wait_for(|l| matches!(l, Link::Up | Link::Refused(_) | Link::TlsFailed(_)));
        // Cloned out of the channel so that the borrow ends with this statement.
        let ready = tokio::time::timeout(CONNECT_TIMEOUT, ready)
            .await
            .map(|state| state.map(|s| s.clone()));
        let outcome = match ready {
            Ok(Ok(Link::Refused(reason))) => Err(Error::Refused(reason)),
            Ok(Ok(Link::TlsFailed(reason))) => Err(Error::TlsHandshake(reason)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Unreachable {
                timeout: CONNECT_TIMEOUT,
                last_error: match &*link.borrow() {
                    Link::Down(error) => error.clone(),
                    _ => "no answer".to_owned(),
                },
            }),
        };
        // On error `publisher` is dropped here, which stops the task.
        outcome.map(|()| publisher)
    }

    /// Publishes `records` of one station, encoded, on its telemetry topic (QoS 1).
    pub async fn publish_records(
        &self,
        zone: &str,
        station: &str,
        encoding: Encoding,
        records: &[Record],
    ) -> Result<()> {
        self.publish_signed(zone, station, encoding, records, None)
            .await
    }

    /// As [`Publisher::publish_records`], each record signed with `key` when one is given.
    pub async fn publish_signed(
        &self,
        zone: &str,
        station: &str,
        encoding: Encoding,
        records: &[Record],
        key: Option<&[u8]>,
    ) -> Result<()> {
        let topic = encode::telemetry_topic(self.topic_prefix(), zone, station, encoding);
        let payload = encode::encode_signed(records, encoding, key);
        self.publish_raw(&topic, payload, false).await
    }

    /// Publishes `payload` on exactly `topic` (no prefix added), QoS 1.
    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>, retain: bool) -> Result<()> {
        // Counted before it is queued so that an acknowledgement can never overtake its count.
        self.published.fetch_add(1, Ordering::SeqCst);
        let sent = self
            .client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await;
        if sent.is_err() {
            self.published.fetch_sub(1, Ordering::SeqCst);
        }
        Ok(sent?)
    }

    /// The topic prefix in use, if any.
    pub fn topic_prefix(&self) -> Option<&str> {
        self.topic_prefix.as_deref()
    }

    /// Publishes `online` or `offline` on the station's status topic, retained, QoS 1.
    pub async fn publish_status(&self, zone: &str, station: &str, online: bool) -> Result<()> {
        let topic = encode::status_topic(self.topic_prefix(), zone, station);
        let payload = if online { "online" } else { "offline" };
        self.publish_raw(&topic, payload.as_bytes().to_vec(), true)
            .await
    }

    /// Resolves when every message published so far has been PUBACKed by the broker.
    pub async fn wait_acked(&self) -> Result<()> {
        let target = self.published();
        let mut acked = self.acked.clone();
        acked
            .wait_for(|&n| n >= target)
            .await
            .map(|_| ())
            .map_err(|_| Error::Stopped)
    }

    /// Messages published (queued) so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::SeqCst)
    }

    /// Messages acknowledged by the broker so far.
    pub fn acked(&self) -> u64 {
        *self.acked.borrow()
    }

    /// Waits for every acknowledgement (at most [`DISCONNECT_TIMEOUT`]), sends DISCONNECT and
    /// stops the event loop. Reports [`Error::Unacked`] if acknowledgements were missing.
    pub async fn disconnect(mut self) -> Result<()> {
        let acked = tokio::time::timeout(DISCONNECT_TIMEOUT, self.wait_acked()).await;
        let outcome = match acked {
            Ok(result) => result,
            Err(_) => Err(Error::Unacked {
                published: self.published(),
                unacked: self.published().saturating_sub(self.acked()),
                timeout: DISCONNECT_TIMEOUT,
            }),
        };
        if let Some(task) = self.task.take() {
            // The driver stops by itself once DISCONNECT is on the wire; the timeout covers a
            // link that is down at this moment.
            if self.client.disconnect().await.is_ok() {
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            }
        }
        self.stop.cancel();
        outcome
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
