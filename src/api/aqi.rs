//! `GET /aqi`: VN_AQI per ambient station, hourly or daily, as JSON or CSV.
//!
//! Hourly means come from the store (valid readings only, status 00); an hour's mean counts
//! only when it holds `api.report_coverage` of the readings the station's interval promises
//! ([`crate::coverage`]). The rules are in [`crate::aqi::calc`]; `docs/reports.md` has them
//! with a worked example.

use std::collections::BTreeMap;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::need;
use super::params::{self, Params};
use super::{selection, ApiError, ApiResult, ApiState};
use crate::aqi::calc::{self, Series};
use crate::aqi::{units, Index, Pollutant, Table};
use crate::registry::{Station, StationKind};
use crate::security::Role;
use crate::storage::AggregateQuery;
use crate::telemetry::{Status, Timestamp};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 86_400_000;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/aqi", need(Role::Viewer, get(aqi)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Hour,
    Day,
}

impl Period {
    fn parse(text: Option<String>) -> ApiResult<Period> {
        match text.as_deref() {
            None | Some("hour") => Ok(Period::Hour),
            Some("day") => Ok(Period::Day),
            Some(_) => Err(ApiError::bad("period", "must be hour or day")),
        }
    }

    const fn as_str(self) -> &'static str {
        match self {
            Period::Hour => "hour",
            Period::Day => "day",
        }
    }

    const fn ms(self) -> i64 {
        match self {
            Period::Hour => HOUR,
            Period::Day => DAY,
        }
    }

    /// Hours read before the first period: NowCast looks 11 hours back, the daily O3
    /// 8-hour means 7.
    const fn lookback_hours(self) -> i64 {
        match self {
            Period::Hour => 11,
            Period::Day => 7,
        }
    }
}

/// An ambient station's pollutants: the parameter each is read from, and the factor to
/// ug/m3; or why it cannot be used.
struct Inputs<'s> {
    station: &'s Station,
    usable: Vec<(Pollutant, String, f64)>,
    refused: Vec<String>,
}

fn inputs(station: &Station) -> Inputs<'_> {
    let mut usable = Vec::new();
    let mut refused = Vec::new();
    for p in &station.parameters {
        let Some(pollutant) = Pollutant::of_param(&p.name) else {
            continue;
        };
        match units::to_ug_m3(&p.unit) {
            Ok(factor) => usable.push((pollutant, p.name.to_string(), factor)),
            Err(why) => refused.push(format!("{}: {why}", p.name)),
        }
    }
    usable.sort_by_key(|(p, ..)| *p);
    Inputs {
        station,
        usable,
        refused,
    }
}

/// One period's index, or why there is none.
struct Row {
    start: Timestamp,
    index: Result<Index, String>,
}

