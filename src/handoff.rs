//! Handing one message to the store and learning when it is durable: the step every device
//! source shares between the pipeline and its reply to the device.
//!
//! ```text
//! topic + payload ──pipeline──▶ WriteItem (+ Durable) ──▶ store
//!                                  events ──▶ held until durable ──▶ notifiers
//! ```
//!
//! [`submit`] runs the [`Pipeline`] and queues the result with the store (waiting while the
//! store's queue is full: backpressure reaches the source); [`Handoff::settle`] waits until
//! the store confirms it and only then announces the alert events it raised. A source
//! answers its device (226 for FTP, the moved file for the watched directory) only after
//! `settle` returned true. The MQTT sources (the device endpoint, ingest from an external
//! broker) keep their handoffs in arrival order and wait on the oldest
//! ([`Handoff::durable`]): MQTT acknowledgements go out in order.

use crate::ack::{self, DurableWait};
use crate::alerts::AlertEvent;
use crate::notify::Notifier;
use crate::pipeline::{Pipeline, Processed};
use crate::quarantine::Rejected;
use crate::storage::{self, Store, WriteItem};
use crate::telemetry::Timestamp;

/// A message queued with the store, not yet known to be durable.
#[derive(Debug)]
pub struct Handoff {
    durable: DurableWait,
    events: Vec<AlertEvent>,
    /// Readings the pipeline accepted.
    pub accepted: usize,
    /// Rejections (readings, records, elements or lines, or the whole message) it produced,
    /// all kept in one quarantine entry.
    pub rejected: usize,
    /// The first rejection's reason code and detail, to tell the device.
    pub first_rejection: Option<String>,
}

/// Runs the pipeline on `payload` received on `topic` at `now`, and queues the outcome with
/// the store (a rejected payload goes whole to the dead-letter store, in the same commit).
pub async fn submit(
    pipeline: &Pipeline,
    store: &dyn Store,
    topic: &str,
    payload: &[u8],
    now: Timestamp,
) -> Result<Handoff, storage::Error> {
    let Processed { item, events } = pipeline.process(topic, payload, now);
    queue(store, item, events).await
}

/// Queues a rejection decided before the pipeline (a source's own checks: file name,
/// rights, size), so that it is quarantined durably like the pipeline's.
pub async fn quarantine(store: &dyn Store, rejected: Rejected) -> Result<Handoff, storage::Error> {
    let item = WriteItem {
        rejected: Some(rejected),
        ..WriteItem::default()
    };
    queue(store, item, Vec::new()).await
}

async fn queue(
    store: &dyn Store,
    mut item: WriteItem,
    events: Vec<AlertEvent>,
) -> Result<Handoff, storage::Error> {
    let (done, durable) = ack::pair();
    item.done = Some(done);
    let accepted = item.readings.len();
    let (rejected, first_rejection) = match &item.rejected {
        Some(r) => (
            usize::try_from(r.total()).unwrap_or(usize::MAX),
            r.first()
                .map(|first| format!("{}: {}", first.reason.code(), first.detail)),
        ),
        None => (0, None),
    };
    store.write(item).await?;
    Ok(Handoff {
        durable,
        events,
        accepted,
        rejected,
        first_rejection,
    })
}

impl Handoff {
    /// As [`Handoff::settle`] without announcing, and cancel-safe (for `select!` loops that
    /// wait on the oldest of several): true once durable, false if given up. Call it until
    /// it answers, and not after.
    pub async fn durable(&mut self) -> bool {
        self.durable.wait_mut().await
    }

    /// Announces the alert events this message raised (once [`Handoff::durable`] said true).
    pub fn announce(&self, notifier: &Notifier) {
        notifier.announce(&self.events);
    }

    /// Whether the first rejection is of `reason`.
    pub fn first_rejection_is(&self, reason: crate::quarantine::Reason) -> bool {
        self.first_rejection
            .as_deref()
            .is_some_and(|r| r.split(':').next() == Some(reason.code()))
    }

    /// Waits until the store has the message durably (true) or gave it up (false); announces
    /// its alert events once durable.
    pub async fn settle(self, notifier: &Notifier) -> bool {
        let durable = self.durable.wait().await;
        if durable {
            notifier.announce(&self.events);
        }
        durable
    }
}
