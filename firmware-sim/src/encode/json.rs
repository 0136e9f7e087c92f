//! JSON encoding: one object per record, an array when several records travel together.
//!
//! `ts` is written as RFC 3339 in Vietnam local time (`+07:00`), the form an operator reads
//! in a broker console, with milliseconds only when the instant has them.

use chrono::SecondsFormat;
use serde::Serialize;

use crate::record::Record;
use crate::vntime;

#[derive(Serialize)]
struct JsonRecord<'a> {
    station: &'a str,
    ts: JsonTs,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    readings: Vec<JsonReading<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sig: Option<String>,
}

/// RFC 3339 text, or epoch milliseconds for instants chrono cannot represent (both are valid
/// on the wire).
#[derive(Serialize)]
#[serde(untagged)]
enum JsonTs {
    Text(String),
    Millis(i64),
}

#[derive(Serialize)]
struct JsonReading<'a> {
    param: &'a str,
    value: f64,
    unit: &'a str,
    status: &'static str,
}

pub(super) fn encode(records: &[Record], key: Option<&[u8]>) -> Vec<u8> {
    let mut wire: Vec<JsonRecord<'_>> = records.iter().map(|r| to_wire(r, key)).collect();
    let result = if wire.len() == 1 {
        let single = wire.pop();
        serde_json::to_vec(&single)
    } else {
        serde_json::to_vec(&wire)
    };
    super::in_memory(result, "json")
}

fn to_wire<'a>(record: &'a Record, key: Option<&[u8]>) -> JsonRecord<'a> {
    let sig = key
        .zip(record.seq)
        .map(|(k, seq)| crate::sign::hex(&crate::sign::signature(k, record, record.ts_ms, seq)));
    JsonRecord {
        sig,
        station: &record.station,
        ts: rfc3339(record.ts_ms),
        seq: record.seq,
        readings: record
            .readings
            .iter()
            .map(|r| JsonReading {
                param: &r.param,
                value: r.value,
                unit: &r.unit,
                status: r.status.code(),
            })
            .collect(),
    }
}

fn rfc3339(ts_ms: i64) -> JsonTs {
    match vntime::local(ts_ms) {
        Some(local) => JsonTs::Text(local.to_rfc3339_opts(SecondsFormat::AutoSi, false)),
        None => JsonTs::Millis(ts_ms),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::{Reading, Status};
    use serde_json::{json, Value};

    fn record(ts_ms: i64, seq: Option<u64>) -> Record {
        Record {
            station: "DN-AMATA-WW01".into(),
            ts_ms,
            seq,
            readings: vec![
                Reading {
                    param: "COD".into(),
                    value: 71.3,
                    unit: "mg/L".into(),
                    status: Status::Measuring,
                },
                Reading {
                    param: "pH".into(),
                    value: 7.2,
                    unit: "pH".into(),
                    status: Status::Calibrating,
                },
            ],
        }
    }

    #[test]
    fn one_record_is_a_single_object_with_a_vietnam_offset() {
        let bytes = encode(&[record(1_795_662_300_000, Some(18231))], None);
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            value,
            json!({ "station": "DN-AMATA-WW01", "ts": "2026-11-26T10:05:00+07:00", "seq": 18231,
                    "readings": [ { "param": "COD", "value": 71.3, "unit": "mg/L", "status": "00" },
                                  { "param": "pH", "value": 7.2, "unit": "pH", "status": "01" } ] })
        );
    }

    #[test]
    fn several_records_are_an_array_and_seq_is_omitted_when_absent() {
        let bytes = encode(
            &[
                record(1_795_662_300_000, None),
                record(1_795_662_300_250, None),
            ],
            None,
        );
        let value: Value = serde_json::from_slice(&bytes).unwrap();
        let array = value.as_array().unwrap();
        assert_eq!(array.len(), 2);
        assert!(array[0].get("seq").is_none());
        assert_eq!(array[1]["ts"], "2026-11-26T10:05:00.250+07:00");
    }

    #[test]
    fn no_records_encode_as_an_empty_array() {
        assert_eq!(encode(&[], None), b"[]");
    }
}
