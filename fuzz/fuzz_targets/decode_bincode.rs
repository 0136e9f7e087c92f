//! Any bytes on a `telemetry/bincode` topic (versions 1 and 2): decoded or refused, never a
//! panic and never an allocation beyond the decoder's budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quantrac::telemetry::bincode;

fuzz_target!(|data: &[u8]| {
    let _ = bincode::decode(data);
});
