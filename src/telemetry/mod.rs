//! Telemetry: the domain types of a reading and the v1 wire formats that carry them.
//!
//! Decoding is split from validation on purpose: a decoder only turns bytes into
//! [`Record`]s (borrowing from the payload wherever it can, so the hot path allocates per
//! record, not per reading); whether a record makes sense for the registry is the job of
//! [`crate::validate`]. The byte-level contract is `docs/telemetry.md`.
//!
//! - [`topic`]: parsing `quantrac/v1/{zone}/{station}/...` topics.
//! - [`json`], [`bincode`], [`tt10`]: the three encodings.
//! - [`time`]: millisecond timestamps and their RFC 3339 forms.

pub mod bincode;
pub mod json;
pub mod time;
pub mod topic;
pub mod tt10;

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

pub use time::Timestamp;
pub use topic::{Topic, TopicKind};

/// Circular 10/2021 device status of a reading.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Status {
    /// `00`: the analyser is measuring normally. Only these readings count for compliance.
    Measuring,
    /// `01`: the analyser is being calibrated.
    Calibrating,
    /// `02`: the analyser reports a fault.
    DeviceError,
}

impl Status {
    /// The two-character code of the circular (`"00"`, `"01"`, `"02"`).
    pub const fn code(self) -> &'static str {
        match self {
            Status::Measuring => "00",
            Status::Calibrating => "01",
            Status::DeviceError => "02",
        }
    }

    /// The numeric form used by bincode and the stores (0, 1, 2).
    pub const fn as_u8(self) -> u8 {
        match self {
            Status::Measuring => 0,
            Status::Calibrating => 1,
            Status::DeviceError => 2,
        }
    }

    pub const fn from_u8(value: u8) -> Option<Status> {
        match value {
            0 => Some(Status::Measuring),
            1 => Some(Status::Calibrating),
            2 => Some(Status::DeviceError),
            _ => None,
        }
    }

    pub fn from_code(code: &str) -> Option<Status> {
        match code {
            "00" => Some(Status::Measuring),
            "01" => Some(Status::Calibrating),
            "02" => Some(Status::DeviceError),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The three v1 payload encodings, named by the last topic level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Encoding {
    Json,
    Bincode,
    Tt10,
}

impl Encoding {
    pub const ALL: [Encoding; 3] = [Encoding::Json, Encoding::Bincode, Encoding::Tt10];

    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Bincode => "bincode",
            Encoding::Tt10 => "tt10",
        }
    }

    pub fn from_topic_level(level: &str) -> Option<Encoding> {
        match level {
            "json" => Some(Encoding::Json),
            "bincode" => Some(Encoding::Bincode),
            "tt10" => Some(Encoding::Tt10),
            _ => None,
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decoded record, borrowing its strings from the payload where the encoding allows.
///
/// The serde derive is the JSON form of `docs/telemetry.md` (see [`json`]); unknown fields are
/// ignored so that later versions can add some.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Record<'a> {
    #[serde(borrow)]
    pub station: Cow<'a, str>,
    #[serde(deserialize_with = "json::timestamp")]
    pub ts: Timestamp,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(borrow)]
    pub readings: Vec<ReadingRef<'a>>,
    /// HMAC-SHA256 over the record's canonical form (`docs/telemetry.md`), if signed.
    #[serde(default, deserialize_with = "json::signature")]
    pub sig: Option<[u8; 32]>,
}

/// One decoded (not yet validated) reading of a record.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ReadingRef<'a> {
    #[serde(borrow)]
    pub param: Cow<'a, str>,
    pub value: f64,
    #[serde(borrow)]
    pub unit: Cow<'a, str>,
    #[serde(deserialize_with = "json::status")]
    pub status: Status,
}

