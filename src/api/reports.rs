//! `GET /reports/compliance`: each station's readings against its limits, per local day or
//! month, as JSON or CSV (analyst role and above). The judgement is pure
//! ([`crate::reports::compliance`]); this module reads the store and renders.

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::auth::need;
use super::params::{self, Params};
use super::{selection, ApiError, ApiResult, ApiState};
use crate::registry::Station;
use crate::reports::calendar::{self, Period, PeriodKind};
use crate::reports::compliance::{self, ParamReport, Sample, Settings, Verdict};
use crate::security::Role;
use crate::storage::{QuarantineQuery, RawQuery as RawReadings};
use crate::telemetry::Timestamp;

/// Readings before a period that its 8-hour windows need.
const LOOKBACK_MS: i64 = 7 * 3_600_000;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/reports/compliance", need(Role::Analyst, get(compliance)))
}

/// One station's report: per period, its parameters' judgements and quarantined messages.
struct StationReport<'s> {
    station: &'s Station,
    periods: Vec<(Period, Vec<ParamReport>, u64)>,
}

fn period_verdict(params: &[ParamReport]) -> Verdict {
    params
        .iter()
        .map(|p| p.verdict)
        .max()
        .unwrap_or(Verdict::InsufficientData)
}

async fn compliance(
    State(state): State<ApiState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    let mut p = Params::parse(q.as_deref())?;
    let registry = state.registry.load();
    let chosen = selection::stations(&registry, &mut p, None, selection::Neither::Refused)?;
    let csv = selection::wants_csv(&mut p, &headers)?;
    let (kind, periods, (from, to)) = report_periods(&state, p)?;
    let (Some(first), Some(last)) = (periods.first(), periods.last()) else {
        return Err(ApiError::bad("from", "the range holds no period"));
    };
    let (read_from, read_to) = (first.start.as_millis() - LOOKBACK_MS, last.end.as_millis());
    let series: usize = chosen.iter().map(|s| judged_params(s).len()).sum();
    super::readings::check_cost(
        series,
        Timestamp::from_millis(read_from),
        Timestamp::from_millis(read_to),
        state.config.max_query_cost,
    )?;
    let now = Timestamp::now();
    let mut reports = Vec::new();
    for station in chosen {
        let settings = Settings {
            interval_ms: crate::telemetry::time::duration_ms(station.expected_interval),
            coverage: state.config.report_coverage,
            offset: *state.offset(),
            now,
        };
        let names = judged_params(station);
        let samples = read_samples(&state, station, &names, read_from, read_to).await?;
        let quarantined = quarantined(&state, station, &periods).await?;
        let mut out = Vec::new();
        for (k, period) in periods.iter().enumerate() {
            let mut params = Vec::new();
            for (name, all) in names.iter().zip(&samples) {
                let Some(parameter) = station.parameter(name) else {
                    continue;
                };
                let lo = all
                    .partition_point(|s| s.ts.as_millis() < period.start.as_millis() - LOOKBACK_MS);
                let hi = all.partition_point(|s| s.ts < period.end);
                params.extend(compliance::evaluate(
                    parameter,
                    &all[lo..hi],
                    *period,
                    &settings,
                ));
            }
            out.push((*period, params, quarantined[k]));
        }
        reports.push(StationReport {
            station,
            periods: out,
        });
    }
    if csv {
        return Ok(csv_body(&state, kind, &reports, (from, to)));
    }
    Ok(Json(json_body(&state, kind, &reports, (from, to))).into_response())
}

/// `period` (day or month; month by default), `from` and `to` (the last 30 days by
/// default), checked; the rest of the query must be used up. The report's periods, whole,
/// and the range as asked.
pub(super) fn report_periods(
    state: &ApiState,
    mut p: Params,
) -> ApiResult<(PeriodKind, Vec<Period>, (Timestamp, Timestamp))> {
    let kind = match p.take("period") {
        None => PeriodKind::Month,
        Some(t) => {
            PeriodKind::parse(&t).ok_or_else(|| ApiError::bad("period", "must be day or month"))?
        }
    };
    let (from, to) = params::range(
        &mut p,
        state.offset(),
        Timestamp::now(),
        std::time::Duration::from_secs(30 * 86_400),
        state.config.max_range,
    )?;
    p.finish()?;
    let periods = calendar::periods(kind, from, to, state.offset());
    if periods.len() > state.config.max_buckets {
        return Err(ApiError::bad(
            "to",
            format!(
                "{} periods, more than the maximum of {}",
                periods.len(),
                state.config.max_buckets
            ),
        ));
    }
    Ok((kind, periods, (from, to)))
}

