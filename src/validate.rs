//! Validation: decides, for every decoded reading, accepted or rejected with one reason.
//!
//! A pure function of (registry, rules, topic, decoded records, now): no I/O, no clock, so
//! every rule of `docs/telemetry.md` is unit-tested here. Accepted readings share the
//! registry's `Arc<str>` ids, so the accepted path does not allocate per reading; rejections
//! (the rare path) carry owned strings for the quarantine.
//!
//! Checks run in the order of [`Reason::ALL`]: record-level first (station, topic, signature,
//! time, then the record counter), then reading-level (parameter, unit, finiteness, range).
//! One reason per rejection. The record counters ([`Sequences`]) are the one piece of state:
//! passed in, like the clock, so that this stays a pure function of its arguments.

use std::sync::Arc;
use std::time::Duration;

use crate::quarantine::{Reason, Rejection};
use crate::registry::{Registry, Station};
use crate::security::sequence::{self, Sequences, Verdict, Window};
use crate::security::signature::{self, Refusal};
use crate::telemetry::{Decoded, Reading, Record, Timestamp, Topic};

/// The time bounds a reading's timestamp must fall in.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// How far ahead of the server clock a timestamp may be.
    pub max_future: Duration,
    /// How old a timestamp may be (the retention period).
    pub max_age: Duration,
}

/// What validation made of one message.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub accepted: Vec<Reading>,
    pub rejected: Vec<Rejection>,
    /// Records the station's counter skipped over (lost, or still to come).
    pub missing_records: u64,
    /// The station's record-counter window after this message, when the message moved it
    /// (saved with the message, so that replays are refused after a restart too).
    pub counter: Option<(Arc<str>, Window)>,
    /// Record counters that did not go as a gateway's should (for the pipeline to count).
    pub counter_events: Vec<CounterEvent>,
}

/// A record counter that did not go as a gateway's should; the record was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterEvent {
    /// An unsigned record sent again (its readings are stored once).
    Resent,
    /// More than [`sequence::MAX_JUMP`] ahead of `highest`: not counted as missing; the
    /// window moved only if the record was signed.
    Jump { seq: u64, highest: u64 },
    /// An unsigned counter that started again near zero: its window starts again.
    Reset { seq: u64, highest: u64 },
}

impl CounterEvent {
    pub const fn code(self) -> &'static str {
        match self {
            CounterEvent::Resent => "resent",
            CounterEvent::Jump { .. } => "jump",
            CounterEvent::Reset { .. } => "reset",
        }
    }
}

/// Validates the decoded records of one telemetry message that arrived on `topic`.
pub fn validate(
    registry: &Registry,
    rules: &Rules,
    topic: &Topic<'_>,
    decoded: &Decoded<'_>,
    now: Timestamp,
    sequences: &mut Sequences,
) -> Outcome {
    let mut out = Outcome {
        accepted: Vec::with_capacity(decoded.records.iter().map(|r| r.readings.len()).sum()),
        rejected: Vec::new(),
        missing_records: 0,
        counter_events: Vec::new(),
        counter: None,
    };
    let mut counted: Option<&Station> = None;
    let mut scratch = Vec::new();
    for error in &decoded.errors {
        out.rejected.push(Rejection {
            reason: Reason::MalformedPayload,
            station: Some(topic.station.to_owned()),
            param: None,
            ts: None,
            value: None,
            detail: error.to_string(),
        });
    }
    let bounds = (
        now.saturating_sub(rules.max_age),
        now.saturating_add(rules.max_future),
    );
    for record in &decoded.records {
        let checked = check_record(registry, topic, record, bounds, &mut scratch).and_then(
            |(station, signed)| {
                let missing =
                    check_counter(station, record, signed, sequences, &mut out.counter_events)?;
                Ok((station, missing))
            },
        );
        match checked {
            Ok((station, missing)) => {
                out.missing_records += missing;
                if record.seq.is_some() {
                    counted = Some(station);
                }
                check_readings(station, record, &mut out);
            }
            Err((reason, detail)) => out.rejected.push(Rejection {
                reason,
                station: Some(record.station.clone().into_owned()),
                param: None,
                ts: Some(record.ts),
                value: None,
                detail,
            }),
        }
    }
    out.counter = counted.and_then(|station| {
        let window = sequences.window(&station.id)?;
        Some((station.id.clone(), *window))
    });
    out
}

