//! The long-running simulation behind `firmware-sim run` and `quantrac demo`, and the
//! throughput flood behind `firmware-sim flood`.
//!
//! [`run`] is a thin loop around the I/O-free [`Simulator`]: it announces the stations
//! (`online`, retained), publishes the backfill history oldest first, then wakes at each
//! interval boundary of the wall clock and publishes whatever the simulator says the fleet
//! sends now, until its cancellation token fires or its duration elapses; a clean stop waits
//! for the acknowledgements and marks every station `offline`. Shutdown is a parameter
//! (a `CancellationToken`), so the service can embed the simulation and stop it in order.

mod flood;
mod play;

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::encode::Encoding;
use crate::fleet::Fleet;
use crate::publish::{self, BrokerOptions, Publisher};
use crate::signal::{Outgoing, SimConfig, Simulator};

pub use flood::flood;
pub use play::play;

/// Records per message in the backfill (a logger uploading its stored history).
pub const BACKFILL_PER_MESSAGE: usize = 12;
/// How long a stop waits for outstanding acknowledgements before marking stations offline.
const STOP_ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting or publishing failed.
    #[error(transparent)]
    Publish(#[from] publish::Error),
    /// The fleet has no station to simulate.
    #[error("the fleet has no station")]
    NoStation,
}

/// Result of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which encoding each station uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingChoice {
    /// Every station uses this encoding.
    One(Encoding),
    /// Each station its own, deterministic: json, bincode, tt10, json, ... in fleet order.
    Mixed,
}

impl EncodingChoice {
    /// The encoding of simulated station `index`.
    pub fn for_station(self, index: usize) -> Encoding {
        match self {
            EncodingChoice::One(encoding) => encoding,
            EncodingChoice::Mixed => Encoding::ALL[index % Encoding::ALL.len()],
        }
    }
}

impl std::str::FromStr for EncodingChoice {
    type Err = crate::encode::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().eq_ignore_ascii_case("mixed") {
            Ok(EncodingChoice::Mixed)
        } else {
            s.parse().map(EncodingChoice::One)
        }
    }
}

/// What to simulate and where to send it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Broker connection.
    pub broker: BrokerOptions,
    /// Directory the fleet was loaded from (for logs; [`run`] takes the loaded [`Fleet`]).
    pub seeds: PathBuf,
    /// Number of stations to simulate, the first ones of the fleet (0 = all).
    pub stations: usize,
    /// Encoding of each station.
    pub encoding: EncodingChoice,
    /// Interval of every station; `None` = each station's `expected_interval`.
    pub interval: Option<Duration>,
    /// Publish this much history before going live.
    pub backfill: Option<Duration>,
    /// Stop after this long (counted from the connection); `None` = until cancelled.
    pub duration: Option<Duration>,
    /// Signal model configuration.
    pub sim: SimConfig,
    /// The next record counter of stations that sent before (by station id): a gateway keeps
    /// its counter across restarts. Others number their first record by the time.
    pub counters: std::collections::HashMap<String, u64>,
}

/// What a run or flood published.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RunReport {
    /// Telemetry messages (status messages are not counted).
    pub messages: u64,
    /// Records in those messages.
    pub records: u64,
    /// Readings in those records.
    pub readings: u64,
    /// Wall time of the run (of a flood: from the first publish to the last PUBACK).
    pub elapsed: Duration,
}

impl RunReport {
    /// Records per second over `elapsed`.
    pub fn records_per_s(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.records as f64 / seconds
        } else {
            0.0
        }
    }

    fn count(&mut self, message: &Outgoing) {
        self.messages += 1;
        self.records += message.records.len() as u64;
        self.readings += message
            .records
            .iter()
            .map(|r| r.readings.len() as u64)
            .sum::<u64>();
    }
}

/// A simulated station as the run loop sees it.
struct Gateway {
    zone: String,
    id: String,
    encoding: Encoding,
    /// How often it reports live (`--interval`, or the registry's expected interval).
    interval_ms: i64,
    /// The registry's expected interval: the spacing of its stored history (a logger keeps
    /// what it measured, at its real pace, whatever the demo's live pace).
    history_interval_ms: i64,
    /// Signs its records with this key (the registry's `signing_keys`).
    key: Option<Vec<u8>>,
}

