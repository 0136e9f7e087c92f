//! The guard: the embedded broker's public face. rumqttd checks passwords but has no topic
//! ACLs and keeps passwords in plain text, so devices never reach it directly: the guard
//! accepts their MQTT connections (plain, and TLS on the `mqtts` port), checks the CONNECT
//! against [`Devices`] (salted hashes), and relays the session to rumqttd on a loopback port
//! that only knows a random per-process password. Every PUBLISH and SUBSCRIBE a device sends
//! is checked against its ACL on the way: a violation closes the connection (MQTT 3.1.1 has
//! no negative acknowledgement), is logged and counted (`quantrac_mqtt_refused_total`).
//!
//! Frames are relayed as they are (only the CONNECT is rewritten: internal credentials, and
//! the client id put under `d:{username}:` or `anon:` so that no device can take over the
//! session of another, or of quantrac's own clients). Broker-to-client bytes are copied
//! untouched.
//!
//! Sessions are relayed only while the [`Gate`] is open: from the moment quantrac is
//! subscribed until it starts to shut down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::{Buf, BytesMut};
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, Login, Packet};
use rumqttc::mqttbytes::{self, Error as FrameError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::devices::{Device, Devices};
use super::gate::Gate;
use crate::metrics as m;
use crate::telemetry::Topic;

/// Characters rumqttd does not accept in a client id.
const INVALID_ID_CHARS: &str = "+$#/";

/// Connections relayed so far (fresh upstream ids for clean sessions).
static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long a client may take to send its CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a relay closed by the gate waits for rumqttd to close the link behind it.
const LINK_CLOSE_WAIT: Duration = Duration::from_secs(2);

/// What the guard needs to know.
pub struct Guard {
    pub devices: ArcSwap<Devices>,
    pub allow_anonymous: bool,
    pub topic_prefix: String,
    pub max_packet_size: usize,
    /// rumqttd's loopback listener and the credentials only the guard and quantrac know.
    pub internal: SocketAddr,
    pub internal_login: (String, String),
    /// Open while quantrac takes what devices send; paces them by what it takes.
    pub gate: Arc<Gate>,
}

/// Why a connection was refused or closed. Codes are metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Protocol,
    BadClientId,
    Anonymous,
    BadCredentials,
    WillNotAllowed,
    PublishNotAllowed,
    SubscribeNotAllowed,
    /// The device was removed, or its password changed, by a reload of `devices.toml`.
    Revoked,
    /// quantrac is not subscribed yet, or is shutting down.
    Unavailable,
}

