//! Alerts: the rules, the engine that evaluates them as data arrives, and the alerts they
//! raise.
//!
//! - [`rules`]: the rule book (`seeds/rules.toml`) and the exceedance rules made from limit
//!   profiles, compiled per station parameter ([`rules::compile`]).
//! - [`condition`]: what each rule kind looks at (a reading, a rolling mean, a trend, ...)
//!   and its verdict: exceeding, in the hysteresis band, clear, or not enough data.
//! - [`tracker`]: turns verdicts into an alert's lifecycle: minimum count or duration before
//!   opening, hysteresis before resolving, escalation.
//! - [`engine`]: the state machine over all stations: event-time ordering, lateness,
//!   backfill, time-based rules on the clock tick, acknowledgements, snapshots. Pure: no
//!   I/O and no clock of its own, so every behaviour is tested from data
//!   (`tests/alert_cases/`) and by property tests.
//!
//! Notifications (MQTT, webhooks, server-sent events) are in [`crate::notify`].

pub mod condition;
pub mod engine;
pub mod rules;
pub mod tracker;
mod window;

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use engine::{AckError, Engine, EngineConfig};
pub use rules::RuleBook;

use crate::telemetry::Timestamp;

/// How urgent an alert is. Ordered: `Info < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A legal limit of the station's profile (instantaneous or averaged), made automatically.
    Exceedance,
    /// A fixed threshold: above, below, or outside a range.
    Threshold,
    /// The value changes faster than allowed between consecutive readings.
    RateOfChange,
    /// The sensor repeats the same value (or varies less than a tolerance) over a window.
    Stuck,
    /// The trend over a window is projected to cross the limit within a horizon.
    EarlyWarning,
    /// The analyser reports a fault (status `02`).
    DeviceFault,
    /// The analyser has been calibrating (status `01`) for too long.
    CalibrationOverrun,
    /// Nothing valid from the station for k x its expected interval (telemetry time).
    NoData,
    /// The gateway announced `offline` on its status topic.
    GatewayOffline,
}

impl RuleKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            RuleKind::Exceedance => "exceedance",
            RuleKind::Threshold => "threshold",
            RuleKind::RateOfChange => "rate_of_change",
            RuleKind::Stuck => "stuck",
            RuleKind::EarlyWarning => "early_warning",
            RuleKind::DeviceFault => "device_fault",
            RuleKind::CalibrationOverrun => "calibration_overrun",
            RuleKind::NoData => "no_data",
            RuleKind::GatewayOffline => "gateway_offline",
        }
    }

    /// Station-level kinds have no parameter.
    pub const fn is_station_level(self) -> bool {
        matches!(self, RuleKind::NoData | RuleKind::GatewayOffline)
    }
}

impl fmt::Display for RuleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertState {
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertState::Open => "open",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(text: &str) -> Option<AlertState> {
        match text {
            "open" => Some(AlertState::Open),
            "acknowledged" => Some(AlertState::Acknowledged),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }

    /// Open or acknowledged: the condition has not cleared yet.
    pub const fn is_active(self) -> bool {
        !matches!(self, AlertState::Resolved)
    }
}

/// Who acknowledged an alert, when, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub by: String,
    pub note: String,
    pub at: Timestamp,
}

/// One alert: at most one is active per (station, parameter, rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: u64,
    pub station: Arc<str>,
    pub zone: Arc<str>,
    /// `None` for station-level rules (no data, gateway offline).
    pub param: Option<Arc<str>>,
    /// The rule's name (`limit-inst`, `limit-24h`, `no-data`, ...).
    pub rule: Arc<str>,
    pub kind: RuleKind,
    pub severity: Severity,
    pub state: AlertState,
    /// What happened, for humans.
    pub message: String,
    /// The limit or threshold that was broken, in `unit`.
    pub threshold: Option<f64>,
    pub unit: Option<Arc<str>>,
    /// Where the threshold comes from (the limit profile row's source), if anywhere.
    pub source: Option<String>,
    /// Event time of the first and of the latest offending observation.
    pub first_at: Timestamp,
    pub last_at: Timestamp,
    pub first_value: Option<f64>,
    pub last_value: Option<f64>,
    /// The value furthest beyond the threshold.
    pub peak_value: Option<f64>,
    /// Offending observations (readings, or clock ticks for time-based rules).
    pub count: u64,
    /// Event time at which the condition cleared.
    pub resolved_at: Option<Timestamp>,
    pub ack: Option<Ack>,
    /// Raised while evaluating a backlog (old data): recorded, not announced as new.
    pub backfilled: bool,
    /// Last time people were told about it (opening, escalation or reminder), if ever.
    pub notified_at: Option<Timestamp>,
    /// Processing time of the last change.
    pub updated_at: Timestamp,
}

impl Alert {
    /// How long the condition lasted (so far), in event time.
    pub fn duration_ms(&self) -> i64 {
        self.resolved_at.unwrap_or(self.last_at).as_millis() - self.first_at.as_millis()
    }
}

/// What happened to an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    Opened,
    Escalated,
    Acknowledged,
    Resolved,
    /// Still open and unacknowledged after the reminder interval, or open when live data
    /// caught up with a backlog that raised it.
    Reminder,
}

impl EventKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Opened => "opened",
            EventKind::Escalated => "escalated",
            EventKind::Acknowledged => "acknowledged",
            EventKind::Resolved => "resolved",
            EventKind::Reminder => "reminder",
        }
    }
}

/// An alert event, with the alert as it is after the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub kind: EventKind,
    /// Processing time of the event.
    pub at: Timestamp,
    /// Raised by old data (a backlog): for the record, not a new announcement.
    pub backfilled: bool,
    pub alert: Alert,
}

impl AlertEvent {
    /// Whether people should be told (webhooks): live events, and acknowledgements.
    pub fn is_announcement(&self) -> bool {
        !self.backfilled
    }
}
