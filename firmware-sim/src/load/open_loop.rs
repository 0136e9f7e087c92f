//! The open loop: `messages` messages published as fast as the broker acknowledges them,
//! never pausing while quantrac is behind, then a wait until quantrac's stored count stops
//! moving. A closed loop ([`super::load`] at rate 0) holds publishing back while quantrac is
//! behind, so a consumer that stalls only slows the run down; here the broker holds the
//! whole backlog for quantrac, and a stall shows as acknowledged readings never stored.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{now_ms, resolution_ms, Error, Quantrac, Traffic};
use crate::encode::Encoding;
use crate::fleet::Fleet;
use crate::publish::{BrokerOptions, Publisher};

/// How often the stored count is read while draining.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait for the broker's last acknowledgements.
const ACK_WAIT: Duration = Duration::from_secs(60);

/// What to send, where.
#[derive(Debug, Clone)]
pub struct OpenLoopOptions {
    pub broker: BrokerOptions,
    pub api: String,
    pub token: Option<String>,
    /// Stations (the first of the fleet) and readings per record.
    pub stations: usize,
    pub params: usize,
    pub encoding: Encoding,
    /// Messages to publish (one record each).
    pub messages: u64,
    /// The drain ends once the stored count has not moved for this long...
    pub still: Duration,
    /// ...or this long after publishing ended, whichever comes first.
    pub settle: Duration,
}

/// The result, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoopReport {
    pub stations: usize,
    pub params: usize,
    pub encoding: &'static str,
    pub messages_published: u64,
    /// PUBACKs received from the broker.
    pub messages_acknowledged: u64,
    pub readings_published: u64,
    /// Readings in acknowledged messages (every message holds `params` readings).
    pub readings_acknowledged: u64,
    /// By quantrac's count (`quantrac_store_readings_total`).
    pub readings_stored: u64,
    /// Every acknowledged reading was stored.
    pub all_acknowledged_stored: bool,
    /// From the first publish to the last acknowledgement.
    pub publish_seconds: f64,
    pub published_per_second: f64,
    /// From the last acknowledgement until the stored count last moved.
    pub drain_seconds: f64,
    /// Readings stored per second, from the first publish until the stored count last moved.
    pub stored_per_second: f64,
    /// The drain ended because the count stopped moving (rather than reaching the target
    /// or the settle bound).
    pub stalled: bool,
    pub quantrac_peak_rss_bytes: Option<f64>,
}

/// Runs the open loop and measures it.
pub async fn open_loop(options: OpenLoopOptions, fleet: &Fleet) -> Result<OpenLoopReport, Error> {
    let chosen: Vec<_> = fleet
        .stations
        .iter()
        .take(options.stations.max(1))
        .collect();
    if chosen.is_empty() {
        return Err(Error::NoStation);
    }
    let stations = chosen.len();
    let mut traffic = Traffic::new(chosen, options.params, resolution_ms(options.encoding))
        .numbered_from(u64::try_from(now_ms()).unwrap_or(0));
    let params = traffic.params() as u64;
    let quantrac = Quantrac::new(&options.api, options.token.as_deref())?;
    let before = quantrac.stored().await?;
    let publisher = Publisher::connect(options.broker.clone()).await?;
    let started = Instant::now();
    for _ in 0..options.messages {
        let (station, record) = traffic.next_record(now_ms()).ok_or(Error::NoStation)?;
        publisher
            .publish_records(&station.zone, &station.id, options.encoding, &[record])
            .await?;
    }
    // Bounded: what the broker did not acknowledge is reported, not waited for forever.
    let _ = tokio::time::timeout(ACK_WAIT, publisher.wait_acked()).await;
    let acknowledged = publisher.acked();
    let published_at = Instant::now();
    let publish_seconds = published_at.duration_since(started).as_secs_f64();
    let _ = publisher.disconnect().await;

    let target = before + (acknowledged * params) as f64;
    let mut last = quantrac.stored().await?;
    let mut moved_at = Instant::now();
    let deadline = published_at + options.settle;
    let mut stalled = false;
    while last < target && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let now = quantrac.stored().await?;
        if now > last {
            last = now;
            moved_at = Instant::now();
        } else if moved_at.elapsed() >= options.still {
            stalled = true;
            break;
        }
    }
    let readings_stored = (last - before).max(0.0) as u64;
    let readings_acknowledged = acknowledged * params;
    let peak = quantrac
        .metric("quantrac_process_peak_resident_bytes")
        .await?;
    let stored_seconds = moved_at.duration_since(started).as_secs_f64().max(1e-9);
    Ok(OpenLoopReport {
        stations,
        params: params as usize,
        encoding: options.encoding.as_str(),
        messages_published: options.messages,
        messages_acknowledged: acknowledged,
        readings_published: options.messages * params,
        readings_acknowledged,
        readings_stored,
        all_acknowledged_stored: readings_stored >= readings_acknowledged,
        publish_seconds,
        published_per_second: (acknowledged * params) as f64 / publish_seconds.max(1e-9),
        drain_seconds: moved_at
            .saturating_duration_since(published_at)
            .as_secs_f64(),
        stored_per_second: readings_stored as f64 / stored_seconds,
        stalled,
        quantrac_peak_rss_bytes: peak,
    })
}
