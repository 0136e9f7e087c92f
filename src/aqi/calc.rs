//! The decision's rules, pure: NowCast, 8-hour means, hourly and daily indices.
//!
//! Inputs are hourly means in ug/m3, oldest first, one slot per hour (`None`: no valid mean
//! for that hour, e.g. too few readings by the coverage rule). Nothing here reads a clock or
//! a store.

use serde::Serialize;

use super::table::{Pollutant, Scale, Table};

/// How a concentration was obtained from the hourly means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// The hour's mean (gases, hourly index).
    OneHourMean,
    /// NowCast of the last 12 hourly means (PM, hourly index).
    NowCast,
    /// The day's 24-hour mean (PM, daily index).
    DayMean,
    /// The day's largest hourly mean (gases, daily index).
    MaxOneHourMean,
    /// The day's largest 8-hour mean (O3, daily index).
    MaxEightHourMean,
}

/// One pollutant's part of an index.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubIndex {
    pub pollutant: Pollutant,
    pub basis: Basis,
    /// ug/m3.
    pub concentration: f64,
    /// The interpolated value, before rounding.
    pub value: f64,
    /// Rounded half up.
    pub index: u32,
}

/// An index for one hour or one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Index {
    /// The largest rounded sub-index.
    pub aqi: u32,
    /// The pollutant with that sub-index (the first in the decision's order on a tie).
    pub dominant: Pollutant,
    pub sub_indices: Vec<SubIndex>,
}

impl Index {
    /// The sub-index of `pollutant`, if it had a value.
    pub fn sub(&self, pollutant: Pollutant) -> Option<&SubIndex> {
        self.sub_indices.iter().find(|s| s.pollutant == pollutant)
    }
}

/// Why no index could be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// The decision needs at least one of PM2.5 and PM10.
    #[error("no PM2.5 or PM10 value (the index needs one)")]
    NoParticulates,
}

/// Rounds half up: 59.35 gives 59, 109.5 gives 110. (The decision prints 60 for an NO2
/// sub-index of 59.35 in its hourly example and 65 for 65.4 in its daily one: no single
/// rounding gives both, and quantrac follows the formula with rounding half up.)
pub fn round_half_up(x: f64) -> u32 {
    // A sub-index is not negative; the cast saturates for absurd values.
    (x + 0.5).floor().max(0.0) as u32
}

/// NowCast of hourly means `c1` (newest) to `c12`: `w* = min / max` of the present values,
/// `w = max(w*, 1/2)`, `sum(w^(i-1) c_i) / sum(w^(i-1))` over present values. `None` unless
/// at least 2 of `c1`..`c3` are present. `newest_first` may be shorter than 12.
pub fn nowcast(newest_first: &[Option<f64>]) -> Option<f64> {
    let hours = &newest_first[..newest_first.len().min(12)];
    if hours.iter().take(3).flatten().count() < 2 {
        return None;
    }
    let present = || hours.iter().flatten().copied();
    let max = present().fold(f64::NEG_INFINITY, f64::max);
    let min = present().fold(f64::INFINITY, f64::min);
    let ratio = if max > 0.0 { min / max } else { 1.0 };
    let w = ratio.max(0.5);
    let (mut sum, mut weights) = (0.0, 0.0);
    let mut weight = 1.0;
    for c in hours {
        if let Some(c) = c {
            sum += weight * c;
            weights += weight;
        }
        weight *= w;
    }
    Some(sum / weights)
}

/// The mean of `values` if at least `min_present` are present.
pub fn mean_of(values: &[Option<f64>], min_present: usize) -> Option<f64> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    (!present.is_empty() && present.len() >= min_present)
        .then(|| present.iter().sum::<f64>() / present.len() as f64)
}

/// Hourly means needed of a window of `hours` (the coverage rule's share, at least one).
pub fn needed(hours: usize, coverage: f64) -> usize {
    ((hours as f64 * coverage).ceil() as usize).clamp(1, hours)
}

fn sub(
    table: &Table,
    pollutant: Pollutant,
    scale: Scale,
    basis: Basis,
    c: f64,
) -> Option<SubIndex> {
    let value = table.sub_index(scale, c)?;
    Some(SubIndex {
        pollutant,
        basis,
        concentration: c,
        value,
        index: round_half_up(value),
    })
}

/// The index from its sub-indices: at least one PM is needed.
pub fn combine(sub_indices: Vec<SubIndex>) -> Result<Index, Missing> {
    if !sub_indices.iter().any(|s| s.pollutant.is_particulate()) {
        return Err(Missing::NoParticulates);
    }
    let mut best: Option<&SubIndex> = None;
    for s in &sub_indices {
        let better = best
            .is_none_or(|b| s.index > b.index || (s.index == b.index && s.pollutant < b.pollutant));
        if better {
            best = Some(s);
        }
    }
    let Some(best) = best else {
        return Err(Missing::NoParticulates);
    };
    Ok(Index {
        aqi: best.index,
        dominant: best.pollutant,
        sub_indices: sub_indices.clone(),
    })
}

