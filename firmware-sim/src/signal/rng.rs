//! Stateless randomness: every random draw is a function of its coordinates.
//!
//! The simulator never advances a shared generator. Each draw seeds a fresh ChaCha8 stream
//! from a hash of `(seed, station, parameter, purpose, time slot)`, so the value at a given
//! instant does not depend on what was sampled before, in what order, or by which process:
//! `sample()` is a pure function, a backfill and a live run agree on every shared instant,
//! and two simulators with the same seed produce the same data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a draw is for; part of the hash so that unrelated draws are independent.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Purpose {
    Baseline = 1,
    Drift = 2,
    Noise = 3,
    Episode = 4,
    Calibration = 5,
    Fault = 6,
    Dropout = 7,
    Duplicate = 8,
}

/// SplitMix64 finaliser: a fast bijective mixer with good avalanche.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a sequence of coordinates (order matters).
pub(crate) fn hash(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x51_7C_C1_B7_27_22_0A_95, |h, &p| splitmix(h ^ splitmix(p)))
}

/// Stable 64-bit key of a name (FNV-1a), so that a station's signal depends on its id and
/// not on its position in the seed file.
pub(crate) fn key_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A generator for the draw at these coordinates.
pub(crate) fn rng(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(hash(parts))
}

/// A standard normal draw (Box-Muller).
pub(crate) fn gaussian(rng: &mut impl Rng) -> f64 {
    // 1 - [0, 1) is (0, 1], so the logarithm is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Time as a hash coordinate (two's complement; only equality matters).
pub(crate) fn coord(ts_ms: i64) -> u64 {
    ts_ms as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_coordinates_give_the_same_draws_and_others_differ() {
        let a: u64 = rng(&[1, 2, 3]).random();
        let b: u64 = rng(&[1, 2, 3]).random();
        let c: u64 = rng(&[1, 3, 2]).random();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(key_of("DN-AMATA-WW01"), key_of("DN-AMATA-WW02"));
    }

    #[test]
    fn gaussian_draws_have_roughly_unit_variance() {
        let n = 20_000;
        let draws: Vec<f64> = (0..n).map(|i| gaussian(&mut rng(&[i]))).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "variance {var}");
    }
}
