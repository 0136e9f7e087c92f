//! A throughput flood: many records as fast as the broker acknowledges them.
//!
//! Used to measure the center's ingest rate and to prove that nothing is lost under load, so
//! every reading it sends has a distinct identity `(station, param, ts)`: record `j` of a
//! station is stamped `start_ms + j * 1000`. Values come from a few steady samples of the
//! signal model (status `00`, within range, below limits) cycled per station, so that
//! producing them costs little next to encoding and sending.

use std::time::Duration;

use tokio::time::Instant;

use super::{Result, RunReport};
use crate::encode::Encoding;
use crate::fleet::Fleet;
use crate::publish::{BrokerOptions, Publisher};
use crate::record::{Reading, Record};
use crate::signal::{Outgoing, SimConfig, Simulator};

/// Distinct value sets cycled per station.
const TEMPLATES: i64 = 64;
/// Spacing of consecutive records of one station.
const RECORD_SPACING_MS: i64 = 1000;

/// Publishes `records` records round-robin over the fleet's stations, `per_message` records
/// per message, then waits for every PUBACK. `elapsed` runs from the first publish to the
/// last acknowledgement.
pub async fn flood(
    broker: BrokerOptions,
    fleet: &Fleet,
    encoding: Encoding,
    records: u64,
    per_message: usize,
    start_ms: i64,
) -> Result<RunReport> {
    let sim = Simulator::new(fleet, 0, SimConfig::quiet(SimConfig::default().seed));
    if sim.is_empty() {
        return Err(super::Error::NoStation);
    }
    let plan = Plan::new(&sim, records, per_message.max(1), start_ms);
    let publisher = Publisher::connect(broker).await?;
    let mut report = RunReport::default();
    let started = Instant::now();
    let mut last_log = started;
    for index in 0..plan.messages() {
        let message = plan.message(index);
        if message.records.is_empty() {
            continue;
        }
        publisher
            .publish_records(&message.zone, &message.station, encoding, &message.records)
            .await?;
        report.count(&message);
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            tracing::info!(
                records = report.records,
                acked_messages = publisher.acked(),
                "flooding"
            );
        }
    }
    publisher.wait_acked().await?;
    report.elapsed = started.elapsed();
    publisher.disconnect().await?;
    Ok(report)
}

/// Which records go in which message, computed on demand (a flood can be millions long).
struct Plan {
    stations: Vec<StationPlan>,
    per_message: u64,
    start_ms: i64,
}

struct StationPlan {
    zone: String,
    id: String,
    /// Records this station sends.
    records: u64,
    templates: Vec<Vec<Reading>>,
}

impl Plan {
    fn new(sim: &Simulator, records: u64, per_message: usize, start_ms: i64) -> Plan {
        let n = sim.len() as u64;
        let stations = (0..sim.len())
            .map(|s| {
                let spec = sim.station(s);
                StationPlan {
                    zone: spec.zone.clone(),
                    id: spec.id.clone(),
                    // Round-robin: the first `records % n` stations get one more.
                    records: records / n + u64::from((s as u64) < records % n),
                    templates: (0..TEMPLATES)
                        .map(|k| sim.sample(s, start_ms + k * 300_000).readings)
                        .collect(),
                }
            })
            .collect();
        Plan {
            stations,
            per_message: per_message as u64,
            start_ms,
        }
    }

    /// Messages per station, rounded up; station 0 has the most.
    fn rounds(&self) -> u64 {
        self.stations
            .first()
            .map_or(0, |s| s.records.div_ceil(self.per_message))
    }

    /// Upper bound of message indices (some indices of the last round may be empty).
    fn messages(&self) -> u64 {
        self.rounds() * self.stations.len() as u64
    }

    /// Message `index`: round `index / n` of station `index % n` (possibly empty at the end).
    fn message(&self, index: u64) -> Outgoing {
        let n = self.stations.len() as u64;
        let (round, station) = (index / n, (index % n) as usize);
        let plan = &self.stations[station];
        let first = round * self.per_message;
        let last = (first + self.per_message).min(plan.records);
        let records = (first..last)
            .map(|j| Record {
                station: plan.id.clone(),
                ts_ms: self.start_ms + j as i64 * RECORD_SPACING_MS,
                seq: Some(j),
                readings: plan.templates[(j % TEMPLATES as u64) as usize].clone(),
            })
            .collect();
        Outgoing {
            zone: plan.zone.clone(),
            station: plan.id.clone(),
            records,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::Status;
    use std::collections::HashSet;

    fn fleet() -> Fleet {
        let stations = r#"
            [[station]]
            id = "A"
            zone = "Z"
            kind = "wastewater"
            expected_interval = "5m"
            parameter = [ { name = "COD", unit = "mg/L", range = [0, 2000] },
                          { name = "pH", unit = "pH", range = [0, 14] } ]
            [[station]]
            id = "B"
            zone = "Z"
            kind = "ambient"
            expected_interval = "5m"
            parameter = [ { name = "PM10", unit = "ug/Nm3", range = [0, 2000] } ]
        "#;
        Fleet::parse(stations, "", chrono::NaiveDate::MIN).unwrap()
    }

    #[test]
    fn a_flood_plan_sends_exactly_the_asked_records_with_distinct_identities() {
        let sim = Simulator::new(&fleet(), 0, SimConfig::quiet(42));
        let plan = Plan::new(&sim, 101, 4, 1_000_000);
        let messages: Vec<Outgoing> = (0..plan.messages())
            .map(|i| plan.message(i))
            .filter(|m| !m.records.is_empty())
            .collect();
        let records: Vec<&Record> = messages.iter().flat_map(|m| &m.records).collect();
        assert_eq!(records.len(), 101);
        assert!(messages.iter().all(|m| m.records.len() <= 4));
        let identities: HashSet<(&str, i64)> = records
            .iter()
            .map(|r| (r.station.as_str(), r.ts_ms))
            .collect();
        assert_eq!(identities.len(), 101);
        assert_eq!(records.iter().filter(|r| r.station == "A").count(), 51);
        assert!(records
            .iter()
            .flat_map(|r| &r.readings)
            .all(|r| r.status == Status::Measuring));
        // Round-robin: consecutive messages alternate stations.
        assert_eq!(messages[0].station, "A");
        assert_eq!(messages[1].station, "B");
    }
}
