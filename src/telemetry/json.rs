//! The JSON encoding: one record object, or an array of records for a backlog flush.
//!
//! The record layout is the serde derive on [`Record`]; this module holds the entry point and
//! the two field formats serde cannot infer (`ts` as RFC 3339 or epoch milliseconds, `status`
//! as a two-character code). Strings without escapes are borrowed from the payload. A backlog
//! array is decoded element by element, so one bad element costs only itself.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde_json::value::RawValue;

use super::{DecodeError, Decoded, Record, Status, Timestamp};

/// Decodes a JSON payload: an object is one record, an array is a backlog of records.
///
/// A backlog is judged element by element: each element that is not a record becomes one
/// [`DecodeError::JsonElement`] naming its index, and the other records still count. Only a
/// payload that is not JSON at all (or an object that is not a record) fails whole.
pub fn decode(payload: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => Err(DecodeError::Empty),
        Some(b'[') => backlog(payload),
        Some(_) => serde_json::from_slice::<Record<'_>>(payload)
            .map(|r| Decoded {
                records: vec![r],
                errors: Vec::new(),
            })
            .map_err(|e| DecodeError::Json(e.to_string())),
    }
}

/// An array: first split into raw elements (which only checks that it is JSON), then each
/// element decoded on its own. The elements are slices of the payload, so records still
/// borrow their strings from it.
fn backlog(payload: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let elements: Vec<&RawValue> =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
    let mut out = Decoded {
        records: Vec::with_capacity(elements.len()),
        errors: Vec::new(),
    };
    for (index, element) in elements.into_iter().enumerate() {
        match serde_json::from_str::<Record<'_>>(element.get()) {
            Ok(record) => out.records.push(record),
            Err(e) => out.errors.push(DecodeError::JsonElement {
                index,
                problem: without_position(&e),
            }),
        }
    }
    Ok(out)
}

/// serde_json's message without its "at line L column C" (a position inside the element,
/// which would mislead: the index says where the element is).
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(bare) => bare.to_owned(),
        None => text,
    }
}

/// `ts`: an RFC 3339 string with an offset, or integer epoch milliseconds.
pub(super) fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
    struct TsVisitor;
    impl Visitor<'_> for TsVisitor {
        type Value = Timestamp;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an RFC 3339 time with an offset or integer epoch milliseconds")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
            Timestamp::parse_rfc3339(v).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
            Ok(Timestamp::from_millis(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
            i64::try_from(v)
                .map(Timestamp::from_millis)
                .map_err(|_| E::custom("epoch milliseconds out of range"))
        }
    }
    d.deserialize_any(TsVisitor)
}

/// `sig`: 64 hex characters (an HMAC-SHA256).
pub(super) fn signature<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[u8; 32]>, D::Error> {
    use serde::Deserialize as _;
    match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
        None => Ok(None),
        Some(text) => super::signature_from_hex(&text)
            .map(Some)
            .ok_or_else(|| de::Error::custom("`sig` must be 64 hex characters")),
    }
}

