//! `GET /reports/connectivity`: whether the stations' data reaches the center, and in time,
//! per local day or month; per station, per zone and for the whole center (analyst role
//! and above). The counting is pure ([`crate::reports::connectivity`]).

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::need;
use super::params::Params;
use super::{selection, ApiResult, ApiState};
use crate::registry::Station;
use crate::reports::calendar::{Period, PeriodKind};
use crate::reports::connectivity::{self, Connectivity, Rollup, ON_TIME_MS};
use crate::security::Role;
use crate::storage::ArrivalQuery;
use crate::telemetry::Timestamp;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/reports/connectivity", need(Role::Analyst, get(report)))
}

async fn report(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut p = Params::parse(q.as_deref())?;
    let registry = state.registry.load();
    let chosen = selection::stations(&registry, &mut p, None, selection::Neither::AllStations)?;
    let csv = selection::wants_csv(&mut p, &headers)?;
    let (kind, periods, range) = super::reports::report_periods(&state, p)?;
    let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
        return Ok(Json(json!({"stations": []})).into_response());
    };
    let now = Timestamp::now();
    let mut stations: Vec<(&Station, Vec<Connectivity>)> = Vec::new();
    for station in chosen {
        let records = state
            .store
            .arrivals(ArrivalQuery {
                station: station.id.to_string(),
                from: first.start,
                to: last.end,
            })
            .await?;
        let interval = crate::telemetry::time::duration_ms(station.expected_interval);
        let per_period = periods
            .iter()
            .map(|period| {
                let lo = records.partition_point(|r| r.ts < period.start);
                let hi = records.partition_point(|r| r.ts < period.end);
                connectivity::evaluate(&records[lo..hi], *period, interval, now)
            })
            .collect();
        stations.push((station, per_period));
    }
    // Per zone and for the whole center, period by period.
    let mut zones: BTreeMap<String, Vec<Rollup>> = BTreeMap::new();
    let mut center = vec![Rollup::default(); periods.len()];
    for (station, per_period) in &stations {
        let zone = zones
            .entry(station.zone.to_string())
            .or_insert_with(|| vec![Rollup::default(); periods.len()]);
        for (k, c) in per_period.iter().enumerate() {
            zone[k].add(c);
            center[k].add(c);
        }
    }
    if csv {
        return Ok(csv_body(
            &state, kind, &periods, &stations, &zones, &center, range,
        ));
    }
    Ok(Json(json_body(
        &state, kind, &periods, &stations, &zones, &center, range,
    ))
    .into_response())
}

fn json_body(
    state: &ApiState,
    kind: PeriodKind,
    periods: &[Period],
    stations: &[(&Station, Vec<Connectivity>)],
    zones: &BTreeMap<String, Vec<Rollup>>,
    center: &[Rollup],
    (from, to): (Timestamp, Timestamp),
) -> Value {
    let bounds = |k: usize| json!({"start": state.time(periods[k].start), "end": state.time(periods[k].end)});
    let with_bounds = |k: usize, v: Value| {
        let mut b = bounds(k);
        if let (Some(b), Value::Object(v)) = (b.as_object_mut(), v) {
            b.extend(v);
        }
        b
    };
    let stations: Vec<Value> = stations
        .iter()
        .map(|(s, per_period)| {
            let periods: Vec<Value> = per_period
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let gap = c.longest_gap.as_ref().map(|g| {
                        json!({"start": state.time(g.start), "end": state.time(g.end),
                               "minutes": g.minutes, "missing": g.missing})
                    });
                    with_bounds(
                        k,
                        json!({"expected": c.expected, "received": c.received,
                               "on_time": c.on_time, "late": c.late,
                               "arrival_unknown": c.arrival_unknown,
                               "completeness": c.completeness, "timeliness": c.timeliness,
                               "complete": c.complete(), "gaps": c.gaps, "longest_gap": gap}),
                    )
                })
                .collect();
            json!({"station": s.id, "zone": s.zone, "name": s.name,
                   "expected_interval": humantime::format_duration(s.expected_interval).to_string(),
                   "periods": periods})
        })
        .collect();
    let rollup = |rs: &[Rollup]| -> Vec<Value> {
        rs.iter()
            .enumerate()
            .map(|(k, r)| with_bounds(k, serde_json::to_value(r).unwrap_or(Value::Null)))
            .collect()
    };
    let zones: Vec<Value> = zones
        .iter()
        .map(|(zone, rs)| json!({"zone": zone, "periods": rollup(rs)}))
        .collect();
    json!({
        "report": "connectivity",
        "period": kind.as_str(),
        "from": state.time(from),
        "to": state.time(to),
        "on_time_within_minutes": ON_TIME_MS / 60_000,
        "center": {"periods": rollup(center)},
        "zones": zones,
        "stations": stations,
    })
}

