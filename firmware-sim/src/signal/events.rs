//! Events that disturb the undisturbed signal: pollution episodes, calibrations, device
//! faults, link dropouts and duplicate sends.
//!
//! Each kind of event has a [`Schedule`]: time is cut into blocks (12 h, or a Vietnam local
//! day), and each block holds at most one occurrence, decided and placed by a generator seeded
//! from `(seed, station, kind, block)`. Whether an instant lies inside an event is therefore a
//! pure function of that instant, like everything else in the simulator.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::rng::{self, Purpose};
use crate::vntime;

const MINUTE_MS: i64 = 60_000;
const HALF_DAY_MS: i64 = 12 * 60 * MINUTE_MS;

/// How often and where in time one kind of event happens.
struct Schedule {
    purpose: Purpose,
    block_ms: i64,
    /// Blocks start at Vietnam local midnight rather than UTC midnight.
    local_days: bool,
    /// Chance that a block holds an occurrence.
    probability: f64,
}

/// One occurrence of an event: `[start, end)` plus whatever the event drew about itself.
struct Occurrence<T> {
    start: i64,
    end: i64,
    detail: T,
    rng: ChaCha8Rng,
}

impl Schedule {
    /// The occurrence in the block that contains `ts`, if the block has one (whether or not
    /// it covers `ts`). `plan` draws the duration and any detail known before placement.
    fn occurrence<T>(
        &self,
        seed: u64,
        station: u64,
        ts: i64,
        plan: impl FnOnce(&mut ChaCha8Rng) -> (i64, T),
    ) -> Option<Occurrence<T>> {
        let shift = if self.local_days {
            vntime::OFFSET_MS
        } else {
            0
        };
        let block = (ts + shift).div_euclid(self.block_ms);
        let mut rng = rng::rng(&[seed, station, self.purpose as u64, rng::coord(block)]);
        if rng.random::<f64>() >= self.probability {
            return None;
        }
        let (duration, detail) = plan(&mut rng);
        let duration = duration.clamp(1, self.block_ms);
        let start = block * self.block_ms - shift + rng.random_range(0..=self.block_ms - duration);
        Some(Occurrence {
            start,
            end: start + duration,
            detail,
            rng,
        })
    }
}

impl<T> Occurrence<T> {
    fn covers(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }
}

/// Pollution episodes: about 0.8 a day per station.
const EPISODES: Schedule = Schedule {
    purpose: Purpose::Episode,
    block_ms: HALF_DAY_MS,
    local_days: false,
    probability: 0.4,
};

/// Calibrations: about once a (local) day per station.
const CALIBRATIONS: Schedule = Schedule {
    purpose: Purpose::Calibration,
    block_ms: vntime::DAY_MS,
    local_days: true,
    probability: 0.9,
};

/// Device faults: rare, about once a week per station.
const FAULTS: Schedule = Schedule {
    purpose: Purpose::Fault,
    block_ms: vntime::DAY_MS,
    local_days: true,
    probability: 0.15,
};

/// Link dropouts: about one every two days per station.
const DROPOUTS: Schedule = Schedule {
    purpose: Purpose::Dropout,
    block_ms: HALF_DAY_MS,
    local_days: false,
    probability: 0.25,
};

/// Chance that a given send is preceded by a re-send of the previous message.
const DUPLICATE_PROBABILITY: f64 = 0.01;

/// A pollution episode: the affected parameters ramp up to 1.2-1.6x their limit over tens of
/// minutes, hold, and ramp back down, so that a trend is visible before the crossing.
#[derive(Debug, Clone)]
pub(crate) struct Episode {
    start: i64,
    ramp_up: i64,
    hold: i64,
    ramp_down: i64,
    /// `(parameter index, peak as a multiple of its limit)`.
    targets: Vec<(usize, f64)>,
}

impl Episode {
    /// Peak factor (multiple of the limit) for parameter `param`, if the episode affects it.
    pub(crate) fn peak_factor(&self, param: usize) -> Option<f64> {
        self.targets
            .iter()
            .find(|(index, _)| *index == param)
            .map(|(_, factor)| *factor)
    }

    /// How far the episode has progressed at `ts`: 0 outside, rising to 1 at the plateau.
    pub(crate) fn intensity(&self, ts: i64) -> f64 {
        let t = ts - self.start;
        let (up, hold, down) = (self.ramp_up, self.hold, self.ramp_down);
        if t < 0 || t >= up + hold + down {
            0.0
        } else if t < up {
            super::model::smoothstep(t as f64 / up as f64)
        } else if t < up + hold {
            1.0
        } else {
            1.0 - super::model::smoothstep((t - up - hold) as f64 / down as f64)
        }
    }
}

