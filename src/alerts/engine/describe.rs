//! Building and updating alert records, and their human-readable messages.

use std::sync::Arc;

use super::super::condition::Verdict;
use super::super::rules::{Check, Rule};
use super::super::{Alert, AlertEvent, AlertState, EventKind, RuleKind, Severity};
use crate::telemetry::Timestamp;

/// An event carrying a copy of the alert as it is now.
pub(super) fn event(kind: EventKind, alert: &Alert, now: i64, backfilled: bool) -> AlertEvent {
    AlertEvent {
        kind,
        at: Timestamp::from_millis(now),
        backfilled,
        alert: alert.clone(),
    }
}

/// A new alert for a streak that qualified.
#[allow(clippy::too_many_arguments)]
pub(super) fn open(
    id: u64,
    (station, zone): (&Arc<str>, &Arc<str>),
    (param, unit): (Option<Arc<str>>, Option<Arc<str>>),
    rule: &Rule,
    verdict: &Verdict,
    (first_at, first_value, worst_value, count): (i64, f64, f64, u32),
    ts: i64,
    now: i64,
    backfilled: bool,
) -> Alert {
    let (value, threshold, source) = match verdict {
        Verdict::Exceeding {
            value,
            threshold,
            source,
            ..
        } => (
            Some(*value),
            Some(*threshold).filter(|t| t.is_finite()),
            source.clone(),
        ),
        _ => (None, None, None),
    };
    let mut alert = Alert {
        id,
        station: station.clone(),
        zone: zone.clone(),
        param,
        rule: rule.name.clone(),
        kind: rule.kind,
        severity: rule.severity,
        state: AlertState::Open,
        message: String::new(),
        threshold,
        unit,
        source: source.map(|s| s.to_string()),
        first_at: Timestamp::from_millis(first_at),
        last_at: Timestamp::from_millis(ts),
        first_value: Some(first_value).filter(|v| v.is_finite()),
        last_value: value,
        peak_value: Some(worst_value).filter(|v| v.is_finite()),
        count: u64::from(count),
        resolved_at: None,
        ack: None,
        backfilled,
        notified_at: (!backfilled).then(|| Timestamp::from_millis(now)),
        updated_at: Timestamp::from_millis(now),
    };
    alert.message = message(&alert, rule);
    alert
}

/// Another offending observation for an active alert.
pub(super) fn update(alert: &mut Alert, verdict: &Verdict, ts: i64, now: i64) {
    alert.last_at = Timestamp::from_millis(alert.last_at.as_millis().max(ts));
    alert.count += 1;
    alert.updated_at = Timestamp::from_millis(now);
    if let Verdict::Exceeding {
        value, threshold, ..
    } = verdict
    {
        alert.last_value = Some(*value);
        let beyond = |v: f64| {
            if alert.kind == RuleKind::Exceedance || alert.kind == RuleKind::Threshold {
                // Lower bounds are broken downwards.
                if v < *threshold {
                    *threshold - v
                } else {
                    v - *threshold
                }
            } else {
                v
            }
        };
        if alert.peak_value.is_none_or(|p| beyond(*value) > beyond(p)) {
            alert.peak_value = Some(*value);
        }
    }
}

/// Escalates `alert` when the rule says so (by value or by duration); the event if it did.
pub(super) fn escalate_if_due(
    alert: &mut Alert,
    rule: &Rule,
    verdict: Option<&Verdict>,
    now: i64,
    backfilled: bool,
) -> Option<AlertEvent> {
    let to = rule.escalate.as_ref()?;
    if alert.severity >= to.severity {
        return None;
    }
    let by_value = match (to.factor, verdict) {
        (
            Some(factor),
            Some(Verdict::Exceeding {
                threshold, excess, ..
            }),
        ) => threshold.is_finite() && *excess >= threshold.abs() * (factor - 1.0),
        _ => false,
    };
    let by_time = to
        .after_ms
        .is_some_and(|after| alert.last_at.as_millis() - alert.first_at.as_millis() >= after);
    if !(by_value || by_time) {
        return None;
    }
    alert.severity = to.severity;
    alert.updated_at = Timestamp::from_millis(now);
    alert.message = message(alert, rule);
    if !backfilled {
        alert.notified_at = Some(Timestamp::from_millis(now));
    }
    Some(event(EventKind::Escalated, alert, now, backfilled))
}

fn number(v: f64) -> String {
    // Up to 3 decimals, without trailing zeros.
    let text = format!("{v:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// What the alert is about, in one sentence.
fn message(alert: &Alert, rule: &Rule) -> String {
    let param = alert.param.as_deref().unwrap_or("");
    let unit = alert.unit.as_deref().unwrap_or("");
    let value = alert
        .peak_value
        .or(alert.last_value)
        .map(number)
        .unwrap_or_default();
    let threshold = alert.threshold.map(number).unwrap_or_default();
    let severity = if alert.severity == Severity::Critical {
        " (critical)"
    } else {
        ""
    };
    let text = match &rule.check {
        Check::Limit { window_ms, .. } => {
            let basis = match window_ms {
                None => "reading".to_owned(),
                Some(w) => format!("{} h mean", w / 3_600_000),
            };
            let side = if alert.peak_value.zip(alert.threshold).is_some_and(|(v, t)| v < t) {
                "below"
            } else {
                "above"
            };
            let source = alert.source.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
            format!("{param} {basis} {value} {unit} {side} the limit {threshold} {unit}{source}")
        }
        Check::Threshold { .. } => format!("{param} {value} {unit} beyond the threshold {threshold} {unit}"),
        Check::Rate { .. } => format!("{param} changed by {value} {unit}, more than the {threshold} {unit} allowed"),
        Check::Stuck { .. } => format!("{param} is stuck at {value} {unit}"),
        Check::Trend { horizon_ms, .. } => format!(
            "{param} is trending to {value} {unit}, above the limit {threshold} {unit}, within {} min",
            horizon_ms / 60_000
        ),
        Check::DeviceFault => format!("the {param} analyser reports a fault (status 02)"),
        Check::CalibrationOverrun { .. } => {
            format!("the {param} analyser has been calibrating (status 01) for over {threshold} min")
        }
        Check::NoData { .. } => format!("no data from {} for over {threshold} min", alert.station),
        Check::GatewayOffline => format!("the gateway of {} announced it is offline", alert.station),
    };
    format!("{}{severity}", text.replace("  ", " ").trim_end())
}
