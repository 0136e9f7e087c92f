//! Validation: decides, for every decoded reading, accepted or rejected with one reason.
//!
//! A pure function of (registry, rules, topic, decoded records, now): no I/O, no clock, so
//! every rule of `docs/telemetry.md` is unit-tested here. Accepted readings share the
//! registry's `Arc<str>` ids, so the accepted path does not allocate per reading; rejections
//! (the rare path) carry owned strings for the quarantine.
//!
//! Checks run in the order of [`Reason::ALL`]: record-level first (station, topic, time),
//! then reading-level (parameter, unit, finiteness, range). One reason per rejection.

use std::time::Duration;

use crate::quarantine::{Reason, Rejection};
use crate::registry::{Registry, Station};
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
}

/// Validates the decoded records of one telemetry message that arrived on `topic`.
pub fn validate(
    registry: &Registry,
    rules: &Rules,
    topic: &Topic<'_>,
    decoded: &Decoded<'_>,
    now: Timestamp,
) -> Outcome {
    let mut out = Outcome {
        accepted: Vec::with_capacity(decoded.records.iter().map(|r| r.readings.len()).sum()),
        rejected: Vec::new(),
    };
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
        match check_record(registry, topic, record, bounds) {
            Ok(station) => check_readings(station, record, &mut out),
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
    out
}

/// Record-level checks; returns the registry station when they pass.
fn check_record<'r>(
    registry: &'r Registry,
    topic: &Topic<'_>,
    record: &Record<'_>,
    (oldest, newest): (Timestamp, Timestamp),
) -> Result<&'r Station, (Reason, String)> {
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
    Ok(station)
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
            seq: Some(1),
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
        validate(&registry(), &rules(), &topic, &decoded, NOW)
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
        let out = validate(&registry(), &rules(), &topic("Z", "S"), &decoded, NOW);
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
}