async fn aqi(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut p = Params::parse(q.as_deref())?;
    let registry = state.registry.load();
    let chosen = selection::stations(
        &registry,
        &mut p,
        Some((StationKind::Ambient, "the air quality index")),
        selection::Neither::Refused,
    )?;
    let period = Period::parse(p.take("period"))?;
    let csv = selection::wants_csv(&mut p, &headers)?;
    let default_range = match period {
        Period::Hour => state.config.default_range,
        Period::Day => std::time::Duration::from_secs(30 * 86_400),
    };
    let (from, to) = params::range(
        &mut p,
        state.offset(),
        Timestamp::now(),
        default_range,
        state.config.max_range,
    )?;
    p.finish()?;
    // Periods start on whole local hours (days): the first one holds `from`.
    let offset_ms = i64::from(state.offset().local_minus_utc()) * 1000;
    let align = |ts: i64| {
        let shifted = ts + offset_ms;
        shifted - shifted.rem_euclid(period.ms()) - offset_ms
    };
    let first = align(from.as_millis());
    let periods = (to.as_millis() - first + period.ms() - 1) / period.ms();
    let max = state.config.max_buckets as i64;
    if periods > max {
        return Err(ApiError::bad(
            "to",
            format!("{periods} {}s, more than the maximum of {max}: ask for a shorter range or period=day", period.as_str()),
        ));
    }
    let read_from = first - period.lookback_hours() * HOUR;
    let read_to = first + periods * period.ms();
    let all: Vec<Inputs<'_>> = chosen.iter().map(|s| inputs(s)).collect();
    let series_count: usize = all.iter().map(|i| i.usable.len()).sum();
    super::readings::check_cost(
        series_count,
        Timestamp::from_millis(read_from),
        Timestamp::from_millis(read_to),
        state.config.max_query_cost,
    )?;
    let table = state.aqi.table();
    let now = Timestamp::now().as_millis();
    let mut results = Vec::new();
    for input in &all {
        let hours = hourly_means(&state, input, read_from, read_to).await?;
        let rows = (0..periods)
            .map(|k| {
                let start = first + k * period.ms();
                // A day's index is the day's: not given before the day is over.
                let index = if period == Period::Day && start + DAY > now {
                    Err("the day is not over yet".to_owned())
                } else {
                    index_for(
                        table,
                        period,
                        &hours,
                        read_from,
                        start,
                        state.config.report_coverage,
                    )
                };
                Row {
                    start: Timestamp::from_millis(start),
                    index,
                }
            })
            .collect::<Vec<_>>();
        results.push((input, rows));
    }
    let range = (
        Timestamp::from_millis(first),
        Timestamp::from_millis(read_to),
    );
    if csv {
        return Ok(csv_response(&state, period, &results, range));
    }
    Ok(Json(json_body(&state, table, period, &results, range)).into_response())
}

/// Hourly means in ug/m3 of each usable pollutant over `[from, to)`, one slot per hour;
/// `None` where the hour has no valid mean by the coverage rule.
async fn hourly_means(
    state: &ApiState,
    input: &Inputs<'_>,
    from: i64,
    to: i64,
) -> ApiResult<BTreeMap<Pollutant, Vec<Option<f64>>>> {
    let slots = usize::try_from((to - from) / HOUR).unwrap_or(0);
    let mut out = BTreeMap::new();
    if input.usable.is_empty() {
        return Ok(out);
    }
    let series = state
        .store
        .aggregate(AggregateQuery {
            station: input.station.id.to_string(),
            params: input
                .usable
                .iter()
                .map(|(_, name, _)| name.clone())
                .collect(),
            from: Timestamp::from_millis(from),
            to: Timestamp::from_millis(to),
            bucket_ms: HOUR,
            align_offset_ms: i64::from(state.offset().local_minus_utc()) * 1000,
            status: Some(Status::Measuring),
        })
        .await?;
    let interval = crate::telemetry::time::duration_ms(input.station.expected_interval);
    for (pollutant, name, factor) in &input.usable {
        let mut hours = vec![None; slots];
        if let Some(s) = series.iter().find(|s| &s.param == name) {
            for b in &s.buckets {
                let slot = (b.start.as_millis() - from) / HOUR;
                let covered =
                    crate::coverage::covered(b.count, HOUR, interval, state.config.report_coverage);
                if let (Ok(slot), true) = (usize::try_from(slot), covered) {
                    if let Some(h) = hours.get_mut(slot) {
                        *h = Some(b.avg * factor);
                    }
                }
            }
        }
        out.insert(*pollutant, hours);
    }
    Ok(out)
}

/// The index of the period starting at `start`, from hourly means that start at `origin`.
fn index_for(
    table: &Table,
    period: Period,
    hours: &BTreeMap<Pollutant, Vec<Option<f64>>>,
    origin: i64,
    start: i64,
    coverage: f64,
) -> Result<Index, String> {
    let at = |ts: i64| usize::try_from((ts - origin) / HOUR).unwrap_or(0);
    let series: Vec<Series<'_>> = match period {
        // The hour itself and the 11 before it (NowCast).
        Period::Hour => hours
            .iter()
            .map(|(p, h)| Series {
                pollutant: *p,
                hours: &h[at(start - 11 * HOUR)..=at(start)],
            })
            .collect(),
        // The 7 hours before the day and its 24.
        Period::Day => hours
            .iter()
            .map(|(p, h)| Series {
                pollutant: *p,
                hours: &h[at(start - 7 * HOUR)..at(start + DAY)],
            })
            .collect(),
    };
    let result = match period {
        Period::Hour => calc::hourly(table, &series),
        Period::Day => calc::daily(table, &series, coverage),
    };
    result.map_err(|e| e.to_string())
}

