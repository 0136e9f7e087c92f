//! Ingest: quantrac's MQTT subscription, with acknowledgements released end to end.
//!
//! Three tasks, connected by bounded channels:
//!
//! ```text
//!  event loop ──Inbound──▶ worker ──WriteItem──▶ store (writer thread)
//!  (poll only)             (pipeline,  │                 │ confirms Durable after commit
//!                           alerts)    └──Pending──▶ releaser ──PUBACK──▶ broker
//!                                                        └──alert events──▶ notifiers
//! ```
//!
//! - The **event loop** task only polls rumqttc (keep-alives, reconnects) and forwards
//!   publishes; it never waits on the store.
//! - The **worker** runs the [`Pipeline`] and queues the result with the store.
//! - The **releaser** waits for each message's durability, in arrival order, and only then
//!   sends its PUBACK (`rumqttc` manual acks) and announces the alert events the message
//!   raised. MQTT requires PUBACKs in order; the store commits in order, so waiting on the
//!   oldest first costs nothing.
//!
//! # Backpressure
//! Nothing is dropped. Acknowledgements wait for the store, and the broker sends at most its
//! QoS 1 window (inflight) of unacknowledged messages: that window, not quantrac, bounds what
//! is in memory, and the broker keeps the rest. The inbound queue (`mqtt.queue_capacity`)
//! must hold the whole window so that the event loop never waits (keep-alives go on while
//! the store is slow); if the broker sends more, the event loop waits as a last resort.
//!
//! # Reconnects
//! The session is persistent (clean session off, fixed client id): while quantrac is away the
//! broker keeps its QoS 1 messages. Each connection has an epoch; acknowledgements of messages
//! received on an earlier connection are withheld (the broker delivers those again, and the
//! store stores them once), so a stale packet id can never acknowledge a different message.
//!
//! # Stopping
//! Messages already received are stored and acknowledged. The rest stays with the broker,
//! which keeps it for the persistent session, unless the broker is the embedded one: it ends
//! with the process, so ingest first drains it. The guard's gate is closed by then (no device
//! publishes any more, [`crate::mqtt::gate`]); ingest publishes a fence to itself on each of
//! its subscriptions ([`topic::fences`]) and goes on until every fence is back, at most
//! [`DRAIN_LIMIT`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, Outgoing, Packet, Publish, QoS,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ack::{self, DurableWait};
use crate::alerts::AlertEvent;
use crate::config::{BrokerAddress, MqttConfig};
use crate::metrics as m;
use crate::mqtt::gate::Gate;
use crate::mqtt::{self, Session};
use crate::notify::Notifier;
use crate::pipeline::{Pipeline, Processed};
use crate::storage::Store;
use crate::telemetry::{topic, Timestamp};

pub use crate::mqtt::Error;

/// How often ingest checks whether it is idle (see [`Gate::resync`]).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How long a stop waits for the embedded broker's fences.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// Connection state shown by `/readyz`, and progress signals.
#[derive(Debug)]
pub struct IngestStatus {
    connected: AtomicBool,
    /// Messages taken from the broker (received) so far.
    received: AtomicU64,
    /// Messages the releaser is done with (acknowledged, or acknowledgement withheld).
    settled: AtomicU64,
    /// Connected with the subscriptions in place.
    ready: watch::Sender<bool>,
    processed: watch::Sender<u64>,
}

impl Default for IngestStatus {
    fn default() -> Self {
        IngestStatus {
            connected: AtomicBool::new(false),
            received: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            ready: watch::Sender::new(false),
            processed: watch::Sender::new(0),
        }
    }
}

