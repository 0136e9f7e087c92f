//! The HTTP API (axum): JSON under `/api/v1`, plus `/healthz`, `/readyz` and `/metrics`.
//!
//! One router per resource ([`stations`], [`counters`], [`readings`], [`quarantine`],
//! [`alerts`], [`admin`], [`health`]), each route declaring the least role that may call it
//! ([`auth::need`]). Merged here with the middleware every request gets: a request id
//! (`x-request-id`, generated when absent and echoed back), a trace span, a body size limit,
//! a timeout answered as JSON, and a panic guard; everything but the health probes also goes
//! through [`auth`] (rate limits, bearer token). [`serve`] adds TLS and the request-head size
//! limit. `docs/api.md` describes every endpoint, `docs/security.md` who may call what.

mod admin;
mod alerts;
mod aqi;
pub mod auth;
mod connectivity;
mod counters;
mod error;
mod health;
pub mod params;
mod quarantine;
mod readings;
mod reports;
mod selection;
pub mod stations;
pub mod streams;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Json, Router};
use chrono::FixedOffset;
use serde_json::json;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ApiResult};

use crate::config::ApiConfig;
use crate::ingest::IngestStatus;
use crate::live::Live;
use crate::monitor::Monitor;
use crate::pipeline::SharedRegistry;
use crate::quarantine::Counters;
use crate::security::Role;
use crate::storage::Store;
use crate::telemetry::Timestamp;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub registry: SharedRegistry,
    pub store: Arc<dyn Store>,
    pub live: Arc<Live>,
    pub counters: Arc<Counters>,
    pub ingest: Arc<IngestStatus>,
    /// The alert engine's front: acknowledgements, the event stream, webhook status.
    pub monitor: Arc<Monitor>,
    pub config: Arc<ApiConfig>,
    /// A station is online while its data is younger than this many expected intervals.
    pub offline_after: u32,
    /// Ingest holding messages and settling none for this long is stalled (`/readyz`).
    pub ingest_stall_after: std::time::Duration,
    /// Record counters per station (missing records).
    pub sequences: crate::pipeline::SharedSequences,
    /// Tokens, the audit log, failed-authentication bursts.
    pub guard: Arc<auth::Guard>,
    /// Caps on open event streams (`api.max_streams_per_token`, `api.max_streams`).
    pub streams: Arc<streams::StreamLimits>,
    /// Re-reads the seeds (registry and alert rules): a summary, or why they are invalid.
    pub reload: Reload,
    /// The stations-online gauge's last count (`/metrics`).
    pub online: Arc<stations::OnlineCount>,
    /// VN_AQI: each ambient station's current index, and the breakpoints and bands
    /// (`seeds/vn_aqi.toml`).
    pub aqi: Arc<crate::aqi::live::LiveAqi>,
}

/// See [`ApiState::reload`].
pub type Reload = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

impl ApiState {
    fn offset(&self) -> &FixedOffset {
        &self.config.utc_offset
    }

    /// Formats a time for a response.
    fn time(&self, ts: Timestamp) -> String {
        ts.to_rfc3339(self.offset())
    }
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a process-wide counter, unique per run and cheap.
#[derive(Clone, Default)]
struct CountingIds(Arc<AtomicU64>);

impl MakeRequestId for CountingIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        format!("req-{n:x}").parse().ok().map(RequestId::new)
    }
}

/// Builds the whole API.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .merge(stations::routes())
        .merge(readings::routes())
        .merge(aqi::routes())
        .merge(reports::routes())
        .merge(connectivity::routes())
        .merge(quarantine::routes())
        .merge(alerts::routes())
        .merge(counters::routes())
        .merge(admin::routes());
    let guarded = Router::new().nest("/api/v1", v1).route(
        "/metrics",
        auth::need(Role::Viewer, health::metrics_route()),
    );
    let Some(guarded) = auth::protect(guarded, &state) else {
        // Config validation keeps every rate positive, which is all a quota needs.
        panic!("api.rate_limit cannot make a rate-limit quota");
    };
    common_layers(guarded.merge(health::routes()), state)
}

/// `/metrics` alone, without authentication, for its own listener (`api.metrics_listen`).
pub fn metrics_router(state: ApiState) -> Router {
    common_layers(
        Router::new().route("/metrics", health::metrics_route()),
        state,
    )
}

fn common_layers(routes: Router<ApiState>, state: ApiState) -> Router {
    let timeout = state.config.request_timeout;
    let body_limit = state.config.max_body_bytes;
    let limits = Limits {
        head: state.config.max_header_bytes,
        body: body_limit,
    };
    routes
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .with_state(state)
        .layer(axum::middleware::from_fn(measure))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, CountingIds::default()))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                }).on_failure(failed))
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn_with_state(limits, size_limits))
                .layer(CatchPanicLayer::custom(|_| {
                    ApiError::Internal("a handler panicked".into()).into_response()
                }))
                .layer(HandleErrorLayer::new(timeout_error))
                .timeout(timeout)
                .layer(RequestBodyLimitLayer::new(body_limit)),
        )
}

