//! Rejected input: the reasons, the rejection records that validation produces, the
//! quarantine entry that sums up one message's rejections, and the per-reason counters.
//!
//! The store keeps one entry per rejected message ([`Rejected`]: counts per reason, the first
//! [`SAMPLES`] rejections, a short excerpt) and the whole payload beside it in the dead-letter
//! store, in the transaction that makes the message durable, so that a message whose readings
//! were all rejected is *durably rejected* before its acknowledgement is released and can be
//! recovered byte for byte later. Both are bounded (`quarantine.capacity` entries,
//! `quarantine.dead_letter_max_bytes` bytes); when full, the station holding the most gives
//! up its oldest ([`fair_cuts`]), so one noisy station cannot push out the others' evidence.

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

/// How many sample rejections a quarantine entry keeps (the first ones of the message); the
/// counts per reason cover all of them.
pub const SAMPLES: usize = 20;

/// The rejections of one message, summarised into one quarantine entry: the counts per
/// reason cover every rejection, [`SAMPLES`] of them are kept in full, and the whole payload
/// goes to the dead-letter store beside it.
///
/// One entry per message, whatever the message holds: a file of 100,000 bad lines is one
/// entry with `out_of_range: 100000`, so that it cannot push everyone else's evidence out of
/// the bounded quarantine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub received_at: Timestamp,
    pub topic: String,
    pub encoding: Option<Encoding>,
    /// The registry station the message came from (its topic's, or its file's): whose share
    /// of the quarantine it counts against. `None` when the source names no station of the
    /// registry (an unknown topic, an unknown station): those share one "no station" share,
    /// so that spraying made-up station names cannot claim shares of their own.
    pub station: Option<String>,
    /// The start of the payload, for a glance (text as is, binary as hex).
    pub excerpt: String,
    /// The whole payload, for the dead-letter store. `None` only for entries spooled by an
    /// older build, which did not keep it.
    pub payload: Option<Vec<u8>>,
    /// Rejections per reason, in the order of [`Reason::ALL`], zeros left out.
    pub counts: Vec<(Reason, u64)>,
    /// The first [`SAMPLES`] rejections, in the order validation found them.
    pub samples: Vec<Rejection>,
}

impl Rejected {
    /// Summarises `rejections` (at least one) of the message `payload`; the excerpt keeps at
    /// most `excerpt_bytes` of it.
    pub fn new(
        received_at: Timestamp,
        topic: impl Into<String>,
        encoding: Option<Encoding>,
        station: Option<String>,
        payload: &[u8],
        excerpt_bytes: usize,
        rejections: impl IntoIterator<Item = Rejection>,
    ) -> Rejected {
        let (counts, samples) = summarise(rejections);
        Rejected {
            received_at,
            topic: topic.into(),
            encoding,
            station,
            excerpt: excerpt(payload, excerpt_bytes),
            payload: Some(payload.to_vec()),
            counts,
            samples,
        }
    }

    /// Every rejection of the message, all reasons together.
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    /// The first rejection: the entry's headline (its `reason` and `detail` in the API).
    pub fn first(&self) -> Option<&Rejection> {
        self.samples.first()
    }
}

/// Counts per reason (in [`Reason::ALL`] order, zeros left out) and the first [`SAMPLES`].
pub fn summarise(
    rejections: impl IntoIterator<Item = Rejection>,
) -> (Vec<(Reason, u64)>, Vec<Rejection>) {
    let mut by_reason = [0u64; Reason::ALL.len()];
    let mut samples = Vec::new();
    for r in rejections {
        by_reason[r.reason.index()] += 1;
        if samples.len() < SAMPLES {
            samples.push(r);
        }
    }
    let counts = Reason::ALL
        .iter()
        .zip(by_reason)
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (*r, n))
        .collect();
    (counts, samples)
}

/// A stored quarantine entry (one message), as the API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineEntry {
    pub id: u64,
    pub received_at: Timestamp,
    pub topic: String,
    pub encoding: Option<Encoding>,
    /// The station the message came from (see [`Rejected::station`]).
    pub station: Option<String>,
    pub excerpt: String,
    /// Rejections per reason (every one of the message).
    pub counts: Vec<(Reason, u64)>,
    /// The first rejections in full (at most [`SAMPLES`]).
    pub samples: Vec<Rejection>,
    /// The whole payload's size, if it was kept (entries of schema 3 and older: `None`).
    pub payload_bytes: Option<u64>,
    /// Whether the dead-letter store still holds the payload.
    pub payload_held: bool,
}

impl QuarantineEntry {
    pub fn total(&self) -> u64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }
}

