//! The undisturbed signal of one parameter: baseline, daily cycle, slow drift and noise.
//!
//! Baselines are chosen so that a station is normally compliant with margin (40-60 % of its
//! upper limit), like a plant whose treatment works; the interesting events (episodes,
//! calibrations, faults) are layered on top in [`super::events`]. Physical quantities without
//! a limit get plausible operating points (pH near 7.2, effluent around 29 °C, a stack near
//! 150 °C, O2 around 10 %, roughly atmospheric pressure).

use rand::Rng;

use super::rng::{self, Purpose};
use crate::fleet::ParamSpec;
use crate::vntime;

const HOUR_MS: i64 = 3_600_000;
/// Spacing of the random knots of the slow drift.
const DRIFT_KNOT_MS: i64 = 2 * HOUR_MS;

/// What a parameter measures, as far as its signal shape is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quantity {
    Ph,
    Temperature,
    Flow,
    Oxygen,
    Pressure,
    /// A concentration (COD, TSS, SO2, PM2.5, ...).
    Pollutant,
}

impl Quantity {
    fn of(name: &str) -> Quantity {
        match name.to_ascii_lowercase().as_str() {
            "ph" => Quantity::Ph,
            "temp" | "temperature" | "t" => Quantity::Temperature,
            "flow" | "q" => Quantity::Flow,
            "o2" => Quantity::Oxygen,
            "p" | "pressure" => Quantity::Pressure,
            _ => Quantity::Pollutant,
        }
    }

    /// Whether the parameter comes from an analyzer that is calibrated against standards.
    pub(crate) fn is_analyzer(self) -> bool {
        matches!(self, Quantity::Ph | Quantity::Oxygen | Quantity::Pollutant)
    }
}

/// The shape of one parameter's signal at one station.
#[derive(Debug, Clone)]
pub(crate) struct ParamModel {
    pub(crate) name: String,
    pub(crate) unit: String,
    pub(crate) quantity: Quantity,
    pub(crate) range: (f64, f64),
    pub(crate) upper_limit: Option<f64>,
    /// Hash key of the parameter (its name).
    pub(crate) key: u64,
    baseline: f64,
    /// Amplitude of the daily cycle, absolute.
    daily_amplitude: f64,
    /// Local time of day (ms) at which the daily cycle peaks.
    daily_peak_ms: i64,
    /// Amplitude of the slow drift, absolute.
    drift_amplitude: f64,
    /// Standard deviation of the measurement noise, absolute.
    pub(crate) noise_sd: f64,
}

impl ParamModel {
    pub(crate) fn new(spec: &ParamSpec, station_kind: &str, seed: u64, station_key: u64) -> Self {
        let key = rng::key_of(&spec.name);
        let mut rng = rng::rng(&[seed, station_key, key, Purpose::Baseline as u64]);
        let quantity = Quantity::of(&spec.name);
        let (min, max) = spec.range;
        // (baseline, daily, drift, noise) with daily/drift/noise relative to the baseline
        // unless stated otherwise.
        let (baseline, daily, drift, noise) = match quantity {
            Quantity::Ph => (7.0 + rng.random_range(0.0..0.4), 0.15, 0.12, 0.04),
            Quantity::Temperature => match station_kind {
                "emission" => (rng.random_range(130.0..170.0), 5.0, 4.0, 1.2),
                "wastewater" => (rng.random_range(27.0..31.0), 1.5, 0.6, 0.15),
                _ => (rng.random_range(27.0..30.0), 3.5, 1.0, 0.3),
            },
            Quantity::Oxygen => (rng.random_range(8.5..11.0), 0.3, 0.4, 0.15),
            Quantity::Pressure => {
                let base = if (min..=max).contains(&101.3) {
                    rng.random_range(100.5..102.0)
                } else {
                    (min + max) / 2.0
                };
                (base, 0.2, 0.2, 0.05)
            }
            Quantity::Flow => {
                let base = min + (max - min) * rng.random_range(0.2..0.3);
                (base, 0.25 * base, 0.08 * base, 0.03 * base)
            }
            Quantity::Pollutant => {
                let base = match spec.upper_limit {
                    Some(limit) => limit * rng.random_range(0.4..0.6),
                    None => min + (max - min) * rng.random_range(0.03..0.1),
                };
                (base, 0.12 * base, 0.08 * base, 0.04 * base)
            }
        };
        ParamModel {
            name: spec.name.clone(),
            unit: spec.unit.clone(),
            quantity,
            range: spec.range,
            upper_limit: spec.upper_limit,
            key,
            baseline: baseline.clamp(min, max),
            daily_amplitude: daily,
            daily_peak_ms: rng.random_range(9 * HOUR_MS..17 * HOUR_MS),
            drift_amplitude: drift,
            noise_sd: noise,
        }
    }

    /// Whether episodes may push this parameter above its limit: a concentration with an
    /// upper limit only (pH, with its two-sided band, is kept stable).
    pub(crate) fn has_episodes(&self) -> bool {
        self.quantity == Quantity::Pollutant && self.upper_limit.is_some()
    }

    /// The undisturbed value at `ts_ms` without noise.
    pub(crate) fn expected(&self, seed: u64, station_key: u64, ts_ms: i64) -> f64 {
        let phase =
            (vntime::ms_of_local_day(ts_ms) - self.daily_peak_ms) as f64 / vntime::DAY_MS as f64;
        let daily = self.daily_amplitude * (std::f64::consts::TAU * phase).cos();
        self.baseline + daily + self.drift_amplitude * self.drift(seed, station_key, ts_ms)
    }

    /// Measurement noise at `ts_ms` (a fresh draw for each instant).
    pub(crate) fn noise(&self, seed: u64, station_key: u64, ts_ms: i64) -> f64 {
        let mut rng = rng::rng(&[
            seed,
            station_key,
            self.key,
            Purpose::Noise as u64,
            rng::coord(ts_ms),
        ]);
        self.noise_sd * rng::gaussian(&mut rng)
    }

    /// Smooth drift in [-1, 1]: random knots every two hours, eased between.
    fn drift(&self, seed: u64, station_key: u64, ts_ms: i64) -> f64 {
        let knot_index = ts_ms.div_euclid(DRIFT_KNOT_MS);
        let knot = |index: i64| -> f64 {
            let mut rng = rng::rng(&[
                seed,
                station_key,
                self.key,
                Purpose::Drift as u64,
                rng::coord(index),
            ]);
            rng.random_range(-1.0..=1.0)
        };
        let t = ts_ms.rem_euclid(DRIFT_KNOT_MS) as f64 / DRIFT_KNOT_MS as f64;
        let (a, b) = (knot(knot_index), knot(knot_index + 1));
        a + (b - a) * smoothstep(t)
    }

    /// Clamps into the physical range and rounds to two decimals.
    pub(crate) fn finish(&self, value: f64) -> f64 {
        let (min, max) = self.range;
        let rounded = (value * 100.0).round() / 100.0;
        if rounded.is_finite() {
            rounded.clamp(min, max)
        } else {
            min
        }
    }
}

/// 0 at 0, 1 at 1, flat at both ends.
pub(crate) fn smoothstep(t: f64) -> f64 {
    let t = t.clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}