/// Record-level checks; returns the registry station when they pass, and whether the record
/// carried a valid signature.
fn check_record<'r>(
    registry: &'r Registry,
    topic: &Topic<'_>,
    record: &Record<'_>,
    (oldest, newest): (Timestamp, Timestamp),
    scratch: &mut Vec<u8>,
) -> Result<(&'r Station, bool), (Reason, String)> {
    let n = record.readings.len();
    let Some(station) = registry.station(&record.station) else {
        return Err((
            Reason::UnknownStation,
            format!("station `{}` is not in the registry", record.station),
        ));
    };
    if *record.station != *topic.station {
        return Err((
            Reason::TopicMismatch,
            format!(
                "record for station `{}` arrived on the topic of station `{}`",
                record.station, topic.station
            ),
        ));
    }
    if *station.zone != *topic.zone {
        return Err((
            Reason::TopicMismatch,
            format!(
                "station `{}` belongs to zone `{}`, not to the topic's zone `{}`",
                station.id, station.zone, topic.zone
            ),
        ));
    }
    let signed = signature::check(
        &station.signing_keys,
        station.require_signature,
        record,
        scratch,
    );
    let signed = match signed {
        Ok(signed) => signed,
        Err(Refusal::Unsigned) => {
            return Err((
                Reason::UnsignedRecord,
                format!("station `{}` must sign its records", station.id),
            ))
        }
        Err(Refusal::NoSeq) => {
            return Err((
                Reason::BadSignature,
                "a signed record must carry the `seq` its signature covers".to_owned(),
            ))
        }
        Err(Refusal::Mismatch) => {
            return Err((
                Reason::BadSignature,
                format!(
                    "the signature matches none of station `{}`'s keys: the record was changed, or signed with another key",
                    station.id
                ),
            ))
        }
    };
    if record.ts > newest {
        return Err((
            Reason::FutureTimestamp,
            format!(
                "time {} is later than the server clock allows ({} reading(s))",
                record.ts, n
            ),
        ));
    }
    if record.ts < oldest {
        return Err((
            Reason::ExpiredTimestamp,
            format!(
                "time {} is older than the retention period ({} reading(s))",
                record.ts, n
            ),
        ));
    }
    Ok((station, signed))
}

/// The record counter: skipped records counted, and replays refused where a signature
/// protects the counter. Runs last among the record checks, so that only records otherwise
/// acceptable move the counter.
///
/// An unsigned counter proves nothing: whoever can publish can write any number in it, so it
/// must never lock a station out. Unsigned re-sends are accepted (a reading's identity
/// `(station, param, ts)` stores them once), an implausible jump forward does not move the
/// window, and a counter that starts again near zero (a new logger, a firmware update) starts
/// the window again; each is reported in `events`.
fn check_counter(
    station: &Station,
    record: &Record<'_>,
    signed: bool,
    sequences: &mut Sequences,
    events: &mut Vec<CounterEvent>,
) -> Result<u64, (Reason, String)> {
    let Some(seq) = record.seq else {
        return Ok(0);
    };
    let verdict = sequences.check(&station.id, seq);
    match verdict {
        Verdict::Jump { highest } => {
            if signed {
                // The signature vouches for the number: the window starts there.
                sequences.rebase(&station.id, seq);
            }
            events.push(CounterEvent::Jump { seq, highest });
            return Ok(0);
        }
        Verdict::Replayed { .. } if !signed => {
            events.push(CounterEvent::Resent);
            return Ok(0);
        }
        Verdict::TooOld { highest } if !signed => {
            if seq < sequence::WINDOW {
                sequences.rebase(&station.id, seq);
                events.push(CounterEvent::Reset { seq, highest });
            } else {
                events.push(CounterEvent::Resent);
            }
            return Ok(0);
        }
        _ => {}
    }
    match verdict {
        Verdict::Fresh { missing } => Ok(missing),
        Verdict::FillsGap | Verdict::Jump { .. } => Ok(0),
        Verdict::Replayed { highest } => Err((
            Reason::ReplayedRecord,
            format!("seq {seq} was already received (highest so far {highest}): a retransmission or a replay"),
        )),
        Verdict::TooOld { highest } => Err((
            Reason::ReplayedRecord,
            format!(
                "seq {seq} is more than {} below the highest so far ({highest}): it cannot be told from a replay",
                crate::security::sequence::WINDOW
            ),
        )),
    }
}

