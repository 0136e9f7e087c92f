//! One device or subscriber connection, from CONNECT to close.
//!
//! ```text
//!  socket ──read──▶ PUBLISH ──handoff (pipeline, store)──▶ pending (in order, ≤ receive max)
//!                                                           │ durable
//!  socket ◀──PUBACK / PUBREC (MQTT 5: with reason)──────────┘  + alert events announced
//! ```
//!
//! - A PUBLISH is acknowledged only once every record in it is durably stored or durably
//!   quarantined, in the order the PUBLISHes came (MQTT requires it).
//! - **Backpressure**: at most `receive_maximum` messages wait for durability per
//!   connection; at that bound the socket is not read (TCP holds the device back; its
//!   messages stay unacknowledged with it). MQTT 5 clients are told the bound in CONNACK.
//! - Messages quantrac cannot take are refused at protocol level: MQTT 5 gets a PUBACK
//!   with a reason code, MQTT 3.1.1 (which has none) the connection closed; both counted in
//!   `quantrac_mqtt_refused_total{reason}`. Nothing is acknowledged and then dropped.
//! - Subscribers (API tokens, or devices with `subscribe` rights) get alert events at QoS 1.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::codec::{self, Close, Codec, Incoming, PubReason, QoS, Refusal as ConnRefusal};
use super::peer::{self, Peer, Refusal};
use super::Shared;
use crate::alerts::AlertEvent;
use crate::handoff::{self, Handoff};
use crate::metrics as m;
use crate::mqtt::devices::Devices;
use crate::quarantine::Reason;
use crate::telemetry::{topic, Timestamp};

/// Alert messages sent to a subscriber and not yet acknowledged, at most; beyond, events
/// are dropped for it and counted (it reads too slowly; alerts stay in the API).
const ALERT_INFLIGHT: usize = 64;

/// A PUBLISH waiting for durability before its acknowledgement.
struct Pending {
    qos: QoS,
    pkid: u16,
    /// `None`: refused before the store (answered as soon as it is the oldest).
    wait: Option<Handoff>,
    reason: PubReason,
    detail: Option<String>,
}

/// How a connection ended, for the log and the will.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client (`true`: MQTT 5 asked for the will anyway).
    Disconnected(bool),
    /// The socket closed or failed without DISCONNECT.
    Lost(String),
    /// Closed by quantrac for a reason the client caused.
    Closed(Refusal, String),
    TakenOver,
    ShuttingDown,
}

impl End {
    /// Whether the will is published (MQTT: on any end but a normal DISCONNECT).
    fn publishes_will(&self) -> bool {
        match self {
            End::Disconnected(with_will) => *with_will,
            // The device did not go away: quantrac did.
            End::ShuttingDown => false,
            End::Lost(_) | End::Closed(..) | End::TakenOver => true,
        }
    }
}

