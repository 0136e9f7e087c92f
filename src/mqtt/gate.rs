//! The gate in front of the embedded broker: devices are let in only while quantrac takes what
//! they send.
//!
//! rumqttd lives in quantrac's process and keeps nothing on disk: a message it acknowledges to
//! a device exists only in its memory until quantrac's own subscription takes it. So the
//! [`guard`](super::guard) relays device sessions only while the gate is open:
//!
//! - it **opens** once quantrac's ingest is subscribed (before, a message would be
//!   acknowledged and delivered to no one);
//! - it **closes** at shutdown, before ingest stops: new connections are refused (CONNACK
//!   "server unavailable": devices retry and reach the next instance), open ones are no longer
//!   read, and [`Gate::close`] returns once every relay has handed its last frames to rumqttd
//!   and rumqttd has closed that link, so that everything rumqttd acknowledged is in its logs
//!   for ingest to drain ([`crate::ingest`] fences).
//!
//! # Pace
//! rumqttd acknowledges a message once it is in its memory log, and a subscriber that falls
//! further behind than that log (`segment_size x segment_count`) silently misses messages. So
//! the gate also paces devices by what quantrac takes: the guard counts the bytes (topic and
//! payload) of every message it forwards on a topic quantrac subscribes to, ingest counts the
//! bytes it receives, and while the difference (the **backlog**) is above the limit, relays
//! stop reading from devices: TCP holds them back, their messages stay with them, unacknowledged.
//! Counts can only drift one way that matters (a forwarded message quantrac never receives),
//! so ingest, when it has taken everything it was given and has been idle for a while,
//! declares the backlog empty ([`Gate::resync`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};

/// The backlog above which devices wait, for a subscription log of `segment_count` segments
/// of `segment_size` bytes: half of what rumqttd is sure to keep. It drops its oldest segment
/// when it starts a new one, so only `segment_count - 1` full segments are certain; and it
/// counts a message's size with its own overhead, more than the topic and payload counted
/// here. (Half the whole log, 1 MiB of 2 x 1 MiB, lost 20 of 40,000 readings once in a flood.)
pub fn pace_limit(segment_size: usize, segment_count: usize) -> u64 {
    let certain = segment_count.saturating_sub(1).max(1);
    (segment_size as u64).saturating_mul(certain as u64) / 2
}

/// How often a held relay looks at the backlog again without being woken.
const RECHECK: Duration = Duration::from_millis(100);

/// Whether devices may publish, how many relays are between them and rumqttd, and how far
/// quantrac is behind them.
#[derive(Debug)]
pub struct Gate {
    open: watch::Sender<bool>,
    relays: watch::Sender<usize>,
    /// Bytes forwarded to rumqttd on quantrac's topics, and bytes ingest took.
    forwarded: AtomicU64,
    taken: AtomicU64,
    /// The backlog above which relays wait (`u64::MAX`: never).
    limit: AtomicU64,
    progress: Notify,
}

/// A relay's place behind the gate; leaving it (drop) is counted.
#[derive(Debug)]
pub struct Pass<'a> {
    gate: &'a Gate,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.gate.relays.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Default for Gate {
    fn default() -> Gate {
        Gate::new(u64::MAX)
    }
}

impl Gate {
    /// A closed gate that holds devices back while quantrac is more than `limit` bytes behind.
    pub fn new(limit: u64) -> Gate {
        Gate {
            open: watch::Sender::new(false),
            relays: watch::Sender::new(0),
            forwarded: AtomicU64::new(0),
            taken: AtomicU64::new(0),
            limit: AtomicU64::new(limit),
            progress: Notify::new(),
        }
    }

