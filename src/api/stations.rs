//! `/zones`, `/stations`, `/stations/{id}`, `/stations/{id}/latest`.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::auth::need;
use super::params::Params;
use super::{silence_allowed, ApiError, ApiResult, ApiState, PathId};
use crate::live::StationLive;
use crate::registry::Registry;
use crate::registry::{Station, StationKind};
use crate::security::Role;
use crate::telemetry::{GatewayState, Timestamp};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/zones", need(Role::Viewer, get(zones)))
        .route("/stations", need(Role::Viewer, get(list)))
        .route("/stations/{id}", need(Role::Viewer, get(one)))
        .route("/stations/{id}/latest", need(Role::Viewer, get(latest)))
}

#[derive(Serialize)]
struct Gateway {
    state: &'static str,
    at: String,
}

/// A registry entry with its live status.
#[derive(Serialize)]
struct StationView<'a> {
    #[serde(flatten)]
    station: &'a Station,
    /// When the last valid reading arrived.
    last_seen: Option<String>,
    online: bool,
    /// The gateway's own announcement on the status topic.
    gateway: Option<Gateway>,
    /// The record counter since quantrac started: highest `seq` and records missing.
    records: Option<Records>,
    /// Ambient stations: the current VN_AQI (the newest hour with enough valid readings).
    #[serde(skip_serializing_if = "Option::is_none")]
    aqi: Option<Value>,
}

#[derive(Serialize)]
struct Records {
    last_seq: u64,
    missing: u64,
}

fn view<'a>(state: &ApiState, station: &'a Station, now: Timestamp) -> StationView<'a> {
    let live = state.live.station(&station.id).unwrap_or_default();
    StationView {
        station,
        last_seen: live.last_seen.map(|t| state.time(t)),
        online: is_online(&live, station, state.offline_after, now),
        gateway: live.gateway.map(|(g, at)| Gateway {
            state: g.as_str(),
            at: state.time(at),
        }),
        records: state
            .sequences
            .lock()
            .station(&station.id)
            .map(|(last_seq, missing)| Records { last_seq, missing }),
        aqi: current_aqi(state, station),
    }
}

/// An ambient station's current index as the API shows it: `null` until one is known.
fn current_aqi(state: &ApiState, station: &Station) -> Option<Value> {
    if station.kind != StationKind::Ambient {
        return None;
    }
    let Some(current) = state.aqi.current(&station.id) else {
        return Some(Value::Null);
    };
    let band = state.aqi.table().band(current.index.aqi);
    let end = Timestamp::from_millis(current.hour.as_millis() + 3_600_000);
    Some(
        json!({"hour_start": state.time(current.hour), "hour_end": state.time(end),
                "aqi": current.index.aqi, "band": band.name, "band_vi": band.name_vi,
                "colour": band.colour(), "dominant": current.index.dominant,
                "sub_indices": current.index.sub_indices}),
    )
}

/// How many registered stations are online now (for the metrics), counted at most once per
/// [`ONLINE_COUNT_EVERY`]: a count looks at every station (10,000 in a large center), and a
/// load tool reading `/metrics` every 10 ms spent 8% of quantrac's CPU on it. A gauge read
/// by Prometheus every 15 s loses nothing by being up to a second old.
pub(super) fn online_count(state: &ApiState, stations: &[Station], now: Timestamp) -> usize {
    state.online.get(now, || {
        state.live.count(
            stations,
            |s| &s.id,
            |s, live| is_online(live, s, state.offline_after, now),
        )
    })
}

/// See [`online_count`].
pub const ONLINE_COUNT_EVERY: i64 = 1000;

/// The last count of stations online, and when it was taken.
#[derive(Debug, Default)]
pub struct OnlineCount(parking_lot::Mutex<Option<(Timestamp, usize)>>);

impl OnlineCount {
    /// The count taken less than [`ONLINE_COUNT_EVERY`] ms before `now`, or a new one.
    fn get(&self, now: Timestamp, count: impl FnOnce() -> usize) -> usize {
        let mut last = self.0.lock();
        match *last {
            Some((at, n))
                if (0..ONLINE_COUNT_EVERY).contains(&(now.as_millis() - at.as_millis())) =>
            {
                n
            }
            _ => {
                let n = count();
                *last = Some((now, n));
                n
            }
        }
    }
}

/// Online: data arrived within `offline_after` expected intervals, and the gateway has not
/// announced `offline` since.
fn is_online(live: &StationLive, station: &Station, offline_after: u32, now: Timestamp) -> bool {
    let Some(seen) = live.last_seen else {
        return false;
    };
    let fresh = now.as_millis() - seen.as_millis()
        <= silence_allowed(station.expected_interval, offline_after);
    let announced_offline = matches!(live.gateway, Some((GatewayState::Offline, at)) if at >= seen);
    fresh && !announced_offline
}

