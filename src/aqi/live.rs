//! The current VN_AQI of each ambient station, kept as data arrives, so that the API, the
//! metrics and a dashboard read it instead of recomputing it.
//!
//! Per ambient station and pollutant, the valid readings (status 00) of the last 12 hours by
//! local hour, keyed by their time: a re-sent reading replaces itself and a corrected one its
//! earlier value, as in the store, so neither counts twice. After each message of an ambient station, its index is
//! computed for the newest hour that has a mean by the coverage rule (NowCast over the 12
//! hours ending there for PM): the same rules as `GET /api/v1/aqi?period=hour`
//! ([`super::calc::hourly`]). A reading older than the 12 hours before the station's newest
//! one is left to the stored history.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;

use super::calc::{self, Series};
use super::table::{Pollutant, Table};
use super::units;
use super::Index;
use crate::registry::{Registry, StationKind};
use crate::telemetry::{Reading, Status, Timestamp};

const HOUR: i64 = 3_600_000;
const KEPT_HOURS: i64 = 12;

/// A station's current index: the hour it is for (its start) and the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub hour: Timestamp,
    pub index: Index,
}

/// Readings (ug/m3) by time, by hour start, per pollutant.
#[derive(Debug, Default)]
struct Hours {
    by_pollutant: BTreeMap<Pollutant, BTreeMap<i64, BTreeMap<i64, f64>>>,
    current: Option<Current>,
}

pub struct LiveAqi {
    table: Arc<Table>,
    coverage: f64,
    /// Local hours start where `(ts + offset_ms) % HOUR == 0`.
    offset_ms: i64,
    stations: Mutex<HashMap<Arc<str>, Hours>>,
}

impl LiveAqi {
    pub fn new(table: Arc<Table>, coverage: f64, offset_ms: i64) -> LiveAqi {
        LiveAqi {
            table,
            coverage,
            offset_ms,
            stations: Mutex::new(HashMap::new()),
        }
    }

    fn hour_of(&self, ts: Timestamp) -> i64 {
        let shifted = ts.as_millis() + self.offset_ms;
        shifted - shifted.rem_euclid(HOUR) - self.offset_ms
    }

    /// Takes validated readings of one message (one station); returns the station's new
    /// current index when the message changed it.
    pub fn observe(
        &self,
        registry: &Registry,
        readings: &[Reading],
    ) -> Option<(Arc<str>, Current)> {
        let first = readings.first()?;
        let station = registry.station(&first.station)?;
        if station.kind != StationKind::Ambient {
            return None;
        }
        let interval = crate::telemetry::time::duration_ms(station.expected_interval);
        let mut stations = self.stations.lock();
        let hours = stations.entry(station.id.clone()).or_default();
        let mut touched = false;
        for r in readings {
            if r.status != Status::Measuring || r.station != station.id {
                continue;
            }
            let Some(pollutant) = Pollutant::of_param(&r.param) else {
                continue;
            };
            let Some(factor) = station
                .parameter(&r.param)
                .and_then(|p| units::to_ug_m3(&p.unit).ok())
            else {
                continue;
            };
            let hour = self.hour_of(r.ts);
            let series = hours.by_pollutant.entry(pollutant).or_default();
            let newest = series.keys().next_back().copied().unwrap_or(hour);
            if hour <= newest - KEPT_HOURS * HOUR {
                continue;
            }
            series
                .entry(hour)
                .or_default()
                .insert(r.ts.as_millis(), r.value * factor);
            let keep_from = hour.max(newest) - (KEPT_HOURS - 1) * HOUR;
            series.retain(|&h, _| h >= keep_from);
            touched = true;
        }
        if !touched {
            return None;
        }
        let current = self.compute(hours, interval)?;
        if hours.current.as_ref() == Some(&current) {
            return None;
        }
        hours.current = Some(current.clone());
        Some((station.id.clone(), current))
    }

