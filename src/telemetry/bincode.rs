//! The bincode encoding: a format-version byte, then records in bincode 2's `standard()`
//! layout (little-endian, variable-length integers). `docs/telemetry.md` fixes the layout
//! byte for byte, so that firmware in any language can produce it without the crate.
//!
//! The decoder implements [`BorrowDecode`] by hand instead of going through serde: it borrows
//! strings straight from the payload, maps the status byte with a precise error, and keeps
//! the layout visible here. A byte budget ([`ALLOCATION_LIMIT`]) stops a forged length prefix
//! from asking for gigabytes.

use std::borrow::Cow;

use ::bincode::de::{BorrowDecode, BorrowDecoder};
use ::bincode::error::DecodeError as WireError;

use super::{DecodeError, Decoded, ReadingRef, Record, Status, Timestamp};

/// Format version 1: records without signatures.
pub const FORMAT_VERSION: u8 = 1;
/// Format version 2: each record followed by an optional 32-byte signature.
pub const FORMAT_VERSION_SIGNED: u8 = 2;

/// Upper bound on the memory a single message may make the decoder reserve.
pub const ALLOCATION_LIMIT: usize = 64 * 1024 * 1024;

/// Decodes a bincode payload (version byte included).
///
/// Records are read one after another. Bincode records carry no length, so after one that
/// cannot be read the next cannot be found: the records before it are kept, and one
/// [`DecodeError::BincodeRecord`] stands for it and the rest (the whole payload is kept in
/// the dead-letter store). Bytes after the last record are reported the same way, beside
/// the records. Only a payload whose version or record count cannot be read fails whole.
pub fn decode(payload: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    let (&version, body) = payload.split_first().ok_or(DecodeError::Empty)?;
    let config = ::bincode::config::standard().with_limit::<ALLOCATION_LIMIT>();
    let (backlog, read): (Backlog<'_>, usize) = match version {
        FORMAT_VERSION => ::bincode::borrow_decode_from_slice::<Read<'_, false>, _>(body, config)
            .map(|(r, n)| (r.0, n)),
        FORMAT_VERSION_SIGNED => {
            ::bincode::borrow_decode_from_slice::<Read<'_, true>, _>(body, config)
                .map(|(r, n)| (r.0, n))
        }
        other => return Err(DecodeError::BincodeVersion(other)),
    }
    .map_err(|e| DecodeError::Bincode(describe(e)))?;
    let mut errors = Vec::new();
    match backlog.failure {
        Some((index, error)) => errors.push(DecodeError::BincodeRecord {
            index,
            count: backlog.count,
            problem: describe(error),
        }),
        None if read != body.len() => errors.push(DecodeError::TrailingBytes(body.len() - read)),
        None => {}
    }
    Ok(Decoded {
        records: backlog.records,
        errors,
    })
}

fn describe(error: WireError) -> String {
    match error {
        WireError::UnexpectedEnd { additional } => {
            format!("message ends {additional} byte(s) early")
        }
        WireError::LimitExceeded => {
            "a length prefix asks for more than the message can hold".into()
        }
        WireError::Utf8 { .. } => "a string is not valid UTF-8".into(),
        WireError::OtherString(text) => text,
        WireError::Other(text) => text.to_owned(),
        other => other.to_string(),
    }
}

/// The records of a message, read up to the first that fails.
struct Backlog<'de> {
    records: Vec<Record<'de>>,
    count: u64,
    /// The index of the record that could not be read, and why.
    failure: Option<(u64, WireError)>,
}

/// Reads `count:varint record{count}` into a [`Backlog`] (`SIGNED`: format version 2
/// records). Fails only when the count itself cannot be read.
struct Read<'de, const SIGNED: bool>(Backlog<'de>);

/// Records reserved up front at most (the count is untrusted until the records are read).
const RESERVE_MAX: u64 = 1024;

