//! `GET /quarantine`: rejected input, newest first, with counts per reason since start.

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::auth::need;
use super::params::{self, Params};
use super::{ApiError, ApiResult, ApiState};
use crate::quarantine::Reason;
use crate::security::Role;
use crate::storage::QuarantineQuery;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/quarantine", need(Role::Analyst, get(list)))
}

/// Default and largest page size of the quarantine listing.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

async fn list(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let mut p = Params::parse(q.as_deref())?;
    let station = p.take("station");
    let reason = p
        .take("reason")
        .map(|r| {
            Reason::parse(&r).ok_or_else(|| {
                let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
                ApiError::bad("reason", format!("must be one of {}", codes.join(", ")))
            })
        })
        .transpose()?;
    let limit = match p.take("limit") {
        Some(l) => params::bounded("limit", &l, MAX_LIMIT)?,
        None => DEFAULT_LIMIT,
    };
    let before_id = p
        .take("cursor")
        .map(|c| params::decode_id_cursor(&c))
        .transpose()?;
    p.finish()?;

    let page = state
        .store
        .quarantine(QuarantineQuery {
            station,
            reason,
            before_id,
            limit,
        })
        .await?;
    let next_cursor = match (page.has_more, page.entries.last()) {
        (true, Some(last)) => Some(params::encode_id_cursor(last.id)),
        _ => None,
    };
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|e| {
            let r = &e.rejection;
            json!({
                "id": e.id,
                "received_at": state.time(e.received_at),
                "topic": e.topic,
                "encoding": e.encoding.map(|enc| enc.as_str()),
                "reason": r.reason.code(),
                "detail": r.detail,
                "station": r.station,
                "param": r.param,
                "ts": r.ts.map(|t| state.time(t)),
                "value": r.value,
                "payload_excerpt": e.excerpt,
            })
        })
        .collect();
    let counts: Map<String, Value> = state
        .counters
        .snapshot()
        .into_iter()
        .map(|(reason, n)| (reason.code().to_owned(), json!(n)))
        .collect();
    Ok(Json(json!({
        "entries": entries,
        "has_more": page.has_more,
        "next_cursor": next_cursor,
        "rejections_since_start": counts,
    })))
}
