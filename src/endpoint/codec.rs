//! MQTT 3.1.1 and 5.0 packets, as the endpoint sees them.
//!
//! Frames are read and written by the packet codec of `rumqttc` (its `mqttbytes` modules for
//! v4 and v5): a maintained codec already in the build, covering both versions and every
//! packet a server receives. This module only picks the version from the CONNECT frame
//! and maps the two packet families onto one small vocabulary ([`Incoming`]) and one writer
//! ([`Codec`]), so that the connection logic is written once.
//!
//! Why not another crate: `ntex-mqtt` is a whole server framework on its own runtime, and
//! `mqttbytes` (standalone) is unmaintained since 2021; rumqttc's codec is the same code,
//! maintained, and already compiled into quantrac for the external-broker client.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::{self as mb, v4};
use rumqttc::v5::mqttbytes as mb5;
use rumqttc::v5::mqttbytes::v5;

/// The protocol version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Quality of service, the same in both versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

/// A codec failure: the connection ends (counted with `reason="protocol"`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("packet of {size} bytes is larger than the {max} bytes allowed")]
    TooLarge { size: usize, max: usize },
    #[error("protocol level {0} is not supported (MQTT 3.1.1 or 5.0)")]
    UnsupportedVersion(u8),
    #[error("the first packet is not CONNECT")]
    NotConnect,
    #[error("cannot encode a packet: {0}")]
    Encode(String),
}

/// A device's last will.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// What CONNECT says.
#[derive(Debug, Clone)]
pub struct Connect {
    pub client_id: String,
    pub clean_start: bool,
    /// Seconds; 0 turns the keep-alive off.
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub will: Option<Will>,
    /// MQTT 5: how many QoS 1/2 messages the client accepts unacknowledged from us.
    pub receive_maximum: Option<u16>,
}

/// An incoming PUBLISH.
#[derive(Debug, Clone)]
pub struct Publish {
    pub topic: Bytes,
    pub qos: QoS,
    pub pkid: u16,
    pub payload: Bytes,
    pub retain: bool,
    /// MQTT 5 topic alias (not offered: its presence is a protocol error).
    pub topic_alias: Option<u16>,
}

/// A subscription request: one filter and its QoS.
#[derive(Debug, Clone)]
pub struct Filter {
    pub path: String,
    pub qos: QoS,
}

/// Every packet a client may send, in both versions.
#[derive(Debug, Clone)]
pub enum Incoming {
    Connect(Connect),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe {
        pkid: u16,
        filters: Vec<Filter>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    PingReq,
    /// `true`: MQTT 5 "disconnect with will message".
    Disconnect {
        with_will: bool,
    },
    /// A packet only a server sends (CONNACK, SUBACK, ...), or AUTH: a protocol error.
    Unexpected(&'static str),
}

/// Why a CONNECT is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadCredentials,
    NotAuthorized,
    ClientIdInvalid,
    ServerUnavailable,
    ServerBusy,
}

/// The outcome of a PUBLISH, for its PUBACK or PUBREC (MQTT 5 reason codes; MQTT 3.1.1 has
/// only success: see [`crate::endpoint`] for what it gets instead).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubReason {
    Success,
    /// Durably quarantined: the payload or a record in it is invalid (0x99).
    PayloadFormatInvalid,
    /// The topic is not one quantrac takes (0x90); quarantined as `unknown_topic`.
    TopicNameInvalid,
    /// The device may not publish there (0x87).
    NotAuthorized,
    /// Not durable: the client should send it again (0x80).
    UnspecifiedError,
}

/// Why the server closes a connection (an MQTT 5 DISCONNECT says it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    ProtocolError,
    MalformedPacket,
    NotAuthorized,
    KeepAliveTimeout,
    SessionTakenOver,
    TopicNameInvalid,
    ReceiveMaximumExceeded,
    PacketTooLarge,
    ServerShuttingDown,
    AdministrativeAction,
    QoSNotSupported,
}

