//! The index's concentrations are in ug/m3: a station's unit is converted to it, or the
//! pollutant is refused with the reason (never misread).

/// The factor that turns a value in `unit` into ug/m3.
///
/// ug/m3 and mg/m3 convert exactly. Normal cubic metres (`Nm3`, the unit of QCVN 05:2023 and
/// of most Vietnamese ambient stations) are taken as cubic metres, as the index's users do.
/// Volume ratios (ppm, ppb) would need the air's temperature and pressure: refused.
pub fn to_ug_m3(unit: &str) -> Result<f64, String> {
    let normal = unit
        .trim()
        .replace(['µ', 'μ'], "u")
        .replace('³', "3")
        .to_ascii_lowercase()
        .replace("nm3", "m3");
    match normal.as_str() {
        "ug/m3" => Ok(1.0),
        "mg/m3" => Ok(1000.0),
        _ => Err(format!(
            "unit `{unit}` cannot be converted to ug/m3, the index's unit (use ug/m3 or mg/m3)"
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mass_units_convert_and_volume_ratios_are_refused_by_name() {
        assert_eq!(to_ug_m3("ug/Nm3").unwrap(), 1.0);
        assert_eq!(to_ug_m3("µg/m3").unwrap(), 1.0);
        assert_eq!(to_ug_m3("µg/Nm³").unwrap(), 1.0);
        assert_eq!(to_ug_m3("mg/Nm3").unwrap(), 1000.0);
        let e = to_ug_m3("ppm").unwrap_err();
        assert!(e.contains("`ppm`"), "{e}");
        assert!(to_ug_m3("ppb").is_err());
    }
}