/// 5xx answers are logged at most once a minute each way (the handler logs the cause of
/// an internal error itself): a probe polling `/readyz` on a service that is not ready, or a
/// full disk failing the same request again and again, would otherwise write an ERROR line
/// per request.
static RESPONSES_FAILED: crate::log_limit::LogLimit =
    crate::log_limit::LogLimit::new(Duration::from_secs(60));

fn failed(
    class: tower_http::classify::ServerErrorsFailureClass,
    latency: Duration,
    _span: &tracing::Span,
) {
    if let Some(suppressed) = RESPONSES_FAILED.admit() {
        tracing::error!(classification = %class, latency = ?latency, suppressed,
            "response failed (5xx answers are logged at most once a minute)");
    }
}

/// The size limits of a request, enforced by [`size_limits`].
#[derive(Clone, Copy)]
struct Limits {
    head: usize,
    body: usize,
}

/// The size of a request head as sent over HTTP/1.1: request line and header lines.
fn head_size<B>(request: &Request<B>) -> usize {
    let line = request.method().as_str().len() + request.uri().to_string().len() + 12;
    request.headers().iter().fold(line, |size, (name, value)| {
        size.saturating_add(name.as_str().len() + value.len() + 4)
    })
}

/// 431 for heads over `api.max_header_bytes` and 413 for bodies over `api.max_body_bytes`,
/// both in the JSON error shape. [`serve`] lets hyper read heads up to [`head_buffer`]
/// so that this answers; heads beyond that get hyper's own empty 431. The body limit itself
/// is tower-http's (a declared length over the limit is refused before the handler; a
/// chunked body fails when read, which handlers answer 413): its plain-text 413 is
/// replaced here.
async fn size_limits(
    State(limits): State<Limits>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    if head_size(&request) > limits.head {
        return ApiError::HeadTooLarge { limit: limits.head }.into_response();
    }
    let response = next.run(request).await;
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE && !json {
        return ApiError::BodyTooLarge { limit: limits.body }.into_response();
    }
    response
}

/// How much of a request head hyper reads before answering 431 itself (with an empty body):
/// twice `api.max_header_bytes` (at least 16 KiB more), so that [`size_limits`] answers
/// the heads a little over the limit in the API's shape.
fn head_buffer(max_header_bytes: usize) -> usize {
    max_header_bytes
        .saturating_mul(2)
        .max(max_header_bytes.saturating_add(16_384))
}

/// Counts and times every request by route pattern (never by concrete path: bounded labels).
async fn measure(request: Request<axum::body::Body>, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::metrics::API_REQUESTS_TOTAL,
        crate::metrics::LABEL_ROUTE => route.clone(), crate::metrics::LABEL_STATUS => status)
    .increment(1);
    metrics::histogram!(crate::metrics::API_REQUEST_SECONDS, crate::metrics::LABEL_ROUTE => route)
        .record(started.elapsed().as_secs_f64());
    response
}

async fn timeout_error(error: BoxError) -> Response {
    if error.is::<tower::timeout::error::Elapsed>() {
        let body = json!({"error": {"code": "request_timeout",
                                    "message": "the request took too long and was abandoned"}});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    } else {
        ApiError::Internal(error.to_string()).into_response()
    }
}

/// How long a client may take to send a request head (slow-header attacks).
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections (event streams, say) may finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` on `listener` (HTTPS when `tls` is given) until `shutdown`. Request
/// heads above `max_header_bytes` are refused with 431 ([`size_limits`]; by hyper itself
/// beyond [`head_buffer`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    max_header_bytes: usize,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::<std::net::SocketAddr>::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopper.graceful_shutdown(Some(DRAIN));
    });
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let mut server = axum_server::Server::from_listener(listener).handle(handle);
    server
        .http_builder()
        .http1()
        .max_buf_size(head_buffer(max_header_bytes))
        .header_read_timeout(Some(HEAD_TIMEOUT))
        .http2()
        .max_header_list_size(u32::try_from(head_buffer(max_header_bytes)).unwrap_or(u32::MAX));
    match tls {
        None => server.serve(service).await,
        Some(config) => {
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(
                axum_server::tls_rustls::RustlsConfig::from_config(config),
            );
            server.acceptor(acceptor).serve(service).await
        }
    }
}

/// The `{id}` of a route, with path errors answered in the API's JSON shape.
pub struct PathId(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state).await?;
        Ok(PathId(id))
    }
}

/// How long a station may stay silent before it counts as offline.
fn silence_allowed(interval: Duration, offline_after: u32) -> i64 {
    crate::telemetry::time::duration_ms(interval.saturating_mul(offline_after))
}