impl IngestStatus {
    /// Connected to the broker with the subscriptions in place.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// Follows readiness.
    pub fn readiness(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Messages taken from the broker since start. `received - processed` is what quantrac
    /// holds in memory: bounded by its queues whatever the load (backpressure).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Messages fully handled (durable, and acknowledged if QoS 1) since start.
    pub fn processed(&self) -> watch::Receiver<u64> {
        self.processed.subscribe()
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
        if !connected {
            self.ready.send_replace(false);
        }
        metrics::gauge!(m::MQTT_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    fn set_subscribed(&self) {
        self.ready.send_replace(self.is_connected());
    }
}

/// How to reach the broker and behave on it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: BrokerAddress,
    pub mqtt: MqttConfig,
    /// The embedded broker's gate: set, the broker ends with this process (drain it before
    /// stopping) and devices are paced by what ingest takes ([`crate::mqtt::gate`]).
    pub gate: Option<Arc<Gate>>,
}

/// The fences still awaited while draining the embedded broker.
struct Drain {
    fences: Vec<String>,
    deadline: tokio::time::Instant,
}

/// A received message on its way through the worker.
struct Inbound {
    publish: Publish,
    epoch: u64,
    /// One of ingest's own fences (draining the embedded broker): acknowledged, not stored.
    fence: bool,
}

/// A message waiting for durability before its acknowledgement (and its alert events before
/// their announcement).
struct Pending {
    publish: Publish,
    epoch: u64,
    durable: DurableWait,
    events: Vec<AlertEvent>,
}

/// Runs ingest until `shutdown`, then drains: messages already received are stored and
/// acknowledged, new ones are left to the broker, and the connection is closed.
pub async fn run(
    settings: Settings,
    pipeline: Arc<Pipeline>,
    store: Arc<dyn Store>,
    notifier: Arc<Notifier>,
    status: Arc<IngestStatus>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let options = mqtt::options(
        &settings.address,
        &settings.mqtt,
        &settings.mqtt.client_id,
        Session::Persistent,
    )?;
    let (client, eventloop) = AsyncClient::new(options, settings.mqtt.queue_capacity);
    let epoch = Arc::new(AtomicU64::new(0));
    let (inbound_tx, inbound_rx) = mpsc::channel(settings.mqtt.queue_capacity);
    let (pending_tx, pending_rx) = mpsc::channel(settings.mqtt.queue_capacity);
    let worker = tokio::spawn(work(inbound_rx, pipeline, store, pending_tx));
    let releaser = tokio::spawn(release(
        pending_rx,
        client.clone(),
        notifier,
        epoch.clone(),
        status.clone(),
    ));
    // Beside the event loop, never in its `select!`: a poll cut short by another branch can
    // lose a connection being made.
    let idle = settings
        .gate
        .clone()
        .map(|gate| tokio::spawn(resync_when_idle(gate, status.clone())));
    let poller = EventLoopTask {
        client,
        eventloop,
        settings,
        epoch,
        status,
    };
    poller.run(inbound_tx, releaser, shutdown).await;
    if let Some(idle) = idle {
        idle.abort();
    }
    if let Err(e) = worker.await {
        tracing::error!(error = %e, "ingest worker failed");
    }
    Ok(())
}

struct EventLoopTask {
    client: AsyncClient,
    eventloop: EventLoop,
    settings: Settings,
    epoch: Arc<AtomicU64>,
    status: Arc<IngestStatus>,
}

impl EventLoopTask {
    async fn run(
        mut self,
        inbound: mpsc::Sender<Inbound>,
        mut releaser: tokio::task::JoinHandle<()>,
        shutdown: CancellationToken,
    ) {
        let mut inbound = Some(inbound);
        let mut drain: Option<Drain> = None;
        let mut warned_full = false;
        let mut backoff = self.settings.mqtt.reconnect_min;
        let address = self.settings.address.to_string();
        loop {
            tokio::select! {
                // Stop forwarding: the worker drains what it has, then the releaser
                // acknowledges it, then it ends (next arm).
                () = shutdown.cancelled(), if inbound.is_some() && drain.is_none() => {
                    drain = self.start_drain();
                    if drain.is_none() {
                        tracing::info!("ingest stopping: draining received messages");
                        inbound = None;
                    }
                }
                () = sleep_until(drain.as_ref().map(|d| d.deadline)), if drain.is_some() => {
                    let missing = drain.take().map_or(0, |d| d.fences.len());
                    tracing::error!(missing, limit = ?DRAIN_LIMIT,
                        "the embedded broker was not drained in time: messages it still holds are lost with the process");
                    inbound = None;
                }
                _ = &mut releaser => break,
                event = self.eventloop.poll() => match event {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        if ack.code != ConnectReturnCode::Success {
                            tracing::error!(broker = %address, code = ?ack.code, "broker refused the connection");
                            continue;
                        }
                        backoff = self.settings.mqtt.reconnect_min;
                        self.status.set_connected(true);
                        tracing::info!(broker = %address, session_present = ack.session_present, "connected to MQTT broker");
                        self.subscribe(ack.session_present);
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| matches!(c, SubscribeReasonCode::Failure)) {
                            tracing::error!(?ack, "the broker refused a subscription");
                        } else {
                            self.status.set_subscribed();
                            tracing::info!("subscribed to quantrac/v1 telemetry and status topics");
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        // One of our fences: acknowledged in order like any message (the
                        // broker refuses acknowledgements out of order), never stored.
                        let fence = drain.as_mut().is_some_and(|d| {
                            let at = d.fences.iter().position(|f| **f == *publish.topic);
                            at.map(|at| d.fences.swap_remove(at)).is_some()
                        });
                        if let (Some(gate), false) = (&self.settings.gate, fence) {
                            gate.taken((publish.topic.len() + publish.payload.len()) as u64);
                        }
                        let Some(tx) = &inbound else {
                            // Shutting down: leave it unacknowledged; the broker keeps it.
                            continue;
                        };
                        let epoch = self.epoch.load(Ordering::SeqCst);
                        self.status.received.fetch_add(1, Ordering::SeqCst);
                        let sent = match tx.try_send(Inbound { publish, epoch, fence }) {
                            Ok(()) => Ok(()),
                            Err(mpsc::error::TrySendError::Full(message)) => {
                                // The broker's QoS 1 window is larger than this queue: wait
                                // (keep-alives wait too, and a long stall may cost the
                                // connection; the broker then delivers again).
                                if !warned_full {
                                    warned_full = true;
                                    tracing::warn!(capacity = self.settings.mqtt.queue_capacity,
                                        "inbound queue full: the broker sends more unacknowledged messages than mqtt.queue_capacity; raise it to at least the broker's inflight window");
                                }
                                tx.send(message).await.map_err(|_| ())
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
                        };
                        if sent.is_err() {
                            inbound = None;
                        }
                        if fence && drain.as_ref().is_some_and(|d| d.fences.is_empty()) {
                            tracing::info!("ingest stopping: the embedded broker is drained");
                            drain = None;
                            inbound = None;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Invalidate acknowledgements for this connection's messages.
                        self.epoch.fetch_add(1, Ordering::SeqCst);
                        self.status.set_connected(false);
                        metrics::counter!(m::MQTT_RECONNECTS_TOTAL).increment(1);
                        tracing::warn!(broker = %address, error = %e, retry_in = ?backoff, "MQTT connection lost");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = shutdown.cancelled(), if inbound.is_some() => { inbound = None; }
                        }
                        backoff = (backoff * 2).min(self.settings.mqtt.reconnect_max);
                    }
                }
            }
        }
        self.disconnect().await;
    }

    /// With the embedded broker, publishes the fences and starts draining; `None` otherwise
    /// (or when not connected: nothing can be drained then).
    fn start_drain(&self) -> Option<Drain> {
        if self.settings.gate.is_none() || !self.status.is_connected() {
            return None;
        }
        let nonce = crate::security::token::random::<8>()
            .map(|b| crate::security::token::hex(&b))
            .unwrap_or_else(|_| Timestamp::now().as_millis().to_string());
        let fences = topic::fences(&self.settings.mqtt.topic_prefix, &nonce);
        for fence in &fences {
            if let Err(e) = self
                .client
                .try_publish(fence, QoS::AtLeastOnce, false, nonce.clone())
            {
                tracing::error!(error = %e, "cannot publish a fence to drain the embedded broker");
                return None;
            }
        }
        tracing::info!(
            fences = fences.len(),
            "ingest stopping: draining the embedded broker"
        );
        Some(Drain {
            fences,
            deadline: tokio::time::Instant::now() + DRAIN_LIMIT,
        })
    }

    fn subscribe(&self, session_present: bool) {
        if session_present {
            // The broker kept our subscriptions with the session.
            self.status.set_subscribed();
            return;
        }
        let filters = topic::subscriptions(&self.settings.mqtt.topic_prefix)
            .into_iter()
            .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce));
        if let Err(e) = self.client.try_subscribe_many(filters) {
            tracing::error!(error = %e, "cannot queue the subscription request");
        }
    }