/// Why (part of) a payload could not be decoded. Each maps to the `malformed_payload`
/// quarantine reason; the message is the detail shown to operators.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("invalid JSON: {0}")]
    Json(String),
    /// One record of a JSON backlog array (counted from 0); the others still count.
    #[error("element {index}: {problem}")]
    JsonElement { index: usize, problem: String },
    #[error("unsupported bincode format version {0} (this server reads versions 1 and 2)")]
    BincodeVersion(u8),
    #[error("invalid bincode: {0}")]
    Bincode(String),
    /// Record `index` (from 0) of a bincode message of `count` could not be read: the
    /// records before it still count, it and those after it are lost (bincode records carry
    /// no length, so the next one cannot be found).
    #[error("record {index} of {count}: {problem} (bincode records carry no length: this record and the ones after it cannot be read)")]
    BincodeRecord {
        index: u64,
        count: u64,
        problem: String,
    },
    #[error("{0} trailing bytes after the last bincode record")]
    TrailingBytes(usize),
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    #[error("line {line}: {problem}")]
    Tt10Line { line: usize, problem: String },
}

/// The result of decoding one message: the records that could be read, and what could not.
///
/// A JSON backlog array is judged element by element, tt10 line by line, bincode record by
/// record up to the first it cannot read; a payload that cannot be read at all is one error.
#[derive(Debug, Default, PartialEq)]
pub struct Decoded<'a> {
    pub records: Vec<Record<'a>>,
    pub errors: Vec<DecodeError>,
}

impl<'a> Decoded<'a> {
    fn failed(error: DecodeError) -> Decoded<'a> {
        Decoded {
            records: Vec::new(),
            errors: vec![error],
        }
    }
}

/// A signature written as 64 hex characters (JSON `sig`, tt10 `#SIG` lines).
pub fn signature_from_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// Decodes a telemetry payload. `topic_station` is the station named by the topic: tt10
/// bodies do not carry it.
pub fn decode<'a>(encoding: Encoding, payload: &'a [u8], topic_station: &'a str) -> Decoded<'a> {
    match encoding {
        Encoding::Json => json::decode(payload).unwrap_or_else(Decoded::failed),
        Encoding::Bincode => bincode::decode(payload).unwrap_or_else(Decoded::failed),
        Encoding::Tt10 => tt10::decode(payload, topic_station),
    }
}

/// A validated reading, ready for the store and the alert engine.
///
/// Station, zone and parameter are shared with the registry (`Arc<str>`), so building a
/// reading costs three reference-count increments and no allocation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    pub station: Arc<str>,
    pub zone: Arc<str>,
    pub param: Arc<str>,
    pub ts: Timestamp,
    pub value: f64,
    pub status: Status,
}

/// Gateway presence announced on the `status` topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GatewayState {
    Online,
    Offline,
}

impl GatewayState {
    pub const fn as_str(self) -> &'static str {
        match self {
            GatewayState::Online => "online",
            GatewayState::Offline => "offline",
        }
    }

    /// Parses a status payload: `online` / `offline`, case-insensitive, whitespace ignored.
    pub fn parse(payload: &[u8]) -> Option<GatewayState> {
        let text = std::str::from_utf8(payload).ok()?.trim();
        if text.eq_ignore_ascii_case("online") {
            Some(GatewayState::Online)
        } else if text.eq_ignore_ascii_case("offline") {
            Some(GatewayState::Offline)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip_through_both_forms() {
        for status in [Status::Measuring, Status::Calibrating, Status::DeviceError] {
            assert_eq!(Status::from_code(status.code()), Some(status));
            assert_eq!(Status::from_u8(status.as_u8()), Some(status));
        }
        assert_eq!(Status::from_code("03"), None);
        assert_eq!(Status::from_u8(3), None);
    }

    #[test]
    fn gateway_state_accepts_case_and_whitespace_but_nothing_else() {
        assert_eq!(
            GatewayState::parse(b" Online\n"),
            Some(GatewayState::Online)
        );
        assert_eq!(GatewayState::parse(b"OFFLINE"), Some(GatewayState::Offline));
        assert_eq!(GatewayState::parse(b"1"), None);
        assert_eq!(GatewayState::parse(&[0xff]), None);
    }
}
