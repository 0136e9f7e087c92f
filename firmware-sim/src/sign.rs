//! Record signatures, as device firmware computes them: HMAC-SHA256 with the station's key
//! over the canonical form of `docs/telemetry.md` ("Signed records"). Written from the
//! document, apart from the server's verifier, so that the two check each other.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::record::Record;

/// The canonical bytes of `record`, with `ts_ms` as the encoding carries it and counter `seq`.
pub fn canonical(record: &Record, ts_ms: i64, seq: u64) -> Vec<u8> {
    fn text(out: &mut Vec<u8>, s: &str) {
        let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    let mut out = b"quantrac-sig-v1\0".to_vec();
    text(&mut out, &record.station);
    out.extend_from_slice(&ts_ms.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    let count = record.readings.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&(count as u16).to_be_bytes());
    for r in record.readings.iter().take(count) {
        text(&mut out, &r.param);
        out.extend_from_slice(&r.value.to_bits().to_be_bytes());
        text(&mut out, &r.unit);
        out.push(r.status.byte());
    }
    out
}

/// The signature of `record` (time `ts_ms`, counter `seq`) with `key`.
pub fn signature(key: &[u8], record: &Record, ts_ms: i64, seq: u64) -> [u8; 32] {
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of every length")
    };
    mac.update(&canonical(record, ts_ms, seq));
    mac.finalize().into_bytes().into()
}

/// Lower-case hex, as JSON `sig` and tt10 `#SIG` lines carry a signature.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signing key given as hex (the registry's `signing_keys` form).
pub fn key_from_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || text.is_empty() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Reading, Status};

    /// The vector of docs/telemetry.md.
    #[test]
    fn the_documented_test_vector_holds() {
        let record = Record {
            station: "DN-AMATA-WW01".into(),
            ts_ms: 1_795_662_300_000,
            seq: Some(18231),
            readings: vec![Reading {
                param: "COD".into(),
                value: 71.3,
                unit: "mg/L".into(),
                status: Status::Measuring,
            }],
        };
        let sig = signature(
            b"0123456789abcdef0123456789abcdef",
            &record,
            record.ts_ms,
            18231,
        );
        assert_eq!(
            hex(&sig),
            "42b19b3b00ecb822eab2a16105520fc34a19290469926503b4a1efb8801f68f7"
        );
    }

    #[test]
    fn keys_parse_from_hex_only() {
        assert_eq!(key_from_hex("00ff"), Some(vec![0, 255]));
        assert_eq!(key_from_hex("0"), None);
        assert_eq!(key_from_hex("zz"), None);
    }
}
