//! Rolling windows in event time, in a bounded amount of memory.
//!
//! A window of any length is kept as at most [`BUCKETS`] sub-buckets of equal width, each
//! holding the sum, count, minimum and maximum of the readings that fall in it. A 24 h mean
//! of one-minute data therefore costs 48 buckets, not 1,440 readings; the price is that the
//! window slides by whole buckets (30 min for 24 h, 75 s for 1 h), which is what averaging
//! periods of regulations mean anyway.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Sub-buckets per window.
pub const BUCKETS: i64 = 48;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Bucket {
    index: i64,
    sum: f64,
    count: u32,
    min: f64,
    max: f64,
}

/// Aggregates of the readings in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub count: u32,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    width_ms: i64,
    buckets: VecDeque<Bucket>,
}

impl Window {
    pub fn new(window_ms: i64) -> Window {
        Window {
            width_ms: (window_ms / BUCKETS).max(1),
            buckets: VecDeque::new(),
        }
    }

    /// Adds a reading. Readings come in event-time order; an older one still lands in its
    /// bucket if that bucket is kept.
    pub fn add(&mut self, ts: i64, value: f64) {
        let index = ts.div_euclid(self.width_ms);
        let position = self.buckets.iter().rposition(|b| b.index <= index);
        match position {
            Some(p) if self.buckets[p].index == index => {
                let b = &mut self.buckets[p];
                b.sum += value;
                b.count += 1;
                b.min = b.min.min(value);
                b.max = b.max.max(value);
            }
            _ => {
                let at = position.map_or(0, |p| p + 1);
                self.buckets.insert(
                    at,
                    Bucket {
                        index,
                        sum: value,
                        count: 1,
                        min: value,
                        max: value,
                    },
                );
            }
        }
        // Keep what can still be inside a window ending at the newest bucket.
        let newest = self.buckets.back().map_or(index, |b| b.index);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.index <= newest - BUCKETS)
        {
            self.buckets.pop_front();
        }
    }

    /// Aggregates of the window that ends with the bucket holding `ts`.
    pub fn stats(&self, ts: i64) -> Option<Stats> {
        let last = ts.div_euclid(self.width_ms);
        let mut out: Option<Stats> = None;
        let mut sum = 0.0;
        for b in self
            .buckets
            .iter()
            .filter(|b| b.index > last - BUCKETS && b.index <= last)
        {
            sum += b.sum;
            out = Some(match out {
                None => Stats {
                    count: b.count,
                    mean: 0.0,
                    min: b.min,
                    max: b.max,
                },
                Some(s) => Stats {
                    count: s.count + b.count,
                    mean: 0.0,
                    min: s.min.min(b.min),
                    max: s.max.max(b.max),
                },
            });
        }
        out.map(|s| Stats {
            mean: sum / f64::from(s.count),
            ..s
        })
    }

    /// The span of time the window covers.
    pub fn span_ms(&self) -> i64 {
        self.width_ms * BUCKETS
    }
}

/// The last readings within a window, for a least-squares trend. Bounded: beyond
/// [`MAX_POINTS`] the oldest go first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Points {
    points: VecDeque<(i64, f64)>,
}

pub const MAX_POINTS: usize = 256;

/// A fitted line: value = intercept + slope x (t - t_ref), t in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    pub t_ref: i64,
    pub intercept: f64,
    /// Per millisecond.
    pub slope: f64,
}

impl Line {
    pub fn at(&self, t: i64) -> f64 {
        self.intercept + self.slope * (t - self.t_ref) as f64
    }
}

impl Points {
    pub fn add(&mut self, ts: i64, value: f64, window_ms: i64) {
        self.points.push_back((ts, value));
        while self
            .points
            .front()
            .is_some_and(|&(t, _)| t <= ts - window_ms)
            || self.points.len() > MAX_POINTS
        {
            self.points.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Least-squares line through the points (`None` with fewer than two distinct times).
    pub fn fit(&self) -> Option<Line> {
        let &(t_ref, _) = self.points.back()?;
        let n = self.points.len() as f64;
        // Minutes relative to the newest point keep the sums well conditioned.
        let (mut st, mut sv, mut stt, mut stv) = (0.0, 0.0, 0.0, 0.0);
        for &(t, v) in &self.points {
            let x = (t - t_ref) as f64 / 60_000.0;
            st += x;
            sv += v;
            stt += x * x;
            stv += x * v;
        }
        let denominator = n * stt - st * st;
        if denominator.abs() < f64::EPSILON {
            return None;
        }
        let slope_per_minute = (n * stv - st * sv) / denominator;
        let intercept = (sv - slope_per_minute * st) / n;
        Some(Line {
            t_ref,
            intercept,
            slope: slope_per_minute / 60_000.0,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn a_window_keeps_the_mean_of_its_span_and_forgets_older_readings() {
        let mut w = Window::new(60 * MIN);
        for m in 0..120 {
            w.add(m * MIN, m as f64);
        }
        let s = w.stats(119 * MIN).unwrap();
        // 48 buckets of 75 s over one-minute data: about the last 60 minutes.
        assert!((58..=61).contains(&s.count), "{s:?}");
        assert!(s.min >= 58.0 && s.max == 119.0, "{s:?}");
        assert!((s.mean - (s.min + s.max) / 2.0).abs() < 1.0);
        assert!(w.buckets.len() <= BUCKETS as usize);
    }

    #[test]
    fn a_late_reading_lands_in_its_own_bucket() {
        let mut w = Window::new(60 * MIN);
        w.add(10 * MIN, 1.0);
        w.add(30 * MIN, 3.0);
        w.add(20 * MIN, 2.0);
        let s = w.stats(30 * MIN).unwrap();
        assert_eq!((s.count, s.mean, s.min, s.max), (3, 2.0, 1.0, 3.0));
    }

    #[test]
    fn a_straight_line_is_fitted_exactly_and_projected() {
        let mut p = Points::default();
        for m in 0..6 {
            p.add(m * 5 * MIN, 10.0 + 2.0 * m as f64, 60 * MIN);
        }
        let line = p.fit().unwrap();
        assert!((line.at(25 * MIN) - 20.0).abs() < 1e-9);
        assert!((line.at(55 * MIN) - 32.0).abs() < 1e-9, "30 minutes ahead");
    }

    #[test]
    fn points_outside_the_window_are_dropped_and_one_point_fits_nothing() {
        let mut p = Points::default();
        p.add(0, 1.0, 10 * MIN);
        assert!(p.fit().is_none());
        p.add(20 * MIN, 2.0, 10 * MIN);
        assert_eq!(p.len(), 1);
    }
}