impl Refusal {
    pub const fn code(self) -> &'static str {
        match self {
            Refusal::Protocol => "protocol",
            Refusal::BadClientId => "bad_client_id",
            Refusal::Anonymous => "anonymous",
            Refusal::BadCredentials => "bad_credentials",
            Refusal::WillNotAllowed => "will_not_allowed",
            Refusal::PublishNotAllowed => "publish_not_allowed",
            Refusal::SubscribeNotAllowed => "subscribe_not_allowed",
            Refusal::Revoked => "revoked",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// Who is on a connection.
enum Peer {
    Anonymous,
    Device(Device),
}

/// Accepts plain connections on `listener` forever.
pub async fn serve(listener: TcpListener, guard: Arc<Guard>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(relay(stream, peer, guard.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "MQTT accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Accepts TLS connections (mqtts) on `listener` forever.
pub async fn serve_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    guard: Arc<Guard>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let guard = guard.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(CONNECT_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => relay(tls, peer, guard).await,
                        Ok(Err(e)) => tracing::warn!(%peer, error = %e, "mqtts handshake failed"),
                        Err(_) => tracing::warn!(%peer, "mqtts handshake timed out"),
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "mqtts accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn refused(peer: SocketAddr, who: &str, refusal: Refusal) {
    metrics::counter!(m::MQTT_REFUSED_TOTAL, m::LABEL_REASON => refusal.code()).increment(1);
    if refusal == Refusal::Unavailable {
        // Every gateway retrying around a start or a stop: expected, and counted.
        tracing::debug!(%peer, reason = refusal.code(), "MQTT client asked to come back later");
    } else {
        tracing::warn!(%peer, who, reason = refusal.code(), "MQTT client refused");
    }
}

/// Reads until one whole frame is buffered; `None` at end of stream.
async fn frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
    max: usize,
) -> Result<Option<usize>, FrameError> {
    loop {
        match mqttbytes::check(buffer.iter(), max) {
            Ok(header) => return Ok(Some(header.frame_length())),
            Err(FrameError::InsufficientBytes(_)) => {}
            Err(e) => return Err(e),
        }
        match stream.read_buf(buffer).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn relay<S>(client: S, peer: SocketAddr, guard: Arc<Guard>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let mut buffer = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(
        CONNECT_TIMEOUT,
        frame(&mut from_client, &mut buffer, guard.max_packet_size),
    )
    .await;
    let Ok(Ok(Some(_))) = first else {
        return;
    };
    let connect = match Packet::read(&mut buffer, guard.max_packet_size) {
        Ok(Packet::Connect(connect)) => connect,
        Ok(_) | Err(_) => {
            refused(peer, "-", Refusal::Protocol);
            let _ = connack(&mut to_client, ConnectReturnCode::RefusedProtocolVersion).await;
            return;
        }
    };
    let Some(_pass) = guard.gate.enter() else {
        refused(peer, "-", Refusal::Unavailable);
        let _ = connack(&mut to_client, ConnectReturnCode::ServiceUnavailable).await;
        return;
    };
    // rumqttd refuses these ids only after it has registered the connection, and then
    // panics when the id comes back: refuse them here.
    if INVALID_ID_CHARS
        .chars()
        .any(|c| connect.client_id.contains(c))
    {
        refused(peer, "-", Refusal::BadClientId);
        let _ = connack(&mut to_client, ConnectReturnCode::BadClientId).await;
        return;
    }
    let devices = guard.devices.load_full();
    let (mut who, tag) = match &connect.login {
        None if guard.allow_anonymous => (Peer::Anonymous, "anon".to_owned()),
        None => {
            refused(peer, "anonymous", Refusal::Anonymous);
            let _ = connack(&mut to_client, ConnectReturnCode::NotAuthorized).await;
            return;
        }
        Some(login) => match devices.authenticate(&login.username, &login.password) {
            Some(device) => (
                Peer::Device(device.clone()),
                format!("d:{}", device.username),
            ),
            None => {
                refused(peer, &login.username, Refusal::BadCredentials);
                let _ = connack(&mut to_client, ConnectReturnCode::BadUserNamePassword).await;
                return;
            }
        },
    };
    let name = match &who {
        Peer::Anonymous => "anonymous".to_owned(),
        Peer::Device(d) => d.username.clone(),
    };
    if let (Peer::Device(d), Some(will)) = (&who, &connect.last_will) {
        if !d.may_publish(&guard.topic_prefix, &will.topic) {
            refused(peer, &name, Refusal::WillNotAllowed);
            let _ = connack(&mut to_client, ConnectReturnCode::NotAuthorized).await;
            return;
        }
    }
    let mut upstream_connect = connect;
    upstream_connect.client_id = if upstream_connect.clean_session {
        // No session to find again: a fresh id per connection. rumqttd 0.20 can panic (and
        // stop accepting connections) when an id comes back after a link that failed early
        // (server/broker.rs keeps its will handler); fresh ids never come back.
        let n = CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{tag}:{}:{n}", upstream_connect.client_id)
    } else {
        format!("{tag}:{}", upstream_connect.client_id)
    };
    upstream_connect.login = Some(Login::new(
        guard.internal_login.0.clone(),
        guard.internal_login.1.clone(),
    ));
    let Ok(upstream) = TcpStream::connect(guard.internal).await else {
        tracing::error!("the embedded broker's internal listener does not answer");
        let _ = connack(&mut to_client, ConnectReturnCode::ServiceUnavailable).await;
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (mut from_broker, mut to_broker) = upstream.into_split();
    let mut out = BytesMut::new();
    if upstream_connect.write(&mut out).is_err() || to_broker.write_all(&out).await.is_err() {
        return;
    }
    out.clear();
    // Broker to client: untouched.
    let mut down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_broker, &mut to_client).await;
        let _ = to_client.shutdown().await;
    });
    // Client to broker: frame by frame, each PUBLISH and SUBSCRIBE checked. Frames before a
    // violation still go through; the violating one and the connection stop there.
    let mut generation = devices;
    let mut closing = false;
    let outcome = loop {
        if let Err(refusal) = follow_reload(&mut who, &mut generation, &guard) {
            break Some(refusal);
        }
        let verdict = forward_whole_frames(&who, &guard, &mut buffer, &mut out);
        if !out.is_empty() && to_broker.write_all(&out).await.is_err() {
            break None;
        }
        out.clear();
        if verdict.is_some() {
            break verdict;
        }
        // Read on only while quantrac keeps up (the gate's pace), and while the gate is open.
        let paced_read = async {
            guard.gate.room().await;
            from_client.read_buf(&mut buffer).await
        };
        tokio::select! {
            () = guard.gate.closed() => {
                closing = true;
                break None;
            }
            read = paced_read => match read {
                Ok(0) | Err(_) => break None,
                Ok(_) => {}
            },
        }
    };
    if let Some(refusal) = outcome {
        refused(peer, &name, refusal);
    }
    let _ = to_broker.shutdown().await;
    if closing {
        // rumqttd reads what was forwarded, then the end of the stream, and closes the link:
        // then everything it acknowledged on this link is in its logs.
        if tokio::time::timeout(LINK_CLOSE_WAIT, &mut down)
            .await
            .is_err()
        {
            tracing::warn!(%peer, who = name, "the embedded broker did not close a device link in time");
        }
    }
    down.abort();
}

/// After a reload of `devices.toml` (a new `generation`), a device's connection goes on with
/// its new rights, or ends if the device was removed or its password changed.
fn follow_reload(
    who: &mut Peer,
    generation: &mut Arc<Devices>,
    guard: &Guard,
) -> Result<(), Refusal> {
    let Peer::Device(device) = who else {
        return Ok(());
    };
    let latest = guard.devices.load();
    if Arc::ptr_eq(&latest, generation) {
        return Ok(());
    }
    *generation = Arc::clone(&latest);
    match generation.current(device) {
        Some(now) => {
            *device = now.clone();
            Ok(())
        }
        None => Err(Refusal::Revoked),
    }
}

/// Moves every whole frame of `buffer` to `out`, stopping at the first one the ACL refuses.
fn forward_whole_frames(
    who: &Peer,
    guard: &Guard,
    buffer: &mut BytesMut,
    out: &mut BytesMut,
) -> Option<Refusal> {
    loop {
        match mqttbytes::check(buffer.iter(), guard.max_packet_size) {
            Ok(header) => {
                let length = header.frame_length();
                let frame = &buffer[..length];
                if let Peer::Device(device) = who {
                    if let Some(refusal) = violation(device, guard, frame) {
                        return Some(refusal);
                    }
                }
                if let Some((topic, payload)) = publish_parts(frame) {
                    if Topic::parse(&guard.topic_prefix, topic).is_ok() {
                        guard.gate.forwarded((topic.len() + payload) as u64);
                    }
                }
                out.extend_from_slice(&buffer[..length]);
                buffer.advance(length);
            }
            Err(FrameError::InsufficientBytes(_)) => return None,
            Err(_) => return Some(Refusal::Protocol),
        }
    }
}

/// The ACL verdict on one client frame.
fn violation(device: &Device, guard: &Guard, frame: &[u8]) -> Option<Refusal> {
    match frame.first()? >> 4 {
        3 => {
            let topic = publish_topic(frame)?;
            (!device.may_publish(&guard.topic_prefix, topic)).then_some(Refusal::PublishNotAllowed)
        }
        8 => {
            let mut copy = BytesMut::from(frame);
            match Packet::read(&mut copy, guard.max_packet_size) {
                Ok(Packet::Subscribe(s)) => s
                    .filters
                    .iter()
                    .any(|f| !device.may_subscribe(&f.path))
                    .then_some(Refusal::SubscribeNotAllowed),
                _ => Some(Refusal::Protocol),
            }
        }
        // A second CONNECT is a protocol violation.
        1 => Some(Refusal::Protocol),
        _ => None,
    }
}

/// The topic and payload length of a PUBLISH frame (`None` for other frames): after the topic
/// comes a 2-byte packet id at QoS 1 and 2, then the payload.
fn publish_parts(frame: &[u8]) -> Option<(&str, usize)> {
    let first = *frame.first()?;
    if first >> 4 != 3 {
        return None;
    }
    let topic = publish_topic(frame)?;
    let length_bytes = frame.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let pkid = if (first >> 1) & 0b11 > 0 { 2 } else { 0 };
    let payload = frame
        .len()
        .checked_sub(1 + length_bytes + 2 + topic.len() + pkid)?;
    Some((topic, payload))
}

/// The topic of a PUBLISH frame: after the fixed header (1 byte, then 1 to 4 length bytes),
/// a 2-byte length and the UTF-8 topic.
fn publish_topic(frame: &[u8]) -> Option<&str> {
    let length_bytes = frame.iter().skip(1).take(4).position(|b| b & 0x80 == 0)? + 1;
    let start = 1 + length_bytes;
    let len = usize::from(u16::from_be_bytes([
        *frame.get(start)?,
        *frame.get(start + 1)?,
    ]));
    std::str::from_utf8(frame.get(start + 2..start + 2 + len)?).ok()
}

async fn connack<W: AsyncWrite + Unpin>(
    to: &mut W,
    code: ConnectReturnCode,
) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    let _ = ConnAck::new(code, false).write(&mut out);
    to.write_all(&out).await?;
    to.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_of_a_publish_frame_is_found_after_a_length_of_any_size() {
        let mut short = vec![0x32, 0x0b, 0x00, 0x03, b'a', b'/', b'b'];
        short.extend_from_slice(&[0; 6]);
        assert_eq!(publish_topic(&short), Some("a/b"));
        let mut long = vec![0x32, 0x80, 0x01, 0x00, 0x01, b'x'];
        long.extend_from_slice(&[0; 125]);
        assert_eq!(publish_topic(&long), Some("x"));
        assert_eq!(publish_topic(&[0x32, 0x02, 0x00]), None);
    }

    #[test]
    fn a_publish_frame_gives_its_topic_and_payload_length_at_every_qos() {
        for (qos, payload) in [
            (rumqttc::QoS::AtMostOnce, 5usize),
            (rumqttc::QoS::AtLeastOnce, 300),
            (rumqttc::QoS::ExactlyOnce, 20_000),
        ] {
            let mut publish = rumqttc::mqttbytes::v4::Publish::new(
                "quantrac/v1/Z/S/status",
                qos,
                vec![7; payload],
            );
            publish.pkid = u16::from(qos != rumqttc::QoS::AtMostOnce);
            let mut frame = BytesMut::new();
            assert!(publish.write(&mut frame).is_ok());
            assert_eq!(
                publish_parts(&frame),
                Some(("quantrac/v1/Z/S/status", payload)),
                "{qos:?}"
            );
        }
        assert_eq!(publish_parts(&[0x82, 0x00]), None, "a SUBSCRIBE");
    }
}
