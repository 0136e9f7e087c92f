//! The messages a load sends: one record of `params` calm readings per message, round-robin
//! over the stations, each stamped "now" (strictly increasing per station, so that every
//! reading is new to quantrac), at the time resolution of the encoding (tt10 carries whole
//! seconds: a station that sends faster than once a second runs ahead of the clock).

use crate::fleet::StationSpec;
use crate::record::{Reading, Record, Status};

/// Generates load records. No I/O.
#[derive(Debug)]
pub struct Traffic<'a> {
    stations: Vec<&'a StationSpec>,
    params: usize,
    last_ts: Vec<i64>,
    resolution_ms: i64,
    next: usize,
    /// Each station's record counter (`seq`).
    seqs: Vec<u64>,
}

impl<'a> Traffic<'a> {
    /// Traffic over `stations` with the first `params` parameters of each (at most as many
    /// as the station with the fewest has), stamped in multiples of `resolution_ms`.
    pub fn new(stations: Vec<&'a StationSpec>, params: usize, resolution_ms: i64) -> Traffic<'a> {
        let fewest = stations
            .iter()
            .map(|s| s.parameters.len())
            .min()
            .unwrap_or(0);
        let stations_len = stations.len();
        Traffic {
            last_ts: vec![i64::MIN / 2; stations.len()],
            resolution_ms: resolution_ms.max(1),
            params: params.clamp(1, fewest.max(1)),
            stations,
            next: 0,
            seqs: vec![0; stations_len],
        }
    }

    /// Numbers each station's records from `first` on. Gateways keep their counter across
    /// restarts; a load that starts its counters at the wall clock in milliseconds stays
    /// above an earlier load on the same quantrac (which refuses a repeated `seq` as a replay)
    /// as long as no station sends more than a record per millisecond.
    pub fn numbered_from(mut self, first: u64) -> Traffic<'a> {
        self.seqs.fill(first);
        self
    }

    /// Readings per record.
    pub fn params(&self) -> usize {
        self.params
    }

    /// The next station and its record, stamped at `now_ms` or just after its last one.
    pub fn next_record(&mut self, now_ms: i64) -> Option<(&'a StationSpec, Record)> {
        if self.stations.is_empty() {
            return None;
        }
        let k = self.next % self.stations.len();
        self.next = self.next.wrapping_add(1);
        let station = self.stations[k];
        let ts_ms = next_time(now_ms, self.last_ts[k], self.resolution_ms);
        self.last_ts[k] = ts_ms;
        self.seqs[k] += 1;
        let readings = calm_readings(station, self.params);
        let record = Record {
            station: station.id.clone(),
            ts_ms,
            seq: Some(self.seqs[k]),
            readings,
        };
        Some((station, record))
    }
}

/// The time of a station's next record: now, rounded down to the resolution, or one step
/// after its previous record.
pub fn next_time(now_ms: i64, last_ms: i64, resolution_ms: i64) -> i64 {
    let now = now_ms - now_ms.rem_euclid(resolution_ms);
    now.max(last_ms.saturating_add(resolution_ms))
}

/// The first `params` parameters of `station`, each at its [`calm_value`].
pub fn calm_readings(station: &StationSpec, params: usize) -> Vec<Reading> {
    station
        .parameters
        .iter()
        .take(params)
        .map(|p| Reading {
            param: p.name.clone(),
            value: calm_value(p.upper_limit, p.range),
            unit: p.unit.clone(),
            status: Status::Measuring,
        })
        .collect()
}

/// A value well inside the limit and the range (30% of the limit, else mid-range), on a
/// 0.01 grid so that every encoding carries it exactly.
pub fn calm_value(upper_limit: Option<f64>, range: (f64, f64)) -> f64 {
    let value = match upper_limit {
        Some(limit) => limit * 0.3,
        None => (range.0 + range.1) / 2.0,
    };
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;

    #[test]
    fn records_go_round_robin_with_strictly_increasing_times_per_station() {
        let dir = tempfile::tempdir().unwrap();
        crate::fleet::generate::write(dir.path(), 3, 4, "1m").unwrap();
        let fleet = Fleet::load(dir.path()).unwrap();
        let mut traffic = Traffic::new(fleet.stations.iter().collect(), 99, 1);
        assert_eq!(traffic.params(), 4);
        let records: Vec<_> = (0..6).map(|_| traffic.next_record(1000).unwrap()).collect();
        assert_eq!(records[0].0.id, records[3].0.id);
        assert_eq!((records[0].1.ts_ms, records[3].1.ts_ms), (1000, 1001));
        assert!(records.iter().all(|(_, r)| r.readings.len() == 4));
        let limit = fleet.stations[0].parameters[0].upper_limit.unwrap();
        assert!(records[0].1.readings[0].value < limit);
    }

    #[test]
    fn times_keep_to_whole_seconds_for_tt10_and_run_ahead_only_when_sending_faster() {
        assert_eq!(next_time(10_999, i64::MIN / 2, 1000), 10_000);
        assert_eq!(next_time(10_999, 10_000, 1000), 11_000);
        assert_eq!(next_time(12_500, 11_000, 1000), 12_000);
        assert_eq!(next_time(12_500, 12_499, 1), 12_500);
    }
}
