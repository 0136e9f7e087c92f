//! Fault injection for tests: a [`Sink`] wrapper that fails every commit while its switch is
//! on, as an unreachable store would. The switch is shared, so a test flips it while the
//! service runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::writer::Sink;
use super::{Error, Result, WriteItem};
use crate::telemetry::Timestamp;

/// Turns the store's failures on and off.
#[derive(Debug, Clone, Default)]
pub struct FaultSwitch {
    failing: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl FaultSwitch {
    pub fn new() -> FaultSwitch {
        FaultSwitch::default()
    }

    /// From now on every commit fails (`true`) or goes through (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Commits refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Wraps `inner` so that it obeys this switch.
    pub fn wrap(&self, inner: Box<dyn Sink>) -> Box<dyn Sink> {
        Box::new(Faulty {
            inner,
            switch: self.clone(),
        })
    }
}

struct Faulty {
    inner: Box<dyn Sink>,
    switch: FaultSwitch,
}

impl Sink for Faulty {
    fn commit(&mut self, items: &[WriteItem]) -> Result<usize> {
        if self.switch.failing.load(Ordering::SeqCst) {
            self.switch.refused.fetch_add(1, Ordering::SeqCst);
            return Err(Error::Unavailable("injected fault".into()));
        }
        self.inner.commit(items)
    }

    fn prune(&mut self, cutoff: Timestamp) -> Result<u64> {
        if self.switch.failing.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("injected fault".into()));
        }
        self.inner.prune(cutoff)
    }

    fn close(&mut self) {
        self.inner.close();
    }
}
