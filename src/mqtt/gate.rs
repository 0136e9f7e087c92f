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

use std::time::Duration;

use tokio::sync::watch;

/// Whether devices may publish, and how many relays are between them and rumqttd.
#[derive(Debug)]
pub struct Gate {
    open: watch::Sender<bool>,
    relays: watch::Sender<usize>,
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
        Gate::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate {
            open: watch::Sender::new(false),
            relays: watch::Sender::new(0),
        }
    }

    pub fn open(&self) {
        self.open.send_replace(true);
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
        let gate = Gate::new();
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
        let gate = std::sync::Arc::new(Gate::new());
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
}