impl<'de, C, const SIGNED: bool> BorrowDecode<'de, C> for Read<'de, SIGNED> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(d: &mut D) -> Result<Self, WireError> {
        let count: u64 = BorrowDecode::borrow_decode(d)?;
        let mut records = Vec::with_capacity(usize::try_from(count.min(RESERVE_MAX)).unwrap_or(0));
        let mut failure = None;
        for index in 0..count {
            let record = if SIGNED {
                <Signed<'de> as BorrowDecode<'de, C>>::borrow_decode(d).map(|s| s.0)
            } else {
                <Record<'de> as BorrowDecode<'de, C>>::borrow_decode(d)
            };
            match record {
                Ok(r) => records.push(r),
                Err(e) => {
                    failure = Some((index, e));
                    break;
                }
            }
        }
        Ok(Read(Backlog {
            records,
            count,
            failure,
        }))
    }
}

/// A version 2 record: a version 1 record, then `Option<[u8; 32]>` (tag `0`, or tag `1` and
/// the 32 signature bytes).
struct Signed<'de>(Record<'de>);

impl<'de, C> BorrowDecode<'de, C> for Signed<'de> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(d: &mut D) -> Result<Self, WireError> {
        let mut record: Record<'de> = BorrowDecode::borrow_decode(d)?;
        record.sig = BorrowDecode::borrow_decode(d)?;
        Ok(Signed(record))
    }
}

impl<'de, C> BorrowDecode<'de, C> for Record<'de> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(d: &mut D) -> Result<Self, WireError> {
        let station: &'de str = BorrowDecode::borrow_decode(d)?;
        let ts: i64 = BorrowDecode::borrow_decode(d)?;
        let seq: Option<u64> = BorrowDecode::borrow_decode(d)?;
        let readings: Vec<ReadingRef<'de>> = BorrowDecode::borrow_decode(d)?;
        Ok(Record {
            station: Cow::Borrowed(station),
            ts: Timestamp::from_millis(ts),
            seq,
            readings,
            sig: None,
        })
    }
}