/// The CSV columns: one row per station, zone or the center, and period.
pub const CSV_COLUMNS: [&str; 19] = [
    "level",
    "id",
    "zone",
    "period_start",
    "period_end",
    "stations",
    "stations_complete",
    "expected",
    "received",
    "completeness",
    "on_time",
    "late",
    "arrival_unknown",
    "timeliness",
    "gaps",
    "longest_gap_start",
    "longest_gap_minutes",
    "longest_gap_missing",
    "complete",
];

fn csv_body(
    state: &ApiState,
    kind: PeriodKind,
    periods: &[Period],
    stations: &[(&Station, Vec<Connectivity>)],
    zones: &BTreeMap<String, Vec<Rollup>>,
    center: &[Rollup],
    (from, to): (Timestamp, Timestamp),
) -> Response {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut rows = vec![CSV_COLUMNS
        .iter()
        .map(|c| (*c).to_owned())
        .collect::<Vec<_>>()];
    let rollup_row = |level: &str, id: &str, k: usize, r: &Rollup| {
        vec![
            level.to_owned(),
            id.to_owned(),
            if level == "zone" {
                id.to_owned()
            } else {
                String::new()
            },
            state.time(periods[k].start),
            state.time(periods[k].end),
            r.stations.to_string(),
            r.stations_complete.to_string(),
            r.expected.to_string(),
            r.received.to_string(),
            opt(r.completeness),
            r.on_time.to_string(),
            r.late.to_string(),
            r.arrival_unknown.to_string(),
            opt(r.timeliness),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]
    };
    for (k, r) in center.iter().enumerate() {
        rows.push(rollup_row("center", "", k, r));
    }
    for (zone, rs) in zones {
        for (k, r) in rs.iter().enumerate() {
            rows.push(rollup_row("zone", zone, k, r));
        }
    }
    for (s, per_period) in stations {
        for (k, c) in per_period.iter().enumerate() {
            let gap = c.longest_gap.as_ref();
            rows.push(vec![
                "station".to_owned(),
                s.id.to_string(),
                s.zone.to_string(),
                state.time(periods[k].start),
                state.time(periods[k].end),
                "1".to_owned(),
                u64::from(c.complete()).to_string(),
                c.expected.to_string(),
                c.received.to_string(),
                opt(c.completeness),
                c.on_time.to_string(),
                c.late.to_string(),
                c.arrival_unknown.to_string(),
                opt(c.timeliness),
                c.gaps.to_string(),
                gap.map_or(String::new(), |g| state.time(g.start)),
                gap.map_or(String::new(), |g| g.minutes.to_string()),
                gap.map_or(String::new(), |g| g.missing.to_string()),
                c.complete().to_string(),
            ]);
        }
    }
    let day = |t: Timestamp| state.time(t).chars().take(10).collect::<String>();
    let name = format!(
        "connectivity_{}_{}_{}.csv",
        kind.as_str(),
        day(from),
        day(to)
    );
    selection::csv_response(&name, rows)
}
