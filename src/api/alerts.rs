//! `/alerts`: listing, one alert, acknowledgement, the live event stream, webhook delivery.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use futures_util::stream::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::{blocking, need};
use super::error::object_body;
use super::params::{self, Params};
use super::{ApiError, ApiResult, ApiState, PathId};
use crate::alerts::{AlertState, Severity};
use crate::monitor::AckFailure;
use crate::notify::json;
use crate::security::Role;
use crate::security::{Action, NewEntry, Principal};
use crate::storage::AlertQuery;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/alerts", need(Role::Viewer, get(list)))
        .route("/alerts/stream", need(Role::Viewer, get(stream)))
        .route("/alerts/webhooks", need(Role::Admin, get(webhooks)))
        .route("/alerts/{id}", need(Role::Viewer, get(one)))
        .route("/alerts/{id}/ack", need(Role::Inspector, post(acknowledge)))
}

/// How often an idle event stream sends a comment: keeps proxies from closing it, and finds
/// clients that went away (their slot is freed when the send fails).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

fn severity(text: &str) -> ApiResult<Severity> {
    Severity::parse(text)
        .ok_or_else(|| ApiError::bad("severity", "must be info, warning or critical"))
}

fn alert_id(text: &str) -> ApiResult<u64> {
    text.parse()
        .map_err(|_| ApiError::bad("path", format!("`{text}` is not an alert id")))
}

/// Zone, station and (minimum) severity filters shared by the listing and the stream.
struct Filters {
    zone: Option<String>,
    station: Option<String>,
    severity: Option<Severity>,
}

impl Filters {
    fn take(p: &mut Params, state: &ApiState) -> ApiResult<Filters> {
        let registry = state.registry.load();
        let zone = p.take("zone");
        if let Some(z) = &zone {
            if registry.zone(z).is_none() {
                return Err(ApiError::NotFound {
                    code: "unknown_zone",
                    message: format!("zone `{z}` is not in the registry"),
                });
            }
        }
        let station = p.take("station");
        if let Some(s) = &station {
            if registry.station(s).is_none() {
                return Err(ApiError::unknown_station(s));
            }
        }
        let severity = p.take("severity").map(|s| severity(&s)).transpose()?;
        Ok(Filters {
            zone,
            station,
            severity,
        })
    }
}

async fn list(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let mut p = Params::parse(q.as_deref())?;
    let filters = Filters::take(&mut p, &state)?;
    let alert_state = p
        .take("state")
        .map(|s| {
            AlertState::parse(&s)
                .ok_or_else(|| ApiError::bad("state", "must be open, acknowledged or resolved"))
        })
        .transpose()?;
    let from = p
        .take("from")
        .map(|t| params::time("from", &t, state.offset()))
        .transpose()?;
    let to = p
        .take("to")
        .map(|t| params::time("to", &t, state.offset()))
        .transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(ApiError::bad("from", "must be before `to`"));
        }
    }
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
        .alerts(AlertQuery {
            state: alert_state,
            station: filters.station,
            zone: filters.zone,
            severity: filters.severity,
            from,
            to,
            before_id,
            limit,
        })
        .await?;
    let next_cursor = match (page.has_more, page.alerts.last()) {
        (true, Some(last)) => Some(params::encode_id_cursor(last.id)),
        _ => None,
    };
    let alerts: Vec<Value> = page
        .alerts
        .iter()
        .map(|a| json::alert(a, state.offset()))
        .collect();
    Ok(Json(
        json!({"alerts": alerts, "has_more": page.has_more, "next_cursor": next_cursor}),
    ))
}

async fn one(
    State(state): State<ApiState>,
    PathId(id): PathId,
    RawQuery(q): RawQuery,
) -> ApiResult<Json<Value>> {
    Params::parse(q.as_deref())?.finish()?;
    let id = alert_id(&id)?;
    match state.store.alert(id).await? {
        Some(a) => Ok(Json(json::alert(&a, state.offset()))),
        None => Err(ApiError::NotFound {
            code: "unknown_alert",
            message: format!("there is no alert {id}"),
        }),
    }
}

/// The body of an acknowledgement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    /// Who acknowledges; the token's name when absent.
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    note: String,
}

