//! The monitor: runs the alert engine where no MQTT message drives it, and makes every
//! alert event durable before it is announced.
//!
//! Readings reach the engine through the pipeline (their events are stored with the
//! readings, and announced by ingest once durable). Everything else goes through here: the
//! clock ([`Monitor::run`]: held readings, no data, escalation by duration, reminders), the
//! periodic snapshot of rule state, and acknowledgements from the API
//! ([`Monitor::acknowledge`]).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AckError, Alert, AlertEvent, Engine};
use crate::notify::Notifier;
use crate::storage::{self, Store, WriteItem};
use crate::telemetry::Timestamp;

/// Why an acknowledgement did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AckFailure {
    #[error("no alert {0}")]
    Unknown(u64),
    #[error("alert {0} is resolved")]
    Resolved(u64),
    #[error("alert {0} is already acknowledged")]
    AlreadyAcknowledged(u64),
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

pub struct Monitor {
    engine: Arc<Mutex<Engine>>,
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
}

impl Monitor {
    pub fn new(
        engine: Arc<Mutex<Engine>>,
        store: Arc<dyn Store>,
        notifier: Arc<Notifier>,
    ) -> Monitor {
        Monitor {
            engine,
            store,
            notifier,
        }
    }

    pub fn engine(&self) -> &Arc<Mutex<Engine>> {
        &self.engine
    }

    pub fn notifier(&self) -> &Arc<Notifier> {
        &self.notifier
    }

    /// Stores the alerts of `events` (and `updates`, alerts changed without an event), waits
    /// until that is durable, then announces the events.
    pub async fn commit_and_announce(
        &self,
        events: Vec<AlertEvent>,
        updates: Vec<Alert>,
    ) -> storage::Result<()> {
        if events.is_empty() && updates.is_empty() {
            return Ok(());
        }
        let (done, durable) = crate::ack::pair();
        self.store
            .write(WriteItem {
                alerts: events
                    .iter()
                    .map(|e| e.alert.clone())
                    .chain(updates)
                    .collect(),
                done: Some(done),
                ..WriteItem::default()
            })
            .await?;
        if durable.wait().await {
            self.notifier.announce(&events);
            Ok(())
        } else {
            Err(storage::Error::Closed)
        }
    }

    /// Acknowledges alert `id`; returns it as it is now.
    pub async fn acknowledge(&self, id: u64, by: &str, note: &str) -> Result<Alert, AckFailure> {
        let outcome = self
            .engine
            .lock()
            .acknowledge(id, by, note, Timestamp::now());
        match outcome {
            Ok(event) => {
                let alert = event.alert.clone();
                self.commit_and_announce(vec![event], Vec::new()).await?;
                Ok(alert)
            }
            Err(AckError::AlreadyAcknowledged(id)) => Err(AckFailure::AlreadyAcknowledged(id)),
            Err(AckError::NotActive(id)) => match self.store.alert(id).await? {
                Some(_) => Err(AckFailure::Resolved(id)),
                None => Err(AckFailure::Unknown(id)),
            },
        }
    }

    /// Saves the rule state that changed since the last snapshot.
    pub async fn snapshot(&self) -> storage::Result<()> {
        let states = self.engine.lock().snapshot();
        if states.is_empty() {
            return Ok(());
        }
        let (done, durable) = crate::ack::pair();
        self.store
            .write(WriteItem {
                rule_states: states,
                done: Some(done),
                ..WriteItem::default()
            })
            .await?;
        if durable.wait().await {
            Ok(())
        } else {
            Err(storage::Error::Closed)
        }
    }

    /// Runs the clock and the snapshots until `stop`, then takes a last snapshot.
    pub async fn run(
        self: Arc<Self>,
        tick: Duration,
        snapshot_every: Duration,
        stop: CancellationToken,
    ) {
        let mut clock = tokio::time::interval(tick);
        clock.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshots = tokio::time::interval(snapshot_every);
        snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = clock.tick() => {
                    let mut events = Vec::new();
                    let updates = {
                        let mut engine = self.engine.lock();
                        engine.tick(Timestamp::now(), &mut events);
                        engine.take_updates()
                    };
                    if let Err(e) = self.commit_and_announce(events, updates).await {
                        tracing::error!(error = %e, "cannot store alert events of the clock");
                    }
                }
                _ = snapshots.tick() => {
                    if let Err(e) = self.snapshot().await {
                        tracing::error!(error = %e, "cannot save the alert rule state");
                    }
                }
            }
        }
        if let Err(e) = self.snapshot().await {
            tracing::error!(error = %e, "cannot save the alert rule state at shutdown");
        }
    }
}