    /// The index of the newest hour with a valid mean of any pollutant.
    fn compute(&self, hours: &Hours, interval_ms: i64) -> Option<Current> {
        let covered = |readings: &BTreeMap<i64, f64>| {
            let count = readings.len() as u64;
            crate::coverage::covered(count, HOUR, interval_ms, self.coverage)
                .then(|| readings.values().sum::<f64>() / count as f64)
        };
        let newest = hours
            .by_pollutant
            .values()
            .flat_map(|s| {
                s.iter()
                    .filter(|(_, v)| covered(v).is_some())
                    .map(|(h, _)| *h)
            })
            .max()?;
        let means: Vec<(Pollutant, Vec<Option<f64>>)> = hours
            .by_pollutant
            .iter()
            .map(|(p, s)| {
                let slots = (0..KEPT_HOURS)
                    .map(|k| {
                        let h = newest - (KEPT_HOURS - 1 - k) * HOUR;
                        s.get(&h).and_then(covered)
                    })
                    .collect();
                (*p, slots)
            })
            .collect();
        let series: Vec<Series<'_>> = means
            .iter()
            .map(|(p, h)| Series {
                pollutant: *p,
                hours: h,
            })
            .collect();
        let index = calc::hourly(&self.table, &series).ok()?;
        Some(Current {
            hour: Timestamp::from_millis(newest),
            index,
        })
    }

    /// Warms a station from its stored valid readings (at start, so that a restart does not
    /// leave the dashboard without an index for hours): `readings` are `(pollutant, time,
    /// value in the station's unit)`. Returns its current index, if it has one.
    pub fn restore(
        &self,
        registry: &Registry,
        station: &str,
        readings: &[(Pollutant, i64, f64)],
    ) -> Option<Current> {
        let station = registry.station(station)?;
        let interval = crate::telemetry::time::duration_ms(station.expected_interval);
        let mut stations = self.stations.lock();
        let entry = stations.entry(station.id.clone()).or_default();
        for &(pollutant, ts, value) in readings {
            let Some(factor) = station
                .parameters
                .iter()
                .find(|p| Pollutant::of_param(&p.name) == Some(pollutant))
                .and_then(|p| units::to_ug_m3(&p.unit).ok())
            else {
                continue;
            };
            entry
                .by_pollutant
                .entry(pollutant)
                .or_default()
                .entry(self.hour_of(Timestamp::from_millis(ts)))
                .or_default()
                .insert(ts, value * factor);
        }
        entry.current = self.compute(entry, interval);
        entry.current.clone()
    }

