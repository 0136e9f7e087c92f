//! The load tool: drives a running quantrac through its broker and measures it from outside,
//! as gateways and inspectors see it.
//!
//! - [`traffic`]: the messages: `stations` x `params` calm readings (use a generated seed
//!   set, [`crate::fleet::generate`], for large fleets), one record per message.
//! - [`load()`]: publishes them at a fixed rate of readings per second, or as fast as
//!   quantrac stores them (rate 0: publishing pauses while more than `max_backlog` readings
//!   are published but not yet stored, so the run measures quantrac's sustained rate rather
//!   than how much the broker can buffer), for a duration, and measures:
//!   - **publish to store**: every 20 ms a published reading is sampled and looked up
//!     through the readings API until it appears ([`store_probe`]);
//!   - **publish to alert**: a probe (the first station's first limited parameter, in
//!     messages of its own, on a station left out of the round-robin) alternates above and
//!     below its limit 20 times a second (tt10: once); with the generated rules every probe reading opens
//!     or resolves an alert, whose event is timed on arrival on the MQTT alert topic;
//!   - **stored**: quantrac's `quantrac_store_readings_total` must grow by every reading
//!     published; throughput is readings stored per second, from the first publish until
//!     the last reading is stored;
//!   - **cost**: quantrac's CPU seconds and peak resident memory from its `/metrics`.
//! - [`ceiling()`]: the same traffic to a subscriber that does nothing: the broker's limit.
//! - [`open_loop()`]: a number of messages as fast as the broker acknowledges them, never
//!   pausing for quantrac, then a wait until quantrac's stored count stops moving: whether
//!   every acknowledged reading was stored, and how long the drain took.
//! - [`connections()`]: one MQTT connection per station, each publishing its station:
//!   quantrac's memory with a whole fleet connected.
//! - [`backfill()`]: every station sends its stored history as backlog arrays over a few
//!   connections at once, as loggers do after an outage: readings stored per second.

mod backfill;
mod ceiling;
mod connections;
mod open_loop;
mod stats;
mod store_probe;
mod traffic;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rumqttc::QoS;
use serde::Serialize;

use crate::encode::Encoding;
use crate::fleet::Fleet;
use crate::publish::{self, BrokerOptions, Publisher, Subscription};
use crate::record::{Reading, Record, Status};

pub use backfill::{backfill, BackfillOptions, BackfillReport};
pub use ceiling::{ceiling, CeilingReport};
pub use connections::{connections, ConnectionsOptions, ConnectionsReport};
pub use open_loop::{open_loop, OpenLoopOptions, OpenLoopReport};
pub use stats::{Percentiles, Quantrac};
pub use traffic::{calm_readings, calm_value, Traffic};

/// How often a published reading is sampled for publish-to-store latency.
const STORE_PROBE_EVERY: Duration = Duration::from_millis(20);
/// How often the alert probe sends (tt10: once a second, its time resolution).
const ALERT_PROBE_EVERY: Duration = Duration::from_millis(50);

/// Errors of the load tool.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Publishing or subscribing failed.
    #[error(transparent)]
    Mqtt(#[from] publish::Error),
    /// quantrac's API did not answer as expected.
    #[error("quantrac's API: {0}")]
    Api(String),
    /// Nothing to send.
    #[error("the fleet has no station")]
    NoStation,
    /// The alert probe needs a parameter with an upper limit on the first station.
    #[error("station {0} has no parameter with an upper limit to probe alerts with")]
    NoProbe(String),
    /// A publishing task panicked or was cancelled.
    #[error("a publishing task ended without a result")]
    Aborted,
}

/// What to send, where.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The broker quantrac subscribes to.
    pub broker: BrokerOptions,
    /// quantrac's API base URL, e.g. `http://127.0.0.1:8080`.
    pub api: String,
    /// Bearer token for the API.
    pub token: Option<String>,
    /// Stations (the first of the fleet) and readings per record.
    pub stations: usize,
    pub params: usize,
    /// Readings per second; 0: as fast as quantrac stores them.
    pub rate: u64,
    /// With rate 0: most readings published but not yet stored before publishing pauses.
    pub max_backlog: u64,
    pub duration: Duration,
    pub encoding: Encoding,
    /// How long to wait, after publishing, for quantrac to store everything.
    pub settle: Duration,
}