/// The protocol version of a CONNECT frame at the start of `buf`, once the whole frame is
/// there (`Ok(None)`: read more). Only the protocol level byte is looked at: the frame
/// itself is then read by that version's codec.
pub fn connect_version(buf: &[u8], max_size: usize) -> Result<Option<Version>, Error> {
    let header = match mb::check(buf.iter(), max_size) {
        Ok(h) => h,
        Err(mb::Error::InsufficientBytes(_)) => return Ok(None),
        Err(mb::Error::PayloadSizeLimitExceeded(size)) => {
            return Err(Error::TooLarge {
                size,
                max: max_size,
            })
        }
        Err(e) => return Err(Error::Malformed(e.to_string())),
    };
    if !matches!(header.packet_type(), Ok(mb::PacketType::Connect)) {
        return Err(Error::NotConnect);
    }
    // Fixed header (2 to 5 bytes), then the protocol name "MQTT" with its length, then the
    // level.
    let frame = &buf[..header.frame_length().min(buf.len())];
    let name = (2..=5)
        .find(|&at| frame.get(at..at + 6) == Some(b"\x00\x04MQTT"))
        .ok_or_else(|| Error::Malformed("CONNECT without the protocol name MQTT".into()))?;
    match frame.get(name + 6) {
        Some(4) => Ok(Some(Version::V4)),
        Some(5) => Ok(Some(Version::V5)),
        Some(&level) => Err(Error::UnsupportedVersion(level)),
        None => Err(Error::Malformed("CONNECT without a protocol level".into())),
    }
}

/// Reads and writes one connection's packets in its version.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    pub version: Version,
    /// Largest packet accepted from the client.
    pub max_incoming: usize,
}