/// What the dead-letter store answers for an entry id.
#[derive(Debug, Clone, PartialEq)]
pub enum DeadLetter {
    /// The whole payload, byte for byte, with the encoding of its topic.
    Held {
        encoding: Option<Encoding>,
        payload: Vec<u8>,
    },
    /// The entry exists but its payload was dropped (the byte bound, oldest first) or never
    /// kept (an entry older than the dead-letter store).
    Evicted,
    /// No such entry (never, or evicted from the quarantine with its payload).
    Unknown,
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

/// What one holder (a station, or "no station") has in a bounded store: `weight` (entries,
/// or payload bytes) and the id of its oldest row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    pub weight: u64,
    pub oldest: i64,
}

/// How much each holding gives up so that `excess` is freed fairly: the largest holdings
/// are cut down to a common level (never below the next largest), so one noisy station loses
/// its own oldest rows and nobody else's. Where holdings tie, the one with the oldest row
/// gives up first. Returns one cut per holding, in the order given.
pub fn fair_cuts(holdings: &[Holding], excess: u64) -> Vec<u64> {
    let n = holdings.len();
    let mut cuts = vec![0; n];
    if excess == 0 || n == 0 {
        return cuts;
    }
    let w = |i: usize| holdings[i].weight;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        w(b).cmp(&w(a))
            .then(holdings[a].oldest.cmp(&holdings[b].oldest))
    });
    let mut remaining = excess;
    let mut level = w(order[0]);
    // `order[..k]` are the holdings cut down to `level`.
    let mut k = 0;
    let (mut each, mut rest) = (0, 0);
    loop {
        while k < n && w(order[k]) >= level {
            k += 1;
        }
        let next = if k < n { w(order[k]) } else { 0 };
        let room = (level - next).saturating_mul(k as u64);
        if room >= remaining {
            each = remaining / k as u64;
            rest = remaining % k as u64;
            break;
        }
        remaining -= room;
        level = next;
        if level == 0 {
            break;
        }
    }
    let mut top = order[..k].to_vec();
    top.sort_by_key(|&i| holdings[i].oldest);
    for (rank, &i) in top.iter().enumerate() {
        cuts[i] = w(i) - level + each + u64::from((rank as u64) < rest);
    }
    cuts
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

    fn holdings(weights: &[(u64, i64)]) -> Vec<Holding> {
        weights
            .iter()
            .map(|&(weight, oldest)| Holding { weight, oldest })
            .collect()
    }

    #[test]
    fn a_noisy_holding_alone_gives_up_its_oldest_rows() {
        let h = holdings(&[(1, 1), (10_000, 2), (3, 3)]);
        assert_eq!(fair_cuts(&h, 5), [0, 5, 0]);
    }

    #[test]
    fn the_largest_holdings_are_levelled_down_together() {
        let h = holdings(&[(5, 1), (7, 2)]);
        assert_eq!(fair_cuts(&h, 4), [1, 3], "7 -> 5, then one each");
        let h = holdings(&[(4, 1), (4, 2), (4, 3), (1, 4)]);
        assert_eq!(fair_cuts(&h, 6), [2, 2, 2, 0]);
    }

    #[test]
    fn among_equal_holdings_the_one_with_the_oldest_row_gives_up_first() {
        let h = holdings(&[(3, 10), (3, 5), (3, 7)]);
        assert_eq!(fair_cuts(&h, 1), [0, 1, 0]);
        assert_eq!(fair_cuts(&h, 2), [0, 1, 1]);
    }

    #[test]
    fn an_excess_beyond_everything_cuts_everything_and_none_cuts_nothing() {
        let h = holdings(&[(2, 1), (3, 2)]);
        assert_eq!(fair_cuts(&h, 99), [2, 3]);
        assert_eq!(fair_cuts(&h, 0), [0, 0]);
        assert!(fair_cuts(&[], 3).is_empty());
    }

    #[test]
    fn a_message_is_summarised_into_counts_and_the_first_samples() {
        let rejection = |reason, i: usize| Rejection {
            reason,
            station: Some("S".into()),
            param: None,
            ts: None,
            value: None,
            detail: format!("line {i}"),
        };
        let all = (0..100_000).map(|i| {
            let reason = if i % 50_000 == 7 {
                Reason::UnitMismatch
            } else {
                Reason::OutOfRange
            };
            rejection(reason, i)
        });
        let r = Rejected::new(Timestamp::from_millis(0), "t", None, None, b"x", 8, all);
        assert_eq!(
            r.counts,
            [(Reason::UnitMismatch, 2), (Reason::OutOfRange, 99_998)]
        );
        assert_eq!(r.total(), 100_000);
        assert_eq!(r.samples.len(), SAMPLES);
        assert_eq!(r.samples[7].reason, Reason::UnitMismatch);
        assert_eq!(r.first().map(|f| f.detail.as_str()), Some("line 0"));
        assert_eq!(r.payload.as_deref(), Some(&b"x"[..]));
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