fn check_readings(station: &Station, record: &Record<'_>, out: &mut Outcome) {
    for reading in &record.readings {
        let reject = |reason, detail| Rejection {
            reason,
            station: Some(station.id.to_string()),
            param: Some(reading.param.clone().into_owned()),
            ts: Some(record.ts),
            value: Some(reading.value),
            detail,
        };
        let Some(param) = station.parameter(&reading.param) else {
            out.rejected.push(reject(
                Reason::UnknownParameter,
                format!(
                    "station `{}` has no parameter `{}`",
                    station.id, reading.param
                ),
            ));
            continue;
        };
        if *param.unit != *reading.unit {
            out.rejected.push(reject(
                Reason::UnitMismatch,
                format!(
                    "unit `{}` but `{}` is measured in `{}`",
                    reading.unit, param.name, param.unit
                ),
            ));
        } else if !reading.value.is_finite() {
            out.rejected.push(reject(
                Reason::NonFiniteValue,
                format!("value {} is not a finite number", reading.value),
            ));
        } else if !param.range.contains(reading.value) {
            out.rejected.push(reject(
                Reason::OutOfRange,
                format!(
                    "value {} is outside the sensor range [{}, {}] {}",
                    reading.value, param.range.min, param.range.max, param.unit
                ),
            ));
        } else {
            out.accepted.push(Reading {
                station: station.id.clone(),
                zone: station.zone.clone(),
                param: param.name.clone(),
                ts: record.ts,
                value: reading.value,
                status: reading.status,
            });
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;
    use std::path::Path;

    use super::*;
    use crate::telemetry::{DecodeError, Encoding, ReadingRef, Status, TopicKind};

    const NOW: Timestamp = Timestamp::from_millis(1_795_662_300_000);

    /// Records of the helper get increasing counters, as a gateway's do.
    static NEXT_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

    fn registry() -> Registry {
        Registry::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds")).unwrap()
    }

    fn rules() -> Rules {
        Rules {
            max_future: Duration::from_secs(300),
            max_age: Duration::from_secs(86_400),
        }
    }

    fn topic(zone: &'static str, station: &'static str) -> Topic<'static> {
        Topic {
            zone,
            station,
            kind: TopicKind::Telemetry(Encoding::Json),
        }
    }

    fn record(
        station: &'static str,
        ts: Timestamp,
        readings: &[(&'static str, f64, &'static str)],
    ) -> Record<'static> {
        Record {
            station: Cow::Borrowed(station),
            ts,
            seq: Some(NEXT_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            sig: None,
            readings: readings
                .iter()
                .map(|&(p, v, u)| ReadingRef {
                    param: Cow::Borrowed(p),
                    value: v,
                    unit: Cow::Borrowed(u),
                    status: Status::Measuring,
                })
                .collect(),
        }
    }

    fn run(topic: Topic<'_>, records: Vec<Record<'_>>) -> Outcome {
        let decoded = Decoded {
            records,
            errors: vec![],
        };
        validate(
            &registry(),
            &rules(),
            &topic,
            &decoded,
            NOW,
            &mut Sequences::new(),
        )
    }

    fn only_reason(out: &Outcome) -> Reason {
        assert_eq!(out.rejected.len(), 1, "{:?}", out.rejected);
        out.rejected[0].reason
    }

    #[test]
    fn a_good_record_is_accepted_whole_with_registry_ids() {
        let out = run(
            topic("DN-AMATA", "DN-AMATA-WW01"),
            vec![record(
                "DN-AMATA-WW01",
                NOW,
                &[("COD", 71.3, "mg/L"), ("pH", 7.2, "pH")],
            )],
        );
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        assert_eq!(out.accepted.len(), 2);
        assert_eq!(&*out.accepted[0].zone, "DN-AMATA");
        assert_eq!(out.accepted[1].value, 7.2);
    }

    #[test]
    fn decode_errors_become_malformed_payload_rejections() {
        let decoded = Decoded {
            records: vec![],
            errors: vec![DecodeError::Json("missing field `ts`".into())],
        };
        let out = validate(
            &registry(),
            &rules(),
            &topic("Z", "S"),
            &decoded,
            NOW,
            &mut Sequences::new(),
        );
        assert_eq!(only_reason(&out), Reason::MalformedPayload);
        assert!(out.rejected[0].detail.contains("missing field"));
    }

    #[test]
    fn each_record_level_rule_has_its_own_reason() {
        let t = topic("DN-AMATA", "DN-AMATA-WW01");
        let ok = &[("COD", 1.0, "mg/L")];
        let cases = [
            (t, record("NOPE", NOW, ok), Reason::UnknownStation),
            (t, record("DN-AMATA-ST01", NOW, ok), Reason::TopicMismatch),
            (
                topic("BN-VSIP", "DN-AMATA-WW01"),
                record("DN-AMATA-WW01", NOW, ok),
                Reason::TopicMismatch,
            ),
            (
                t,
                record(
                    "DN-AMATA-WW01",
                    Timestamp::from_millis(NOW.as_millis() + 301_000),
                    ok,
                ),
                Reason::FutureTimestamp,
            ),
            (
                t,
                record(
                    "DN-AMATA-WW01",
                    Timestamp::from_millis(NOW.as_millis() - 86_401_000),
                    ok,
                ),
                Reason::ExpiredTimestamp,
            ),
        ];
        for (topic, rec, reason) in cases {
            let out = run(topic, vec![rec]);
            assert_eq!(only_reason(&out), reason);
            assert!(out.accepted.is_empty());
        }
    }

    #[test]
    fn each_reading_level_rule_rejects_only_that_reading() {
        let cases = [
            (("BOD5", 1.0, "mg/L"), Reason::UnknownParameter),
            (("COD", 1.0, "g/L"), Reason::UnitMismatch),
            (("COD", f64::NAN, "mg/L"), Reason::NonFiniteValue),
            (("COD", f64::INFINITY, "mg/L"), Reason::NonFiniteValue),
            (("COD", 2000.5, "mg/L"), Reason::OutOfRange),
            (("pH", -0.1, "pH"), Reason::OutOfRange),
        ];
        for (bad, reason) in cases {
            let out = run(
                topic("DN-AMATA", "DN-AMATA-WW01"),
                vec![record("DN-AMATA-WW01", NOW, &[bad, ("TSS", 20.0, "mg/L")])],
            );
            assert_eq!(only_reason(&out), reason, "{bad:?}");
            assert_eq!(out.rejected[0].param.as_deref(), Some(bad.0));
            assert_eq!(out.accepted.len(), 1, "the good reading still counts");
        }
    }

    #[test]
    fn range_bounds_are_inclusive_and_times_at_the_edges_pass() {
        let edge_future = Timestamp::from_millis(NOW.as_millis() + 300_000);
        let edge_past = Timestamp::from_millis(NOW.as_millis() - 86_400_000);
        let out = run(
            topic("DN-AMATA", "DN-AMATA-WW01"),
            vec![
                record("DN-AMATA-WW01", edge_future, &[("pH", 0.0, "pH")]),
                record("DN-AMATA-WW01", edge_past, &[("pH", 14.0, "pH")]),
            ],
        );
        assert!(out.rejected.is_empty(), "{:?}", out.rejected);
        assert_eq!(out.accepted.len(), 2);
    }

    #[test]
    fn calibrating_and_faulty_readings_are_valid_data() {
        let mut rec = record(
            "DN-AMATA-WW01",
            NOW,
            &[("COD", 1.0, "mg/L"), ("pH", 7.0, "pH")],
        );
        rec.readings[0].status = Status::Calibrating;
        rec.readings[1].status = Status::DeviceError;
        let out = run(topic("DN-AMATA", "DN-AMATA-WW01"), vec![rec]);
        assert_eq!(out.accepted.len(), 2);
        assert_eq!(out.accepted[1].status, Status::DeviceError);
    }

    const KEY: &[u8] = b"a station key of 32 bytes, here.";

    /// The seed registry with DN-AMATA-WW01 requiring signatures.
    fn signing_registry() -> Registry {
        let seeds = registry();
        let stations = seeds
            .stations()
            .iter()
            .cloned()
            .map(|mut s| {
                if &*s.id == "DN-AMATA-WW01" {
                    s.signing_keys = vec![std::sync::Arc::from(KEY)];
                    s.require_signature = true;
                }
                s
            })
            .collect();
        Registry::from_parts(seeds.zones().to_vec(), stations, seeds.profiles().to_vec())
    }

    fn signed(seq: u64, value: f64) -> Record<'static> {
        let mut r = record("DN-AMATA-WW01", NOW, &[("COD", value, "mg/L")]);
        r.seq = Some(seq);
        r.sig = Some(signature::sign(KEY, &r, seq));
        r
    }

    fn judge(registry: &Registry, seqs: &mut Sequences, r: Record<'_>) -> Outcome {
        let decoded = Decoded {
            records: vec![r],
            errors: vec![],
        };
        let t = topic("DN-AMATA", "DN-AMATA-WW01");
        validate(registry, &rules(), &t, &decoded, NOW, seqs)
    }

    #[test]
    fn a_station_that_signs_has_unsigned_and_altered_records_refused_with_their_own_reasons() {
        let registry = signing_registry();
        let mut seqs = Sequences::new();
        let out = judge(&registry, &mut seqs, signed(1, 71.3));
        assert_eq!(out.accepted.len(), 1, "{:?}", out.rejected);

        let unsigned = record("DN-AMATA-WW01", NOW, &[("COD", 71.3, "mg/L")]);
        assert_eq!(
            only_reason(&judge(&registry, &mut seqs, unsigned)),
            Reason::UnsignedRecord
        );

        let mut altered = signed(2, 71.3);
        altered.readings[0].value = 7.13;
        let out = judge(&registry, &mut seqs, altered);
        assert_eq!(only_reason(&out), Reason::BadSignature);
        assert!(out.accepted.is_empty());

        // The refused records did not move the counter: seq 2 is still fresh.
        assert_eq!(
            judge(&registry, &mut seqs, signed(2, 70.0)).accepted.len(),
            1
        );
    }

    #[test]
    fn a_replayed_record_is_refused_and_skipped_records_are_counted_missing() {
        let registry = signing_registry();
        let mut seqs = Sequences::new();
        assert_eq!(
            judge(&registry, &mut seqs, signed(10, 1.0)).missing_records,
            0
        );
        let replay = judge(&registry, &mut seqs, signed(10, 1.0));
        assert_eq!(only_reason(&replay), Reason::ReplayedRecord);
        assert!(replay.rejected[0].detail.contains("seq 10"));
        let jump = judge(&registry, &mut seqs, signed(14, 1.0));
        assert_eq!(jump.missing_records, 3);
        assert_eq!(seqs.station("DN-AMATA-WW01"), Some((14, 3)));
    }

    fn unsigned(seq: u64) -> Record<'static> {
        let mut r = record("DN-AMATA-WW01", NOW, &[("COD", 50.0, "mg/L")]);
        r.seq = Some(seq);
        r
    }

    #[test]
    fn a_poisoned_unsigned_counter_never_locks_a_station_out() {
        let registry = registry();
        let mut seqs = Sequences::new();
        assert!(judge(&registry, &mut seqs, unsigned(10))
            .rejected
            .is_empty());
        let poison = judge(&registry, &mut seqs, unsigned(u64::MAX));
        assert!(poison.rejected.is_empty(), "accepted (stored), but...");
        assert_eq!(
            poison.missing_records, 0,
            "...not counted as missing records"
        );
        assert!(matches!(
            poison.counter_events[..],
            [CounterEvent::Jump { .. }]
        ));
        let next = judge(&registry, &mut seqs, unsigned(11));
        assert!(
            next.rejected.is_empty(),
            "the gateway's next record is taken"
        );
        assert_eq!(seqs.station("DN-AMATA-WW01"), Some((11, 0)));
    }

    #[test]
    fn an_unsigned_resend_is_accepted_and_a_counter_that_starts_again_restarts_its_window() {
        let registry = registry();
        let mut seqs = Sequences::new();
        judge(&registry, &mut seqs, unsigned(5_000));
        let again = judge(&registry, &mut seqs, unsigned(5_000));
        assert!(again.rejected.is_empty(), "stored once by its identity");
        assert_eq!(again.counter_events, vec![CounterEvent::Resent]);
        let reset = judge(&registry, &mut seqs, unsigned(0));
        assert!(reset.rejected.is_empty());
        assert!(matches!(
            reset.counter_events[..],
            [CounterEvent::Reset {
                seq: 0,
                highest: 5_000
            }]
        ));
        assert_eq!(seqs.station("DN-AMATA-WW01"), Some((0, 0)));
    }

    #[test]
    fn a_signed_counter_may_jump_far_ahead_and_then_refuses_replays_from_there() {
        let registry = signing_registry();
        let mut seqs = Sequences::new();
        judge(&registry, &mut seqs, signed(1, 1.0));
        let jump = judge(&registry, &mut seqs, signed(1 << 40, 1.0));
        assert!(jump.rejected.is_empty());
        assert_eq!(jump.missing_records, 0);
        let replay = judge(&registry, &mut seqs, signed(1 << 40, 1.0));
        assert_eq!(only_reason(&replay), Reason::ReplayedRecord);
    }
}