fn qos4(q: mb::QoS) -> QoS {
    match q {
        mb::QoS::AtMostOnce => QoS::AtMostOnce,
        mb::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mb::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos5(q: mb5::QoS) -> QoS {
    match q {
        mb5::QoS::AtMostOnce => QoS::AtMostOnce,
        mb5::QoS::AtLeastOnce => QoS::AtLeastOnce,
        mb5::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn to4(q: QoS) -> mb::QoS {
    match q {
        QoS::AtMostOnce => mb::QoS::AtMostOnce,
        QoS::AtLeastOnce => mb::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mb::QoS::ExactlyOnce,
    }
}

fn to5(q: QoS) -> mb5::QoS {
    match q {
        QoS::AtMostOnce => mb5::QoS::AtMostOnce,
        QoS::AtLeastOnce => mb5::QoS::AtLeastOnce,
        QoS::ExactlyOnce => mb5::QoS::ExactlyOnce,
    }
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Codec {
    /// The next whole packet in `buf` (`Ok(None)`: read more).
    pub fn read(&self, buf: &mut BytesMut) -> Result<Option<Incoming>, Error> {
        match self.version {
            Version::V4 => match v4::Packet::read(buf, self.max_incoming) {
                Ok(p) => Ok(Some(from4(p))),
                Err(mb::Error::InsufficientBytes(_)) => Ok(None),
                Err(mb::Error::PayloadSizeLimitExceeded(size)) => Err(Error::TooLarge {
                    size,
                    max: self.max_incoming,
                }),
                Err(e) => Err(Error::Malformed(e.to_string())),
            },
            Version::V5 => match v5::Packet::read(buf, Some(self.max_incoming as u32)) {
                Ok(p) => Ok(Some(from5(p))),
                Err(mb5::Error::InsufficientBytes(_)) => Ok(None),
                Err(mb5::Error::PayloadSizeLimitExceeded { pkt_size, .. }) => {
                    Err(Error::TooLarge {
                        size: pkt_size,
                        max: self.max_incoming,
                    })
                }
                Err(e) => Err(Error::Malformed(e.to_string())),
            },
        }
    }

    /// CONNACK: accepted (`refusal` none) or refused. Accepted MQTT 5 clients learn our
    /// receive maximum and largest packet. `session_present`: see [`crate::endpoint`].
    pub fn connack(
        &self,
        out: &mut BytesMut,
        refusal: Option<Refusal>,
        receive_maximum: u16,
        session_present: bool,
    ) -> Result<(), Error> {
        let session_present = session_present && refusal.is_none();
        match self.version {
            Version::V4 => {
                let code = match refusal {
                    None => v4::ConnectReturnCode::Success,
                    Some(Refusal::BadCredentials) => v4::ConnectReturnCode::BadUserNamePassword,
                    Some(Refusal::NotAuthorized) => v4::ConnectReturnCode::NotAuthorized,
                    Some(Refusal::ClientIdInvalid) => v4::ConnectReturnCode::BadClientId,
                    Some(Refusal::ServerUnavailable | Refusal::ServerBusy) => {
                        v4::ConnectReturnCode::ServiceUnavailable
                    }
                };
                write4(
                    out,
                    v4::Packet::ConnAck(v4::ConnAck::new(code, session_present)),
                )
            }
            Version::V5 => {
                use v5::ConnectReturnCode as C;
                let code = match refusal {
                    None => C::Success,
                    Some(Refusal::BadCredentials) => C::BadUserNamePassword,
                    Some(Refusal::NotAuthorized) => C::NotAuthorized,
                    Some(Refusal::ClientIdInvalid) => C::ClientIdentifierNotValid,
                    Some(Refusal::ServerUnavailable) => C::ServerUnavailable,
                    Some(Refusal::ServerBusy) => C::ServerBusy,
                };
                let properties = refusal.is_none().then(|| v5::ConnAckProperties {
                    session_expiry_interval: None,
                    receive_max: Some(receive_maximum),
                    max_qos: None,
                    retain_available: Some(0),
                    max_packet_size: Some(self.max_incoming as u32),
                    assigned_client_identifier: None,
                    topic_alias_max: Some(0),
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: Some(1),
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                });
                let ack = v5::ConnAck {
                    session_present,
                    code,
                    properties,
                };
                write5(out, v5::Packet::ConnAck(ack))
            }
        }
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2) for `pkid`, with the reason on MQTT 5.
    pub fn publish_ack(
        &self,
        out: &mut BytesMut,
        qos: QoS,
        pkid: u16,
        reason: PubReason,
        detail: Option<&str>,
    ) -> Result<(), Error> {
        match (self.version, qos) {
            (_, QoS::AtMostOnce) => Ok(()),
            (Version::V4, QoS::AtLeastOnce) => {
                write4(out, v4::Packet::PubAck(v4::PubAck::new(pkid)))
            }
            (Version::V4, QoS::ExactlyOnce) => {
                write4(out, v4::Packet::PubRec(v4::PubRec::new(pkid)))
            }
            (Version::V5, QoS::AtLeastOnce) => {
                use v5::PubAckReason as R;
                let code = match reason {
                    PubReason::Success => R::Success,
                    PubReason::PayloadFormatInvalid => R::PayloadFormatInvalid,
                    PubReason::TopicNameInvalid => R::TopicNameInvalid,
                    PubReason::NotAuthorized => R::NotAuthorized,
                    PubReason::UnspecifiedError => R::UnspecifiedError,
                };
                let properties = detail.map(|d| v5::PubAckProperties {
                    reason_string: Some(d.to_owned()),
                    user_properties: Vec::new(),
                });
                let ack = v5::PubAck {
                    pkid,
                    reason: code,
                    properties,
                };
                write5(out, v5::Packet::PubAck(ack))
            }
            (Version::V5, QoS::ExactlyOnce) => {
                use v5::PubRecReason as R;
                let code = match reason {
                    PubReason::Success => R::Success,
                    PubReason::PayloadFormatInvalid => R::PayloadFormatInvalid,
                    PubReason::TopicNameInvalid => R::TopicNameInvalid,
                    PubReason::NotAuthorized => R::NotAuthorized,
                    PubReason::UnspecifiedError => R::UnspecifiedError,
                };
                let properties = detail.map(|d| v5::PubRecProperties {
                    reason_string: Some(d.to_owned()),
                    user_properties: Vec::new(),
                });
                let rec = v5::PubRec {
                    pkid,
                    reason: code,
                    properties,
                };
                write5(out, v5::Packet::PubRec(rec))
            }
        }
    }

    /// PUBCOMP, the end of a QoS 2 exchange.
    pub fn pubcomp(&self, out: &mut BytesMut, pkid: u16) -> Result<(), Error> {
        match self.version {
            Version::V4 => write4(out, v4::Packet::PubComp(v4::PubComp::new(pkid))),
            Version::V5 => write5(out, v5::Packet::PubComp(v5::PubComp::new(pkid, None))),
        }
    }

    /// SUBACK: per filter, the granted QoS or `None` (refused).
    pub fn suback(
        &self,
        out: &mut BytesMut,
        pkid: u16,
        granted: &[Option<QoS>],
    ) -> Result<(), Error> {
        match self.version {
            Version::V4 => {
                let codes = granted
                    .iter()
                    .map(|g| match g {
                        Some(q) => v4::SubscribeReasonCode::Success(to4(*q)),
                        None => v4::SubscribeReasonCode::Failure,
                    })
                    .collect();
                write4(out, v4::Packet::SubAck(v4::SubAck::new(pkid, codes)))
            }
            Version::V5 => {
                let codes = granted
                    .iter()
                    .map(|g| match g {
                        Some(q) => v5::SubscribeReasonCode::Success(to5(*q)),
                        None => v5::SubscribeReasonCode::NotAuthorized,
                    })
                    .collect();
                let ack = v5::SubAck {
                    pkid,
                    return_codes: codes,
                    properties: None,
                };
                write5(out, v5::Packet::SubAck(ack))
            }
        }
    }

    /// UNSUBACK for `n` filters.
    pub fn unsuback(&self, out: &mut BytesMut, pkid: u16, n: usize) -> Result<(), Error> {
        match self.version {
            Version::V4 => write4(out, v4::Packet::UnsubAck(v4::UnsubAck::new(pkid))),
            Version::V5 => {
                let ack = v5::UnsubAck {
                    pkid,
                    reasons: vec![v5::UnsubAckReason::Success; n],
                    properties: None,
                };
                write5(out, v5::Packet::UnsubAck(ack))
            }
        }
    }

    pub fn pingresp(&self, out: &mut BytesMut) -> Result<(), Error> {
        match self.version {
            Version::V4 => write4(out, v4::Packet::PingResp),
            Version::V5 => write5(out, v5::Packet::PingResp(v5::PingResp)),
        }
    }

    /// A PUBLISH to a subscriber (alerts).
    pub fn publish(
        &self,
        out: &mut BytesMut,
        topic: &str,
        payload: Bytes,
        qos: QoS,
        pkid: u16,
    ) -> Result<(), Error> {
        match self.version {
            Version::V4 => {
                let mut p = v4::Publish::from_bytes(topic, to4(qos), payload);
                p.pkid = pkid;
                write4(out, v4::Packet::Publish(p))
            }
            Version::V5 => {
                let mut p = v5::Publish::new(topic, to5(qos), payload, None);
                p.pkid = pkid;
                write5(out, v5::Packet::Publish(p))
            }
        }
    }

    /// MQTT 5: DISCONNECT with the reason before closing. MQTT 3.1.1 servers just close.
    pub fn disconnect(&self, out: &mut BytesMut, close: Close, detail: &str) -> Result<(), Error> {
        if self.version == Version::V4 {
            return Ok(());
        }
        use v5::DisconnectReasonCode as D;
        let reason_code = match close {
            Close::ProtocolError => D::ProtocolError,
            Close::MalformedPacket => D::MalformedPacket,
            Close::NotAuthorized => D::NotAuthorized,
            Close::KeepAliveTimeout => D::KeepAliveTimeout,
            Close::SessionTakenOver => D::SessionTakenOver,
            Close::TopicNameInvalid => D::TopicNameInvalid,
            Close::ReceiveMaximumExceeded => D::ReceiveMaximumExceeded,
            Close::PacketTooLarge => D::PacketTooLarge,
            Close::ServerShuttingDown => D::ServerShuttingDown,
            Close::AdministrativeAction => D::AdministrativeAction,
            Close::QoSNotSupported => D::QoSNotSupported,
        };
        let mut packet = v5::Disconnect::new(reason_code);
        packet.properties = Some(v5::DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some(detail.to_owned()),
            user_properties: Vec::new(),
            server_reference: None,
        });
        write5(out, v5::Packet::Disconnect(packet))
    }
}

fn write4(out: &mut BytesMut, packet: v4::Packet) -> Result<(), Error> {
    packet
        .write(out, usize::MAX)
        .map(drop)
        .map_err(|e| Error::Encode(e.to_string()))
}

fn write5(out: &mut BytesMut, packet: v5::Packet) -> Result<(), Error> {
    packet
        .write(out, None)
        .map(drop)
        .map_err(|e| Error::Encode(e.to_string()))
}

fn from4(packet: v4::Packet) -> Incoming {
    match packet {
        v4::Packet::Connect(c) => Incoming::Connect(Connect {
            client_id: c.client_id,
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            username: c.login.as_ref().map(|l| l.username.clone()),
            password: c.login.map(|l| l.password),
            will: c.last_will.map(|w| Will {
                topic: w.topic,
                payload: w.message,
                qos: qos4(w.qos),
                retain: w.retain,
            }),
            receive_maximum: None,
        }),
        v4::Packet::Publish(p) => Incoming::Publish(Publish {
            topic: Bytes::from(p.topic.into_bytes()),
            qos: qos4(p.qos),
            pkid: p.pkid,
            payload: p.payload,
            retain: p.retain,
            topic_alias: None,
        }),
        v4::Packet::PubAck(a) => Incoming::PubAck(a.pkid),
        v4::Packet::PubRec(a) => Incoming::PubRec(a.pkid),
        v4::Packet::PubRel(a) => Incoming::PubRel(a.pkid),
        v4::Packet::PubComp(a) => Incoming::PubComp(a.pkid),
        v4::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| Filter {
                    path: f.path,
                    qos: qos4(f.qos),
                })
                .collect(),
        },
        v4::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
        },
        v4::Packet::PingReq => Incoming::PingReq,
        v4::Packet::Disconnect => Incoming::Disconnect { with_will: false },
        v4::Packet::ConnAck(_) => Incoming::Unexpected("CONNACK"),
        v4::Packet::SubAck(_) => Incoming::Unexpected("SUBACK"),
        v4::Packet::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        v4::Packet::PingResp => Incoming::Unexpected("PINGRESP"),
    }
}

fn from5(packet: v5::Packet) -> Incoming {
    match packet {
        v5::Packet::Connect(c, will, login) => Incoming::Connect(Connect {
            client_id: c.client_id,
            clean_start: c.clean_start,
            keep_alive: c.keep_alive,
            username: login.as_ref().map(|l| l.username.clone()),
            password: login.map(|l| l.password),
            will: will.map(|w| Will {
                topic: text(&w.topic),
                payload: w.message,
                qos: qos5(w.qos),
                retain: w.retain,
            }),
            receive_maximum: c.properties.and_then(|p| p.receive_maximum),
        }),
        v5::Packet::Publish(p) => Incoming::Publish(Publish {
            topic_alias: p.properties.as_ref().and_then(|p| p.topic_alias),
            topic: p.topic,
            qos: qos5(p.qos),
            pkid: p.pkid,
            payload: p.payload,
            retain: p.retain,
        }),
        v5::Packet::PubAck(a) => Incoming::PubAck(a.pkid),
        v5::Packet::PubRec(a) => Incoming::PubRec(a.pkid),
        v5::Packet::PubRel(a) => Incoming::PubRel(a.pkid),
        v5::Packet::PubComp(a) => Incoming::PubComp(a.pkid),
        v5::Packet::Subscribe(s) => Incoming::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| Filter {
                    path: f.path,
                    qos: qos5(f.qos),
                })
                .collect(),
        },
        v5::Packet::Unsubscribe(u) => Incoming::Unsubscribe {
            pkid: u.pkid,
            filters: u.filters,
        },
        v5::Packet::PingReq(_) => Incoming::PingReq,
        v5::Packet::Disconnect(d) => Incoming::Disconnect {
            with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
        },
        v5::Packet::Auth(_) => Incoming::Unexpected("AUTH"),
        v5::Packet::ConnAck(_) => Incoming::Unexpected("CONNACK"),
        v5::Packet::SubAck(_) => Incoming::Unexpected("SUBACK"),
        v5::Packet::UnsubAck(_) => Incoming::Unexpected("UNSUBACK"),
        v5::Packet::PingResp(_) => Incoming::Unexpected("PINGRESP"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn connect_frame(version: Version) -> BytesMut {
        let mut out = BytesMut::new();
        match version {
            Version::V4 => {
                let c = v4::Connect::new("dev-1");
                v4::Packet::Connect(c).write(&mut out, usize::MAX).unwrap();
            }
            Version::V5 => {
                let c = v5::Connect {
                    keep_alive: 30,
                    client_id: "dev-1".into(),
                    clean_start: true,
                    properties: None,
                };
                v5::Packet::Connect(c, None, None)
                    .write(&mut out, None)
                    .unwrap();
            }
        }
        out
    }

    #[test]
    fn the_version_comes_from_the_connect_frames_protocol_level() {
        for v in [Version::V4, Version::V5] {
            let frame = connect_frame(v);
            assert_eq!(connect_version(&frame, 1 << 20).unwrap(), Some(v));
            // Half a frame: read more.
            assert_eq!(connect_version(&frame[..5], 1 << 20).unwrap(), None);
        }
    }

    #[test]
    fn a_first_packet_other_than_connect_is_refused() {
        let mut out = BytesMut::new();
        v4::Packet::PingReq.write(&mut out, 10).unwrap();
        assert!(matches!(
            connect_version(&out, 1 << 20),
            Err(Error::NotConnect)
        ));
    }

    #[test]
    fn mqtt_3_1_is_refused_with_its_level() {
        let mut frame = connect_frame(Version::V4);
        // The level follows the protocol name.
        let at = frame.windows(4).position(|w| w == b"MQTT").unwrap() + 4;
        frame[at] = 3;
        assert!(matches!(
            connect_version(&frame, 1 << 20),
            Err(Error::UnsupportedVersion(3))
        ));
    }

    #[test]
    fn a_v5_puback_carries_its_reason_code_and_string() {
        let codec = Codec {
            version: Version::V5,
            max_incoming: 1 << 20,
        };
        let mut out = BytesMut::new();
        codec
            .publish_ack(
                &mut out,
                QoS::AtLeastOnce,
                7,
                PubReason::PayloadFormatInvalid,
                Some("malformed_payload"),
            )
            .unwrap();
        match v5::Packet::read(&mut out, None).unwrap() {
            v5::Packet::PubAck(a) => {
                assert_eq!(a.pkid, 7);
                assert_eq!(a.reason, v5::PubAckReason::PayloadFormatInvalid);
                assert_eq!(
                    a.properties.unwrap().reason_string.as_deref(),
                    Some("malformed_payload")
                );
            }
            other => panic!("not a PUBACK: {other:?}"),
        }
    }

    #[test]
    fn a_publish_is_read_back_in_both_versions() {
        for version in [Version::V4, Version::V5] {
            let codec = Codec {
                version,
                max_incoming: 1 << 20,
            };
            let mut out = BytesMut::new();
            codec
                .publish(
                    &mut out,
                    "a/b",
                    Bytes::from_static(b"x"),
                    QoS::AtLeastOnce,
                    3,
                )
                .unwrap();
            match codec.read(&mut out).unwrap() {
                Some(Incoming::Publish(p)) => {
                    assert_eq!(&p.topic[..], b"a/b");
                    assert_eq!(p.pkid, 3);
                    assert_eq!(p.qos, QoS::AtLeastOnce);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
