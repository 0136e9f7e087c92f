//! Notifications: every alert event goes, once it is durable, to
//!
//! - the **event stream** (`GET /api/v1/alerts/stream`, server-sent events), through a
//!   broadcast channel each client reads at its own pace ([`Notifier::subscribe`]);
//! - the **MQTT alert topic** `quantrac/v1/alerts/{zone}/{station}` ([`mqtt`]), QoS 1;
//! - **webhooks** ([`webhook`]), routed by zone and severity, retried with backoff.
//!
//! # Backpressure
//! Announcing never blocks the pipeline: each sink has a bounded queue, and an event that
//! does not fit is dropped *for that sink* and counted (`quantrac_notifications_dropped_total`,
//! and the webhook's failure list). Alerts themselves are never lost: they are stored before
//! they are announced, and the API lists them.

pub mod json;
pub mod mqtt;
pub mod webhook;

use std::sync::Arc;

use chrono::FixedOffset;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::alerts::AlertEvent;
use crate::metrics as m;
pub use webhook::WebhookStatus;

/// Fans alert events out to every sink.
pub struct Notifier {
    stream: broadcast::Sender<Arc<AlertEvent>>,
    mqtt: Option<mpsc::Sender<Arc<AlertEvent>>>,
    webhooks: Vec<webhook::Route>,
    offset: FixedOffset,
    /// Ends event streams at shutdown (their HTTP responses never end by themselves).
    closing: CancellationToken,
}

impl Notifier {
    pub fn new(
        stream_buffer: usize,
        mqtt: Option<mpsc::Sender<Arc<AlertEvent>>>,
        webhooks: Vec<webhook::Route>,
        offset: FixedOffset,
    ) -> Notifier {
        Notifier {
            stream: broadcast::Sender::new(stream_buffer),
            mqtt,
            webhooks,
            offset,
            closing: CancellationToken::new(),
        }
    }

    /// Hands durable events to every sink, without waiting.
    pub fn announce(&self, events: &[AlertEvent]) {
        for event in events {
            let event = Arc::new(event.clone());
            metrics::counter!(m::ALERT_EVENTS_TOTAL,
                m::LABEL_KIND => event.alert.kind.as_str(),
                m::LABEL_SEVERITY => event.alert.severity.as_str(),
                m::LABEL_EVENT => event.kind.as_str())
            .increment(1);
            // No subscriber is not an error.
            let _ = self.stream.send(event.clone());
            if let Some(tx) = &self.mqtt {
                if tx.try_send(event.clone()).is_err() {
                    metrics::counter!(m::NOTIFICATIONS_DROPPED_TOTAL, m::LABEL_SINK => "mqtt")
                        .increment(1);
                    tracing::warn!(
                        alert = event.alert.id,
                        "MQTT alert queue full: event not published"
                    );
                }
            }
            for hook in &self.webhooks {
                hook.offer(&event);
            }
        }
    }

    /// A new reader of the event stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AlertEvent>> {
        self.stream.subscribe()
    }

    /// Resolves when the notifier is shutting down.
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    pub fn close(&self) {
        self.closing.cancel();
    }

    pub fn offset(&self) -> &FixedOffset {
        &self.offset
    }

    pub fn webhooks(&self) -> Vec<WebhookStatus> {
        self.webhooks.iter().map(webhook::Route::status).collect()
    }
}
