//! Rejected input: the reasons, the rejection records that validation produces, and their
//! per-reason counters.
//!
//! Rejections are stored by the store (a bounded table: the newest `quarantine.capacity`
//! entries are kept) so that the quarantine survives a restart and a message whose readings
//! were all rejected is *durably rejected* before its MQTT acknowledgement is released.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::metrics as m;
use crate::telemetry::{Encoding, Timestamp};

/// Why a reading, record or message was rejected. Codes are stable API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    MalformedPayload,
    UnknownStation,
    TopicMismatch,
    /// The station requires signed records and this one is not.
    UnsignedRecord,
    /// The signature does not match the record (or the record lacks the `seq` it covers).
    BadSignature,
    /// The record's `seq` was already received, or is too old to tell.
    ReplayedRecord,
    FutureTimestamp,
    ExpiredTimestamp,
    UnknownParameter,
    UnitMismatch,
    NonFiniteValue,
    OutOfRange,
    /// The message came on a topic quantrac does not take (kept with the topic).
    UnknownTopic,
    /// A device sent data for a station that is not one of its own (FTP uploads).
    NotAuthorized,
    /// A file larger than the configured bound (FTP uploads, the watched directory).
    TooLarge,
}

impl Reason {
    /// Every reason, in the order validation checks them.
    pub const ALL: [Reason; 15] = [
        Reason::MalformedPayload,
        Reason::UnknownStation,
        Reason::TopicMismatch,
        Reason::UnsignedRecord,
        Reason::BadSignature,
        Reason::ReplayedRecord,
        Reason::FutureTimestamp,
        Reason::ExpiredTimestamp,
        Reason::UnknownParameter,
        Reason::UnitMismatch,
        Reason::NonFiniteValue,
        Reason::OutOfRange,
        Reason::UnknownTopic,
        Reason::NotAuthorized,
        Reason::TooLarge,
    ];

    pub const fn code(self) -> &'static str {
        match self {
            Reason::MalformedPayload => "malformed_payload",
            Reason::UnknownStation => "unknown_station",
            Reason::TopicMismatch => "topic_mismatch",
            Reason::UnsignedRecord => "unsigned_record",
            Reason::BadSignature => "bad_signature",
            Reason::ReplayedRecord => "replayed_record",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::ExpiredTimestamp => "expired_timestamp",
            Reason::UnknownParameter => "unknown_parameter",
            Reason::UnitMismatch => "unit_mismatch",
            Reason::NonFiniteValue => "non_finite_value",
            Reason::OutOfRange => "out_of_range",
            Reason::UnknownTopic => "unknown_topic",
            Reason::NotAuthorized => "not_authorized",
            Reason::TooLarge => "too_large",
        }
    }

    pub fn parse(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// One rejected reading, record or message, as validation reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub reason: Reason,
    /// The station as sent (it may not exist in the registry).
    pub station: Option<String>,
    pub param: Option<String>,
    pub ts: Option<Timestamp>,
    pub value: Option<f64>,
    /// A precise, human-readable explanation.
    pub detail: String,
}

/// The rejections of one message with the context they share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub received_at: Timestamp,
    pub topic: String,
    pub encoding: Option<Encoding>,
    /// The start of the payload, for diagnosis (text as is, binary as hex).
    pub excerpt: String,
    pub rejections: Vec<Rejection>,
}

/// A stored quarantine entry, as the API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineEntry {
    pub id: u64,
    pub received_at: Timestamp,
    pub topic: String,
    pub encoding: Option<Encoding>,
    pub excerpt: String,
    pub rejection: Rejection,
}

/// Makes the payload excerpt stored with a rejection: UTF-8 text up to `max` bytes, or the
/// first bytes in hex when the payload is binary.
pub fn excerpt(payload: &[u8], max: usize) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => {
            let mut end = text.len().min(max);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let mut out = text[..end].to_owned();
            if end < text.len() {
                out.push('…');
            }
            out
        }
        Err(_) => {
            let shown = &payload[..payload.len().min(max / 3)];
            let mut out: String = shown.iter().map(|b| format!("{b:02x} ")).collect();
            out.pop();
            if shown.len() < payload.len() {
                out.push_str(" …");
            }
            out
        }
    }
}

/// Rejections counted by reason since start (also exported as metrics).
#[derive(Debug, Default)]
pub struct Counters {
    by_reason: [AtomicU64; Reason::ALL.len()],
}

impl Counters {
    pub fn new() -> Arc<Counters> {
        Arc::default()
    }

    pub fn count(&self, reason: Reason) {
        self.by_reason[reason.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::REJECTIONS_TOTAL, m::LABEL_REASON => reason.code()).increment(1);
    }

    pub fn get(&self, reason: Reason) -> u64 {
        self.by_reason[reason.index()].load(Ordering::Relaxed)
    }

    /// `(reason, count)` for every reason, zeros included.
    pub fn snapshot(&self) -> Vec<(Reason, u64)> {
        Reason::ALL.iter().map(|&r| (r, self.get(r))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_parse_back_and_index_in_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(Reason::parse(r.code()), Some(*r));
            assert_eq!(r.index(), i);
        }
        assert_eq!(Reason::parse("nope"), None);
    }

    #[test]
    fn text_excerpts_are_cut_on_a_character_boundary() {
        assert_eq!(excerpt("°C°C".as_bytes(), 4), "°C…");
        assert_eq!(excerpt("°C°C".as_bytes(), 1), "…");
        assert_eq!(excerpt(b"short", 100), "short");
    }

    #[test]
    fn binary_excerpts_are_hex() {
        assert_eq!(excerpt(&[0xff, 0x00, 0x01], 100), "ff 00 01");
        assert_eq!(excerpt(&[0xff; 10], 6), "ff ff …");
    }

    #[test]
    fn counters_count_each_reason_separately() {
        let c = Counters::default();
        c.count(Reason::OutOfRange);
        c.count(Reason::OutOfRange);
        c.count(Reason::UnitMismatch);
        assert_eq!(c.get(Reason::OutOfRange), 2);
        assert_eq!(c.get(Reason::UnitMismatch), 1);
        assert_eq!(c.get(Reason::MalformedPayload), 0);
    }
}
