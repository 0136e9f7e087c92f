//! The Circular 10/2021 data-logger text form: one TAB-separated line per parameter,
//! `Parameter  Value  Unit  YYYYMMDDhhmmss  Status`, time in Vietnam local time (UTC+7).
//!
//! Many installed data loggers speak only this, so it is judged line by line: a bad line is
//! quarantined on its own and the others still count. Consecutive lines with the same time
//! form one record; the station comes from the topic.

use std::borrow::Cow;

use chrono::NaiveDate;

use super::{DecodeError, Decoded, ReadingRef, Record, Status, Timestamp};

/// Decodes a tt10 body for `station`.
pub fn decode<'a>(payload: &'a [u8], station: &'a str) -> Decoded<'a> {
    let Ok(text) = std::str::from_utf8(payload) else {
        return Decoded::failed(DecodeError::NotUtf8);
    };
    let mut out = Decoded::default();
    // A `#SIG` line closes the record above it: the next line starts a new one.
    let mut closed = false;
    for (index, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(directive) = line.strip_prefix('#') {
            let outcome = match out.records.last_mut() {
                Some(record) if !closed => signature_line(directive, record),
                _ => Err("a #SIG line must follow the lines of the record it signs".to_owned()),
            };
            closed = true;
            if let Err(problem) = outcome {
                out.errors.push(DecodeError::Tt10Line {
                    line: index + 1,
                    problem,
                });
            }
            continue;
        }
        match parse_line(line) {
            Ok((ts, reading)) => match out.records.last_mut() {
                Some(record) if record.ts == ts && !closed => record.readings.push(reading),
                _ => {
                    closed = false;
                    out.records.push(Record {
                        station: Cow::Borrowed(station),
                        ts,
                        seq: None,
                        readings: vec![reading],
                        sig: None,
                    });
                }
            },
            Err(problem) => out.errors.push(DecodeError::Tt10Line {
                line: index + 1,
                problem,
            }),
        }
    }
    if out.records.is_empty() && out.errors.is_empty() {
        out.errors.push(DecodeError::Empty);
    }
    out
}

/// `SIG<TAB>seq<TAB>64 hex characters` (after the `#`): the record's counter and signature.
fn signature_line(directive: &str, record: &mut Record<'_>) -> Result<(), String> {
    let mut fields = directive.split('\t').map(str::trim);
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some("SIG"), Some(seq), Some(sig), None) => {
            record.seq = Some(
                seq.parse()
                    .map_err(|_| format!("#SIG: `{seq}` is not a record counter"))?,
            );
            record.sig = Some(
                super::signature_from_hex(sig)
                    .ok_or_else(|| "#SIG: the signature must be 64 hex characters".to_owned())?,
            );
            Ok(())
        }
        _ => Err("expected `#SIG<TAB>seq<TAB>signature`".to_owned()),
    }
}

fn parse_line(line: &str) -> Result<(Timestamp, ReadingRef<'_>), String> {
    let mut fields = line.split('\t').map(str::trim);
    let (Some(param), Some(value), Some(unit), Some(time), Some(status), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        let count = line.split('\t').count();
        return Err(format!(
            "expected 5 TAB-separated fields (Parameter, Value, Unit, YYYYMMDDhhmmss, Status), found {count}"
        ));
    };
    if param.is_empty() {
        return Err("empty parameter symbol".into());
    }
    let param = if param.contains(',') {
        Cow::Owned(param.replace(',', "."))
    } else {
        Cow::Borrowed(param)
    };
    let value = parse_value(value).ok_or_else(|| format!("`{value}` is not a number"))?;
    let ts = parse_local_time(time).ok_or_else(|| {
        format!("`{time}` is not a time of the form YYYYMMDDhhmmss (Vietnam local time)")
    })?;
    let status = Status::from_code(status)
        .ok_or_else(|| format!("status must be 00, 01 or 02, found `{status}`"))?;
    Ok((
        ts,
        ReadingRef {
            param,
            value,
            unit: Cow::Borrowed(unit),
            status,
        },
    ))
}

fn parse_value(text: &str) -> Option<f64> {
    if text.contains(',') {
        text.replacen(',', ".", 1).parse().ok()
    } else {
        text.parse().ok()
    }
}

fn parse_local_time(text: &str) -> Option<Timestamp> {
    if text.len() != 14 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text.get(range)?.parse::<u32>().ok();
    let year = i32::try_from(num(0..4)?).ok()?;
    let local = NaiveDate::from_ymd_opt(year, num(4..6)?, num(6..8)?)?.and_hms_opt(
        num(8..10)?,
        num(10..12)?,
        num(12..14)?,
    )?;
    Some(Timestamp::from_vietnam_local(local))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_the_same_time_form_one_record_in_utc() {
        let body = "COD\t71.3\tmg/L\t20261126100500\t00\npH\t7.2\tpH\t20261126100500\t00\n";
        let d = decode(body.as_bytes(), "DN-AMATA-WW01");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(d.records.len(), 1);
        let r = &d.records[0];
        assert_eq!(r.station, "DN-AMATA-WW01");
        assert_eq!(r.ts.as_millis(), 1_795_662_300_000);
        assert_eq!(r.seq, None);
        assert_eq!(r.readings.len(), 2);
        assert_eq!(r.readings[1].value, 7.2);
    }

    #[test]
    fn decimal_commas_crlf_and_blank_lines_are_accepted() {
        let body = "PM2,5\t35,5\tug/Nm3\t20261126100000\t01\r\n\r\nPM10\t60\tug/Nm3\t20261126100500\t02\r\n";
        let d = decode(body.as_bytes(), "S");
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.records[0].readings[0].param, "PM2.5");
        assert_eq!(d.records[0].readings[0].value, 35.5);
        assert_eq!(d.records[0].readings[0].status, Status::Calibrating);
        assert_eq!(d.records[1].readings[0].status, Status::DeviceError);
    }

    #[test]
    fn a_bad_line_is_rejected_alone_with_its_line_number() {
        let body = "COD\t71.3\tmg/L\t20261126100500\t00\nTSS 12 mg/L\npH\tx\tpH\t20261126100500\t00\nNH4\t1\tmg/L\t20261399100500\t00\nTN\t1\tmg/L\t20261126100500\t05\n";
        let d = decode(body.as_bytes(), "S");
        assert_eq!(d.records.len(), 1);
        let errors: Vec<String> = d.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 4, "{errors:?}");
        assert!(errors[0].starts_with("line 2: expected 5"));
        assert!(errors[1].starts_with("line 3: `x` is not a number"));
        assert!(errors[2].starts_with("line 4: `20261399100500`"));
        assert!(errors[3].starts_with("line 5: status must be"));
    }

    #[test]
    fn non_text_and_empty_bodies_are_malformed() {
        assert_eq!(
            decode(&[0xff, 0xfe], "S").errors,
            vec![DecodeError::NotUtf8]
        );
        assert_eq!(decode(b"\n\n", "S").errors, vec![DecodeError::Empty]);
    }

    #[test]
    fn nan_is_read_as_a_number_so_that_validation_can_name_it() {
        let d = decode(b"COD\tNaN\tmg/L\t20261126100500\t00", "S");
        assert!(d.records[0].readings[0].value.is_nan());
    }
}
