//! The three wire encodings of `docs/telemetry.md` and the MQTT topics they travel on.
//!
//! Each encoding lives in its own file because each is a separate contract with device
//! firmware: `json` for readability, `binary` (bincode) for low-bandwidth links, and
//! `tt10` for loggers that already produce Circular 10/2021 files. [`encode`] is the single
//! entry point so that callers pick an encoding as data ([`Encoding`]), never as code.

mod binary;
mod json;
mod topic;
mod tt10;

use std::fmt;
use std::str::FromStr;

use crate::record::Record;

pub use topic::{status_topic, telemetry_topic};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The text does not name an encoding.
    #[error("unknown encoding `{0}` (expected json, bincode or tt10)")]
    UnknownEncoding(String),
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A telemetry encoding; its name is also the last segment of the telemetry topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// UTF-8 JSON: one object, or an array of objects for several records.
    Json,
    /// The versioned binary layout (bincode 2 `standard()`), about half the size of JSON.
    Bincode,
    /// The tab-separated body of a Circular 10/2021 data-logger file.
    Tt10,
}

impl Encoding {
    /// Every encoding, in a fixed order (used to spread stations over encodings).
    pub const ALL: [Encoding; 3] = [Encoding::Json, Encoding::Bincode, Encoding::Tt10];

    /// The topic suffix and command-line name: `json`, `bincode` or `tt10`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Bincode => "bincode",
            Encoding::Tt10 => "tt10",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Encoding {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Encoding::Json),
            "bincode" => Ok(Encoding::Bincode),
            "tt10" => Ok(Encoding::Tt10),
            _ => Err(Error::UnknownEncoding(s.to_owned())),
        }
    }
}

/// Encodes `records` (all of one station, oldest first) as one message payload.
///
/// - `Json`: a single object when there is exactly one record, otherwise an array.
/// - `Bincode`: version byte `0x01` followed by the records, byte for byte as documented.
/// - `Tt10`: one line per reading, Vietnam local time, `\n` line ends.
pub fn encode(records: &[Record], encoding: Encoding) -> Vec<u8> {
    encode_signed(records, encoding, None)
}

/// As [`encode`], each record signed with `key` when one is given (`docs/telemetry.md`,
/// "Signed records"): JSON `sig`, bincode format version 2, tt10 `#SIG` lines. A signed
/// record needs a `seq`; records without one are sent unsigned.
pub fn encode_signed(records: &[Record], encoding: Encoding, key: Option<&[u8]>) -> Vec<u8> {
    match encoding {
        Encoding::Json => json::encode(records, key),
        Encoding::Bincode => binary::encode(records, key),
        Encoding::Tt10 => tt10::encode(records, key),
    }
}

/// Unwraps the result of serializing plain structs into memory.
///
/// Serializing our wire structs into a `Vec` cannot fail (no I/O, no maps with non-string
/// keys, sequences of known length). Should it ever fail, that is a bug in this crate: it is
/// logged and yields an empty payload, which the receiver rejects as malformed, rather than a
/// panic inside a device's publish loop.
fn in_memory<E: fmt::Display>(result: std::result::Result<Vec<u8>, E>, what: &str) -> Vec<u8> {
    match result {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, "cannot serialize {what} payload (bug)");
            debug_assert!(false, "cannot serialize {what} payload: {error}");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_parse_from_their_names_and_print_them_back() {
        for encoding in Encoding::ALL {
            assert_eq!(
                encoding.to_string().parse::<Encoding>().ok(),
                Some(encoding)
            );
        }
        assert_eq!("JSON".parse::<Encoding>().ok(), Some(Encoding::Json));
        assert!("xml".parse::<Encoding>().is_err());
    }
}