/// The result of a load, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    pub stations: usize,
    pub params: usize,
    pub encoding: &'static str,
    /// Readings per second asked for (0: as fast as quantrac stores them).
    pub target_rate: u64,
    pub readings_published: u64,
    /// By quantrac's count; equal to `readings_published` unless `complete` is false.
    pub readings_stored: u64,
    /// Everything published was stored within the settle time.
    pub complete: bool,
    /// From the first publish to the last reading stored.
    pub seconds: f64,
    pub stored_per_second: f64,
    pub publish_to_store_ms: Percentiles,
    pub publish_to_alert_ms: Percentiles,
    /// CPU seconds quantrac used during the load.
    pub quantrac_cpu_seconds: Option<f64>,
    /// quantrac's peak resident memory since it started.
    pub quantrac_peak_rss_bytes: Option<f64>,
}

/// The time resolution of an encoding, in milliseconds.
pub(crate) fn resolution_ms(encoding: Encoding) -> i64 {
    match encoding {
        Encoding::Tt10 => 1000,
        Encoding::Json | Encoding::Bincode => 1,
    }
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Send times of alert probe readings, by reading time, and the latencies seen so far.
#[derive(Default)]
struct AlertClock {
    sent: Mutex<HashMap<i64, Instant>>,
    latencies: Mutex<Vec<f64>>,
}

impl AlertClock {
    /// An alert event arrived: if it is about a probe reading, record the latency.
    fn arrived(&self, payload: &[u8], at: Instant) {
        let Ok(event) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return;
        };
        // Opening and updates carry the reading's time in last_at; resolution in resolved_at.
        let alert = &event["alert"];
        let time = alert["resolved_at"].as_str().or(alert["last_at"].as_str());
        let Some(ts) = time.and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok()) else {
            return;
        };
        if let Some(sent) = self.sent.lock().remove(&ts.timestamp_millis()) {
            self.latencies
                .lock()
                .push(at.duration_since(sent).as_secs_f64() * 1000.0);
        }
    }
}

