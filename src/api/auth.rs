//! Who may call the API: bearer-token authentication (401), role checks per route (403), and
//! rate limits per client address (before authentication) and per token (after it).
//!
//! Layers, outermost first, on everything under `/api/v1`:
//! address limit -> [`authenticate`] -> token limit -> the route's [`need`] -> handler.
//! `/healthz` and `/readyz` take none of them; `/metrics` takes them on the API listener and
//! none on its own listener (`api.metrics_listen`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::json;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::{KeyExtractor, PeerIpKeyExtractor};
use tower_governor::{GovernorError, GovernorLayer};

use super::{ApiError, ApiState};
use crate::metrics as m;
use crate::security::failures::FailureWatch;
use crate::security::{Action, AuthFailure, NewEntry, Principal, Role, SecurityDb};

/// What authentication shares between requests.
pub struct Guard {
    pub db: SecurityDb,
    failures: Mutex<FailureWatch>,
}

impl Guard {
    pub fn new(db: SecurityDb, burst: u32, window: Duration) -> Guard {
        Guard {
            db,
            failures: Mutex::new(FailureWatch::new(burst, window, 10_000)),
        }
    }
}

/// Runs a security-database call on the blocking pool.
pub async fn blocking<T: Send + 'static>(
    db: &SecurityDb,
    f: impl FnOnce(&SecurityDb) -> Result<T, crate::security::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || f(&db)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::Internal(format!("security database task: {e}"))),
    }
}

/// The client's address, when the server recorded it.
pub fn client_address(request: &Request) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Authenticates the request's bearer token and records who it is ([`Principal`]).
pub async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let outcome = match bearer(request.headers()) {
        None => Ok(Err(AuthFailure::Missing)),
        Some(text) => {
            let text = text.to_owned();
            blocking(&state.guard.db, move |db| db.authenticate(&text)).await
        }
    };
    match outcome {
        Ok(Ok(mut principal)) => {
            principal.address = client_address(&request);
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Ok(Err(failure)) => {
            let path = request.uri().path().to_owned();
            refused(&state, failure, client_address(&request), &path).await
        }
        Err(e) => e.into_response(),
    }
}

async fn refused(
    state: &ApiState,
    failure: AuthFailure,
    address: Option<IpAddr>,
    path: &str,
) -> Response {
    metrics::counter!(m::API_AUTH_FAILURES_TOTAL, m::LABEL_REASON => failure.code()).increment(1);
    tracing::warn!(reason = failure.code(), address = ?address, path,
        "API request refused: not authenticated");
    if let Some(address) = address {
        let burst = state.guard.failures.lock().failed(address, Instant::now());
        if let Some(burst) = burst {
            let entry = NewEntry {
                actor: "anonymous".into(),
                action: Action::AuthFailureBurst,
                target: address.to_string(),
                detail: format!(
                    "{} failed authentications within {}",
                    burst.failures,
                    humantime::format_duration(burst.within)
                ),
                address: Some(address.to_string()),
            };
            tracing::warn!(%address, failures = burst.failures, "burst of failed authentications");
            if let Err(e) = blocking(&state.guard.db, move |db| db.audit(&entry)).await {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
    }
    ApiError::Unauthenticated.into_response()
}

/// `method_router`, callable only by tokens with at least `role`.
pub fn need(role: Role, method_router: MethodRouter<ApiState>) -> MethodRouter<ApiState> {
    method_router.route_layer(axum::middleware::from_fn_with_state(role, require))
}

async fn require(State(needed): State<Role>, request: Request, next: Next) -> Response {
    match request.extensions().get::<Principal>() {
        Some(p) if p.role.allows(needed) => next.run(request).await,
        Some(p) => {
            tracing::info!(token = %p.token_id, role = %p.role, needed = %needed, path = %request.uri().path(),
                "API request refused: role too low");
            ApiError::Forbidden {
                needed,
                have: p.role,
            }
            .into_response()
        }
        // Only reachable if a route is mounted outside `authenticate`: a programming error,
        // answered as a refusal rather than a panic.
        None => ApiError::Unauthenticated.into_response(),
    }
}

/// Rate-limit key of an authenticated request: its token.
#[derive(Debug, Clone, Copy)]
struct TokenKey;

impl KeyExtractor for TokenKey {
    type Key = String;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<String, GovernorError> {
        req.extensions()
            .get::<Principal>()
            .map(|p| p.token_id.clone())
            .ok_or(GovernorError::UnableToExtractKey)
    }
}

fn period(per_second: u32) -> Duration {
    Duration::from_nanos(1_000_000_000 / u64::from(per_second.max(1)))
}

/// 429 in the API's JSON shape with `Retry-After` (whole seconds, at least 1).
fn too_many(error: GovernorError) -> Response {
    match error {
        GovernorError::TooManyRequests { wait_time, headers } => {
            metrics::counter!(m::API_RATE_LIMITED_TOTAL).increment(1);
            // Governor rounds the wait down to whole seconds: under a second is `0`, which
            // clients read as "retry at once". Never less than 1.
            let wait = wait_time.max(1);
            let body = json!({"error": {"code": "rate_limited",
                "message": format!("too many requests; retry after {wait} s")}});
            let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            if let Some(headers) = headers {
                response.headers_mut().extend(headers);
            }
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, wait.into());
            response
        }
        other => ApiError::Internal(format!("rate limiter: {other}")).into_response(),
    }
}

/// Wraps the `/api/v1` routes in their layers: address limit -> authentication -> token
/// limit. `None` if a configured rate cannot make a quota (validated config never does that).
pub fn protect(api: Router<ApiState>, state: &ApiState) -> Option<Router<ApiState>> {
    let limits = &state.config.rate_limit;
    let address = GovernorConfigBuilder::default()
        .period(period(limits.per_address_per_second))
        .burst_size(limits.per_address_burst)
        .key_extractor(PeerIpKeyExtractor)
        .finish()?;
    let token = GovernorConfigBuilder::default()
        .period(period(limits.per_token_per_second))
        .burst_size(limits.per_token_burst)
        .key_extractor(TokenKey)
        .finish()?;
    let address_limiter = Arc::downgrade(address.limiter());
    let token_limiter = Arc::downgrade(token.limiter());
    forget_idle(move || {
        let a = address_limiter.upgrade().inspect(|l| l.retain_recent());
        let t = token_limiter.upgrade().inspect(|l| l.retain_recent());
        a.is_some() || t.is_some()
    });
    Some(
        api.layer(GovernorLayer::new(token).error_handler(too_many))
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                authenticate,
            ))
            .layer(GovernorLayer::new(address).error_handler(too_many)),
    )
}

/// Every minute, lets the limiters drop the buckets of clients that are back to full;
/// stops once `sweep` says the limiters are gone.
fn forget_idle(sweep: impl Fn() -> bool + Send + 'static) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        every.tick().await;
        loop {
            every.tick().await;
            if !sweep() {
                return;
            }
        }
    });
}