/// The episode under way at `ts`, among the parameters `eligible` (indices), if any.
pub(crate) fn episode_at(seed: u64, station: u64, eligible: &[usize], ts: i64) -> Option<Episode> {
    if eligible.is_empty() {
        return None;
    }
    let occurrence = EPISODES.occurrence(seed, station, ts, |rng| {
        let ramp_up = rng.random_range(30..=90) * MINUTE_MS;
        let hold = rng.random_range(10..=40) * MINUTE_MS;
        let ramp_down = rng.random_range(20..=60) * MINUTE_MS;
        (ramp_up + hold + ramp_down, (ramp_up, hold, ramp_down))
    })?;
    if !occurrence.covers(ts) {
        return None;
    }
    let Occurrence {
        start,
        detail: (ramp_up, hold, ramp_down),
        mut rng,
        ..
    } = occurrence;
    let primary = eligible[rng.random_range(0..eligible.len())];
    let mut targets = vec![(primary, rng.random_range(1.2..=1.6))];
    // A plant upset rarely moves a single analyte: sometimes a second one follows.
    if eligible.len() > 1 && rng.random_bool(0.35) {
        let second = eligible[rng.random_range(0..eligible.len())];
        if second != primary {
            targets.push((second, rng.random_range(1.2..=1.6)));
        }
    }
    Some(Episode {
        start,
        ramp_up,
        hold,
        ramp_down,
        targets,
    })
}

/// The phase of a calibration: zero check first, then span check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Calibration {
    Zero,
    Span,
}

/// The calibration under way at `ts` (10-20 minutes, about once a day), if any.
pub(crate) fn calibration_at(seed: u64, station: u64, ts: i64) -> Option<Calibration> {
    let occurrence = CALIBRATIONS.occurrence(seed, station, ts, |rng| {
        (rng.random_range(10..=20) * MINUTE_MS, ())
    })?;
    if !occurrence.covers(ts) {
        return None;
    }
    let middle = occurrence.start + (occurrence.end - occurrence.start) / 2;
    Some(if ts < middle {
        Calibration::Zero
    } else {
        Calibration::Span
    })
}

/// The index (below `params`) of the parameter whose analyzer is faulty at `ts`, if any.
pub(crate) fn fault_at(seed: u64, station: u64, params: usize, ts: i64) -> Option<usize> {
    if params == 0 {
        return None;
    }
    let occurrence = FAULTS.occurrence(seed, station, ts, |rng| {
        (rng.random_range(5..=45) * MINUTE_MS, ())
    })?;
    if !occurrence.covers(ts) {
        return None;
    }
    let mut rng = occurrence.rng;
    Some(rng.random_range(0..params))
}

/// Whether the station's link is down at `ts` (10-60 minutes, about every two days).
pub(crate) fn dropout_at(seed: u64, station: u64, ts: i64) -> bool {
    DROPOUTS
        .occurrence(seed, station, ts, |rng| {
            (rng.random_range(10..=60) * MINUTE_MS, ())
        })
        .is_some_and(|o| o.covers(ts))
}

/// Whether the send of the record at `ts` is preceded by a re-send of the previous message.
pub(crate) fn duplicate_at(seed: u64, station: u64, ts: i64) -> bool {
    rng::rng(&[seed, station, Purpose::Duplicate as u64, rng::coord(ts)])
        .random_bool(DUPLICATE_PROBABILITY)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = vntime::DAY_MS;
    const T0: i64 = 1_795_662_300_000;

    fn covered_minutes(f: impl Fn(i64) -> bool, days: i64) -> i64 {
        (0..days * 24 * 60)
            .filter(|m| f(T0 + m * MINUTE_MS))
            .count() as i64
    }

    #[test]
    fn calibrations_last_ten_to_twenty_minutes_about_once_a_day() {
        let minutes = covered_minutes(|ts| calibration_at(42, 7, ts).is_some(), 60);
        // 60 days x 0.9 x 10..20 minutes
        assert!((400..=1200).contains(&minutes), "{minutes} minutes");
    }

    #[test]
    fn an_episode_ramps_up_holds_and_ramps_down() {
        let eligible = [0, 1, 2];
        let ts = (T0..T0 + 30 * DAY)
            .step_by(MINUTE_MS as usize)
            .find(|&ts| episode_at(42, 7, &eligible, ts).is_some());
        let Some(start) = ts else {
            panic!("no episode in 30 days");
        };
        let episode = episode_at(42, 7, &eligible, start);
        let Some(episode) = episode else {
            panic!("episode vanished");
        };
        assert!(episode.intensity(start) < 0.05);
        let plateau = start + episode.ramp_up + episode.hold / 2;
        assert!((episode.intensity(plateau) - 1.0).abs() < 1e-9);
        let rising = start + episode.ramp_up / 2;
        assert!(episode.intensity(rising) > 0.3 && episode.intensity(rising) < 0.7);
        let (_, factor) = episode.targets[0];
        assert!((1.2..=1.6).contains(&factor));
    }

    #[test]
    fn dropouts_and_faults_are_rare_but_happen() {
        let dropout = covered_minutes(|ts| dropout_at(42, 7, ts), 60);
        let fault = covered_minutes(|ts| fault_at(42, 7, 5, ts).is_some(), 60);
        assert!(dropout > 0 && dropout < 60 * 24 * 60 / 20, "{dropout}");
        assert!(fault > 0 && fault < 60 * 24 * 60 / 50, "{fault}");
    }
}