/// `status`: `"00"`, `"01"` or `"02"`.
pub(super) fn status<'de, D: Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
    struct StatusVisitor;
    impl Visitor<'_> for StatusVisitor {
        type Value = Status;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a status code \"00\", \"01\" or \"02\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Status, E> {
            Status::from_code(v).ok_or_else(|| {
                E::custom(format!(
                    "status must be \"00\", \"01\" or \"02\", found \"{v}\""
                ))
            })
        }
    }
    d.deserialize_str(StatusVisitor)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    const ONE: &str = r#"{ "station": "DN-AMATA-WW01", "ts": "2026-11-26T10:05:00+07:00", "seq": 18231,
      "readings": [ { "param": "COD", "value": 71.3, "unit": "mg/L", "status": "00" },
                    { "param": "pH",  "value": 7.2,  "unit": "pH",   "status": "01" } ] }"#;

    #[test]
    fn one_record_decodes_with_every_field_and_borrows_its_strings() {
        let d = decode(ONE.as_bytes()).unwrap();
        assert_eq!(d.records.len(), 1);
        let r = &d.records[0];
        assert_eq!(r.station, "DN-AMATA-WW01");
        assert!(matches!(r.station, Cow::Borrowed(_)));
        assert_eq!(r.ts.as_millis(), 1_795_662_300_000);
        assert_eq!(r.seq, Some(18231));
        assert_eq!(r.readings[0].param, "COD");
        assert_eq!(r.readings[0].value, 71.3);
        assert_eq!(r.readings[1].status, Status::Calibrating);
    }

    #[test]
    fn an_array_is_a_backlog_with_epoch_millisecond_times_and_no_seq() {
        let payload = r#"[{"station":"S","ts":1000,"readings":[]},
                          {"station":"S","ts":2000,"readings":[{"param":"p","value":1,"unit":"u","status":"02"}]}]"#;
        let d = decode(payload.as_bytes()).unwrap();
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.records[1].ts.as_millis(), 2000);
        assert_eq!(d.records[1].seq, None);
        assert_eq!(d.records[1].readings[0].value, 1.0);
    }

    #[test]
    fn a_backlog_with_one_bad_element_keeps_the_valid_records_and_names_the_bad_index() {
        let payload = r#"[{"station":"S","ts":1000,"readings":[]}, {"junk":1},
                          {"station":"S","ts":3000,"readings":[]}]"#;
        let d = decode(payload.as_bytes()).unwrap();
        let times: Vec<i64> = d.records.iter().map(|r| r.ts.as_millis()).collect();
        assert_eq!(times, [1000, 3000]);
        assert!(
            matches!(d.records[0].station, Cow::Borrowed(_)),
            "still borrowed"
        );
        assert_eq!(d.errors.len(), 1, "{:?}", d.errors);
        let detail = d.errors[0].to_string();
        assert!(
            detail.starts_with("element 1: missing field `station`"),
            "{detail}"
        );
        assert!(
            !detail.contains("line"),
            "no position inside the element: {detail}"
        );
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let payload = r#"{"station":"S","ts":1,"readings":[],"signed_by":"abc"}"#;
        assert_eq!(decode(payload.as_bytes()).unwrap().records.len(), 1);
    }

    #[test]
    fn a_signature_is_64_hex_characters_or_the_payload_is_malformed() {
        let sig = "00ff".repeat(16);
        let payload = format!(r#"{{"station":"S","ts":1,"seq":2,"readings":[],"sig":"{sig}"}}"#);
        let d = decode(payload.as_bytes()).unwrap();
        assert_eq!(d.records[0].sig.unwrap()[..2], [0x00, 0xff]);
        let short = r#"{"station":"S","ts":1,"readings":[],"sig":"abc"}"#;
        assert!(matches!(decode(short.as_bytes()), Err(DecodeError::Json(m)) if m.contains("sig")));
    }

    #[test]
    fn malformed_payloads_name_what_is_wrong() {
        let cases = [
            ("", "empty payload"),
            ("   ", "empty payload"),
            ("{", "EOF"),
            (r#"{"station":"S","readings":[]}"#, "missing field `ts`"),
            (
                r#"{"station":"S","ts":"2026-11-26T10:05:00","readings":[]}"#,
                "offset",
            ),
            (
                r#"{"station":"S","ts":1,"readings":[{"param":"p","value":1,"unit":"u","status":"3"}]}"#,
                "status must be",
            ),
            (
                r#"{"station":"S","ts":1,"readings":[{"param":"p","value":"x","unit":"u","status":"00"}]}"#,
                "invalid type",
            ),
            (
                r#"{"station":"S","ts":1.5,"readings":[]}"#,
                "epoch milliseconds",
            ),
        ];
        for (payload, needle) in cases {
            let err = decode(payload.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{payload:?} gave {err:?}");
        }
    }
}
