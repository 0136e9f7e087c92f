//! Durability confirmations: the link between the store, which knows when data is durable,
//! and ingest, which releases the MQTT acknowledgement only then.
//!
//! It sits below both so that neither imports the other. A [`Durable`] travels with the data
//! to the store, which [`confirm`](Durable::confirm)s it after the commit; ingest waits on the
//! matching [`DurableWait`]. Dropping a `Durable` unconfirmed (the store gave up, or shut down
//! first) reports "not durable", and ingest then withholds the acknowledgement so that the
//! broker delivers the message again.

use tokio::sync::oneshot;

/// Held by the store; confirm it once the data it travels with is durable.
#[derive(Debug)]
pub struct Durable(oneshot::Sender<()>);

/// Held by ingest; resolves when the data is durable (`true`) or abandoned (`false`).
#[derive(Debug)]
pub struct DurableWait(oneshot::Receiver<()>);

/// A connected pair.
pub fn pair() -> (Durable, DurableWait) {
    let (tx, rx) = oneshot::channel();
    (Durable(tx), DurableWait(rx))
}

impl Durable {
    pub fn confirm(self) {
        // The waiter may be gone (ingest shut down first); nothing to do then.
        let _ = self.0.send(());
    }
}

impl DurableWait {
    pub async fn wait(self) -> bool {
        self.0.await.is_ok()
    }

    /// As [`DurableWait::wait`], without giving the wait up (cancel-safe, for `select!`).
    /// Once it has answered, do not call it again.
    pub async fn wait_mut(&mut self) -> bool {
        (&mut self.0).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_confirmed_pair_reports_durable() {
        let (d, w) = pair();
        d.confirm();
        assert!(w.wait().await);
    }

    #[tokio::test]
    async fn a_dropped_durable_reports_not_durable() {
        let (d, w) = pair();
        drop(d);
        assert!(!w.wait().await);
    }
}