    /// Sends the queued acknowledgements, then DISCONNECT, and waits (bounded) for both.
    async fn disconnect(mut self) {
        if !self.status.is_connected() {
            return;
        }
        if self.client.try_disconnect().is_err() {
            return;
        }
        let flushed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match self.eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if flushed.is_err() {
            tracing::warn!("MQTT disconnect did not complete within 5 s");
        }
        self.status.set_connected(false);
        tracing::info!("disconnected from MQTT broker");
    }
}

/// Puts the gate's counts right ([`Gate::resync`]) whenever ingest, connected, has received
/// nothing new for [`IDLE_CHECK`] and is done with everything it received: the broker then
/// holds nothing for quantrac, whatever the counts say.
async fn resync_when_idle(gate: Arc<Gate>, status: Arc<IngestStatus>) {
    let mut last = u64::MAX;
    loop {
        tokio::time::sleep(IDLE_CHECK).await;
        let received = status.received.load(Ordering::SeqCst);
        let settled = status.settled.load(Ordering::SeqCst);
        if received == last && received == settled && status.is_connected() {
            gate.resync();
        }
        last = received;
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The worker: pipeline, then store; hands each message to the releaser in order.
async fn work(
    mut inbound: mpsc::Receiver<Inbound>,
    pipeline: Arc<Pipeline>,
    store: Arc<dyn Store>,
    pending: mpsc::Sender<Pending>,
) {
    while let Some(Inbound {
        publish,
        epoch,
        fence,
    }) = inbound.recv().await
    {
        let (done, durable) = ack::pair();
        let mut events = Vec::new();
        if fence {
            done.confirm();
        } else {
            let Processed {
                mut item,
                events: raised,
            } = pipeline.process(&publish.topic, &publish.payload, Timestamp::now());
            events = raised;
            item.done = Some(done);
            if let Err(e) = store.write(item).await {
                tracing::error!(error = %e, "the store refused a write; the message stays unacknowledged");
                break;
            }
        }
        if pending
            .send(Pending {
                publish,
                epoch,
                durable,
                events,
            })
            .await
            .is_err()
        {
            break;
        }
    }
}

/// The releaser: acknowledges each message once durable, in arrival order, and announces its
/// alert events.
async fn release(
    mut pending: mpsc::Receiver<Pending>,
    client: AsyncClient,
    notifier: Arc<Notifier>,
    epoch: Arc<AtomicU64>,
    status: Arc<IngestStatus>,
) {
    while let Some(p) = pending.recv().await {
        let durable = p.durable.wait().await;
        status.settled.fetch_add(1, Ordering::SeqCst);
        if durable {
            // Stored: the alerts are real whatever happens to the acknowledgement.
            notifier.announce(&p.events);
        }
        if !durable || p.epoch != epoch.load(Ordering::SeqCst) {
            metrics::counter!(m::MQTT_ACKS_WITHHELD_TOTAL).increment(1);
            continue;
        }
        if p.publish.qos != QoS::AtMostOnce {
            if let Err(e) = client.ack(&p.publish).await {
                tracing::warn!(error = %e, "cannot queue an acknowledgement");
                continue;
            }
            metrics::counter!(m::MQTT_ACKS_TOTAL).increment(1);
        }
        status.processed.send_modify(|n| *n += 1);
    }
}
