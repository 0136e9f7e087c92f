//! The task that polls the rumqttc event loop: the only place that touches the network.
//!
//! It must never block (rumqttc's rule), so it only counts PUBACKs and reports the link state
//! through `watch` channels. Reconnection keeps the clean session that the contract asks for,
//! but rumqttc drops its queue of unacknowledged and not-yet-sent requests when the broker
//! answers a clean session; the driver saves that queue when the link fails and puts it back
//! (with fresh packet ids) after the new CONNACK, so messages still go out, in order, exactly
//! as a logger re-sends its unacknowledged records.

use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, Event, EventLoop, Outgoing, Packet, Request};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// First delay before a reconnection attempt; doubled up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// State of the connection, as seen by [`super::Publisher::connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Link {
    /// Before the first CONNACK.
    Connecting,
    /// Connected (CONNACK received).
    Up,
    /// The last attempt failed with this error; retrying.
    Down(String),
    /// The broker refused the CONNECT (credentials, authorization); retrying, but
    /// `connect()` gives up at once.
    Refused(String),
    /// The TLS handshake failed (certificate, protocol): retrying will not help a first
    /// connection, so `connect()` gives up at once too.
    TlsFailed(String),
}

/// Polls `eventloop` until `stop` is cancelled or a DISCONNECT has been sent.
pub(super) async fn drive(
    mut eventloop: EventLoop,
    acked: watch::Sender<u64>,
    link: watch::Sender<Link>,
    stop: CancellationToken,
) {
    let mut backoff = MIN_BACKOFF;
    let mut saved: Vec<Request> = Vec::new();
    loop {
        let event = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = MIN_BACKOFF;
                if !saved.is_empty() {
                    tracing::info!(
                        requests = saved.len(),
                        "reconnected; re-sending unacknowledged messages"
                    );
                }
                restore(&mut eventloop, &mut saved);
                link.send_replace(Link::Up);
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => acked.send_modify(|n| *n += 1),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
            Ok(_) => {}
            Err(error) => {
                // rumqttc has moved what was unacknowledged or still queued into `pending`;
                // keep it before a clean-session CONNACK clears it.
                saved.extend(eventloop.pending.drain(..));
                tracing::warn!(%error, retry_in = ?backoff, "MQTT connection failed");
                link.send_replace(match error {
                    // "Come back later" (a broker starting or stopping): keep trying, as a
                    // gateway does.
                    ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable) => {
                        Link::Down(error.to_string())
                    }
                    ConnectionError::ConnectionRefused(_) => Link::Refused(error.to_string()),
                    ConnectionError::Tls(_) => Link::TlsFailed(error.to_string()),
                    _ => Link::Down(error.to_string()),
                });
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Puts the saved requests back in front of the queue, as new publishes of the new session.
fn restore(eventloop: &mut EventLoop, saved: &mut Vec<Request>) {
    let mut requests: Vec<Request> = saved
        .drain(..)
        .filter_map(|request| match request {
            Request::Publish(mut publish) => {
                // A new session: the broker knows none of the old packet ids.
                publish.pkid = 0;
                publish.dup = false;
                Some(Request::Publish(publish))
            }
            // Acks and pings belong to the old session.
            Request::PubAck(_)
            | Request::PubRec(_)
            | Request::PubRel(_)
            | Request::PubComp(_)
            | Request::PingReq(_)
            | Request::PingResp(_) => None,
            other => Some(other),
        })
        .collect();
    // Anything rumqttc queued itself since comes after our older requests.
    requests.extend(eventloop.pending.drain(..));
    eventloop.pending.extend(requests);
}
