//! Webhooks: each alert event that matches a webhook's zones and severity is POSTed to it as
//! JSON, in order, retried with exponential backoff. Each webhook has its own bounded queue
//! and task, so a slow or dead endpoint delays only itself; what cannot be queued or
//! delivered is counted and listed (`GET /api/v1/alerts/webhooks`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::FixedOffset;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::alerts::AlertEvent;
use crate::config::{DeliveryConfig, WebhookConfig};
use crate::metrics as m;
use crate::telemetry::Timestamp;

/// Failures kept per webhook for the API.
const RECENT_FAILURES: usize = 50;

/// A delivery that did not happen.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub at: Timestamp,
    pub alert: u64,
    pub event: &'static str,
    pub attempts: u32,
    pub error: String,
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    recent: Mutex<VecDeque<Failure>>,
}

impl Counters {
    fn fail(&self, failure: Failure) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::WEBHOOK_FAILURES_TOTAL).increment(1);
        tracing::warn!(alert = failure.alert, error = %failure.error, attempts = failure.attempts, "webhook delivery failed");
        let mut recent = self.recent.lock();
        if recent.len() == RECENT_FAILURES {
            recent.pop_front();
        }
        recent.push_back(failure);
    }
}

/// What the API shows of a webhook.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookStatus {
    pub url: String,
    pub zones: Vec<String>,
    pub min_severity: &'static str,
    pub delivered: u64,
    pub failed: u64,
    pub queued: usize,
    pub recent_failures: Vec<Failure>,
}

/// A webhook's routing and queue.
pub struct Route {
    config: WebhookConfig,
    queue: mpsc::Sender<Arc<AlertEvent>>,
    capacity: usize,
    counters: Arc<Counters>,
}

impl Route {
    /// Whether the event is for this webhook.
    pub fn wants(&self, event: &AlertEvent) -> bool {
        let a = &event.alert;
        (self.config.zones.is_empty() || self.config.zones.iter().any(|z| **z == *a.zone))
            && a.severity >= self.config.min_severity
            && (!event.backfilled || self.config.include_backfilled)
    }

    pub fn offer(&self, event: &Arc<AlertEvent>) {
        if !self.wants(event) {
            return;
        }
        if self.queue.try_send(event.clone()).is_err() {
            metrics::counter!(m::NOTIFICATIONS_DROPPED_TOTAL, m::LABEL_SINK => "webhook")
                .increment(1);
            self.counters.fail(Failure {
                at: Timestamp::now(),
                alert: event.alert.id,
                event: event.kind.as_str(),
                attempts: 0,
                error: "queue full: the endpoint is too slow or down".into(),
            });
        }
    }

    pub fn status(&self) -> WebhookStatus {
        WebhookStatus {
            url: self.config.url.clone(),
            zones: self.config.zones.clone(),
            min_severity: self.config.min_severity.as_str(),
            delivered: self.counters.delivered.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            queued: self.capacity - self.queue.capacity(),
            recent_failures: self.counters.recent.lock().iter().cloned().collect(),
        }
    }
}

/// Builds the HTTP client every webhook shares (rustls with the ring provider).
pub fn client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .user_agent(concat!("quantrac/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Starts the delivery task of one webhook.
pub fn spawn(
    config: WebhookConfig,
    delivery: &DeliveryConfig,
    http: reqwest::Client,
    offset: FixedOffset,
    stop: CancellationToken,
) -> (Route, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Arc<AlertEvent>>(delivery.queue_capacity);
    let counters = Arc::new(Counters::default());
    let route = Route {
        config: config.clone(),
        queue: tx,
        capacity: delivery.queue_capacity,
        counters: counters.clone(),
    };
    let delivery = delivery.clone();
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                e = rx.recv() => e,
                () = stop.cancelled() => None,
            };
            let Some(event) = event else { break };
            let body = super::json::event(&event, &offset);
            let mut backoff = delivery.backoff_min;
            let mut attempt = 0;
            loop {
                attempt += 1;
                let outcome = http.post(&config.url).json(&body).send().await;
                let error = match outcome {
                    Ok(r) if r.status().is_success() => {
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Ok(r) => format!("HTTP {}", r.status()),
                    Err(e) => e.to_string(),
                };
                if attempt >= delivery.max_attempts || stop.is_cancelled() {
                    counters.fail(Failure {
                        at: Timestamp::now(),
                        alert: event.alert.id,
                        event: event.kind.as_str(),
                        attempts: attempt,
                        error,
                    });
                    break;
                }
                tracing::debug!(url = %config.url, attempt, error = %error, retry_in = ?backoff, "webhook attempt failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => {}
                }
                backoff = (backoff * 2).min(delivery.backoff_max);
            }
        }
    });
    (route, task)
}