/// Runs the load and measures it. A load whose readings are not all stored within
/// `settle` is reported with `complete: false`.
pub async fn load(options: LoadOptions, fleet: &Fleet) -> Result<LoadReport, Error> {
    let chosen: Vec<_> = fleet
        .stations
        .iter()
        .take(options.stations.max(1))
        .collect();
    let probe = *chosen.first().ok_or(Error::NoStation)?;
    let probe_param = probe
        .parameters
        .iter()
        .find(|p| p.upper_limit.is_some())
        .ok_or_else(|| Error::NoProbe(probe.id.clone()))?;
    let limit = probe_param.upper_limit.unwrap_or_default();
    // The probe station sends only probe readings, unless it is the only station.
    let regular = if chosen.len() > 1 {
        chosen[1..].to_vec()
    } else {
        chosen.clone()
    };
    let resolution = resolution_ms(options.encoding);
    let mut traffic = Traffic::new(regular, options.params, resolution)
        .numbered_from(u64::try_from(now_ms()).unwrap_or(0));
    let probe_every = ALERT_PROBE_EVERY.max(Duration::from_millis(resolution.unsigned_abs()));
    let quantrac = Quantrac::new(&options.api, options.token.as_deref())?;
    let stored_before = quantrac
        .metric("quantrac_store_readings_total")
        .await?
        .unwrap_or(0.0);
    let cpu_before = quantrac.metric("quantrac_process_cpu_seconds").await?;

    let clock = Arc::new(AlertClock::default());
    let mut watcher = options.broker.clone();
    watcher.client_id = format!("{}-alerts", options.broker.client_id);
    let filter = match &options.broker.topic_prefix {
        Some(prefix) => format!("{prefix}/quantrac/v1/alerts/#"),
        None => "quantrac/v1/alerts/#".to_owned(),
    };
    let on_alert = clock.clone();
    let _alerts = Subscription::open(&watcher, &filter, QoS::AtMostOnce, move |p, at| {
        on_alert.arrived(&p.payload, at);
    })
    .await?;
    let publisher = Publisher::connect(options.broker.clone()).await?;

    let messages_per_s = options.rate as f64 / traffic.params() as f64;
    // Closed loop: look at quantrac's stored count often enough that the backlog overshoots
    // by at most a quarter.
    let check_every = (options.max_backlog / 4 / traffic.params() as u64).clamp(1, 256);
    let (store_samples, store_poller) = store_probe::spawn(quantrac.clone());
    let mut published = 0u64;
    let mut messages = 0u64;
    let mut probe_high = false;
    let mut probe_last_ts = i64::MIN / 2;
    let started = Instant::now();
    let mut next_store_probe = started;
    let mut next_alert_probe = started;
    while started.elapsed() < options.duration {
        if options.rate > 0 {
            // Paced: message n is due n / rate seconds after the start.
            let due = started + Duration::from_secs_f64(messages as f64 / messages_per_s);
            tokio::time::sleep_until(due.into()).await;
        } else if messages.is_multiple_of(check_every) && published > options.max_backlog {
            // Closed loop: let quantrac's stored count catch up to within the backlog.
            loop {
                let stored = quantrac
                    .metric("quantrac_store_readings_total")
                    .await?
                    .unwrap_or(stored_before);
                let behind = (stored_before + published as f64 - stored).max(0.0);
                if behind <= options.max_backlog as f64 || started.elapsed() >= options.duration {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let (station, record) = traffic.next_record(now_ms()).ok_or(Error::NoStation)?;
        let sent = Instant::now();
        let (ts, param) = (record.ts_ms, record.readings[0].param.clone());
        publisher
            .publish_records(&station.zone, &station.id, options.encoding, &[record])
            .await?;
        published += traffic.params() as u64;
        messages += 1;
        if sent >= next_store_probe {
            next_store_probe = sent + STORE_PROBE_EVERY;
            let _ = store_samples.send(store_probe::Sample {
                station: station.id.clone(),
                param,
                ts_ms: ts,
                sent,
            });
        }
        if sent >= next_alert_probe {
            next_alert_probe = sent + probe_every;
            probe_high = !probe_high;
            probe_last_ts = traffic::next_time(now_ms(), probe_last_ts, resolution);
            let record = Record {
                station: probe.id.clone(),
                ts_ms: probe_last_ts,
                seq: None,
                readings: vec![Reading {
                    param: probe_param.name.clone(),
                    value: if probe_high { limit * 1.5 } else { limit * 0.5 },
                    unit: probe_param.unit.clone(),
                    status: Status::Measuring,
                }],
            };
            clock.sent.lock().insert(probe_last_ts, Instant::now());
            publisher
                .publish_records(&probe.zone, &probe.id, options.encoding, &[record])
                .await?;
            published += 1;
        }
    }
    publisher.disconnect().await?;

    // Wait until quantrac has stored everything: its counter is the only signal it gives.
    let target = stored_before + published as f64;
    let deadline = Instant::now() + options.settle;
    let mut stored = stored_before;
    while stored < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if let Some(now) = quantrac.metric("quantrac_store_readings_total").await? {
            stored = now;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    drop(store_samples);
    let store_latencies = store_poller.await.unwrap_or_default();
    let cpu_after = quantrac.metric("quantrac_process_cpu_seconds").await?;
    let peak = quantrac
        .metric("quantrac_process_peak_resident_bytes")
        .await?;
    let readings_stored = (stored - stored_before).max(0.0) as u64;
    let alert_latencies = std::mem::take(&mut *clock.latencies.lock());
    Ok(LoadReport {
        stations: chosen.len(),
        params: traffic.params(),
        encoding: options.encoding.as_str(),
        target_rate: options.rate,
        readings_published: published,
        readings_stored,
        complete: readings_stored >= published,
        seconds,
        stored_per_second: readings_stored as f64 / seconds,
        publish_to_store_ms: Percentiles::of(store_latencies),
        publish_to_alert_ms: Percentiles::of(alert_latencies),
        quantrac_cpu_seconds: cpu_after.zip(cpu_before).map(|(a, b)| a - b),
        quantrac_peak_rss_bytes: peak,
    })
}