    /// Where local hours start: `(ts + offset_ms) % 1 h == 0`.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms
    }

    /// A station's current index, if it has one.
    pub fn current(&self, station: &str) -> Option<Current> {
        self.stations.lock().get(station)?.current.clone()
    }

    /// The breakpoints and bands the index is computed with (the API's too).
    pub fn table(&self) -> &Table {
        &self.table
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn registry() -> Registry {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        Registry::load(&seeds).unwrap()
    }

    fn reading(station: &str, param: &str, ts: i64, value: f64) -> Reading {
        Reading {
            station: station.into(),
            zone: "BN-VSIP".into(),
            param: param.into(),
            ts: Timestamp::from_millis(ts),
            value,
            status: Status::Measuring,
        }
    }

    #[test]
    fn the_current_index_appears_once_an_hour_has_enough_readings_and_follows_new_hours() {
        let live = LiveAqi::new(Arc::new(Table::builtin()), 0.75, 7 * HOUR);
        let registry = registry();
        let start = 1_764_000_000_000 - 1_764_000_000_000 % HOUR;
        let mut changed = Vec::new();
        // Three hours of PM2.5 at 5-minute intervals, 20 then 30 then 40 ug/m3.
        for h in 0..3 {
            for k in 0..12 {
                let r = reading(
                    "BN-VSIP-AQ01",
                    "PM2.5",
                    start + h * HOUR + k * 300_000,
                    20.0 + 10.0 * h as f64,
                );
                changed.extend(live.observe(&registry, &[r]));
            }
        }
        assert!(!changed.is_empty());
        // Nine readings make the first hour's mean, but NowCast needs 2 of the last 3 hours.
        let first = changed.first().unwrap();
        assert_eq!(first.1.hour, Timestamp::from_millis(start + HOUR));
        let now = live.current("BN-VSIP-AQ01").unwrap();
        assert_eq!(now.hour, Timestamp::from_millis(start + 2 * HOUR));
        assert_eq!(now.index.dominant, Pollutant::Pm25);
        // NowCast of 40, 30, 20: w = 0.5, (40 + 15 + 5) / 1.75 = 34.29 -> 68.6 -> 69.
        assert_eq!(now.index.aqi, 69);
    }

    #[test]
    fn a_station_restored_from_stored_readings_has_its_index_at_once() {
        let live = LiveAqi::new(Arc::new(Table::builtin()), 0.75, 7 * HOUR);
        let registry = registry();
        let start = 1_764_000_000_000 - 1_764_000_000_000 % HOUR;
        let readings: Vec<(Pollutant, i64, f64)> = (0..36)
            .map(|k| {
                (
                    Pollutant::Pm25,
                    start + k * 300_000,
                    20.0 + 10.0 * (k / 12) as f64,
                )
            })
            .collect();
        let current = live.restore(&registry, "BN-VSIP-AQ01", &readings).unwrap();
        assert_eq!(current.index.aqi, 69, "as if the readings had arrived");
        assert_eq!(live.current("BN-VSIP-AQ01"), Some(current));
        // Too few readings in an hour: no mean for it.
        let live = LiveAqi::new(Arc::new(Table::builtin()), 0.75, 7 * HOUR);
        let thin: Vec<_> = readings.iter().step_by(4).copied().collect();
        assert_eq!(live.restore(&registry, "BN-VSIP-AQ01", &thin), None);
    }

    #[test]
    fn a_reading_sent_twice_counts_once_and_a_correction_replaces_it() {
        let live = LiveAqi::new(Arc::new(Table::builtin()), 0.75, 7 * HOUR);
        let registry = registry();
        let start = 1_764_000_000_000 - 1_764_000_000_000 % HOUR;
        // Two hours of five readings each, every one sent twice: ten arrivals an hour, but
        // five readings, short of the nine an hour needs.
        for k in 0..24 {
            if k % 12 < 5 {
                let r = reading("BN-VSIP-AQ01", "PM2.5", start + k * 300_000, 30.0);
                live.observe(&registry, std::slice::from_ref(&r));
                live.observe(&registry, &[r]);
            }
        }
        assert_eq!(live.current("BN-VSIP-AQ01"), None);
        // Two full hours at 30, then every reading of the last one corrected to 60.
        for k in 0..24 {
            live.observe(
                &registry,
                &[reading("BN-VSIP-AQ01", "PM2.5", start + k * 300_000, 30.0)],
            );
        }
        for k in 12..24 {
            live.observe(
                &registry,
                &[reading("BN-VSIP-AQ01", "PM2.5", start + k * 300_000, 60.0)],
            );
        }
        // NowCast of 60 and 30: w = 0.5, (60 + 15) / 1.5 = 50 ug/m3: index 100.
        assert_eq!(live.current("BN-VSIP-AQ01").unwrap().index.aqi, 100);
    }

    #[test]
    fn other_stations_invalid_readings_and_other_parameters_do_not_count() {
        let live = LiveAqi::new(Arc::new(Table::builtin()), 0.75, 7 * HOUR);
        let registry = registry();
        let mut calibrating = reading("BN-VSIP-AQ01", "PM2.5", 0, 10.0);
        calibrating.status = Status::Calibrating;
        assert_eq!(live.observe(&registry, &[calibrating]), None);
        assert_eq!(
            live.observe(&registry, &[reading("BN-VSIP-WW01", "COD", 0, 1.0)]),
            None
        );
        assert_eq!(
            live.observe(&registry, &[reading("BN-VSIP-AQ01", "TSP", 0, 1.0)]),
            None
        );
        assert_eq!(live.current("BN-VSIP-AQ01"), None);
    }
}
