//! VN_AQI, the Vietnamese air quality index (Decision 1459/QD-TCMT), for ambient stations.
//!
//! | module | job |
//! |---|---|
//! | [`table`] | the breakpoints and bands, data from `seeds/vn_aqi.toml` |
//! | [`calc`] | the decision's rules, pure: NowCast, 8-hour means, hourly and daily indices |
//! | [`units`] | station units to the index's ug/m3, or a refusal with the reason |
//! | [`live`] | each ambient station's current index, kept as data arrives |
//!
//! The API (`GET /api/v1/aqi`, `src/api/aqi.rs`) reads hourly means from the store (valid
//! readings only, each hour's mean subject to the [coverage rule](crate::coverage)) and
//! hands them to [`calc`]. `docs/reports.md` has the rules and a worked example.

pub mod calc;
pub mod live;
pub mod table;
pub mod units;

pub use calc::{Basis, Index, Missing, SubIndex};
pub use table::{Band, Pollutant, Scale, Table};
