//! Ingest from an external broker (Mosquitto, EMQX): quantrac's MQTT subscription, with
//! acknowledgements released end to end. (Devices that connect to quantrac itself go
//! through [`crate::endpoint`], which feeds the same pipeline and store.)
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
//! is in memory, and the broker keeps the rest.
//!
//! The event loop **never waits for anything but the broker**: acknowledgements and
//! keep-alives only leave when it polls, so an event loop waiting for room in the inbound
//! queue while the releaser waits for room for its acknowledgements would deadlock (it did:
//! a broker window larger than `mqtt.queue_capacity` stopped ingest for good). When the
//! inbound queue (`mqtt.queue_capacity`) is full, received messages wait in the event loop's
//! overflow, in order, and move on as the worker takes them; the overflow is bounded by the
//! broker's window (`quantrac_mqtt_overflow_messages` shows it; a warning says once that
//! the window is larger than the queue).
//!
//! # Stalls
//! [`IngestStatus::stalled`] says when ingest holds messages and has settled none of them
//! for `mqtt.stall_after` (a store that neither commits nor spools): `/readyz` then answers
//! 503 with the reason, so that a stuck ingest is never reported ready.
//!
//! # Reconnects
//! The session is persistent (clean session off, fixed client id): while quantrac is away the
//! broker keeps its QoS 1 messages. Each connection has an epoch; acknowledgements of messages
//! received on an earlier connection are withheld (the broker delivers those again, and the
//! store stores them once), so a stale packet id can never acknowledge a different message.
//!
//! # Stopping
//! Messages already received are stored and acknowledged. The rest stays with the broker,
//! which keeps it for the persistent session.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::{
    AsyncClient, ConnectReturnCode, Event, EventLoop, Outgoing, Packet, Publish, QoS,
    SubscribeReasonCode,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerAddress, MqttConfig};
use crate::handoff::{self, Handoff};
use crate::metrics as m;
use crate::mqtt::{self, Session};
use crate::notify::Notifier;
use crate::pipeline::Pipeline;
use crate::storage::Store;
use crate::telemetry::{topic, Timestamp};

pub use crate::mqtt::Error;

/// Connection state shown by `/readyz`, and progress signals.
#[derive(Debug)]
pub struct IngestStatus {
    connected: AtomicBool,
    /// Messages taken from the broker (received) so far.
    received: AtomicU64,
    /// Messages the releaser is done with (acknowledged, or acknowledgement withheld).
    settled: AtomicU64,
    /// When the releaser last settled a message, or ingest last held nothing (ms since the
    /// epoch): the base of [`IngestStatus::stalled`].
    progress_at: AtomicI64,
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
            progress_at: AtomicI64::new(Timestamp::now().as_millis()),
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

    /// Messages received and not yet settled (acknowledged or withheld).
    pub fn held(&self) -> u64 {
        let settled = self.settled.load(Ordering::SeqCst);
        self.received.load(Ordering::SeqCst).saturating_sub(settled)
    }

    /// `Some(stall)` when ingest holds messages and has settled none for at least `after`
    /// (as of `now`): it is stuck, whatever the connection says.
    pub fn stalled(&self, after: Duration, now: Timestamp) -> Option<Stall> {
        let held = self.held();
        if held == 0 {
            return None;
        }
        let since = Timestamp::from_millis(self.progress_at.load(Ordering::SeqCst));
        let idle =
            Duration::from_millis(now.as_millis().saturating_sub(since.as_millis()).max(0) as u64);
        (idle >= after).then_some(Stall { held, idle })
    }

    /// A message taken in (by ingest or the device endpoint).
    pub(crate) fn note_received(&self) {
        // Holding nothing until now: the stall clock starts with this message.
        if self.held() == 0 {
            self.progress_at
                .store(Timestamp::now().as_millis(), Ordering::SeqCst);
        }
        self.received.fetch_add(1, Ordering::SeqCst);
    }

