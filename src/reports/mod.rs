//! Reports for analysts, pure: given a station's readings and its limits, what they say.
//!
//! | module | job |
//! |---|---|
//! | [`calendar`] | report periods on the local calendar (days, months) |
//! | [`compliance`] | readings against the QCVN limits: counts, exceedances, verdicts |
//! | [`connectivity`] | records expected, received, on time; gaps; per zone and center |
//!
//! The API (`src/api/reports.rs`) reads the readings from the store and renders JSON or CSV;
//! `docs/reports.md` describes every field with a worked example.

pub mod calendar;
pub mod compliance;
pub mod connectivity;