/// Serves one accepted connection until it ends.
pub async fn serve<S>(mut stream: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // The read buffer starts small and grows with the largest message the device sends: a
    // live record is a few hundred bytes, and 10,000 connected devices each holding 4 KiB
    // cost 38 MB more resident memory than with 512 bytes (measured with `firmware-sim
    // connections`: 200 MB against 162 MB).
    let mut buf = BytesMut::with_capacity(512);
    let connect = match tokio::time::timeout(
        shared.settings.connect_timeout,
        read_connect(&mut stream, &mut buf, &shared),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            Refusal::Protocol.count();
            tracing::debug!(error = %e, "MQTT connection refused before CONNECT");
            return;
        }
        Err(_) => {
            Refusal::Protocol.count();
            return;
        }
    };
    let (codec, connect) = connect;
    let mut out = BytesMut::new();
    let peer = match admit(&shared, &connect).await {
        Ok(peer) => peer,
        Err((refusal, code)) => {
            refusal.count();
            tracing::info!(client_id = %connect.client_id, reason = refusal.code(), "MQTT connection refused");
            if codec.connack(&mut out, Some(code), 0, false).is_ok() {
                let _ = stream.write_all(&out).await;
                let _ = stream.flush().await;
            }
            return;
        }
    };
    let client_id = if connect.client_id.is_empty() {
        // MQTT lets the server name a client that sent none (clean session only): a name
        // of its own, so that two such clients never take each other's session over.
        format!("quantrac-assigned-{}", shared.sessions.next_id())
    } else {
        connect.client_id.clone()
    };
    // Client ids are namespaced by who logged in: a device can take over only its own
    // sessions, never another device's (which would cut it off).
    let session_key = format!("{}\u{0}{client_id}", peer.describe());
    let registration = shared.sessions.register(&session_key);
    let session_present = !connect.clean_start && !matches!(peer, Peer::Inspector { .. });
    if codec
        .connack(
            &mut out,
            None,
            shared.settings.receive_maximum,
            session_present,
        )
        .is_err()
        || stream.write_all(&out).await.is_err()
    {
        shared.sessions.unregister(&session_key, registration.id);
        return;
    }
    out.clear();
    metrics::gauge!(m::MQTT_DEVICE_CONNECTIONS).increment(1.0);
    tracing::debug!(%client_id, peer = %peer.describe(), version = ?codec.version, "MQTT client connected");
    let mut connection = Connection {
        stream,
        codec,
        buf,
        out,
        peer,
        devices: shared.devices.load_full(),
        pending: VecDeque::new(),
        subscriptions: Vec::new(),
        alerts: None,
        alerts_inflight: 0,
        next_pkid: 0,
        keep_alive: (connect.keep_alive > 0)
            .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500)),
        heard: Instant::now(),
        shared: shared.clone(),
    };
    let end = connection.run(&registration.taken_over).await;
    metrics::gauge!(m::MQTT_DEVICE_CONNECTIONS).decrement(1.0);
    shared.sessions.unregister(&session_key, registration.id);
    match &end {
        End::Closed(refusal, detail) => {
            refusal.count();
            tracing::info!(%client_id, reason = refusal.code(), detail, "MQTT connection closed by quantrac");
        }
        End::Lost(detail) => {
            tracing::debug!(%client_id, detail, "MQTT connection lost");
        }
        other => tracing::debug!(%client_id, end = ?other, "MQTT connection ended"),
    }
    if end.publishes_will() {
        if let Some(will) = connect.will {
            publish_will(&connection.shared, &will).await;
        }
    }
}

/// Reads bytes until a whole CONNECT is there; picks the codec by its version.
async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    shared: &Shared,
) -> Result<(Codec, codec::Connect), codec::Error> {
    let max = shared.settings.max_packet_size;
    loop {
        if let Some(version) = codec::connect_version(buf, max)? {
            let codec = Codec {
                version,
                max_incoming: max,
            };
            return match codec.read(buf)? {
                Some(Incoming::Connect(c)) => Ok((codec, c)),
                _ => Err(codec::Error::NotConnect),
            };
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(codec::Error::Malformed("closed before CONNECT".into())),
            Ok(_) => {}
        }
    }
}

/// Who connects, or why not.
async fn admit(
    shared: &Arc<Shared>,
    connect: &codec::Connect,
) -> Result<Peer, (Refusal, ConnRefusal)> {
    if shared.stop.is_cancelled() || !shared.status.is_ready() {
        return Err((Refusal::Unavailable, ConnRefusal::ServerUnavailable));
    }
    if connect.client_id.is_empty() && !connect.clean_start {
        return Err((Refusal::BadClientId, ConnRefusal::ClientIdInvalid));
    }
    if connect.client_id.len() > 128 || connect.client_id.contains(['\0', '/', '+', '#']) {
        return Err((Refusal::BadClientId, ConnRefusal::ClientIdInvalid));
    }
    let devices = shared.devices.load();
    // An API token is checked against security.db: off the async workers.
    let token = match connect.password.as_deref() {
        Some(p) if p.starts_with(crate::security::token::PREFIX) => {
            let security = shared.security.clone();
            let presented = p.to_owned();
            tokio::task::spawn_blocking(move || match security.authenticate(&presented) {
                Ok(Ok(principal)) => Some((principal.name, principal.role)),
                _ => None,
            })
            .await
            .ok()
            .flatten()
        }
        _ => None,
    };
    let peer = Peer::authenticate(
        &devices,
        connect.username.as_deref(),
        connect.password.as_deref(),
        shared.settings.allow_anonymous,
        |_| token,
    )
    .map_err(|r| {
        let code = match r {
            Refusal::Anonymous => ConnRefusal::NotAuthorized,
            _ => ConnRefusal::BadCredentials,
        };
        (r, code)
    })?;
    if let Some(will) = &connect.will {
        let prefix = &shared.settings.topic_prefix;
        if !peer::valid_topic_name(&will.topic) || !peer.may_publish(prefix, &will.topic) {
            return Err((Refusal::WillNotAllowed, ConnRefusal::NotAuthorized));
        }
    }
    Ok(peer)
}

