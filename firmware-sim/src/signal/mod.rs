//! A deterministic model of what a fleet of gateways measures and sends.
//!
//! Two layers, kept apart from any I/O so that they are tested alone:
//! - [`Simulator::sample`] is what a station *measures* at an instant: a pure function of
//!   `(seed, station, ts)`, built from the undisturbed signal (`model`) and the events that
//!   disturb it (`events`: pollution episodes, calibrations with status `01`, device faults
//!   with status `02`).
//! - [`Simulator::tick`] is what the stations *send* as time advances: one record per interval
//!   aligned on the interval, held back while the link is down and flushed as one backlog
//!   message when it returns, and occasionally preceded by a duplicate of the previous
//!   message. It is the only stateful part (what was already sent).
//!
//! Randomness never comes from a shared sequential generator (see `rng`), so the same seed
//! and time always give the same data, whatever was simulated before.

mod events;
mod model;
mod rng;

use crate::fleet::{Fleet, StationSpec};
use crate::record::{Reading, Record, Status};

use events::Calibration;
use model::{ParamModel, Quantity};

/// Largest number of records in one message when a backlog is flushed (a gateway splits a
/// long backlog so that each message stays well under broker packet limits).
pub const MAX_RECORDS_PER_MESSAGE: usize = 500;
/// Records a gateway keeps while its link is down; older ones are dropped first (ring buffer).
pub const MAX_BACKLOG_RECORDS: usize = 20_000;
/// Missed intervals that one `tick` catches up at most (e.g. after the host slept).
pub const MAX_CATCH_UP: i64 = 2_880;

/// Which disturbances the simulator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimConfig {
    /// Seed of every random draw.
    pub seed: u64,
    /// Pollution episodes above the limit.
    pub episodes: bool,
    /// Calibration windows (status `01`).
    pub calibrations: bool,
    /// Device faults (status `02`).
    pub faults: bool,
    /// Link dropouts followed by a backlog flush (only in [`Simulator::tick`]).
    pub dropouts: bool,
    /// Occasional duplicate sends (only in [`Simulator::tick`]).
    pub duplicates: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            episodes: true,
            calibrations: true,
            faults: true,
            dropouts: true,
            duplicates: true,
        }
    }
}

impl SimConfig {
    /// Steady signals only: no episode, calibration, fault, dropout or duplicate.
    pub fn quiet(seed: u64) -> Self {
        SimConfig {
            seed,
            episodes: false,
            calibrations: false,
            faults: false,
            dropouts: false,
            duplicates: false,
        }
    }
}

/// One MQTT message to send: records of one station, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Zone of the station (topic segment).
    pub zone: String,
    /// Station id (topic segment).
    pub station: String,
    /// The records, oldest first.
    pub records: Vec<Record>,
}

/// The simulated fleet: what each station measures and what it has sent so far.
#[derive(Debug, Clone)]
pub struct Simulator {
    config: SimConfig,
    stations: Vec<StationModel>,
    links: Vec<Link>,
}

#[derive(Debug, Clone)]
struct StationModel {
    spec: StationSpec,
    key: u64,
    params: Vec<ParamModel>,
    /// Indices of the parameters that episodes may push above their limit.
    episode_params: Vec<usize>,
}

/// What a station's gateway has sent: the sending state of [`Simulator::tick`].
#[derive(Debug, Clone, Default)]
struct Link {
    /// Earliest timestamp not yet produced; `None` before the first tick.
    next_ts: Option<i64>,
    /// Records held back while the link is down.
    backlog: Vec<Record>,
    /// The last message sent, for duplicates.
    last_message: Option<Vec<Record>>,
    /// The gateway's next record counter; `None` before its first record.
    next_seq: Option<u64>,
}

impl Simulator {
    /// Simulates the first `stations` stations of `fleet` (0 or more than the fleet = all of
    /// them: a gateway can only impersonate stations that the registry knows).
    pub fn new(fleet: &Fleet, stations: usize, config: SimConfig) -> Simulator {
        let count = if stations == 0 {
            fleet.stations.len()
        } else {
            stations.min(fleet.stations.len())
        };
        let stations: Vec<StationModel> = fleet.stations[..count]
            .iter()
            .map(|spec| {
                let key = rng::key_of(&spec.id);
                let params: Vec<ParamModel> = spec
                    .parameters
                    .iter()
                    .map(|p| ParamModel::new(p, &spec.kind, config.seed, key))
                    .collect();
                let episode_params = (0..params.len())
                    .filter(|&i| params[i].has_episodes())
                    .collect();
                StationModel {
                    spec: spec.clone(),
                    key,
                    params,
                    episode_params,
                }
            })
            .collect();
        let links = vec![Link::default(); stations.len()];
        Simulator {
            config,
            stations,
            links,
        }
    }

