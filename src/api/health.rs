//! `/healthz` (the process answers), `/readyz` (broker and store are up, the store takes
//! commits, ingest is not stalled) and `/metrics` (Prometheus text format; it never writes,
//! so it answers on a full disk too).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::ApiState;

/// The probes: no token needed.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// `GET /metrics`, mounted behind authentication on the API listener and without it on
/// `api.metrics_listen`.
pub fn metrics_route() -> MethodRouter<ApiState> {
    get(metrics)
}

/// Prometheus text format. Gauges that describe "now" are computed as they are read.
async fn metrics(
    State(state): State<ApiState>,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    use crate::metrics as m;
    let registry = state.registry.load();
    let now = crate::telemetry::Timestamp::now();
    let online = super::stations::online_count(&state, registry.stations(), now);
    metrics::gauge!(m::STATIONS_ONLINE).set(online as f64);
    metrics::gauge!(m::STATIONS_REGISTERED).set(registry.stations().len() as f64);
    ingest_stall(&state);
    metrics::counter!(m::LOG_LINES_DROPPED_TOTAL).absolute(crate::logging::dropped_lines());
    if let Some((cpu, rss, peak)) = m::process_usage() {
        metrics::gauge!(m::PROCESS_CPU_SECONDS).set(cpu);
        metrics::gauge!(m::PROCESS_RESIDENT_BYTES).set(rss as f64);
        metrics::gauge!(m::PROCESS_PEAK_RESIDENT_BYTES).set(peak as f64);
    }
    let body = m::prometheus().map(|h| h.render()).unwrap_or_default();
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

/// Whether ingest is stalled now; sets the gauges that say so.
fn ingest_stall(state: &ApiState) -> Option<crate::ingest::Stall> {
    use crate::metrics as m;
    let stall = state
        .ingest
        .stalled(state.ingest_stall_after, crate::telemetry::Timestamp::now());
    metrics::gauge!(m::INGEST_STALLED).set(if stall.is_some() { 1.0 } else { 0.0 });
    metrics::gauge!(m::INGEST_HELD_MESSAGES).set(state.ingest.held() as f64);
    stall
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let stall = ingest_stall(&state);
    let ingest = stall.map_or_else(|| "ok".to_owned(), |s| s.to_string());
    let mqtt = if state.ingest.is_ready() {
        "connected"
    } else if state.ingest.is_connected() {
        "subscribing"
    } else {
        "disconnected"
    };
    // Reads answering is not enough: a store that cannot commit (a full disk) holds back
    // every acknowledgement.
    let store = match state.store.ping().await {
        Ok(()) => match state.store.write_failure() {
            None => "ok".to_owned(),
            Some(why) => format!("unwritable: {why}"),
        },
        Err(e) => format!("unavailable: {e}"),
    };
    let ready = state.ingest.is_ready() && store == "ok" && stall.is_none();
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"ready": ready, "mqtt": mqtt, "ingest": ingest, "store": store})),
    )
}