    /// The guard forwarded a message of `bytes` on a topic quantrac subscribes to.
    pub fn forwarded(&self, bytes: u64) {
        self.forwarded.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Ingest received a message of `bytes`. Wakes the held relays when this brings the
    /// backlog down to the limit (only then: most messages arrive with nobody held).
    pub fn taken(&self, bytes: u64) {
        self.taken.fetch_add(bytes, Ordering::Relaxed);
        let after = self.backlog();
        let limit = self.limit();
        if after <= limit && after.saturating_add(bytes) > limit {
            self.progress.notify_waiters();
        }
    }

    /// Bytes forwarded that quantrac has not received yet.
    pub fn backlog(&self) -> u64 {
        let taken = self.taken.load(Ordering::Relaxed);
        self.forwarded.load(Ordering::Relaxed).saturating_sub(taken)
    }

    /// Ingest has received everything it was given and the broker sends nothing more: what
    /// the counts still call backlog was never coming (a message rumqttd did not route to
    /// quantrac). Starts counting afresh.
    pub fn resync(&self) {
        let forwarded = self.forwarded.load(Ordering::Relaxed);
        self.taken.fetch_max(forwarded, Ordering::Relaxed);
        self.progress.notify_waiters();
    }

    /// Resolves once the backlog is at most the limit.
    pub async fn room(&self) {
        while self.backlog() > self.limit() {
            let woken = self.progress.notified();
            // Re-checked now and then too: a wake-up can fall between the check and the wait.
            let _ = tokio::time::timeout(RECHECK, woken).await;
        }
    }

    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Opens the gate of a broker with no quantrac behind it (`quantrac broker`, tests):
    /// nothing takes from it, so nothing paces it.
    pub fn open_unpaced(&self) {
        self.limit.store(u64::MAX, Ordering::Relaxed);
        self.open();
    }

    fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn is_open(&self) -> bool {
        *self.open.borrow()
    }

    /// A pass for a relay, if the gate is open. Counted before the check, so that
    /// [`Gate::close`] never misses a relay that got in.
    pub fn enter(&self) -> Option<Pass<'_>> {
        self.relays.send_modify(|n| *n += 1);
        let pass = Pass { gate: self };
        self.is_open().then_some(pass)
    }

    /// Resolves once the gate is open.
    pub async fn opened(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|&open| open).await;
    }

    /// Resolves once the gate is closed.
    pub async fn closed(&self) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|&open| !open).await;
    }

    /// Closes the gate and waits until every relay has left, at most `limit`; returns how
    /// many were still relaying then.
    pub async fn close(&self, limit: Duration) -> usize {
        self.open.send_replace(false);
        let mut relays = self.relays.subscribe();
        let left = tokio::time::timeout(limit, relays.wait_for(|&n| n == 0)).await;
        match left {
            Ok(_) => 0,
            Err(_) => *self.relays.borrow(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_gives_no_pass_and_counts_nobody() {
        let gate = Gate::default();
        assert!(gate.enter().is_none());
        assert_eq!(*gate.relays.borrow(), 0);
        gate.open();
        let pass = gate.enter();
        assert!(pass.is_some());
        assert_eq!(*gate.relays.borrow(), 1);
        drop(pass);
        assert_eq!(*gate.relays.borrow(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closing_waits_for_the_relays_inside_up_to_its_limit() {
        let gate = std::sync::Arc::new(Gate::default());
        gate.open();
        let inside = gate.clone();
        let relay = tokio::spawn(async move {
            let _pass = inside.enter();
            inside.closed().await;
            // Hands its last frames over, then leaves.
            tokio::time::sleep(Duration::from_millis(300)).await;
        });
        tokio::task::yield_now().await;
        assert_eq!(gate.close(Duration::from_secs(5)).await, 0);
        relay.await.unwrap();
        assert!(gate.enter().is_none(), "closed for newcomers");

        let stuck = gate.clone();
        gate.open();
        let _held = tokio::spawn(async move {
            let _pass = stuck.enter();
            std::future::pending::<()>().await;
        });
        tokio::task::yield_now().await;
        assert_eq!(
            gate.close(Duration::from_secs(1)).await,
            1,
            "gave up after 1 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn devices_wait_while_quantrac_is_more_than_the_limit_behind() {
        let gate = std::sync::Arc::new(Gate::new(1000));
        gate.forwarded(800);
        gate.room().await;
        gate.forwarded(800);
        assert_eq!(gate.backlog(), 1600);
        let held = gate.clone();
        let relay = tokio::spawn(async move { held.room().await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!relay.is_finished(), "held while 1,600 bytes behind");
        gate.taken(700);
        relay.await.unwrap();
        assert_eq!(gate.backlog(), 900);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_opened_unpaced_never_holds_devices() {
        let gate = Gate::new(1000);
        gate.open_unpaced();
        gate.forwarded(1 << 40);
        let room = tokio::time::timeout(Duration::from_secs(1), gate.room()).await;
        assert!(room.is_ok(), "room at once");
    }

    #[test]
    fn the_pace_keeps_half_of_the_segments_rumqttd_is_sure_to_keep() {
        assert_eq!(pace_limit(16 << 20, 4), 24 << 20);
        assert_eq!(pace_limit(1 << 20, 2), 512 << 10);
    }

    #[test]
    fn a_resync_forgets_what_was_never_coming() {
        let gate = Gate::new(1000);
        gate.forwarded(5000);
        gate.taken(100);
        gate.resync();
        assert_eq!(gate.backlog(), 0);
        gate.forwarded(10);
        assert_eq!(gate.backlog(), 10);
    }
}
