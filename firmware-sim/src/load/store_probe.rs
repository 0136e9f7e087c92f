//! Publish-to-store latency, seen from outside: sampled readings are looked up through the
//! readings API until they appear.
//!
//! There is no signal to wait on from outside the service, so this polls, but gently: one
//! task, one request at a time, oldest sample first. quantrac stores readings in arrival
//! order, so when a sample is found, the later ones were not stored before it; a sample found
//! right after the previous one is overstated by at most one request's duration.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::stats::Quantrac;

/// Pause between two lookups of a sample that is not stored yet.
const POLL_EVERY: Duration = Duration::from_millis(2);
/// A sample not stored within this long counts as not stored (it is left out).
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// A published reading to look for.
#[derive(Debug)]
pub struct Sample {
    pub station: String,
    pub param: String,
    pub ts_ms: i64,
    pub sent: Instant,
}

/// The poller: send it samples, then drop the sender and await the latencies (ms).
pub fn spawn(quantrac: Quantrac) -> (mpsc::UnboundedSender<Sample>, JoinHandle<Vec<f64>>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let task = tokio::spawn(async move {
        let mut latencies = Vec::new();
        while let Some(sample) = rx.recv().await {
            loop {
                if quantrac
                    .is_stored(&sample.station, &sample.param, sample.ts_ms)
                    .await
                {
                    latencies.push(sample.sent.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                if sample.sent.elapsed() > GIVE_UP_AFTER {
                    tracing::warn!(station = %sample.station, ts_ms = sample.ts_ms, "sample never stored");
                    break;
                }
                tokio::time::sleep(POLL_EVERY).await;
            }
        }
        latencies
    });
    (tx, task)
}