/// The parameters of a station that have a limit row judged in day or month reports.
fn judged_params(station: &Station) -> Vec<String> {
    station
        .parameters
        .iter()
        .filter(|p| {
            p.limits
                .iter()
                .any(|l| l.averaging != crate::registry::Averaging::Year1)
        })
        .map(|p| p.name.to_string())
        .collect()
}

/// Every reading of `names` in `[from, to)`, all statuses, per parameter in time order.
/// Read one parameter at a time: a page over several parameters reads a page's worth of each
/// to keep one (the store merges them by time), eight times the work for eight parameters.
async fn read_samples(
    state: &ApiState,
    station: &Station,
    names: &[String],
    from: i64,
    to: i64,
) -> ApiResult<Vec<Vec<Sample>>> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let mut samples = Vec::new();
        let mut after = None;
        loop {
            let page = state
                .store
                .readings(RawReadings {
                    station: station.id.to_string(),
                    params: vec![name.clone()],
                    from: Timestamp::from_millis(from),
                    to: Timestamp::from_millis(to),
                    after: after.take(),
                    limit: state.config.max_page_size,
                    status: None,
                })
                .await?;
            samples.extend(page.readings.iter().map(|r| Sample {
                ts: r.ts,
                value: r.value,
                status: r.status,
            }));
            match (page.has_more, page.readings.last()) {
                (true, Some(last)) => after = Some((last.ts, last.param.clone())),
                _ => break,
            }
        }
        out.push(samples);
    }
    Ok(out)
}

/// Quarantined messages of the station received in each period (the quarantine is bounded:
/// `quarantine.capacity` entries at most).
async fn quarantined(
    state: &ApiState,
    station: &Station,
    periods: &[Period],
) -> ApiResult<Vec<u64>> {
    let mut counts = vec![0; periods.len()];
    let Some(first) = periods.first() else {
        return Ok(counts);
    };
    let mut before_id = None;
    loop {
        let page = state
            .store
            .quarantine(QuarantineQuery {
                station: Some(station.id.to_string()),
                reason: None,
                before_id,
                limit: 1000,
            })
            .await?;
        for e in &page.entries {
            if let Some(k) = periods
                .iter()
                .position(|p| e.received_at >= p.start && e.received_at < p.end)
            {
                counts[k] += 1;
            }
        }
        // Newest first: past the first period's start, nothing older matters.
        let older = page
            .entries
            .last()
            .is_some_and(|e| e.received_at < first.start);
        match page.entries.last() {
            Some(last) if page.has_more && !older => before_id = Some(last.id),
            _ => break,
        }
    }
    Ok(counts)
}

