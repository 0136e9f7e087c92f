//! `GET /quarantine`: rejected messages, newest first (one entry each: counts per reason,
//! sample rejections, whether the payload is still held), with counts per reason since start.
//! `GET /quarantine/{id}/payload`: that message's payload, byte for byte, from the
//! dead-letter store.

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use super::auth::need;
use super::params::{self, Params};
use super::{ApiError, ApiResult, ApiState, PathId};
use crate::quarantine::{DeadLetter, QuarantineEntry, Reason, Rejection};
use crate::security::Role;
use crate::storage::QuarantineQuery;
use crate::telemetry::Encoding;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/quarantine", need(Role::Analyst, get(list)))
        .route(
            "/quarantine/{id}/payload",
            need(Role::Analyst, get(payload)),
        )
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
    let entries: Vec<Value> = page.entries.iter().map(|e| entry(&state, e)).collect();
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

/// One entry. `reason`, `detail`, `param`, `ts` and `value` are those of the message's first
/// rejection (the fields of the one-rejection-per-entry listing of earlier versions).
fn entry(state: &ApiState, e: &QuarantineEntry) -> Value {
    let first = e.samples.first();
    let reasons: Map<String, Value> = e
        .counts
        .iter()
        .map(|(r, n)| (r.code().to_owned(), json!(n)))
        .collect();
    let samples: Vec<Value> = e.samples.iter().map(|r| sample(state, r)).collect();
    let payload = e.payload_bytes.map(|bytes| {
        json!({
            "bytes": bytes,
            "held": e.payload_held,
            "url": format!("/api/v1/quarantine/{}/payload", e.id),
        })
    });
    json!({
        "id": e.id,
        "received_at": state.time(e.received_at),
        "topic": e.topic,
        "encoding": e.encoding.map(|enc| enc.as_str()),
        "station": e.station,
        "reason": first.map(|r| r.reason.code()).or_else(|| e.counts.first().map(|(r, _)| r.code())),
        "detail": first.map(|r| r.detail.as_str()),
        "param": first.and_then(|r| r.param.as_deref()),
        "ts": first.and_then(|r| r.ts).map(|t| state.time(t)),
        "value": first.and_then(|r| r.value),
        "total": e.total(),
        "reasons": reasons,
        "samples": samples,
        "payload_excerpt": e.excerpt,
        "payload": payload,
    })
}

fn sample(state: &ApiState, r: &Rejection) -> Value {
    json!({
        "reason": r.reason.code(),
        "station": r.station,
        "param": r.param,
        "ts": r.ts.map(|t| state.time(t)),
        "value": r.value,
        "detail": r.detail,
    })
}

/// The content type a payload of `encoding` is served with.
fn content_type(encoding: Option<Encoding>) -> &'static str {
    match encoding {
        Some(Encoding::Json) => "application/json",
        Some(Encoding::Tt10) => "text/plain; charset=utf-8",
        Some(Encoding::Bincode) | None => "application/octet-stream",
    }
}

async fn payload(
    State(state): State<ApiState>,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
) -> ApiResult<Response> {
    Params::parse(q.as_deref())?.finish()?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad("path", format!("`{id}` is not a quarantine entry id")))?;
    match state.store.dead_letter(id).await? {
        DeadLetter::Held { encoding, payload } => {
            let extension = encoding.map_or("bin", |e| match e {
                Encoding::Json => "json",
                Encoding::Tt10 => "txt",
                Encoding::Bincode => "bin",
            });
            let disposition = format!("attachment; filename=\"quarantine-{id}.{extension}\"");
            Ok((
                [
                    (header::CONTENT_TYPE, content_type(encoding).to_owned()),
                    (header::CONTENT_DISPOSITION, disposition),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                ],
                payload,
            )
                .into_response())
        }
        DeadLetter::Evicted => Err(ApiError::NotFound {
            code: "payload_evicted",
            message: format!(
                "the payload of quarantine entry {id} is no longer held: the dead-letter store \
                 dropped it to stay within quarantine.dead_letter_max_bytes (or it was \
                 quarantined before payloads were kept)"
            ),
        }),
        DeadLetter::Unknown => Err(ApiError::NotFound {
            code: "unknown_entry",
            message: format!("there is no quarantine entry {id} (never, or evicted)"),
        }),
    }
}