/// One pollutant's hourly means, oldest first, ending with the hour the index is for.
pub struct Series<'a> {
    pub pollutant: Pollutant,
    pub hours: &'a [Option<f64>],
}

/// The hourly index for the last hour of each series: the hour's mean for gases (O3 on its
/// 1-hour scale), NowCast of the last 12 hours for PM.
pub fn hourly(table: &Table, series: &[Series<'_>]) -> Result<Index, Missing> {
    let mut subs = Vec::new();
    for s in series {
        let found = if s.pollutant.is_particulate() {
            let newest_first: Vec<Option<f64>> = s.hours.iter().rev().take(12).copied().collect();
            nowcast(&newest_first).and_then(|c| {
                sub(
                    table,
                    s.pollutant,
                    Scale::of(s.pollutant),
                    Basis::NowCast,
                    c,
                )
            })
        } else {
            s.hours.last().copied().flatten().and_then(|c| {
                sub(
                    table,
                    s.pollutant,
                    Scale::of(s.pollutant),
                    Basis::OneHourMean,
                    c,
                )
            })
        };
        subs.extend(found);
    }
    combine(subs)
}

/// The 8-hour means ending at each hour from `first` on (`hours[i]` is hour `i`; a window
/// needs `needed(8, coverage)` hourly means).
pub fn eight_hour_means(hours: &[Option<f64>], first: usize, coverage: f64) -> Vec<Option<f64>> {
    (first..hours.len())
        .map(|end| {
            let start = (end + 1).saturating_sub(8);
            if end + 1 < 8 {
                return None;
            }
            mean_of(&hours[start..=end], needed(8, coverage))
        })
        .collect()
}

/// The daily index. Each series holds the 7 hours before the day, then the day's 24 hourly
/// means (01:00 to 24:00 local, by the end of each hour): 31 slots. PM: the 24-hour mean;
/// SO2, NO2, CO: the largest hourly mean; O3: the larger of the sub-indices of its largest
/// hourly mean and its largest 8-hour mean ending within the day. Means need
/// `coverage` of their hours (18 of 24, 6 of 8 at 75%).
pub fn daily(table: &Table, series: &[Series<'_>], coverage: f64) -> Result<Index, Missing> {
    const BEFORE: usize = 7;
    let mut subs = Vec::new();
    for s in series {
        let day = &s.hours[BEFORE.min(s.hours.len())..];
        let day_covered = day.iter().flatten().count() >= needed(24, coverage);
        let max = |values: &[Option<f64>]| {
            values
                .iter()
                .flatten()
                .copied()
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        };
        match s.pollutant {
            p if p.is_particulate() => {
                let found = mean_of(day, needed(24, coverage))
                    .and_then(|c| sub(table, p, Scale::of(p), Basis::DayMean, c));
                subs.extend(found);
            }
            Pollutant::O3 => {
                let one = day_covered.then(|| max(day)).flatten().and_then(|c| {
                    sub(
                        table,
                        Pollutant::O3,
                        Scale::O3OneHour,
                        Basis::MaxOneHourMean,
                        c,
                    )
                });
                let eights = eight_hour_means(s.hours, BEFORE, coverage);
                let eight = max(&eights).and_then(|c| {
                    sub(
                        table,
                        Pollutant::O3,
                        Scale::O3EightHours,
                        Basis::MaxEightHourMean,
                        c,
                    )
                });
                let larger = match (one, eight) {
                    (Some(a), Some(b)) => Some(if b.index > a.index { b } else { a }),
                    (a, b) => a.or(b),
                };
                subs.extend(larger);
            }
            p => {
                let found = day_covered
                    .then(|| max(day))
                    .flatten()
                    .and_then(|c| sub(table, p, Scale::of(p), Basis::MaxOneHourMean, c));
                subs.extend(found);
            }
        }
    }
    combine(subs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn some(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().copied().map(Some).collect()
    }

    #[test]
    fn nowcast_of_the_decisions_example_is_20_3() {
        // 09:00 .. 20:00 as c12 .. c1.
        let oldest_first = [
            26.9, 24.7, 20.5, 23.5, 19.5, 16.5, 19.0, 16.5, 20.3, 22.4, 19.6, 20.6,
        ];
        let newest_first: Vec<Option<f64>> = some(&oldest_first).into_iter().rev().collect();
        let c = nowcast(&newest_first).unwrap();
        assert!((c - 20.3).abs() < 0.05, "{c}");
    }

    #[test]
    fn nowcast_needs_two_of_the_last_three_hours_and_gives_missing_hours_no_weight() {
        assert_eq!(nowcast(&[Some(10.0), None, None, Some(10.0)]), None);
        let c = nowcast(&[Some(10.0), None, Some(20.0)]).unwrap();
        // w* = 0.5: weights 1 and 0.25.
        assert!((c - (10.0 + 0.25 * 20.0) / 1.25).abs() < 1e-12, "{c}");
    }

    #[test]
    fn rounding_is_half_up_and_the_decisions_printed_60_is_not_followed() {
        assert_eq!(round_half_up(59.35), 59);
        assert_eq!(round_half_up(109.5), 110);
        assert_eq!(round_half_up(65.4), 65);
        assert_eq!(round_half_up(42.53), 43);
    }

    #[test]
    fn the_hourly_example_gives_59_by_the_formula_where_the_decision_prints_60() {
        let t = Table::builtin();
        let pm = [
            26.9, 24.7, 20.5, 23.5, 19.5, 16.5, 19.0, 16.5, 20.3, 22.4, 19.6, 20.6,
        ];
        let (pm, o3, no2) = (some(&pm), some(&[136.1]), some(&[118.7]));
        let index = hourly(
            &t,
            &[
                Series {
                    pollutant: Pollutant::O3,
                    hours: &o3,
                },
                Series {
                    pollutant: Pollutant::No2,
                    hours: &no2,
                },
                Series {
                    pollutant: Pollutant::Pm25,
                    hours: &pm,
                },
            ],
        )
        .unwrap();
        let by = |p| index.sub(p).unwrap().index;
        assert_eq!(by(Pollutant::O3), 43);
        assert_eq!(by(Pollutant::No2), 59, "59.35: the decision prints 60");
        assert_eq!(by(Pollutant::Pm25), 41, "NowCast 20.3");
        assert_eq!((index.aqi, index.dominant), (59, Pollutant::No2));
    }

    #[test]
    fn the_max_eight_hour_mean_of_the_decisions_example_is_74_4() {
        let o3 = [
            15.7, 14.2, 17.7, 18.9, 19.3, 15.7, 19.7, 22.6, 27.1, 29.0, 31.9, 25.3, 34.7, 35.2,
            41.6, 45.7, 49.2, 55.8, 69.6, 78.3, 91.5, 97.7, 81.2, 71.8, 43.5, 34.3, 21.5, 20.5,
            19.4, 20.4, 21.3,
        ];
        // 18:00 of the day before to 00:00 after: the day's 24 hours are slots 7..31.
        let means = eight_hour_means(&some(&o3), 7, 0.75);
        let max = means.iter().flatten().copied().fold(0.0, f64::max);
        assert!((max - 74.4).abs() < 0.05, "{max}");
        // It is the 8 hours ending 17:00 (slot 23, the 17th of the day's windows).
        assert!((means[23 - 7].unwrap() - 74.3875).abs() < 1e-9);
    }

    #[test]
    fn the_daily_example_gives_110_from_pm2_5() {
        let t = Table::builtin();
        // The decision gives the day's figures; series are built so they come out: PM2.5
        // 24-hour mean 55.7, NO2 largest hour 130.8, O3 largest hour 114.6 and largest 8-hour
        // mean 89.3.
        let mut pm = vec![None; 7];
        pm.extend(some(&[55.7; 24]));
        let mut no2 = vec![None; 7];
        no2.extend(some(&[50.0; 23]));
        no2.push(Some(130.8));
        // The 8 hours ending at the day's first hour average 89.3; the day's largest hour
        // is 114.6, in 8-hour windows of lower means.
        let mut o3 = some(&[89.3; 8]);
        o3.extend(some(&[10.0; 22]));
        o3.push(Some(114.6));
        let index = daily(
            &t,
            &[
                Series {
                    pollutant: Pollutant::Pm25,
                    hours: &pm,
                },
                Series {
                    pollutant: Pollutant::No2,
                    hours: &no2,
                },
                Series {
                    pollutant: Pollutant::O3,
                    hours: &o3,
                },
            ],
            0.75,
        )
        .unwrap();
        let by = |p| index.sub(p).unwrap().clone();
        assert_eq!(by(Pollutant::Pm25).index, 110, "109.5 rounded half up");
        assert_eq!(by(Pollutant::No2).index, 65);
        // O3: 45 from the 8-hour mean against 36 from the hour; the larger counts.
        let o3 = by(Pollutant::O3);
        assert_eq!(
            (o3.basis, o3.index),
            (Basis::MaxEightHourMean, 45),
            "{o3:?}"
        );
        assert!((o3.concentration - 89.3).abs() < 1e-9);
        let one_hour = t.sub_index(Scale::O3OneHour, 114.6).unwrap();
        assert_eq!(round_half_up(one_hour), 36);
        assert_eq!((index.aqi, index.dominant), (110, Pollutant::Pm25));
    }

    #[test]
    fn without_particulates_there_is_no_index() {
        let t = Table::builtin();
        let no2 = some(&[118.7]);
        let e = hourly(
            &t,
            &[Series {
                pollutant: Pollutant::No2,
                hours: &no2,
            }],
        )
        .unwrap_err();
        assert_eq!(e, Missing::NoParticulates);
    }

    #[test]
    fn a_day_with_too_few_hours_gives_no_24_hour_mean() {
        let t = Table::builtin();
        let mut pm = vec![None; 7];
        pm.extend(some(&[30.0; 17]));
        pm.extend([None; 7]);
        let e = daily(
            &t,
            &[Series {
                pollutant: Pollutant::Pm10,
                hours: &pm,
            }],
            0.75,
        );
        assert_eq!(
            e.unwrap_err(),
            Missing::NoParticulates,
            "17 of 24 hours is below 75%"
        );
    }
}