async fn zones(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    Params::parse(q.as_deref())?.finish()?;
    let registry = state.registry.load();
    let zones: Vec<Value> = registry
        .zones()
        .iter()
        .map(|z| {
            let stations = registry
                .stations()
                .iter()
                .filter(|s| s.zone == z.id)
                .count();
            json!({"id": z.id, "name": z.name, "province": z.province,
                   "authority": z.authority, "stations": stations})
        })
        .collect();
    Ok(Json(json!({ "zones": zones })))
}

async fn list(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let mut params = Params::parse(q.as_deref())?;
    let zone = params.take("zone");
    let kind = params
        .take("kind")
        .map(|k| {
            StationKind::parse(&k)
                .ok_or_else(|| ApiError::bad("kind", "must be wastewater, emission or ambient"))
        })
        .transpose()?;
    params.finish()?;
    let registry = state.registry.load();
    if let Some(z) = &zone {
        if registry.zone(z).is_none() {
            return Err(ApiError::NotFound {
                code: "unknown_zone",
                message: format!("zone `{z}` is not in the registry"),
            });
        }
    }
    let now = Timestamp::now();
    let stations: Vec<StationView<'_>> = registry
        .stations()
        .iter()
        .filter(|s| zone.as_deref().is_none_or(|z| &*s.zone == z))
        .filter(|s| kind.is_none_or(|k| s.kind == k))
        .map(|s| view(&state, s, now))
        .collect();
    Ok(Json(json!({ "stations": stations })))
}

/// The registry station named by the path, for routes that take no query parameters.
fn station<'r>(registry: &'r Registry, id: &str, query: Option<&str>) -> ApiResult<&'r Station> {
    Params::parse(query)?.finish()?;
    registry
        .station(id)
        .ok_or_else(|| ApiError::unknown_station(id))
}

async fn one(
    State(state): State<ApiState>,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let registry = state.registry.load();
    let station = station(&registry, &id, q.as_deref())?;
    Ok(Json(json!(view(&state, station, Timestamp::now()))))
}

async fn latest(
    State(state): State<ApiState>,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    let registry = state.registry.load();
    let station = station(&registry, &id, q.as_deref())?;
    let live = state.live.station(&id).unwrap_or_default();
    // In registry order; parameters never received are left out.
    let readings: Vec<Value> = station
        .parameters
        .iter()
        .filter_map(|p| {
            let l = live.latest.iter().find(|l| l.param == p.name)?;
            Some(
                json!({"param": p.name, "unit": p.unit, "ts": state.time(l.ts),
                        "value": l.value, "status": l.status.code()}),
            )
        })
        .collect();
    Ok(Json(json!({
        "station": station.id,
        "last_seen": live.last_seen.map(|t| state.time(t)),
        "readings": readings,
    })))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_online_count_is_taken_again_only_after_a_second_or_when_the_clock_goes_back() {
        let cache = super::OnlineCount::default();
        let at = |ms| crate::telemetry::Timestamp::from_millis(ms);
        assert_eq!(cache.get(at(10_000), || 3), 3);
        assert_eq!(cache.get(at(10_999), || 4), 3, "within the second: kept");
        assert_eq!(
            cache.get(at(11_000), || 5),
            5,
            "a second later: counted again"
        );
        assert_eq!(
            cache.get(at(9_000), || 6),
            6,
            "the clock went back: counted again"
        );
    }

    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::registry::{Location, Range};

    fn station() -> Station {
        Station {
            id: "S".into(),
            zone: "Z".into(),
            kind: StationKind::Ambient,
            name: String::new(),
            operator: String::new(),
            location: Location { lat: 0.0, lon: 0.0 },
            expected_interval: Duration::from_secs(60),
            limit_profile: None,
            limit_factor: 1.0,
            signing_keys: vec![],
            require_signature: false,
            parameters: vec![crate::registry::Parameter {
                name: Arc::from("PM10"),
                unit: Arc::from("ug/Nm3"),
                range: Range { min: 0.0, max: 1.0 },
                limits: vec![],
            }],
        }
    }

    fn live(seen: Option<i64>, gateway: Option<(GatewayState, i64)>) -> StationLive {
        StationLive {
            last_seen: seen.map(Timestamp::from_millis),
            gateway: gateway.map(|(g, t)| (g, Timestamp::from_millis(t))),
            latest: vec![],
        }
    }

    #[test]
    fn a_station_is_online_only_while_data_is_fresh_and_the_gateway_has_not_left() {
        let s = station();
        let now = Timestamp::from_millis(1_000_000);
        assert!(!is_online(&live(None, None), &s, 3, now), "never seen");
        assert!(is_online(
            &live(Some(1_000_000 - 180_000), None),
            &s,
            3,
            now
        ));
        assert!(!is_online(
            &live(Some(1_000_000 - 180_001), None),
            &s,
            3,
            now
        ));
        let left = live(Some(999_000), Some((GatewayState::Offline, 999_500)));
        assert!(
            !is_online(&left, &s, 3, now),
            "announced offline after the data"
        );
        let back = live(Some(999_900), Some((GatewayState::Offline, 999_500)));
        assert!(is_online(&back, &s, 3, now), "data after the announcement");
    }
}
