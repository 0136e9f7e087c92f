//! Telemetry signatures: HMAC-SHA256 with a station's key over the record's canonical form.
//!
//! The canonical form is the same whatever the encoding (`docs/telemetry.md`, "Signed
//! records"), all integers big-endian, strings as a 2-byte length and their UTF-8 bytes:
//!
//! ```text
//! "quantrac-sig-v1" 0x00 | station | ts (i64, epoch ms) | seq (u64) | count (u16)
//! then per reading: param | value (f64 bits, u64) | unit | status (u8: 0, 1, 2)
//! ```
//!
//! The signature covers every field the center stores or judges, so a changed byte anywhere
//! in a reading, its time, its station or its counter makes it fail.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::telemetry::Record;

const DOMAIN: &[u8] = b"quantrac-sig-v1\0";

/// Why a record's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The station requires signatures and the record has none.
    Unsigned,
    /// Signed, but without the `seq` the signature must cover.
    NoSeq,
    /// The signature matches none of the station's keys.
    Mismatch,
}

fn string(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

/// Writes the canonical form of `record` (with counter `seq`) into `out`.
pub fn canonical(record: &Record<'_>, seq: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(DOMAIN);
    string(out, &record.station);
    out.extend_from_slice(&record.ts.as_millis().to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    let count = u16::try_from(record.readings.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&count.to_be_bytes());
    for r in record.readings.iter().take(usize::from(count)) {
        string(out, &r.param);
        out.extend_from_slice(&r.value.to_bits().to_be_bytes());
        string(out, &r.unit);
        out.push(r.status.as_u8());
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of every length"),
    }
}

/// The signature of `record` with `key` (what a gateway computes).
pub fn sign(key: &[u8], record: &Record<'_>, seq: u64) -> [u8; 32] {
    let mut bytes = Vec::with_capacity(64 + 32 * record.readings.len());
    canonical(record, seq, &mut bytes);
    let mut m = mac(key);
    m.update(&bytes);
    m.finalize().into_bytes().into()
}

/// Checks a record against a station's keys. `Ok(true)`: signed and valid; `Ok(false)`:
/// unsigned and allowed to be; `Err`: refused. `scratch` is reused between calls.
pub fn check(
    keys: &[std::sync::Arc<[u8]>],
    required: bool,
    record: &Record<'_>,
    scratch: &mut Vec<u8>,
) -> Result<bool, Refusal> {
    let Some(sig) = &record.sig else {
        return if required {
            Err(Refusal::Unsigned)
        } else {
            Ok(false)
        };
    };
    let seq = record.seq.ok_or(Refusal::NoSeq)?;
    canonical(record, seq, scratch);
    let valid = keys.iter().any(|key| {
        let mut m = mac(key);
        m.update(scratch);
        m.verify_slice(sig).is_ok()
    });
    if valid {
        Ok(true)
    } else {
        Err(Refusal::Mismatch)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;
    use std::sync::Arc;

    use super::*;
    use crate::telemetry::{ReadingRef, Status, Timestamp};

    fn record() -> Record<'static> {
        Record {
            station: Cow::Borrowed("DN-AMATA-WW01"),
            ts: Timestamp::from_millis(1_795_662_300_000),
            seq: Some(18231),
            readings: vec![ReadingRef {
                param: Cow::Borrowed("COD"),
                value: 71.3,
                unit: Cow::Borrowed("mg/L"),
                status: Status::Measuring,
            }],
            sig: None,
        }
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    /// The test vector of docs/telemetry.md: firmware in any language can check itself.
    #[test]
    fn the_documented_test_vector_holds() {
        let mut bytes = Vec::new();
        canonical(&record(), 18231, &mut bytes);
        let hex = crate::security::token::hex(&bytes);
        assert_eq!(
            hex,
            "7175616e747261632d7369672d763100000d444e2d414d4154412d57573031000001a215d04360\
             000000000000473700010003434f444051d3333333333300046d672f4c00"
        );
        assert_eq!(
            crate::security::token::hex(&sign(KEY, &record(), 18231)),
            SIGNATURE
        );
    }

    const SIGNATURE: &str = "42b19b3b00ecb822eab2a16105520fc34a19290469926503b4a1efb8801f68f7";

    #[test]
    fn a_signed_record_passes_with_any_current_key_and_fails_when_any_field_changes() {
        let keys: Vec<Arc<[u8]>> = vec![Arc::from(&b"old key old key old"[..]), Arc::from(KEY)];
        let mut scratch = Vec::new();
        let mut signed = record();
        signed.sig = Some(sign(KEY, &signed, 18231));
        assert_eq!(check(&keys, true, &signed, &mut scratch), Ok(true));
        let changes: [fn(&mut Record<'static>); 6] = [
            |r| r.readings[0].value = 71.4,
            |r| r.readings[0].param = Cow::Borrowed("BOD5"),
            |r| r.readings[0].status = Status::Calibrating,
            |r| r.ts = Timestamp::from_millis(r.ts.as_millis() + 1),
            |r| r.seq = Some(18232),
            |r| r.station = Cow::Borrowed("DN-AMATA-WW02"),
        ];
        for change in changes {
            let mut forged = signed.clone();
            change(&mut forged);
            assert_eq!(
                check(&keys, true, &forged, &mut scratch),
                Err(Refusal::Mismatch)
            );
        }
        assert_eq!(
            check(&keys[..1], true, &signed, &mut scratch),
            Err(Refusal::Mismatch)
        );
    }

    #[test]
    fn unsigned_records_pass_only_where_signatures_are_optional() {
        let keys: Vec<Arc<[u8]>> = vec![Arc::from(KEY)];
        let mut scratch = Vec::new();
        assert_eq!(check(&keys, false, &record(), &mut scratch), Ok(false));
        assert_eq!(
            check(&keys, true, &record(), &mut scratch),
            Err(Refusal::Unsigned)
        );
        let mut no_seq = record();
        no_seq.sig = Some([0; 32]);
        no_seq.seq = None;
        assert_eq!(
            check(&keys, false, &no_seq, &mut scratch),
            Err(Refusal::NoSeq)
        );
    }
}
