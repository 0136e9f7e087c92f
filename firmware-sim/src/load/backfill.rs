//! The backfill: what every data logger does after an outage. Each station sends its stored
//! history, oldest first, as backlog arrays of `per_message` records, while the other
//! stations do the same over their own connections. The rate that matters is readings
//! stored per second, from the first publish until the last reading is stored.
//!
//! Stations are shared out over `connections` MQTT connections (station `i` on connection
//! `i % connections`); each connection sends one message per station in turn, so that every
//! station's history arrives in time order and all stations progress together, like a fleet
//! of loggers catching up at once.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::{calm_readings, Error, Quantrac};
use crate::encode::Encoding;
use crate::fleet::{Fleet, StationSpec};
use crate::publish::{BrokerOptions, Publisher};
use crate::record::{Reading, Record};

/// How often the stored count is read while waiting for the last readings.
const POLL: Duration = Duration::from_millis(50);
/// Longest wait for the last acknowledgements of a connection.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// What to send, where.
#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub broker: BrokerOptions,
    pub api: String,
    pub token: Option<String>,
    /// Stations (the first of the fleet) and readings per record.
    pub stations: usize,
    pub params: usize,
    pub encoding: Encoding,
    /// History per station, in records.
    pub records_per_station: u64,
    /// Records per backlog message.
    pub per_message: usize,
    /// Time between two records of a station's history.
    pub interval: Duration,
    /// MQTT connections sharing the stations.
    pub connections: usize,
    /// Longest wait for quantrac to store everything after the last acknowledgement.
    pub settle: Duration,
}

/// The result, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct BackfillReport {
    pub stations: usize,
    pub params: usize,
    pub encoding: &'static str,
    pub connections: usize,
    pub per_message: usize,
    pub records_per_station: u64,
    pub messages_published: u64,
    pub messages_acknowledged: u64,
    pub readings_published: u64,
    /// By quantrac's count (`quantrac_store_readings_total`).
    pub readings_stored: u64,
    /// Every published reading was stored.
    pub complete: bool,
    /// From the first publish to the last acknowledgement.
    pub publish_seconds: f64,
    /// From the first publish until the last reading was stored.
    pub seconds: f64,
    pub stored_per_second: f64,
    pub quantrac_peak_rss_bytes: Option<f64>,
}

/// A station's history, cut into backlog messages on demand (a backfill can be millions
/// of records long).
struct History {
    zone: String,
    station: String,
    readings: Vec<Reading>,
    first_ms: i64,
    interval_ms: i64,
    records: u64,
    sent: u64,
}

impl History {
    fn new(station: &StationSpec, params: usize, options: &BackfillOptions, now: i64) -> Self {
        let interval_ms = i64::try_from(options.interval.as_millis())
            .unwrap_or(i64::MAX / 4)
            .max(1000);
        let records = options.records_per_station;
        let span = interval_ms.saturating_mul(i64::try_from(records).unwrap_or(i64::MAX / 4));
        let last = now - now.rem_euclid(interval_ms);
        let readings = calm_readings(station, params);
        History {
            zone: station.zone.clone(),
            station: station.id.clone(),
            readings,
            first_ms: last.saturating_sub(span),
            interval_ms,
            records,
            sent: 0,
        }
    }

    /// The next backlog message of this station, oldest records first; `None` when its
    /// whole history is sent.
    fn next_message(&mut self, per_message: usize) -> Option<Vec<Record>> {
        let left = self.records - self.sent;
        if left == 0 {
            return None;
        }
        let count = left.min(per_message.max(1) as u64);
        let records = (self.sent..self.sent + count)
            .map(|k| Record {
                station: self.station.clone(),
                ts_ms: self.first_ms + i64::try_from(k).unwrap_or(0) * self.interval_ms,
                seq: None,
                readings: self.readings.clone(),
            })
            .collect();
        self.sent += count;
        Some(records)
    }
}

/// One connection's share: its stations' histories, one message per station in turn.
async fn send_share(
    broker: BrokerOptions,
    mut histories: Vec<History>,
    per_message: usize,
    encoding: Encoding,
) -> Result<(u64, u64), Error> {
    let publisher = Publisher::connect(broker).await?;
    let mut published = 0;
    loop {
        let mut sent_any = false;
        for history in &mut histories {
            if let Some(records) = history.next_message(per_message) {
                publisher
                    .publish_records(&history.zone, &history.station, encoding, &records)
                    .await?;
                published += 1;
                sent_any = true;
            }
        }
        if !sent_any {
            break;
        }
    }
    let _ = tokio::time::timeout(ACK_WAIT, publisher.wait_acked()).await;
    let acked = publisher.acked();
    let _ = publisher.disconnect().await;
    Ok((published, acked))
}