    /// A message fully handled (durable, and acknowledged if QoS 1).
    pub(crate) fn processed_one(&self) {
        self.processed.send_modify(|n| *n += 1);
    }

    /// A message done with: acknowledged, or its acknowledgement withheld.
    pub(crate) fn note_settled(&self) {
        self.progress_at
            .store(Timestamp::now().as_millis(), Ordering::SeqCst);
        self.settled.fetch_add(1, Ordering::SeqCst);
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::SeqCst);
        if !connected {
            self.ready.send_replace(false);
        }
        metrics::gauge!(m::MQTT_CONNECTED).set(if connected { 1.0 } else { 0.0 });
    }

    /// The device endpoint listens: quantrac takes data (there is no broker to subscribe to).
    pub(crate) fn set_listening(&self, listening: bool) {
        self.set_connected(listening);
        if listening {
            self.set_subscribed();
        }
    }

    fn set_subscribed(&self) {
        self.ready.send_replace(self.is_connected());
    }
}

/// Ingest holds messages and settles none: see [`IngestStatus::stalled`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stall {
    /// Messages received and not settled.
    pub held: u64,
    /// Time since the last one was settled.
    pub idle: Duration,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stalled: {} messages held, none settled for {} s",
            self.held,
            self.idle.as_secs()
        )
    }
}

/// How to reach the broker and behave on it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: BrokerAddress,
    pub mqtt: MqttConfig,
}

/// A received message on its way through the worker.
struct Inbound {
    publish: Publish,
    epoch: u64,
}

/// A message waiting for durability before its acknowledgement (and its alert events before
/// their announcement).
struct Pending {
    publish: Publish,
    epoch: u64,
    handoff: Handoff,
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
    let poller = EventLoopTask {
        client,
        eventloop,
        settings,
        epoch,
        status,
    };
    poller.run(inbound_tx, releaser, shutdown).await;
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
        let mut queue = Forward::new(inbound, self.settings.mqtt.queue_capacity);
        let mut backoff = self.settings.mqtt.reconnect_min;
        let address = self.settings.address.to_string();
        // Whether the broker held a session of ours in this run: a reconnect without one
        // means the broker lost it, and with it what was published for us meanwhile.
        let mut had_session = false;
        loop {
            tokio::select! {
                // Stop taking new messages: what was received goes to the worker, which
                // stores it; then the releaser acknowledges it and ends (next arm).
                () = shutdown.cancelled(), if queue.is_open() => {
                    tracing::info!("ingest stopping: draining received messages");
                    queue.close();
                }
                // Room in the inbound queue for the oldest message of the overflow.
                () = queue.advance(), if queue.has_overflow() => {}
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
                        if had_session && !ack.session_present {
                            metrics::counter!(m::MQTT_SESSIONS_LOST_TOTAL).increment(1);
                            tracing::error!(broker = %address,
                                "the broker lost quantrac's session (restarted without persistence, or its persistence file could not be written): messages published while quantrac was not subscribed were dropped by the broker; check the broker's persistence (docs/configuration.md)");
                        }
                        had_session = true;
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
                        if !queue.is_open() {
                            // Shutting down: leave it unacknowledged; the broker keeps it.
                            continue;
                        }
                        let epoch = self.epoch.load(Ordering::SeqCst);
                        self.status.note_received();
                        queue.push(Inbound { publish, epoch });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Invalidate acknowledgements for this connection's messages.
                        self.epoch.fetch_add(1, Ordering::SeqCst);
                        self.status.set_connected(false);
                        metrics::counter!(m::MQTT_RECONNECTS_TOTAL).increment(1);
                        tracing::warn!(broker = %address, error = %e, retry_in = ?backoff, "MQTT connection lost");
                        // The overflow moves on meanwhile: the worker must not wait for a
                        // reconnect to get what was received.
                        let wait = tokio::time::sleep(backoff);
                        tokio::pin!(wait);
                        loop {
                            tokio::select! {
                                () = &mut wait => break,
                                () = shutdown.cancelled(), if queue.is_open() => queue.close(),
                                () = queue.advance(), if queue.has_overflow() => {}
                            }
                        }
                        backoff = (backoff * 2).min(self.settings.mqtt.reconnect_max);
                    }
                }
            }
        }
        self.disconnect().await;
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

