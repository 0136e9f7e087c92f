//! tt10 encoding: the body of a Circular 10/2021/TT-BTNMT data-logger file.
//!
//! `Parameter<TAB>Value<TAB>Unit<TAB>YYYYMMDDhhmmss<TAB>Status`, one line per reading, in
//! Vietnam local time without an offset (as loggers write it). The format has no `seq` and no
//! sub-second time: both are dropped. Parameter symbols are written exactly as configured
//! (`PM2.5`, not the circular's `PM2,5`); the receiver accepts both.

use std::fmt::Write as _;

use crate::record::Record;
use crate::vntime;

pub(super) fn encode(records: &[Record], key: Option<&[u8]>) -> Vec<u8> {
    let mut out = String::new();
    for record in records {
        let time = local_time(record.ts_ms);
        let signature = key.zip(record.seq).map(|(k, seq)| {
            // The file carries whole seconds: the signature covers the time it carries.
            let ts_ms = record.ts_ms - record.ts_ms.rem_euclid(1000);
            (
                seq,
                crate::sign::hex(&crate::sign::signature(k, record, ts_ms, seq)),
            )
        });
        for r in &record.readings {
            // Writing into a String cannot fail.
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}",
                r.param,
                r.value,
                r.unit,
                time,
                r.status.code()
            );
        }
        if let Some((seq, sig)) = signature {
            let _ = writeln!(out, "#SIG\t{seq}\t{sig}");
        }
    }
    out.into_bytes()
}

/// `YYYYMMDDhhmmss` in Vietnam local time (all zeros, which the receiver rejects, for
/// instants outside the calendar's range).
fn local_time(ts_ms: i64) -> String {
    match vntime::local(ts_ms) {
        Some(local) => local.format("%Y%m%d%H%M%S").to_string(),
        None => "00000000000000".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Reading, Status};

    #[test]
    fn tt10_lines_carry_vietnam_local_time_and_the_parameter_as_given() {
        let record = Record {
            station: "BN-VSIP-AQ01".into(),
            // 2026-11-26T03:05:00.999Z: sub-second part is dropped, local time is 10:05:00
            ts_ms: 1_795_662_300_999,
            seq: Some(7),
            readings: vec![
                Reading {
                    param: "PM2.5".into(),
                    value: 35.5,
                    unit: "ug/Nm3".into(),
                    status: Status::Measuring,
                },
                Reading {
                    param: "CO".into(),
                    value: 7.0,
                    unit: "ug/Nm3".into(),
                    status: Status::DeviceError,
                },
            ],
        };
        let text = String::from_utf8(encode(&[record], None)).unwrap_or_default();
        assert_eq!(
            text,
            "PM2.5\t35.5\tug/Nm3\t20261126100500\t00\nCO\t7\tug/Nm3\t20261126100500\t02\n"
        );
    }

    #[test]
    fn a_local_date_change_happens_at_seventeen_hundred_utc() {
        // 2026-11-25T17:00:00Z is already the 26th in Vietnam.
        assert_eq!(local_time(1_795_626_000_000), "20261126000000");
        assert_eq!(local_time(1_795_625_999_000), "20261125235959");
    }
}
