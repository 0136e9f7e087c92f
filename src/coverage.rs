//! The coverage rule: an average over a window stands for that window only when enough of
//! the readings the window should hold are there.
//!
//! One rule for everything that averages over time: averaged alert rules (`[exceedance]
//! coverage` in `rules.toml`) and the air quality index's hourly, 8-hour and daily means.

/// Readings a window of `window_ms` should hold from a station reporting every
/// `interval_ms` (at least one).
pub fn expected(window_ms: i64, interval_ms: i64) -> f64 {
    (window_ms as f64 / interval_ms.max(1) as f64).max(1.0)
}

/// Whether `count` readings cover at least the share `coverage` of a window of `window_ms`.
pub fn covered(count: u64, window_ms: i64, interval_ms: i64, coverage: f64) -> bool {
    count as f64 >= coverage * expected(window_ms, interval_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_five_minute_readings_is_covered_at_75_percent_by_nine_of_twelve() {
        const HOUR: i64 = 3_600_000;
        assert!(covered(9, HOUR, 300_000, 0.75));
        assert!(!covered(8, HOUR, 300_000, 0.75));
    }

    #[test]
    fn a_window_shorter_than_the_interval_expects_one_reading() {
        assert_eq!(expected(60_000, 300_000), 1.0);
        assert!(covered(1, 60_000, 300_000, 1.0));
        assert!(!covered(0, 60_000, 300_000, 0.1));
    }
}