/// The event loop's way to the worker: the bounded inbound queue, and in front of it an
/// overflow that holds, in order, what the broker sent beyond the queue's room, so that the
/// event loop never waits for the worker (see "Backpressure" above).
struct Forward {
    tx: Option<mpsc::Sender<Inbound>>,
    overflow: VecDeque<Inbound>,
    /// Closing: the overflow still goes to the worker, then the queue closes.
    closing: bool,
    capacity: usize,
    warned: bool,
}

impl Forward {
    fn new(tx: mpsc::Sender<Inbound>, capacity: usize) -> Forward {
        Forward {
            tx: Some(tx),
            overflow: VecDeque::new(),
            closing: false,
            capacity,
            warned: false,
        }
    }

    /// Takes new messages (not closing, and the worker is there).
    fn is_open(&self) -> bool {
        self.tx.is_some() && !self.closing
    }

    fn has_overflow(&self) -> bool {
        self.tx.is_some() && !self.overflow.is_empty()
    }

    /// Queues `message` behind everything received before it; never waits.
    fn push(&mut self, message: Inbound) {
        let Some(tx) = &self.tx else { return };
        if self.overflow.is_empty() {
            match tx.try_send(message) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(message)) => {
                    self.overflow.push_back(message);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.tx = None;
                    return;
                }
            }
        } else {
            self.overflow.push_back(message);
        }
        metrics::gauge!(m::MQTT_OVERFLOW_MESSAGES).set(self.overflow.len() as f64);
        if !self.warned {
            self.warned = true;
            tracing::warn!(capacity = self.capacity,
                "inbound queue full: the broker's window of unacknowledged messages is larger than mqtt.queue_capacity; the excess waits in order (quantrac_mqtt_overflow_messages). Raising mqtt.queue_capacity to the broker's inflight window avoids it");
        }
    }

    /// Waits for room in the inbound queue and moves the oldest overflowing message there
    /// (cancel-safe: a message only leaves the overflow together with its place).
    async fn advance(&mut self) {
        let Some(tx) = &self.tx else {
            return std::future::pending().await;
        };
        let closed = match tx.reserve().await {
            Ok(permit) => {
                if let Some(message) = self.overflow.pop_front() {
                    permit.send(message);
                }
                false
            }
            Err(_) => true,
        };
        if closed {
            self.tx = None;
        }
        metrics::gauge!(m::MQTT_OVERFLOW_MESSAGES).set(self.overflow.len() as f64);
        self.close_if_done();
    }

    /// Takes no new message; what was received still goes to the worker.
    fn close(&mut self) {
        self.closing = true;
        self.close_if_done();
    }

    fn close_if_done(&mut self) {
        if self.closing && self.overflow.is_empty() {
            // The worker finishes what it has, then ends, and so does the releaser.
            self.tx = None;
        }
    }
}

/// The worker: pipeline, then store; hands each message to the releaser in order.
async fn work(
    mut inbound: mpsc::Receiver<Inbound>,
    pipeline: Arc<Pipeline>,
    store: Arc<dyn Store>,
    pending: mpsc::Sender<Pending>,
) {
    while let Some(Inbound { publish, epoch }) = inbound.recv().await {
        let submitted = handoff::submit(
            &pipeline,
            &*store,
            &publish.topic,
            &publish.payload,
            Timestamp::now(),
        )
        .await;
        let handoff = match submitted {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "the store refused a write; the message stays unacknowledged");
                break;
            }
        };
        if pending
            .send(Pending {
                publish,
                epoch,
                handoff,
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
        // Stored: the alerts are real whatever happens to the acknowledgement.
        let durable = p.handoff.settle(&notifier).await;
        status.note_settled();
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
        status.processed_one();
    }
}
