//! What the report routes share: which stations a request names (`station=` or `zone=`),
//! and whether it wants CSV.

use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::params::Params;
use super::{ApiError, ApiResult};
use crate::registry::{Registry, Station, StationKind};

/// Whether a request naming neither `station` nor `zone` means every station.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neither {
    Refused,
    AllStations,
}

/// The stations of `station=ID` or `zone=ID`, of `kind` when one is given: an unknown
/// station or zone is a 404; a station of another kind, or a zone without a station of the
/// kind, a 400 naming the parameter. Neither: every station, or a 400, as `neither` says.
pub fn stations<'r>(
    registry: &'r Registry,
    p: &mut Params,
    kind: Option<(StationKind, &str)>,
    neither: Neither,
) -> ApiResult<Vec<&'r Station>> {
    let fits = |s: &Station| kind.is_none_or(|(k, _)| s.kind == k);
    match (p.take("station"), p.take("zone")) {
        (Some(_), Some(_)) => Err(ApiError::bad("zone", "give `station` or `zone`, not both")),
        (Some(id), None) => {
            let station = registry
                .station(&id)
                .ok_or_else(|| ApiError::unknown_station(&id))?;
            if let Some((k, what)) = kind.filter(|_| !fits(station)) {
                return Err(ApiError::bad(
                    "station",
                    format!(
                        "`{id}` is a {} station: {what} is for {} stations",
                        station.kind.as_str(),
                        k.as_str()
                    ),
                ));
            }
            Ok(vec![station])
        }
        (None, Some(id)) => {
            if registry.zone(&id).is_none() {
                return Err(ApiError::NotFound {
                    code: "unknown_zone",
                    message: format!("zone `{id}` is not in the registry"),
                });
            }
            let chosen: Vec<&Station> = registry
                .stations()
                .iter()
                .filter(|s| &*s.zone == id.as_str() && fits(s))
                .collect();
            if chosen.is_empty() {
                let what = kind.map_or(String::new(), |(k, _)| format!(" {}", k.as_str()));
                return Err(ApiError::bad(
                    "zone",
                    format!("zone `{id}` has no{what} station"),
                ));
            }
            Ok(chosen)
        }
        (None, None) if neither == Neither::AllStations => {
            Ok(registry.stations().iter().filter(|s| fits(s)).collect())
        }
        (None, None) => Err(ApiError::bad("station", "give `station` or `zone`")),
    }
}

/// CSV when asked by `format=csv` or `Accept: text/csv`; JSON by default.
pub fn wants_csv(p: &mut Params, headers: &HeaderMap) -> ApiResult<bool> {
    match p.take("format").as_deref() {
        Some("csv") => Ok(true),
        Some("json") => Ok(false),
        Some(_) => Err(ApiError::bad("format", "must be json or csv")),
        None => Ok(headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.contains("text/csv"))),
    }
}

/// A CSV table as a download named `file_name`.
pub fn csv_response(file_name: &str, rows: Vec<Vec<String>>) -> Response {
    let mut w = csv::Writer::from_writer(Vec::new());
    for row in rows {
        // Writing to memory cannot fail.
        let _ = w.write_record(&row);
    }
    let body = w.into_inner().unwrap_or_default();
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{file_name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}
