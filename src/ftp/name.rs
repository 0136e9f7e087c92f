//! The Circular 10 file name, `<PROVINCE>_<FACILITY>_<STATION>_<YYYYMMDDhhmmss>.txt`, and how
//! it names a registry station.
//!
//! The registry's station ids are `<PROVINCE>-<FACILITY>-<STATION>` (`DN-AMATA-WW01` for
//! `DN_AMATA_WW01_20261126100500.txt`): the three fields joined by `-` are tried first, then
//! the `<STATION>` field alone (for registries that use the data logger's own station code as
//! the id). The time in the name only has to be well formed: the readings carry their own.
//! The name's last `_` separates the time, and its first two the province and facility, so a
//! station code may itself contain `_`.

use crate::registry::{Registry, Station};

/// The parts of a Circular 10 file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName<'a> {
    pub province: &'a str,
    pub facility: &'a str,
    pub station: &'a str,
    /// `YYYYMMDDhhmmss`, Vietnam local time.
    pub time: &'a str,
}

/// Why a name is not a Circular 10 file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("`{0}` does not end in .txt")]
    NotTxt(String),
    #[error("`{0}` is not <PROVINCE>_<FACILITY>_<STATION>_<YYYYMMDDhhmmss>.txt")]
    Shape(String),
    #[error("`{0}`: the time in the name must be 14 digits, YYYYMMDDhhmmss")]
    Time(String),
}

/// Parses a file's base name (no directory).
pub fn parse(name: &str) -> Result<FileName<'_>, NameError> {
    let stem = name
        .len()
        .checked_sub(4)
        .and_then(|at| name.get(at..).map(|ext| (at, ext)))
        .filter(|(_, ext)| ext.eq_ignore_ascii_case(".txt"))
        .and_then(|(at, _)| name.get(..at))
        .ok_or_else(|| NameError::NotTxt(name.to_owned()))?;
    let shape = || NameError::Shape(name.to_owned());
    let (head, time) = stem.rsplit_once('_').ok_or_else(shape)?;
    let mut parts = head.splitn(3, '_');
    let (Some(province), Some(facility), Some(station)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(shape());
    };
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !(ok(province) && ok(facility) && ok(station)) {
        return Err(shape());
    }
    if time.len() != 14 || !time.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NameError::Time(name.to_owned()));
    }
    Ok(FileName {
        province,
        facility,
        station,
        time,
    })
}

impl FileName<'_> {
    /// The registry ids this name may stand for, in the order they are tried.
    pub fn candidates(&self) -> [String; 2] {
        [
            format!("{}-{}-{}", self.province, self.facility, self.station),
            self.station.to_owned(),
        ]
    }

    /// The registry station this name stands for.
    pub fn resolve<'r>(&self, registry: &'r Registry) -> Option<&'r Station> {
        self.candidates().iter().find_map(|id| registry.station(id))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_circular_10_name_splits_into_its_four_fields() {
        let n = parse("TH_BSON_KHILO2_20260101103000.txt").unwrap();
        assert_eq!(
            (n.province, n.facility, n.station, n.time),
            ("TH", "BSON", "KHILO2", "20260101103000")
        );
        assert_eq!(n.candidates(), ["TH-BSON-KHILO2", "KHILO2"]);
        let n = parse("DN_AMATA_WW_01_20261126100500.TXT").unwrap();
        assert_eq!(n.station, "WW_01", "a station code may hold `_`");
    }

    #[test]
    fn malformed_names_are_refused_with_what_is_wrong() {
        assert!(matches!(
            parse("DN_AMATA_WW01_20261126100500.csv"),
            Err(NameError::NotTxt(_))
        ));
        assert!(matches!(parse(".txt"), Err(NameError::Shape(_))));
        assert!(matches!(
            parse("DN_AMATA_20261126100500.txt"),
            Err(NameError::Shape(_))
        ));
        assert!(matches!(
            parse("DN__WW01_20261126100500.txt"),
            Err(NameError::Shape(_))
        ));
        assert!(matches!(
            parse("DN_AMATA_WW01_2026112610.txt"),
            Err(NameError::Time(_))
        ));
        assert!(matches!(
            parse("DN_AMATA_W W01_20261126100500.txt"),
            Err(NameError::Shape(_))
        ));
    }

    #[test]
    fn a_name_resolves_to_the_joined_id_then_to_the_station_code() {
        let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
        let registry = Registry::load(&seeds).unwrap();
        let n = parse("DN_AMATA_WW01_20261126100500.txt").unwrap();
        assert_eq!(&*n.resolve(&registry).unwrap().id, "DN-AMATA-WW01");
        let n = parse("XX_YY_DN-AMATA-AQ01_20261126100500.txt").unwrap();
        assert_eq!(&*n.resolve(&registry).unwrap().id, "DN-AMATA-AQ01");
        let n = parse("DN_AMATA_NOPE_20261126100500.txt").unwrap();
        assert!(n.resolve(&registry).is_none());
    }
}