    /// The configuration.
    pub fn config(&self) -> SimConfig {
        self.config
    }

    /// Number of simulated stations.
    pub fn len(&self) -> usize {
        self.stations.len()
    }

    /// Whether no station is simulated.
    pub fn is_empty(&self) -> bool {
        self.stations.is_empty()
    }

    /// The registry entry of simulated station `station`.
    ///
    /// # Panics
    /// If `station >= self.len()`, like slice indexing.
    pub fn station(&self, station: usize) -> &StationSpec {
        &self.stations[station].spec
    }

    /// The value a station would have measured at `ts_ms`: deterministic in
    /// `(seed, station, param, ts_ms)`. `seq` is `None`: numbering belongs to sending.
    ///
    /// # Panics
    /// If `station >= self.len()`, like slice indexing.
    pub fn sample(&self, station: usize, ts_ms: i64) -> Record {
        let model = &self.stations[station];
        let seed = self.config.seed;
        let episode = if self.config.episodes {
            events::episode_at(seed, model.key, &model.episode_params, ts_ms)
        } else {
            None
        };
        let calibration = if self.config.calibrations {
            events::calibration_at(seed, model.key, ts_ms)
        } else {
            None
        };
        let fault = if self.config.faults {
            events::fault_at(seed, model.key, model.params.len(), ts_ms)
        } else {
            None
        };
        let readings = model
            .params
            .iter()
            .enumerate()
            .map(|(index, param)| {
                let noise = param.noise(seed, model.key, ts_ms);
                let (value, status) = if fault == Some(index) {
                    // A faulty analyzer typically reports the bottom of its scale.
                    (param.range.0, Status::DeviceError)
                } else if let Some(phase) = calibration.filter(|_| param.quantity.is_analyzer()) {
                    (
                        calibration_value(param, phase) + noise * 0.2,
                        Status::Calibrating,
                    )
                } else {
                    let mut value = param.expected(seed, model.key, ts_ms);
                    let peak = episode.as_ref().and_then(|e| {
                        let factor = e.peak_factor(index)?;
                        Some((factor * param.upper_limit?, e.intensity(ts_ms)))
                    });
                    let mut noise = noise;
                    if let Some((peak, intensity)) = peak {
                        value += (peak - value) * intensity;
                        noise *= 1.0 + intensity;
                    }
                    (value + noise, Status::Measuring)
                };
                Reading {
                    param: param.name.clone(),
                    value: param.finish(value),
                    unit: param.unit.clone(),
                    status,
                }
            })
            .collect();
        Record {
            station: model.spec.id.clone(),
            ts_ms,
            seq: None,
            readings,
        }
    }

    /// Advances every station to `now_ms` with a common `interval_ms`; returns the messages
    /// the fleet sends now (see [`Simulator::tick_station`]).
    pub fn tick(&mut self, now_ms: i64, interval_ms: i64) -> Vec<Outgoing> {
        (0..self.stations.len())
            .flat_map(|station| self.tick_station(station, now_ms, interval_ms))
            .collect()
    }

    /// Advances one station to `now_ms`. The station produces one record per `interval_ms`,
    /// at timestamps aligned on the interval: on the first call only the current one, later
    /// every one since the previous call (at most [`MAX_CATCH_UP`]). Records produced while
    /// its link is down are held back and flushed, oldest first, together with the first
    /// record after the link returns (in messages of at most [`MAX_RECORDS_PER_MESSAGE`]).
    /// Occasionally a send is preceded by a re-send of the previous message, as a gateway does
    /// when it missed an acknowledgement. `seq` counts the station's records (see
    /// [`Simulator::next_seq`]).
    ///
    /// # Panics
    /// If `station >= self.len()`, like slice indexing.
    pub fn tick_station(&mut self, station: usize, now_ms: i64, interval_ms: i64) -> Vec<Outgoing> {
        let interval = interval_ms.max(1);
        let current = now_ms.div_euclid(interval) * interval;
        let first = match self.links[station].next_ts {
            None => current,
            Some(next) => align_up(next, interval).max(current - MAX_CATCH_UP * interval),
        };
        if first > current {
            return Vec::new();
        }
        let (seed, key) = (self.config.seed, self.stations[station].key);
        let mut out = Vec::new();
        let mut ts = first;
        while ts <= current {
            let mut record = self.sample(station, ts);
            record.seq = self.next_seq(station, ts, interval);
            let link = &mut self.links[station];
            if link.backlog.len() >= MAX_BACKLOG_RECORDS {
                link.backlog.remove(0);
            }
            link.backlog.push(record);
            if !(self.config.dropouts && events::dropout_at(seed, key, ts)) {
                if self.config.duplicates && events::duplicate_at(seed, key, ts) {
                    if let Some(previous) = &link.last_message {
                        out.push(self.stations[station].message(previous.clone()));
                    }
                }
                let records = std::mem::take(&mut link.backlog);
                for chunk in records.chunks(MAX_RECORDS_PER_MESSAGE) {
                    out.push(self.stations[station].message(chunk.to_vec()));
                    link.last_message = Some(chunk.to_vec());
                }
            }
            ts += interval;
        }
        self.links[station].next_ts = Some(current + interval);
        out
    }

