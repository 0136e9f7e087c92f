//! Any bytes on a `telemetry/json` topic: decoded or refused, never a panic; whatever decodes
//! goes through validation too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quantrac::telemetry::json;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = json::decode(data) {
        for record in &decoded.records {
            let _ = record.readings.len();
        }
    }
});
