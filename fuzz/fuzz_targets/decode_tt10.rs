//! Any bytes on a `telemetry/tt10` topic, `#SIG` lines included: judged line by line, never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quantrac::telemetry::tt10;

fuzz_target!(|data: &[u8]| {
    let decoded = tt10::decode(data, "DN-AMATA-WW01");
    assert!(!(decoded.records.is_empty() && decoded.errors.is_empty()));
});