/// Runs the simulation until `cancel` fires or `options.duration` elapses.
pub async fn run(
    options: RunOptions,
    fleet: Fleet,
    cancel: CancellationToken,
) -> Result<RunReport> {
    let mut sim = Simulator::new(&fleet, options.stations, options.sim);
    if sim.is_empty() {
        return Err(Error::NoStation);
    }
    for (id, next) in &options.counters {
        sim.continue_counter(id, *next);
    }
    let gateways: Vec<Gateway> = (0..sim.len())
        .map(|i| {
            let spec = sim.station(i);
            let interval = options.interval.unwrap_or(spec.expected_interval);
            let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1);
            Gateway {
                zone: spec.zone.clone(),
                id: spec.id.clone(),
                encoding: options.encoding.for_station(i),
                interval_ms: ms(interval),
                history_interval_ms: ms(spec.expected_interval),
                key: spec.signing_key.clone(),
            }
        })
        .collect();
    tracing::info!(
        stations = gateways.len(),
        seeds = %options.seeds.display(),
        broker = %options.broker.url,
        seed = options.sim.seed,
        "starting simulated gateways"
    );
    let publisher = Publisher::connect(options.broker).await?;
    let started = Instant::now();
    let deadline = options.duration.map(|d| started + d);
    let mut report = RunReport::default();

    for g in &gateways {
        publisher.publish_status(&g.zone, &g.id, true).await?;
    }

    let live_from = now_ms();
    if let Some(backfill) = options.backfill {
        let from = live_from - i64::try_from(backfill.as_millis()).unwrap_or(i64::MAX / 2);
        let history = sim.history_by(from, live_from, BACKFILL_PER_MESSAGE, |i| {
            gateways[i].history_interval_ms
        });
        tracing::info!(messages = history.len(), "publishing backfill");
        for message in &history {
            if cancel.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            publish(&publisher, &gateways, message, &mut report).await?;
        }
        sim.start_from(live_from);
    }

    loop {
        let now = now_ms();
        for (i, gateway) in gateways.iter().enumerate() {
            for message in sim.tick_station(i, now, gateway.interval_ms) {
                publish(&publisher, &gateways, &message, &mut report).await?;
            }
        }
        let next = gateways
            .iter()
            .map(|g| (now.div_euclid(g.interval_ms) + 1) * g.interval_ms)
            .min()
            .unwrap_or(now + 1000);
        // Measured again: publishing took time since `now`.
        let until_next = u64::try_from(next - now_ms()).unwrap_or(0);
        let mut wake = Instant::now() + Duration::from_millis(until_next);
        if let Some(deadline) = deadline {
            if Instant::now() >= deadline {
                break;
            }
            wake = wake.min(deadline);
        }
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep_until(wake) => {}
        }
    }

    report.elapsed = started.elapsed();
    tracing::info!(
        messages = report.messages,
        records = report.records,
        "stopping simulated gateways"
    );
    if tokio::time::timeout(STOP_ACK_TIMEOUT, publisher.wait_acked())
        .await
        .is_err()
    {
        tracing::warn!(
            published = publisher.published(),
            acked = publisher.acked(),
            "not every message was acknowledged before the stop"
        );
    }
    for g in &gateways {
        publisher.publish_status(&g.zone, &g.id, false).await?;
    }
    publisher.disconnect().await?;
    Ok(report)
}

async fn publish(
    publisher: &Publisher,
    gateways: &[Gateway],
    message: &Outgoing,
    report: &mut RunReport,
) -> Result<()> {
    let gateway = gateways.iter().find(|g| g.id == message.station);
    let encoding = gateway.map_or(Encoding::Json, |g| g.encoding);
    let key = gateway.and_then(|g| g.key.as_deref());
    publisher
        .publish_signed(
            &message.zone,
            &message.station,
            encoding,
            &message.records,
            key,
        )
        .await?;
    report.count(message);
    Ok(())
}

/// Wall clock, milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_encoding_gives_each_station_its_own_in_a_fixed_order() {
        let mixed: Vec<Encoding> = (0..4)
            .map(|i| EncodingChoice::Mixed.for_station(i))
            .collect();
        assert_eq!(
            mixed,
            [
                Encoding::Json,
                Encoding::Bincode,
                Encoding::Tt10,
                Encoding::Json
            ]
        );
        assert_eq!(
            "tt10".parse::<EncodingChoice>().ok(),
            Some(EncodingChoice::One(Encoding::Tt10))
        );
        assert_eq!(
            "Mixed".parse::<EncodingChoice>().ok(),
            Some(EncodingChoice::Mixed)
        );
    }
}