impl<'de, C> BorrowDecode<'de, C> for ReadingRef<'de> {
    fn borrow_decode<D: BorrowDecoder<'de, Context = C>>(d: &mut D) -> Result<Self, WireError> {
        let param: &'de str = BorrowDecode::borrow_decode(d)?;
        let value: f64 = BorrowDecode::borrow_decode(d)?;
        let unit: &'de str = BorrowDecode::borrow_decode(d)?;
        let code: u8 = BorrowDecode::borrow_decode(d)?;
        let status = Status::from_u8(code).ok_or_else(|| {
            WireError::OtherString(format!("status byte must be 0, 1 or 2, found {code}"))
        })?;
        Ok(ReadingRef {
            param: Cow::Borrowed(param),
            value,
            unit: Cow::Borrowed(unit),
            status,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// Parses the hex dumps of `docs/telemetry.md`.
    pub(crate) fn hex(text: &str) -> Vec<u8> {
        text.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    pub(crate) const VECTOR_1: &str = "01 01 0d 44 4e 2d 41 4d 41 54 41 2d 57 57 30 31 fd c0 86 a0 2b 44 03 00 00 01 fb 37 47 02 03
        43 4f 44 33 33 33 33 33 d3 51 40 04 6d 67 2f 4c 00 02 70 48 cd cc cc cc cc cc 1c 40 02 70 48
        00";

    pub(crate) const VECTOR_2: &str = "01 02 0c 42 4e 2d 56 53 49 50 2d 41 51 30 31 fd c0 86 a0 2b 44 03 00 00 00 01 05 50 4d 32 2e
        35 00 00 00 00 00 c0 41 40 06 75 67 2f 4e 6d 33 01 0c 42 4e 2d 56 53 49 50 2d 41 51 30 31 fd
        80 ae a9 2b 44 03 00 00 00 01 05 50 4d 32 2e 35 00 00 00 00 00 00 42 40 06 75 67 2f 4e 6d 33
        02";

    #[test]
    fn the_first_documented_vector_decodes_to_its_record() {
        let bytes = hex(VECTOR_1);
        assert_eq!(bytes.len(), 63);
        let d = decode(&bytes).unwrap();
        assert_eq!(d.records.len(), 1);
        let r = &d.records[0];
        assert_eq!(r.station, "DN-AMATA-WW01");
        assert_eq!(r.ts.as_millis(), 1_795_662_300_000);
        assert_eq!(r.seq, Some(18231));
        assert_eq!(r.readings.len(), 2);
        assert_eq!((&*r.readings[0].param, r.readings[0].value), ("COD", 71.3));
        assert_eq!(&*r.readings[0].unit, "mg/L");
        assert_eq!((&*r.readings[1].param, r.readings[1].value), ("pH", 7.2));
        assert_eq!(r.readings[1].status, Status::Measuring);
    }

    #[test]
    fn the_second_documented_vector_is_a_backlog_without_seq() {
        let bytes = hex(VECTOR_2);
        assert_eq!(bytes.len(), 94);
        let d = decode(&bytes).unwrap();
        assert_eq!(d.records.len(), 2);
        assert_eq!(d.records[0].seq, None);
        assert_eq!(d.records[0].readings[0].status, Status::Calibrating);
        assert_eq!(d.records[1].ts.as_millis(), 1_795_662_600_000);
        assert_eq!(d.records[1].readings[0].value, 36.0);
        assert_eq!(d.records[1].readings[0].status, Status::DeviceError);
    }

    #[test]
    fn a_wrong_version_byte_is_named() {
        let mut bytes = hex(VECTOR_1);
        bytes[0] = 3;
        assert_eq!(decode(&bytes).unwrap_err(), DecodeError::BincodeVersion(3));
    }

    #[test]
    fn truncation_trailing_bytes_and_bad_status_are_malformed() {
        let bytes = hex(VECTOR_1);
        let cut = decode(&bytes[..40]).unwrap();
        assert!(cut.records.is_empty());
        assert!(matches!(
            cut.errors[..],
            [DecodeError::BincodeRecord {
                index: 0,
                count: 1,
                ..
            }]
        ));
        let mut longer = bytes.clone();
        longer.push(0);
        let d = decode(&longer).unwrap();
        assert_eq!(d.errors, [DecodeError::TrailingBytes(1)]);
        assert_eq!(d.records.len(), 1, "the record before them is whole");
        let mut bad_status = bytes.clone();
        *bad_status.last_mut().unwrap() = 7;
        let d = decode(&bad_status).unwrap();
        assert!(d.records.is_empty());
        let err = d.errors[0].to_string();
        assert!(err.starts_with("record 0 of 1: status byte"), "{err}");
        assert_eq!(decode(&[]).unwrap_err(), DecodeError::Empty);
    }

    #[test]
    fn a_forged_huge_length_is_refused_without_allocating_it() {
        // version 1, record count 2^60.
        let mut bytes = vec![1u8, 0xfd];
        bytes.extend_from_slice(&(1u64 << 60).to_le_bytes());
        let d = decode(&bytes).unwrap();
        assert!(d.records.is_empty());
        assert!(matches!(
            d.errors[..],
            [DecodeError::BincodeRecord { index: 0, .. }]
        ));
        // A count that cannot be read at all fails the whole payload.
        assert!(matches!(
            decode(&[1u8, 0xfd, 1]).unwrap_err(),
            DecodeError::Bincode(_)
        ));
    }

    #[test]
    fn the_records_before_an_unreadable_one_are_kept() {
        // The second vector holds two records; damage the second one's status byte.
        let mut bytes = hex(VECTOR_2);
        *bytes.last_mut().unwrap() = 9;
        let d = decode(&bytes).unwrap();
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.records[0].readings[0].status, Status::Calibrating);
        let err = d.errors[0].to_string();
        assert!(
            err.starts_with("record 1 of 2: status byte must be"),
            "{err}"
        );
    }
}
