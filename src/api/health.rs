//! `/healthz` (the process answers), `/readyz` (broker and store are up) and `/metrics`
//! (Prometheus text format).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::ApiState;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn metrics() -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    let body = crate::metrics::prometheus()
        .map(|h| h.render())
        .unwrap_or_default();
    (
        StatusCode::OK,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<ApiState>) -> (StatusCode, Json<Value>) {
    let mqtt = if state.ingest.is_ready() {
        "connected"
    } else if state.ingest.is_connected() {
        "subscribing"
    } else {
        "disconnected"
    };
    let store = match state.store.ping().await {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("unavailable: {e}"),
    };
    let ready = state.ingest.is_ready() && store == "ok";
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({"ready": ready, "mqtt": mqtt, "store": store})),
    )
}
