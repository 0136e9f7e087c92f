//! Any query string given to the readings API's parameter parser: a typed value or a 400,
//! never a panic (times, ranges, buckets, limits, statuses, cursors).
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use quantrac::api::params::{self, Params};
use quantrac::telemetry::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut p) = Params::parse(Some(query)) else {
        return;
    };
    let offset = chrono::FixedOffset::east_opt(7 * 3600).unwrap();
    let now = Timestamp::from_millis(1_795_662_300_000);
    let _ = params::range(
        &mut p,
        &offset,
        now,
        Duration::from_secs(86_400),
        Duration::from_secs(86_400 * 366),
    );
    if let Some(b) = p.take("bucket") {
        let _ = params::bucket(&b);
    }
    if let Some(l) = p.take("limit") {
        let _ = params::bounded("limit", &l, 10_000);
    }
    if let Some(s) = p.take("status") {
        let _ = params::status(&s);
    }
    if let Some(c) = p.take("cursor") {
        let _ = params::decode_reading_cursor(&c);
        let _ = params::decode_id_cursor(&c);
    }
    let _ = p.finish();
});
