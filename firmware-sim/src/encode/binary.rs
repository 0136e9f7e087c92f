//! bincode encoding: `0x01` version byte, then `Vec<Record>` in bincode 2 `standard()` form.
//!
//! The layout is fixed by `docs/telemetry.md` (varints, zigzag `ts`, little-endian `f64`), not
//! by the library: bincode 2.0.1 happens to produce it for the structs below, and the tests
//! reproduce the documented vectors byte for byte, so a library change that alters a single
//! byte fails here before it reaches a device.

use serde::Serialize;

use crate::record::Record;

/// First byte of every bincode message; a later layout gets a new value.
pub(crate) const VERSION: u8 = 0x01;
/// Version 2: every record followed by `Option<[u8; 32]>`, its signature.
pub(crate) const VERSION_SIGNED: u8 = 0x02;

#[derive(Serialize)]
struct SignedRecord<'a> {
    record: WireRecord<'a>,
    sig: Option<[u8; 32]>,
}

#[derive(Serialize)]
struct WireRecord<'a> {
    station: &'a str,
    ts: i64,
    seq: Option<u64>,
    readings: Vec<WireReading<'a>>,
}

#[derive(Serialize)]
struct WireReading<'a> {
    param: &'a str,
    value: f64,
    unit: &'a str,
    status: u8,
}

pub(super) fn encode(records: &[Record], key: Option<&[u8]>) -> Vec<u8> {
    let wire: Vec<WireRecord<'_>> = records.iter().map(to_wire).collect();
    let config = bincode::config::standard();
    let (version, body) = match key {
        None => (VERSION, bincode::serde::encode_to_vec(&wire, config)),
        Some(key) => {
            let signed: Vec<SignedRecord<'_>> = records
                .iter()
                .zip(wire)
                .map(|(r, record)| SignedRecord {
                    sig: r
                        .seq
                        .map(|seq| crate::sign::signature(key, r, r.ts_ms, seq)),
                    record,
                })
                .collect();
            (
                VERSION_SIGNED,
                bincode::serde::encode_to_vec(&signed, config),
            )
        }
    };
    let mut out = vec![version];
    out.extend_from_slice(&super::in_memory(body, "bincode"));
    out
}

fn to_wire(record: &Record) -> WireRecord<'_> {
    WireRecord {
        station: &record.station,
        ts: record.ts_ms,
        seq: record.seq,
        readings: record
            .readings
            .iter()
            .map(|r| WireReading {
                param: &r.param,
                value: r.value,
                unit: &r.unit,
                status: r.status.byte(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Reading, Status};

    /// Parses the hex dump of the documentation (whitespace-separated bytes).
    fn hex(dump: &str) -> Vec<u8> {
        dump.split_whitespace()
            .filter_map(|b| u8::from_str_radix(b, 16).ok())
            .collect()
    }

    fn reading(param: &str, value: f64, unit: &str, status: Status) -> Reading {
        Reading {
            param: param.into(),
            value,
            unit: unit.into(),
            status,
        }
    }

    #[test]
    fn bincode_encoding_reproduces_the_first_documented_vector() {
        let record = Record {
            station: "DN-AMATA-WW01".into(),
            ts_ms: 1_795_662_300_000,
            seq: Some(18231),
            readings: vec![
                reading("COD", 71.3, "mg/L", Status::Measuring),
                reading("pH", 7.2, "pH", Status::Measuring),
            ],
        };
        let expected = hex(
            "01 01 0d 44 4e 2d 41 4d 41 54 41 2d 57 57 30 31 fd c0 86 a0 2b 44 03 00 00 01 fb 37 47 02 03
             43 4f 44 33 33 33 33 33 d3 51 40 04 6d 67 2f 4c 00 02 70 48 cd cc cc cc cc cc 1c 40 02 70 48
             00",
        );
        assert_eq!(expected.len(), 63);
        assert_eq!(encode(&[record], None), expected);
    }

    #[test]
    fn bincode_encoding_reproduces_the_second_documented_vector() {
        let record = |ts_ms, value, status| Record {
            station: "BN-VSIP-AQ01".into(),
            ts_ms,
            seq: None,
            readings: vec![reading("PM2.5", value, "ug/Nm3", status)],
        };
        let records = [
            record(1_795_662_300_000, 35.5, Status::Calibrating),
            record(1_795_662_600_000, 36.0, Status::DeviceError),
        ];
        let expected = hex(
            "01 02 0c 42 4e 2d 56 53 49 50 2d 41 51 30 31 fd c0 86 a0 2b 44 03 00 00 00 01 05 50 4d 32 2e
             35 00 00 00 00 00 c0 41 40 06 75 67 2f 4e 6d 33 01 0c 42 4e 2d 56 53 49 50 2d 41 51 30 31 fd
             80 ae a9 2b 44 03 00 00 00 01 05 50 4d 32 2e 35 00 00 00 00 00 00 42 40 06 75 67 2f 4e 6d 33
             02",
        );
        assert_eq!(expected.len(), 94);
        assert_eq!(encode(&records, None), expected);
    }

    #[test]
    fn negative_timestamps_are_zigzag_mapped() {
        let record = Record {
            station: "S".into(),
            ts_ms: -1,
            seq: None,
            readings: vec![],
        };
        // version, count, "S", zigzag(-1) = 1, no seq, no readings
        assert_eq!(
            encode(&[record], None),
            vec![0x01, 0x01, 0x01, b'S', 0x01, 0x00, 0x00]
        );
    }
}