/// A will goes through the pipeline as a message from the device would (it is, in effect,
/// its last one); its alert events are announced once durable.
async fn publish_will(shared: &Arc<Shared>, will: &codec::Will) {
    let now = Timestamp::now();
    let submitted = handoff::submit(
        &shared.pipeline,
        &*shared.store,
        &will.topic,
        &will.payload,
        now,
    )
    .await;
    if let Ok(handoff) = submitted {
        handoff.settle(&shared.notifier).await;
    }
}

struct Connection<S> {
    stream: S,
    codec: Codec,
    buf: BytesMut,
    out: BytesMut,
    peer: Peer,
    /// The device list `peer` was checked against (a reload makes a new one).
    devices: Arc<Devices>,
    pending: VecDeque<Pending>,
    /// Granted alert filters with their QoS.
    subscriptions: Vec<(String, QoS)>,
    alerts: Option<broadcast::Receiver<Arc<AlertEvent>>>,
    alerts_inflight: usize,
    next_pkid: u16,
    /// 1.5 x the client's keep-alive: silence longer than this ends the connection.
    keep_alive: Option<Duration>,
    heard: Instant,
    shared: Arc<Shared>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn run(&mut self, taken_over: &tokio_util::sync::CancellationToken) -> End {
        let stop = self.shared.stop.clone();
        // A client may send its first packets right behind CONNECT, in the same segment.
        if let Some(end) = self.process_buffered().await {
            return end;
        }
        loop {
            if let Err(e) = self.flush().await {
                return End::Lost(e.to_string());
            }
            let room = self.pending.len() < usize::from(self.shared.settings.receive_maximum);
            let front_waits = self.pending.front().is_some_and(|p| p.wait.is_some());
            let silent_until = self.keep_alive.map(|k| self.heard + k);
            tokio::select! {
                biased;
                () = stop.cancelled() => return self.shut_down().await,
                () = taken_over.cancelled() => {
                    self.close(Close::SessionTakenOver, "another connection took the session over").await;
                    return End::TakenOver;
                }
                durable = front_durable(&mut self.pending), if front_waits => {
                    if let Some(end) = self.settle(durable) {
                        return end;
                    }
                    if let Some(end) = self.process_buffered().await {
                        return end;
                    }
                }
                read = self.stream.read_buf(&mut self.buf), if room => match read {
                    Ok(0) => return End::Lost("closed without DISCONNECT".into()),
                    Ok(_) => {
                        self.heard = Instant::now();
                        if let Some(end) = self.process_buffered().await {
                            return end;
                        }
                    }
                    Err(e) => return End::Lost(e.to_string()),
                },
                () = sleep_until(silent_until), if silent_until.is_some() => {
                    self.close(Close::KeepAliveTimeout, "nothing received for 1.5 x the keep-alive").await;
                    return End::Closed(Refusal::KeepAlive, "keep-alive expired".into());
                }
                event = next_alert(&mut self.alerts), if self.alerts.is_some() => self.deliver(event),
            }
            // Refused messages at the front are answered at once.
            if let Some(end) = self.settle_ready() {
                return end;
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Handles the whole packets in the read buffer while there is room for more pending
    /// messages (the rest waits in the buffer).
    async fn process_buffered(&mut self) -> Option<End> {
        while self.pending.len() < usize::from(self.shared.settings.receive_maximum) {
            let packet = match self.codec.read(&mut self.buf) {
                Ok(Some(p)) => p,
                Ok(None) => return None,
                Err(codec::Error::TooLarge { size, max }) => {
                    let detail = format!("packet of {size} bytes, at most {max}");
                    self.close(Close::PacketTooLarge, &detail).await;
                    return Some(End::Closed(Refusal::TooLarge, detail));
                }
                Err(e) => {
                    self.close(Close::MalformedPacket, &e.to_string()).await;
                    return Some(End::Closed(Refusal::Protocol, e.to_string()));
                }
            };
            if let Some(end) = self.handle(packet).await {
                return Some(end);
            }
        }
        None
    }

    async fn handle(&mut self, packet: Incoming) -> Option<End> {
        match packet {
            Incoming::Publish(p) => return self.publish(p).await,
            Incoming::PubRel(pkid) => {
                // The PUBREC went out once the message was durable: the exchange ends here.
                self.write(|c, out| c.pubcomp(out, pkid))
            }
            Incoming::PubAck(_) => self.alerts_inflight = self.alerts_inflight.saturating_sub(1),
            Incoming::PubRec(_) | Incoming::PubComp(_) => {}
            Incoming::Subscribe { pkid, filters } => self.subscribe(pkid, &filters),
            Incoming::Unsubscribe { pkid, filters } => {
                self.subscriptions.retain(|(f, _)| !filters.contains(f));
                if self.subscriptions.is_empty() {
                    self.alerts = None;
                }
                self.write(|c, out| c.unsuback(out, pkid, filters.len()));
            }
            Incoming::PingReq => self.write(|c, out| c.pingresp(out)),
            Incoming::Disconnect { with_will } => {
                // What was received is still stored and acknowledged (the client may be
                // gone by then: the acknowledgement is best effort, the data is kept).
                self.drain_pending(self.shared.settings.drain_limit).await;
                return Some(End::Disconnected(with_will));
            }
            Incoming::Connect(_) => {
                self.close(Close::ProtocolError, "a second CONNECT").await;
                return Some(End::Closed(Refusal::Protocol, "second CONNECT".into()));
            }
            Incoming::Unexpected(what) => {
                let detail = format!("a client may not send {what}");
                self.close(Close::ProtocolError, &detail).await;
                return Some(End::Closed(Refusal::Protocol, detail));
            }
        }
        None
    }

    async fn publish(&mut self, p: codec::Publish) -> Option<End> {
        // A handle, not a copy of the prefix: no allocation per message.
        let shared = self.shared.clone();
        let prefix = &shared.settings.topic_prefix;
        let Ok(topic) = std::str::from_utf8(&p.topic) else {
            self.close(Close::TopicNameInvalid, "the topic is not UTF-8")
                .await;
            return Some(End::Closed(Refusal::Protocol, "topic not UTF-8".into()));
        };
        if p.topic_alias.is_some() {
            self.close(Close::ProtocolError, "topic aliases are not offered")
                .await;
            return Some(End::Closed(Refusal::Protocol, "topic alias".into()));
        }
        if !peer::valid_topic_name(topic) {
            let detail = format!(
                "`{}` is not a topic name (empty, a wildcard or NUL)",
                topic.escape_debug()
            );
            self.close(Close::TopicNameInvalid, &detail).await;
            return Some(End::Closed(Refusal::Protocol, detail));
        }
        if let Some(end) = self.refresh_rights() {
            self.close(
                Close::NotAuthorized,
                "the device's credentials were revoked",
            )
            .await;
            return Some(end);
        }
        if !self.peer.may_publish(prefix, topic) {
            Refusal::PublishNotAllowed.count();
            let detail = format!(
                "{} may not publish on `{}`",
                self.peer.describe(),
                topic.escape_debug()
            );
            if self.codec.version == codec::Version::V4 {
                // MQTT 3.1.1 has no negative acknowledgement: the connection ends.
                self.close(Close::NotAuthorized, &detail).await;
                return Some(End::Closed(Refusal::PublishNotAllowed, detail));
            }
            tracing::info!(detail, "MQTT publish refused");
            self.pending.push_back(Pending {
                qos: p.qos,
                pkid: p.pkid,
                wait: None,
                reason: PubReason::NotAuthorized,
                detail: Some(detail),
            });
            return None;
        }
        if p.qos == QoS::AtMostOnce {
            metrics::counter!(m::MQTT_QOS0_TOTAL).increment(1);
        }
        let Ok(handoff) = handoff::submit(
            &shared.pipeline,
            &*shared.store,
            topic,
            &p.payload,
            Timestamp::now(),
        )
        .await
        else {
            // The store is stopping: nothing acknowledged, the device sends it again.
            return Some(End::ShuttingDown);
        };
        self.shared.status.note_received();
        let (reason, detail) = outcome(&handoff);
        self.pending.push_back(Pending {
            qos: p.qos,
            pkid: p.pkid,
            wait: Some(handoff),
            reason,
            detail,
        });
        None
    }

    /// After a reload of `devices.toml`, a device goes on with its current rights, or ends
    /// when it was removed or its password changed.
    fn refresh_rights(&mut self) -> Option<End> {
        let latest = self.shared.devices.load();
        if Arc::ptr_eq(&latest, &self.devices) {
            return None;
        }
        self.devices = latest.clone();
        match self.peer.refreshed(&latest) {
            Some(peer) => {
                self.peer = peer;
                None
            }
            None => Some(End::Closed(
                Refusal::Revoked,
                "credentials revoked by a reload".into(),
            )),
        }
    }

    fn subscribe(&mut self, pkid: u16, filters: &[codec::Filter]) {
        let prefix = &self.shared.settings.topic_prefix;
        let granted: Vec<Option<QoS>> = filters
            .iter()
            .map(|f| {
                let allowed = self.peer.may_subscribe(prefix, &f.path);
                if !allowed {
                    Refusal::SubscribeNotAllowed.count();
                    tracing::info!(filter = %f.path.escape_debug(), peer = %self.peer.describe(), "MQTT subscription refused");
                }
                allowed.then(|| f.qos.min(QoS::AtLeastOnce))
            })
            .collect();
        for (f, g) in filters.iter().zip(&granted) {
            if let Some(qos) = g {
                self.subscriptions.retain(|(path, _)| *path != f.path);
                self.subscriptions.push((f.path.clone(), *qos));
            }
        }
        if !self.subscriptions.is_empty() && self.alerts.is_none() {
            self.alerts = Some(self.shared.notifier.subscribe());
        }
        self.write(|c, out| c.suback(out, pkid, &granted));
    }

    /// Sends an alert event to this subscriber if one of its filters matches.
    fn deliver(&mut self, event: Result<Arc<AlertEvent>, broadcast::error::RecvError>) {
        let event = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                metrics::counter!(m::NOTIFICATIONS_DROPPED_TOTAL, m::LABEL_SINK => "mqtt_subscriber")
                    .increment(n);
                return;
            }
            Err(broadcast::error::RecvError::Closed) => {
                self.alerts = None;
                return;
            }
        };
        let alert = &event.alert;
        let name = topic::alert_topic(
            &self.shared.settings.topic_prefix,
            &alert.zone,
            &alert.station,
        );
        let Some(qos) = self
            .subscriptions
            .iter()
            .filter(|(f, _)| peer::filter_matches(f, &name))
            .map(|(_, q)| *q)
            .max()
        else {
            return;
        };
        if qos == QoS::AtLeastOnce && self.alerts_inflight >= ALERT_INFLIGHT {
            metrics::counter!(m::NOTIFICATIONS_DROPPED_TOTAL, m::LABEL_SINK => "mqtt_subscriber")
                .increment(1);
            return;
        }
        let payload = crate::notify::json::event(&event, self.shared.notifier.offset()).to_string();
        let pkid = if qos == QoS::AtLeastOnce {
            self.alerts_inflight += 1;
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            self.next_pkid
        } else {
            0
        };
        self.write(|c, out| c.publish(out, &name, Bytes::from(payload), qos, pkid));
    }

    /// The oldest pending message is durable (or not): answer it.
    fn settle(&mut self, durable: bool) -> Option<End> {
        let p = self.pending.pop_front()?;
        self.shared.status.note_settled();
        if !durable {
            // Not stored: no acknowledgement; the device sends it again after reconnecting.
            metrics::counter!(m::MQTT_ACKS_WITHHELD_TOTAL).increment(1);
            return Some(End::ShuttingDown);
        }
        if let Some(handoff) = &p.wait {
            handoff.announce(&self.shared.notifier);
        }
        self.acknowledge(&p);
        self.settle_ready()
    }

    /// Answers, in order, the refused messages at the front (they wait for nothing).
    fn settle_ready(&mut self) -> Option<End> {
        while self.pending.front().is_some_and(|p| p.wait.is_none()) {
            if let Some(p) = self.pending.pop_front() {
                self.acknowledge(&p);
            }
        }
        None
    }

    fn acknowledge(&mut self, p: &Pending) {
        if p.qos == QoS::AtMostOnce {
            return;
        }
        let detail = p.detail.as_deref();
        let (qos, pkid, reason) = (p.qos, p.pkid, p.reason);
        self.write(|c, out| c.publish_ack(out, qos, pkid, reason, detail));
        metrics::counter!(m::MQTT_ACKS_TOTAL).increment(1);
        self.shared.status.processed_one();
    }

    /// Waits (bounded) for what is pending, acknowledging it in order.
    async fn drain_pending(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while let Some(front) = self.pending.front_mut() {
            let durable = match front.wait.as_mut() {
                Some(wait) => match tokio::time::timeout_at(deadline, wait.durable()).await {
                    Ok(durable) => Some(durable),
                    Err(_) => break,
                },
                None => None,
            };
            match durable {
                Some(durable) => {
                    if self.settle(durable).is_some() {
                        break;
                    }
                }
                None => {
                    self.settle_ready();
                }
            }
        }
        let _ = self.flush().await;
    }

    /// quantrac stops: what was received is stored and acknowledged, then the connection
    /// closes (MQTT 5: "server shutting down").
    async fn shut_down(&mut self) -> End {
        self.drain_pending(self.shared.settings.drain_limit).await;
        self.close(Close::ServerShuttingDown, "quantrac is stopping")
            .await;
        End::ShuttingDown
    }

    /// MQTT 5: DISCONNECT with the reason; then the socket is closed by the caller.
    async fn close(&mut self, close: Close, detail: &str) {
        self.write(|c, out| c.disconnect(out, close, detail));
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }

    /// Encodes into the output buffer (sent at the top of the loop).
    fn write(&mut self, encode: impl FnOnce(&Codec, &mut BytesMut) -> Result<(), codec::Error>) {
        if let Err(e) = encode(&self.codec, &mut self.out) {
            tracing::error!(error = %e, "cannot encode an MQTT packet");
        }
    }
}

/// The reason code and string a processed message is answered with.
fn outcome(handoff: &Handoff) -> (PubReason, Option<String>) {
    if handoff.rejected == 0 {
        return (PubReason::Success, None);
    }
    let detail = format!(
        "{} rejected ({}), {} stored",
        handoff.rejected,
        handoff.first_rejection.as_deref().unwrap_or("rejected"),
        handoff.accepted
    );
    if handoff.accepted > 0 {
        return (PubReason::Success, Some(detail));
    }
    let reason = if handoff.first_rejection_is(Reason::UnknownTopic) {
        PubReason::TopicNameInvalid
    } else {
        PubReason::PayloadFormatInvalid
    };
    (reason, Some(detail))
}

/// The durability of the oldest pending message (only called when it has a wait).
async fn front_durable(pending: &mut VecDeque<Pending>) -> bool {
    match pending.front_mut().and_then(|p| p.wait.as_mut()) {
        Some(wait) => wait.durable().await,
        None => std::future::pending().await,
    }
}

async fn next_alert(
    alerts: &mut Option<broadcast::Receiver<Arc<AlertEvent>>>,
) -> Result<Arc<AlertEvent>, broadcast::error::RecvError> {
    match alerts {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
