//! Administration: tokens, the audit log, registry reloads, and `/me` (who am I).

use axum::extract::rejection::JsonRejection;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{blocking, need};
use super::error::object_body;
use super::params::{self, Params};
use super::{ApiError, ApiResult, ApiState, PathId};
use crate::security::{Action, NewEntry, Principal, Role, TokenInfo};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/me", need(Role::Viewer, get(me)))
        .route("/tokens", need(Role::Admin, get(tokens).post(create)))
        .route("/tokens/{id}", need(Role::Admin, delete(revoke)))
        .route("/audit", need(Role::Admin, get(audit)))
        .route("/registry/reload", need(Role::Admin, post(reload)))
}

async fn me(Extension(who): Extension<Principal>) -> Json<Value> {
    Json(json!({"token": who.token_id, "name": who.name, "role": who.role}))
}

fn token_json(t: &TokenInfo, state: &ApiState) -> Value {
    json!({
        "id": t.id, "name": t.name, "role": t.role,
        "created_at": state.time(t.created_at), "created_by": t.created_by,
        "revoked_at": t.revoked_at.map(|at| state.time(at)), "revoked_by": t.revoked_by,
        "expires_at": t.expires_at.map(|at| state.time(at)),
        "last_used_at": t.last_used_at.map(|at| state.time(at)),
    })
}

async fn tokens(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    Params::parse(q.as_deref())?.finish()?;
    let list = blocking(&state.guard.db, |db| db.tokens()).await?;
    let tokens: Vec<Value> = list.iter().map(|t| token_json(t, &state)).collect();
    Ok(Json(json!({"tokens": tokens})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    role: Role,
    /// How long the token works, e.g. `"90d"` (none: until revoked).
    #[serde(default, with = "humantime_serde")]
    expires_in: Option<std::time::Duration>,
}

async fn create(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    body: Result<Json<Value>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let body: NewToken = object_body(body, state.config.max_body_bytes)?;
    if body
        .expires_in
        .is_some_and(|d| d > crate::security::db::MAX_TOKEN_LIFETIME)
    {
        return Err(ApiError::bad("expires_in", "is at most 10 years (3653d)"));
    }
    let actor = who.actor();
    let address = who.address.map(|a| a.to_string());
    let expires_at = body
        .expires_in
        .map(|d| crate::telemetry::Timestamp::now().saturating_add(d));
    let (text, info) = blocking(&state.guard.db, move |db| {
        db.create_token_until(
            &body.name,
            body.role,
            expires_at,
            &actor,
            address.as_deref(),
        )
    })
    .await?;
    tracing::info!(token = %info.id, role = %info.role, by = %who.token_id, "API token created");
    let mut out = token_json(&info, &state);
    out["token"] = Value::String(text);
    Ok((StatusCode::CREATED, Json(out)))
}

async fn revoke(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
    PathId(id): PathId,
) -> ApiResult<Json<Value>> {
    let actor = who.actor();
    let address = who.address.map(|a| a.to_string());
    let info = blocking(&state.guard.db, move |db| {
        db.revoke_token(&id, &actor, address.as_deref())
    })
    .await?;
    tracing::info!(token = %info.id, by = %who.token_id, "API token revoked");
    Ok(Json(token_json(&info, &state)))
}

const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// The audit log, oldest first, paged by `after` (an entry id), with the chain's check.
async fn audit(State(state): State<ApiState>, RawQuery(q): RawQuery) -> ApiResult<Json<Value>> {
    let mut p = Params::parse(q.as_deref())?;
    let after = match p.take("after") {
        Some(text) => text
            .parse::<i64>()
            .map_err(|_| ApiError::bad("after", "must be an entry id"))?,
        None => 0,
    };
    let limit = match p.take("limit") {
        Some(text) => params::bounded("limit", &text, MAX_LIMIT)?,
        None => DEFAULT_LIMIT,
    };
    p.finish()?;
    let (entries, check) = blocking(&state.guard.db, move |db| {
        Ok((db.audit_log(after, limit + 1)?, db.verify_audit()?))
    })
    .await?;
    let has_more = entries.len() > limit;
    let entries: Vec<Value> = entries
        .iter()
        .take(limit)
        .map(|e| {
            json!({"id": e.id, "at": state.time(e.at), "actor": e.actor, "action": e.action,
                   "target": e.target, "detail": e.detail, "address": e.address,
                   "hash": crate::security::token::hex(&e.hash)})
        })
        .collect();
    let next = has_more.then(|| entries.last().map(|e| e["id"].clone()));
    Ok(Json(
        json!({"entries": entries, "has_more": has_more, "next_after": next.flatten(),
                   "chain": check}),
    ))
}

/// Re-reads the seeds (like SIGHUP); audited either way.
async fn reload(
    State(state): State<ApiState>,
    Extension(who): Extension<Principal>,
) -> ApiResult<Json<Value>> {
    // Reading the seed files is blocking I/O (a fraction of a second for 10,000 stations).
    let reload = state.reload.clone();
    let outcome = tokio::task::spawn_blocking(move || reload())
        .await
        .map_err(|e| ApiError::Internal(format!("registry reload task: {e}")))?;
    let (action, detail) = match &outcome {
        Ok(summary) => (Action::RegistryReloaded, summary.clone()),
        Err(problem) => (Action::RegistryReloadFailed, problem.clone()),
    };
    let entry = NewEntry {
        actor: who.actor(),
        action,
        target: "registry".into(),
        detail,
        address: who.address.map(|a| a.to_string()),
    };
    blocking(&state.guard.db, move |db| db.audit(&entry)).await?;
    match outcome {
        Ok(summary) => Ok(Json(json!({"reloaded": true, "registry": summary}))),
        Err(problem) => Err(ApiError::Conflict {
            code: "invalid_seeds",
            message: format!("the seeds are invalid; the previous registry stays: {problem}"),
        }),
    }
}