async fn acknowledge(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    PathId(id): PathId,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let id = alert_id(&id)?;
    let body: AckBody = object_body(body, state.config.max_body_bytes)?;
    if body.by.as_deref().is_some_and(crate::text::has_unsafe) {
        return Err(ApiError::control_characters("by"));
    }
    if crate::text::has_unsafe(&body.note) {
        return Err(ApiError::control_characters("note"));
    }
    let by = body.by.as_deref().unwrap_or(&who.name).trim();
    if by.is_empty() || by.chars().count() > 100 {
        return Err(ApiError::bad(
            "body",
            "`by` names who acknowledges: 1 to 100 characters",
        ));
    }
    if body.note.chars().count() > 2000 {
        return Err(ApiError::bad("body", "`note` is at most 2000 characters"));
    }
    match state.monitor.acknowledge(id, by, body.note.trim()).await {
        Ok(alert) => {
            let entry = NewEntry {
                actor: who.actor(),
                action: Action::AlertAcknowledged,
                target: format!("alert {id}"),
                detail: format!(
                    "{} {} at {}: acknowledged by {by}",
                    alert.rule,
                    alert.param.as_deref().unwrap_or("-"),
                    alert.station
                ),
                address: who.address.map(|a| a.to_string()),
            };
            // The acknowledgement is durable already: a failed audit write is logged loudly
            // rather than turned into an error the inspector would retry.
            if let Err(e) = blocking(&state.guard.db, move |db| db.audit(&entry)).await {
                tracing::error!(error = %e, alert = id, "cannot audit an acknowledgement");
            }
            Ok(Json(json::alert(&alert, state.offset())))
        }
        Err(AckFailure::Unknown(id)) => Err(ApiError::NotFound {
            code: "unknown_alert",
            message: format!("there is no alert {id}"),
        }),
        Err(e @ (AckFailure::Resolved(_) | AckFailure::AlreadyAcknowledged(_))) => {
            Err(ApiError::Conflict {
                code: match e {
                    AckFailure::Resolved(_) => "alert_resolved",
                    _ => "already_acknowledged",
                },
                message: e.to_string(),
            })
        }
        Err(AckFailure::Storage(e)) => Err(e.into()),
    }
}

/// Server-sent events: one `event:` per alert event (`opened`, `escalated`, ...), its JSON as
/// `data:`. Filters: `zone`, `station`, `severity` (minimum). At most
/// `api.max_streams_per_token` per token and `api.max_streams` in all ([`super::streams`]):
/// 429 `too_many_streams` beyond.
async fn stream(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    RawQuery(q): RawQuery,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let mut p = Params::parse(q.as_deref())?;
    let filters = Filters::take(&mut p, &state)?;
    p.finish()?;
    let permit = state
        .streams
        .acquire(&who.token_id)
        .inspect_err(|refusal| {
            tracing::info!(token = %who.token_id, ?refusal, "event stream refused: too many open");
        })?;
    let notifier = state.monitor.notifier().clone();
    let offset = *notifier.offset();
    let closing = notifier.closing();
    let events = BroadcastStream::new(notifier.subscribe())
        .filter_map(move |item| {
            let out = match item {
                Ok(e) => {
                    let a = &e.alert;
                    let wanted = filters.zone.as_deref().is_none_or(|z| *a.zone == *z)
                        && filters.station.as_deref().is_none_or(|s| *a.station == *s)
                        && filters.severity.is_none_or(|s| a.severity >= s);
                    wanted.then(|| {
                        Event::default()
                            .event(e.kind.as_str())
                            .id(format!("{}-{}", a.id, e.at.as_millis()))
                            .data(json::event(&e, &offset).to_string())
                    })
                }
                // A client too slow for the buffer is told how much it missed.
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(
                    Event::default()
                        .event("lagged")
                        .data(json!({"missed": n}).to_string()),
                ),
            };
            std::future::ready(out.map(Ok))
        })
        .take_until(async move { closing.cancelled().await })
        .boxed();
    // The permit lives as long as the response body: a client that goes away frees its slot
    // once the server notices (at the latest at the next keep-alive it cannot send).
    let events = super::streams::Held::new(events, permit);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

async fn webhooks(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    Params::parse(q.as_deref())?.finish()?;
    let offset = *state.offset();
    let hooks: Vec<Value> = state
        .monitor
        .notifier()
        .webhooks()
        .into_iter()
        .map(|w| {
            let failures: Vec<Value> = w
                .recent_failures
                .iter()
                .map(|f| json!({"at": f.at.to_rfc3339(&offset), "alert": f.alert, "event": f.event, "attempts": f.attempts, "error": f.error}))
                .collect();
            json!({"url": w.url, "zones": w.zones, "min_severity": w.min_severity,
                   "delivered": w.delivered, "failed": w.failed, "queued": w.queued,
                   "recent_failures": failures})
        })
        .collect();
    Ok(Json(json!({"webhooks": hooks})))
}
