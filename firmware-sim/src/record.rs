//! The logical telemetry record of `docs/telemetry.md`, independent of any encoding.
//!
//! A gateway measures a set of parameters at one instant and reports them together; the
//! encodings in [`crate::encode`](mod@crate::encode) only differ in how these same fields are laid out on the wire.

use std::fmt;

/// One measurement instant of one station: every configured parameter at `ts_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Registry id of the station (must equal the `{station}` of the topic).
    pub station: String,
    /// Measurement time, milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// The gateway's record counter; gaps reveal lost records. Optional on the wire.
    pub seq: Option<u64>,
    /// One entry per parameter.
    pub readings: Vec<Reading>,
}

/// One parameter's value within a [`Record`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Parameter symbol as configured for the station (`COD`, `pH`, `PM2.5`, ...).
    pub param: String,
    /// The measured value; always finite when produced by this crate.
    pub value: f64,
    /// Unit, exactly as in the station registry.
    pub unit: String,
    /// Circular 10 device status of the analyzer that produced the value.
    pub status: Status,
}

/// Circular 10/2021 device status: `00` measuring, `01` calibrating, `02` device error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// `00`: normal measurement.
    Measuring,
    /// `01`: the analyzer is being calibrated; the value is not a measurement of the effluent.
    Calibrating,
    /// `02`: the analyzer reports a fault.
    DeviceError,
}

impl Status {
    /// The two-character code used by JSON and tt10 (`"00"`, `"01"`, `"02"`).
    pub fn code(self) -> &'static str {
        match self {
            Status::Measuring => "00",
            Status::Calibrating => "01",
            Status::DeviceError => "02",
        }
    }

    /// The single byte used by the bincode encoding (`0x00`, `0x01`, `0x02`).
    pub fn byte(self) -> u8 {
        match self {
            Status::Measuring => 0,
            Status::Calibrating => 1,
            Status::DeviceError => 2,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_follow_circular_10() {
        assert_eq!(Status::Measuring.code(), "00");
        assert_eq!(Status::Calibrating.code(), "01");
        assert_eq!(Status::DeviceError.code(), "02");
        assert_eq!(Status::DeviceError.byte(), 2);
        assert_eq!(Status::Calibrating.to_string(), "01");
    }
}