/// Runs the backfill and measures it.
pub async fn backfill(options: BackfillOptions, fleet: &Fleet) -> Result<BackfillReport, Error> {
    let chosen: Vec<&StationSpec> = fleet
        .stations
        .iter()
        .take(options.stations.max(1))
        .collect();
    let fewest = chosen.iter().map(|s| s.parameters.len()).min();
    let Some(fewest) = fewest else {
        return Err(Error::NoStation);
    };
    let params = options.params.clamp(1, fewest.max(1));
    let connections = options.connections.clamp(1, chosen.len());
    let now = super::now_ms();
    let mut shares: Vec<Vec<History>> = (0..connections).map(|_| Vec::new()).collect();
    for (i, station) in chosen.iter().enumerate() {
        shares[i % connections].push(History::new(station, params, &options, now));
    }
    let quantrac = Quantrac::new(&options.api, options.token.as_deref())?;
    let before = quantrac.stored().await?;

    let started = Instant::now();
    let mut sends = tokio::task::JoinSet::new();
    for (k, share) in shares.into_iter().enumerate() {
        let mut broker = options.broker.clone();
        broker.client_id = format!("{}-{k}", broker.client_id);
        sends.spawn(send_share(
            broker,
            share,
            options.per_message,
            options.encoding,
        ));
    }
    let mut messages_published = 0;
    let mut messages_acknowledged = 0;
    while let Some(outcome) = sends.join_next().await {
        let (published, acked) = outcome.map_err(|_| Error::Aborted)??;
        messages_published += published;
        messages_acknowledged += acked;
    }
    let publish_seconds = started.elapsed().as_secs_f64();

    let readings_published = chosen.len() as u64 * options.records_per_station * params as u64;
    let target = before + readings_published as f64;
    let deadline = Instant::now() + options.settle;
    let mut last = quantrac.stored().await?;
    let mut moved_at = Instant::now();
    while last < target && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        let now = quantrac.stored().await?;
        if now > last {
            last = now;
            moved_at = Instant::now();
        }
    }
    let readings_stored = (last - before).max(0.0) as u64;
    let seconds = moved_at.duration_since(started).as_secs_f64().max(1e-9);
    let peak = quantrac
        .metric("quantrac_process_peak_resident_bytes")
        .await?;
    Ok(BackfillReport {
        stations: chosen.len(),
        params,
        encoding: options.encoding.as_str(),
        connections,
        per_message: options.per_message.max(1),
        records_per_station: options.records_per_station,
        messages_published,
        messages_acknowledged,
        readings_published,
        readings_stored,
        complete: readings_stored >= readings_published,
        publish_seconds,
        seconds,
        stored_per_second: readings_stored as f64 / seconds,
        quantrac_peak_rss_bytes: peak,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn options(records: u64, per_message: usize) -> BackfillOptions {
        BackfillOptions {
            broker: BrokerOptions::new("mqtt://127.0.0.1:1", "t"),
            api: String::new(),
            token: None,
            stations: 1,
            params: 3,
            encoding: Encoding::Json,
            records_per_station: records,
            per_message,
            interval: Duration::from_secs(300),
            connections: 1,
            settle: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_history_is_cut_into_backlog_messages_oldest_first_ending_before_now() {
        let dir = tempfile::tempdir().unwrap();
        crate::fleet::generate::write(dir.path(), 1, 4, "5m").unwrap();
        let fleet = Fleet::load(dir.path()).unwrap();
        let now = 1_800_000_123_456;
        let mut history = History::new(&fleet.stations[0], 3, &options(5, 2), now);
        let sizes: Vec<Vec<i64>> = std::iter::from_fn(|| history.next_message(2))
            .map(|m| m.iter().map(|r| r.ts_ms).collect())
            .collect();
        assert_eq!(sizes.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let times: Vec<i64> = sizes.concat();
        assert!(times.windows(2).all(|w| w[1] - w[0] == 300_000));
        assert!(*times.last().unwrap() < now);
        assert_eq!(times[0] % 300_000, 0);
        assert_eq!(history.readings.len(), 3);
    }
}