    /// The station's next record counter: one more than its previous record's, as a gateway
    /// counts; the first is the index of `ts`'s interval since the epoch (so that a restarted
    /// simulation starts above an earlier one's counters).
    fn next_seq(&mut self, station: usize, ts: i64, interval: i64) -> Option<u64> {
        let link = &mut self.links[station];
        let seq = link.next_seq.or_else(|| seq(ts, interval))?;
        link.next_seq = Some(seq + 1);
        Some(seq)
    }

    /// Numbers station `id`'s next record `next` (a gateway keeps its counter across
    /// restarts; a simulation started again continues an earlier one's). Unknown ids are
    /// ignored.
    pub fn continue_counter(&mut self, id: &str, next: u64) {
        if let Some(index) = self.stations.iter().position(|s| *s.spec.id == *id) {
            self.links[index].next_seq = Some(next);
        }
    }

    /// Makes the next tick of every station produce the records from `from_ms` on (aligned
    /// up on the interval), e.g. right after a backfill that ended at `from_ms`.
    pub fn start_from(&mut self, from_ms: i64) {
        for link in &mut self.links {
            link.next_ts = Some(from_ms);
        }
    }

    /// History for backfill: the records of every simulated station with
    /// `from_ms <= ts < to_ms` at `interval_ms` (aligned on the interval), grouped in messages
    /// of at most `per_message` records, oldest messages first. No dropouts or duplicates:
    /// this is what the gateways stored.
    pub fn history(
        &mut self,
        from_ms: i64,
        to_ms: i64,
        interval_ms: i64,
        per_message: usize,
    ) -> Vec<Outgoing> {
        self.history_by(from_ms, to_ms, per_message, |_| interval_ms)
    }

    /// [`Simulator::history`] with an interval per station.
    pub(crate) fn history_by(
        &mut self,
        from_ms: i64,
        to_ms: i64,
        per_message: usize,
        interval_of: impl Fn(usize) -> i64,
    ) -> Vec<Outgoing> {
        let per_message = per_message.max(1);
        let mut messages: Vec<(i64, usize, Outgoing)> = Vec::new();
        for index in 0..self.stations.len() {
            let interval = interval_of(index).max(1);
            let mut records = Vec::new();
            let mut ts = align_up(from_ms, interval);
            while ts < to_ms {
                let mut record = self.sample(index, ts);
                record.seq = self.next_seq(index, ts, interval);
                records.push(record);
                if records.len() == per_message {
                    let model = &self.stations[index];
                    messages.push((records[0].ts_ms, index, model.message(records)));
                    records = Vec::new();
                }
                ts += interval;
            }
            if let Some(first) = records.first() {
                let ts = first.ts_ms;
                messages.push((ts, index, self.stations[index].message(records)));
            }
        }
        messages.sort_by_key(|(ts, index, _)| (*ts, *index));
        messages.into_iter().map(|(_, _, m)| m).collect()
    }
}

impl StationModel {
    fn message(&self, records: Vec<Record>) -> Outgoing {
        Outgoing {
            zone: self.spec.zone.clone(),
            station: self.spec.id.clone(),
            records,
        }
    }
}

/// The value an analyzer reads from its check standard during a calibration.
fn calibration_value(param: &ParamModel, phase: Calibration) -> f64 {
    let (min, max) = param.range;
    match (param.quantity, phase) {
        (Quantity::Ph, Calibration::Zero) => 4.01,
        (Quantity::Ph, Calibration::Span) => 10.01,
        (_, Calibration::Zero) => min,
        // Span gas or standard solution: above the limit on purpose (a center must not raise
        // an alert on a calibrating analyzer), else a high point of the scale.
        (_, Calibration::Span) => param
            .upper_limit
            .map_or(min + (max - min) * 0.5, |limit| limit * 1.8),
    }
}

/// The record counter: index of the interval since the epoch (`None` before 1970).
fn seq(ts: i64, interval: i64) -> Option<u64> {
    u64::try_from(ts.div_euclid(interval)).ok()
}

/// The smallest multiple of `interval` that is `>= ts`.
fn align_up(ts: i64, interval: i64) -> i64 {
    let down = ts.div_euclid(interval) * interval;
    if down == ts {
        ts
    } else {
        down + interval
    }
}

#[cfg(test)]
mod tests;
