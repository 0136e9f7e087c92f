//! `GET /readings`: raw readings (paged with a cursor) or time-bucketed aggregates.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::need;
use super::params::{self, Params};
use super::{ApiError, ApiResult, ApiState};
use crate::registry::{Registry, Station};
use crate::security::Role;
use crate::storage::{AggregateQuery, RawQuery as RawReadings, RevisionQuery};
use crate::telemetry::{Status, Timestamp};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/readings", need(Role::Viewer, get(readings)))
        .route("/readings/revisions", need(Role::Viewer, get(revisions)))
}

/// The aggregate a bucketed query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agg {
    Avg,
    Min,
    Max,
    Count,
}

impl Agg {
    fn parse(text: &str) -> ApiResult<Agg> {
        match text {
            "avg" => Ok(Agg::Avg),
            "min" => Ok(Agg::Min),
            "max" => Ok(Agg::Max),
            "count" => Ok(Agg::Count),
            _ => Err(ApiError::bad("agg", "must be avg, min, max or count")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Agg::Avg => "avg",
            Agg::Min => "min",
            Agg::Max => "max",
            Agg::Count => "count",
        }
    }
}

/// What both reading routes select: a station of the registry, its parameters (`param`, all
/// by default) and a time range (`from`, `to`).
fn selection<'r>(
    state: &ApiState,
    registry: &'r Registry,
    p: &mut Params,
) -> ApiResult<(&'r Station, Vec<String>, (Timestamp, Timestamp))> {
    let station_id = p.required("station")?;
    let station = registry
        .station(&station_id)
        .ok_or_else(|| ApiError::unknown_station(&station_id))?;
    let names = param_names(station, p.take("param"))?;
    let range = params::range(
        p,
        state.offset(),
        Timestamp::now(),
        state.config.default_range,
        state.config.max_range,
    )?;
    Ok((station, names, range))
}

/// `limit`: the page size, bounded by `api.max_page_size`.
fn page_limit(state: &ApiState, p: &mut Params) -> ApiResult<usize> {
    match p.take("limit") {
        Some(l) => params::bounded("limit", &l, state.config.max_page_size),
        None => Ok(state.config.default_page_size),
    }
}

async fn readings(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let mut p = Params::parse(q.as_deref())?;
    let registry = state.registry.load();
    let (station, names, (from, to)) = selection(&state, &registry, &mut p)?;
    check_cost(names.len(), from, to, state.config.max_query_cost)?;
    let status_text = p.take("status");
    match p.take("bucket") {
        Some(bucket) => {
            let agg = p
                .take("agg")
                .map(|a| Agg::parse(&a))
                .transpose()?
                .unwrap_or(Agg::Avg);
            for unusable in ["limit", "cursor"] {
                if p.take(unusable).is_some() {
                    return Err(ApiError::bad(
                        unusable,
                        "does not apply to aggregated queries (bucket=...)",
                    ));
                }
            }
            p.finish()?;
            // Aggregates describe valid data unless asked otherwise.
            let status = match status_text {
                Some(s) => params::status(&s)?,
                None => Some(Status::Measuring),
            };
            aggregated(&state, station, names, (from, to), &bucket, agg, status).await
        }
        None => {
            if p.take("agg").is_some() {
                return Err(ApiError::bad(
                    "agg",
                    "needs `bucket` (1m, 5m, 15m, 1h or 1d)",
                ));
            }
            let limit = page_limit(&state, &mut p)?;
            let after = p
                .take("cursor")
                .map(|c| params::decode_reading_cursor(&c))
                .transpose()?;
            p.finish()?;
            let status = status_text
                .map(|s| params::status(&s))
                .transpose()?
                .flatten();
            raw(&state, station, names, (from, to), limit, after, status).await
        }
    }
}

/// `GET /readings/revisions`: the earlier versions of a station's readings that a later write
/// of the same `(param, ts)` replaced with a different value or status, oldest reading first.
async fn revisions(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let mut p = Params::parse(q.as_deref())?;
    let registry = state.registry.load();
    let (station, names, (from, to)) = selection(&state, &registry, &mut p)?;
    let limit = page_limit(&state, &mut p)?;
    p.finish()?;
    let page = state
        .store
        .revisions(RevisionQuery {
            station: station.id.to_string(),
            params: names,
            from,
            to,
            limit,
        })
        .await?;
    let revisions: Vec<Value> = page
        .revisions
        .iter()
        .map(|r| {
            json!({"param": r.param, "ts": state.time(r.ts), "value": r.value,
                   "unit": unit(station, &r.param), "status": r.status.code(),
                   "replaced_at": state.time(r.replaced_at)})
        })
        .collect();
    Ok(Json(json!({
        "station": station.id,
        "from": state.time(from),
        "to": state.time(to),
        "revisions": revisions,
        "has_more": page.has_more,
    })))
}