fn json_body(
    state: &ApiState,
    kind: PeriodKind,
    reports: &[StationReport<'_>],
    (from, to): (Timestamp, Timestamp),
) -> Value {
    let stations: Vec<Value> = reports
        .iter()
        .map(|r| {
            let periods: Vec<Value> = r
                .periods
                .iter()
                .map(|(period, params, quarantined)| {
                    let parameters: Vec<Value> =
                        params.iter().map(|p| param_json(state, p)).collect();
                    json!({"start": state.time(period.start), "end": state.time(period.end),
                           "verdict": period_verdict(params), "quarantined_messages": quarantined,
                           "parameters": parameters})
                })
                .collect();
            json!({"station": r.station.id, "zone": r.station.zone, "name": r.station.name,
                   "kind": r.station.kind, "limit_profile": r.station.limit_profile,
                   "limit_factor": r.station.limit_factor, "periods": periods})
        })
        .collect();
    json!({
        "report": "compliance",
        "period": kind.as_str(),
        "from": state.time(from),
        "to": state.time(to),
        "coverage_required": state.config.report_coverage,
        "stations": stations,
    })
}

fn param_json(state: &ApiState, p: &ParamReport) -> Value {
    let limits: Vec<Value> = p
        .limits
        .iter()
        .map(|l| {
            let longest = l.longest.as_ref().map(|run| {
                json!({"start": state.time(run.start), "end": state.time(run.end),
                       "minutes": run.minutes, "count": run.count, "peak": run.peak})
            });
            json!({"averaging": l.limit.averaging, "lower": l.limit.lower, "upper": l.limit.upper,
                   "factor": l.limit.factor, "valid_from": l.limit.valid_from,
                   "valid_to": l.limit.valid_to, "certainty": l.limit.status,
                   "source": l.limit.source, "judged_as": l.judged_as, "judged": l.judged,
                   "exceeded": l.exceeded, "share_exceeded": l.share_exceeded,
                   "longest_exceedance": longest, "verdict": l.verdict})
        })
        .collect();
    json!({"param": p.param, "unit": p.unit, "expected": p.expected, "valid": p.valid,
           "excluded": {"calibrating": p.calibrating, "device_fault": p.fault},
           "coverage": p.coverage, "min": p.min, "max": p.max, "mean": p.mean,
           "verdict": p.verdict, "limits": limits})
}

/// The CSV columns: one row per station, period, parameter and limit row.
pub const CSV_COLUMNS: [&str; 29] = [
    "station",
    "zone",
    "period_start",
    "period_end",
    "period_verdict",
    "quarantined_messages",
    "param",
    "unit",
    "expected",
    "valid",
    "calibrating",
    "device_fault",
    "coverage",
    "min",
    "max",
    "mean",
    "averaging",
    "lower",
    "upper",
    "factor",
    "certainty",
    "source",
    "judged_as",
    "judged",
    "exceeded",
    "share_exceeded",
    "longest_start",
    "longest_minutes",
    "verdict",
];

fn csv_body(
    state: &ApiState,
    kind: PeriodKind,
    reports: &[StationReport<'_>],
    (from, to): (Timestamp, Timestamp),
) -> Response {
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    let mut rows = vec![CSV_COLUMNS
        .iter()
        .map(|c| (*c).to_owned())
        .collect::<Vec<_>>()];
    for r in reports {
        for (period, params, quarantined) in &r.periods {
            let head = [
                r.station.id.to_string(),
                r.station.zone.to_string(),
                state.time(period.start),
                state.time(period.end),
                period_verdict(params).as_str().to_owned(),
                quarantined.to_string(),
            ];
            for p in params {
                for l in &p.limits {
                    let mut row = head.to_vec();
                    row.extend([
                        p.param.clone(),
                        p.unit.clone(),
                        p.expected.to_string(),
                        p.valid.to_string(),
                        p.calibrating.to_string(),
                        p.fault.to_string(),
                        opt(p.coverage),
                        opt(p.min),
                        opt(p.max),
                        opt(p.mean),
                        serde_json::to_value(l.limit.averaging)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        opt(l.limit.lower),
                        opt(l.limit.upper),
                        l.limit.factor.to_string(),
                        format!("{:?}", l.limit.status),
                        l.limit.source.clone(),
                        l.judged_as.to_owned(),
                        l.judged.to_string(),
                        l.exceeded.to_string(),
                        opt(l.share_exceeded),
                        l.longest
                            .as_ref()
                            .map_or(String::new(), |run| state.time(run.start)),
                        l.longest
                            .as_ref()
                            .map_or(String::new(), |run| run.minutes.to_string()),
                        l.verdict.as_str().to_owned(),
                    ]);
                    rows.push(row);
                }
            }
        }
    }
    let day = |t: Timestamp| state.time(t).chars().take(10).collect::<String>();
    let name = format!("compliance_{}_{}_{}.csv", kind.as_str(), day(from), day(to));
    selection::csv_response(&name, rows)
}
