//! `/healthz` (the process answers) and `/readyz` (broker and store are up).

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