/// A query's cost is the series it reads times the days it spans (a started day counts).
pub(super) fn check_cost(series: usize, from: Timestamp, to: Timestamp, max: u64) -> ApiResult<()> {
    const DAY_MS: i64 = 86_400_000;
    let span = to
        .as_millis()
        .saturating_sub(from.as_millis())
        .max(1)
        .unsigned_abs();
    let days = span.div_ceil(DAY_MS as u64);
    let cost = days.saturating_mul(series as u64);
    if cost > max {
        return Err(ApiError::TooCostly { cost, max });
    }
    Ok(())
}

/// `param=A,B` checked against the station; all of its parameters when absent.
fn param_names(station: &Station, param: Option<String>) -> ApiResult<Vec<String>> {
    let Some(list) = param else {
        return Ok(station
            .parameters
            .iter()
            .map(|p| p.name.to_string())
            .collect());
    };
    let mut names: Vec<String> = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if station.parameter(name).is_none() {
            let known: Vec<&str> = station.parameters.iter().map(|p| &*p.name).collect();
            return Err(ApiError::bad(
                "param",
                format!(
                    "station `{}` has no parameter `{name}` (it has {})",
                    station.id,
                    known.join(", ")
                ),
            ));
        }
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
    if names.is_empty() {
        return Err(ApiError::bad("param", "names no parameter"));
    }
    Ok(names)
}

fn unit<'a>(station: &'a Station, param: &str) -> &'a str {
    station.parameter(param).map_or("", |p| &p.unit)
}

async fn raw(
    state: &ApiState,
    station: &Station,
    params: Vec<String>,
    (from, to): (Timestamp, Timestamp),
    limit: usize,
    after: Option<(Timestamp, String)>,
    status: Option<Status>,
) -> ApiResult<Json<Value>> {
    let page = state
        .store
        .readings(RawReadings {
            station: station.id.to_string(),
            params,
            from,
            to,
            after,
            limit,
            status,
        })
        .await?;
    let next_cursor = match (page.has_more, page.readings.last()) {
        (true, Some(last)) => Some(params::encode_reading_cursor(last.ts, &last.param)),
        _ => None,
    };
    let readings: Vec<Value> = page
        .readings
        .iter()
        .map(|r| {
            json!({"param": r.param, "ts": state.time(r.ts), "value": r.value,
                   "unit": unit(station, &r.param), "status": r.status.code()})
        })
        .collect();
    Ok(Json(json!({
        "station": station.id,
        "from": state.time(from),
        "to": state.time(to),
        "readings": readings,
        "has_more": page.has_more,
        "next_cursor": next_cursor,
    })))
}

async fn aggregated(
    state: &ApiState,
    station: &Station,
    params: Vec<String>,
    (from, to): (Timestamp, Timestamp),
    bucket: &str,
    agg: Agg,
    status: Option<Status>,
) -> ApiResult<Json<Value>> {
    let width = params::bucket(bucket)?;
    let bucket_ms = crate::telemetry::time::duration_ms(width);
    let span = to.as_millis() - from.as_millis();
    let buckets = span / bucket_ms + i64::from(span % bucket_ms != 0);
    let max = state.config.max_buckets;
    if buckets > max as i64 {
        return Err(ApiError::bad(
            "bucket",
            format!("{bucket} buckets over this range would be {buckets}, more than the maximum of {max}: use a wider bucket or a shorter range"),
        ));
    }
    let series = state
        .store
        .aggregate(AggregateQuery {
            station: station.id.to_string(),
            params,
            from,
            to,
            bucket_ms,
            align_offset_ms: i64::from(state.offset().local_minus_utc()) * 1000,
            status,
        })
        .await?;
    let series: Vec<Value> = series
        .iter()
        .map(|s| {
            let points: Vec<Value> = s
                .buckets
                .iter()
                .map(|b| {
                    let value = match agg {
                        Agg::Avg => json!(b.avg),
                        Agg::Min => json!(b.min),
                        Agg::Max => json!(b.max),
                        Agg::Count => json!(b.count),
                    };
                    json!({"ts": state.time(b.start), "value": value, "count": b.count})
                })
                .collect();
            json!({"param": s.param, "unit": unit(station, &s.param), "points": points})
        })
        .collect();
    Ok(Json(json!({
        "station": station.id,
        "from": state.time(from),
        "to": state.time(to),
        "bucket": bucket,
        "agg": agg.as_str(),
        "status": status.map_or("all", Status::code),
        "series": series,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn the_cost_is_series_times_started_days_and_the_limit_is_inclusive() {
        assert!(check_cost(8, at(0), at(366 * DAY), 8 * 366).is_ok());
        let over = check_cost(8, at(0), at(366 * DAY + 1), 8 * 366);
        assert!(
            matches!(over, Err(ApiError::TooCostly { cost, .. }) if cost == 8 * 367),
            "a started day counts"
        );
        assert!(
            check_cost(1, at(0), at(1), 1).is_ok(),
            "a minute costs a day"
        );
    }
}