fn json_body(
    state: &ApiState,
    table: &Table,
    period: Period,
    results: &[(&Inputs<'_>, Vec<Row>)],
    (from, to): (Timestamp, Timestamp),
) -> Value {
    let stations: Vec<Value> = results
        .iter()
        .map(|(input, rows)| {
            let values: Vec<Value> = rows
                .iter()
                .map(|r| {
                    let end = Timestamp::from_millis(r.start.as_millis() + period.ms());
                    match &r.index {
                        Ok(i) => {
                            let band = table.band(i.aqi);
                            json!({"start": state.time(r.start), "end": state.time(end),
                                   "aqi": i.aqi, "band": band.name, "band_vi": band.name_vi,
                                   "colour": band.colour(), "rgb": band.rgb,
                                   "dominant": i.dominant, "sub_indices": i.sub_indices})
                        }
                        Err(why) => json!({"start": state.time(r.start), "end": state.time(end),
                                           "aqi": null, "missing": why}),
                    }
                })
                .collect();
            let any = rows.iter().any(|r| r.index.is_ok());
            json!({
                "station": input.station.id,
                "zone": input.station.zone,
                "name": input.station.name,
                "pollutants": input.usable.iter().map(|(p, ..)| p.as_str()).collect::<Vec<_>>(),
                "refused": input.refused,
                "status": if any { "ok" } else { "insufficient_data" },
                "values": values,
            })
        })
        .collect();
    json!({
        "period": period.as_str(),
        "from": state.time(from),
        "to": state.time(to),
        "source": table.source,
        "certainty": table.certainty,
        "rounding": "half up (59.35 gives 59)",
        "stations": stations,
    })
}

fn csv_response(
    state: &ApiState,
    period: Period,
    results: &[(&Inputs<'_>, Vec<Row>)],
    (from, to): (Timestamp, Timestamp),
) -> Response {
    let mut header = vec![
        "station".to_owned(),
        "zone".into(),
        "start".into(),
        "end".into(),
        "aqi".into(),
        "band".into(),
        "colour".into(),
        "dominant".into(),
    ];
    for p in Pollutant::ALL {
        header.push(format!("{}_index", p.as_str()));
        header.push(format!("{}_ug_m3", p.as_str()));
    }
    header.push("missing".into());
    let mut rows = vec![header];
    for (input, periods) in results {
        for r in periods {
            let end = Timestamp::from_millis(r.start.as_millis() + period.ms());
            let mut record = vec![
                input.station.id.to_string(),
                input.station.zone.to_string(),
                state.time(r.start),
                state.time(end),
            ];
            match &r.index {
                Ok(i) => {
                    let band = state.aqi.table().band(i.aqi);
                    record.extend([
                        i.aqi.to_string(),
                        band.name.clone(),
                        band.colour(),
                        i.dominant.as_str().to_owned(),
                    ]);
                    for p in Pollutant::ALL {
                        match i.sub(p) {
                            Some(s) => {
                                record.push(s.index.to_string());
                                record.push(format!("{:.1}", s.concentration));
                            }
                            None => record.extend([String::new(), String::new()]),
                        }
                    }
                    record.push(String::new());
                }
                Err(why) => {
                    record.extend(std::iter::repeat_n(
                        String::new(),
                        4 + 2 * Pollutant::ALL.len(),
                    ));
                    record.push(why.clone());
                }
            }
            rows.push(record);
        }
    }
    let day = |t: Timestamp| state.time(t).chars().take(10).collect::<String>();
    let name = format!("vn_aqi_{}_{}_{}.csv", period.as_str(), day(from), day(to));
    selection::csv_response(&name, rows)
}
