//! The public JSON form of alerts and alert events: the same in the API, on MQTT, on the
//! event stream and in webhooks. Times are RFC 3339 in the configured offset.

use chrono::FixedOffset;
use serde_json::{json, Value};

use crate::alerts::{Alert, AlertEvent};

pub fn alert(a: &Alert, offset: &FixedOffset) -> Value {
    let time = |t: crate::telemetry::Timestamp| t.to_rfc3339(offset);
    json!({
        "id": a.id,
        "station": a.station,
        "zone": a.zone,
        "param": a.param,
        "rule": a.rule,
        "kind": a.kind.as_str(),
        "severity": a.severity.as_str(),
        "state": a.state.as_str(),
        "message": a.message,
        "threshold": a.threshold,
        "unit": a.unit,
        "source": a.source,
        "first_at": time(a.first_at),
        "last_at": time(a.last_at),
        "resolved_at": a.resolved_at.map(time),
        "duration_s": a.duration_ms() / 1000,
        "first_value": a.first_value,
        "last_value": a.last_value,
        "peak_value": a.peak_value,
        "count": a.count,
        "ack": a.ack.as_ref().map(|k| json!({"by": k.by, "note": k.note, "at": time(k.at)})),
        "backfilled": a.backfilled,
        "updated_at": time(a.updated_at),
    })
}

pub fn event(e: &AlertEvent, offset: &FixedOffset) -> Value {
    json!({
        "event": e.kind.as_str(),
        "at": e.at.to_rfc3339(offset),
        "backfilled": e.backfilled,
        "alert": alert(&e.alert, offset),
    })
}
