//! API errors in one place: one enum, one JSON shape, one `IntoResponse`.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}` (plus `parameter` for a
//! bad parameter). Codes are stable; messages are for humans. Internal errors are logged with
//! their cause and answered with a generic message: storage details never reach clients.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a query parameter is missing, malformed or out of bounds.
    #[error("{parameter}: {message}")]
    BadParameter {
        parameter: Cow<'static, str>,
        message: String,
    },
    /// 400: the request body is not what the endpoint takes (`code` says how).
    #[error("{message}")]
    BadBody { code: &'static str, message: String },
    /// 413: the request body is larger than `api.max_body_bytes`.
    #[error("the request body is larger than the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// 431: the request head is larger than `api.max_header_bytes`.
    #[error("the request head is larger than the limit of {limit} bytes")]
    HeadTooLarge { limit: usize },
    /// 400: the query would cover more series x days than `api.max_query_cost`.
    #[error("the query covers {cost} series x days; at most {max} are allowed")]
    TooCostly { cost: u64, max: u64 },
    /// 401: no valid bearer token (why is logged, not told).
    #[error("a valid bearer token is required")]
    Unauthenticated,
    /// 403: the token is valid but its role is too low.
    #[error("this needs the `{needed}` role; the token has `{have}`")]
    Forbidden {
        needed: crate::security::Role,
        have: crate::security::Role,
    },
    /// 404: the named thing does not exist.
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// 409: the request conflicts with the resource's state.
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// 429: a limit on open resources (event streams) is reached; retry after
    /// `retry_after` seconds (at least 1).
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after: u64,
    },
    /// 503: a dependency is unavailable or the request took too long.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// 500: a bug or a storage failure; details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn bad(parameter: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::BadParameter {
            parameter: Cow::Borrowed(parameter),
            message: message.into(),
        }
    }

    /// 400 `invalid_body`.
    pub fn invalid_body(message: impl Into<String>) -> ApiError {
        ApiError::BadBody {
            code: "invalid_body",
            message: message.into(),
        }
    }

    /// 400 `control_characters`: `field` holds a control character.
    pub fn control_characters(field: &str) -> ApiError {
        ApiError::BadBody {
            code: "control_characters",
            message: format!("`{field}` may not contain control characters"),
        }
    }

    pub fn unknown_station(id: &str) -> ApiError {
        ApiError::NotFound {
            code: "unknown_station",
            message: format!("station `{id}` is not in the registry"),
        }
    }
}

impl From<crate::storage::Error> for ApiError {
    fn from(e: crate::storage::Error) -> Self {
        match e {
            crate::storage::Error::Closed => ApiError::Unavailable {
                code: "store_unavailable",
                message: "the store is shutting down".into(),
            },
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::security::Error> for ApiError {
    fn from(e: crate::security::Error) -> Self {
        use crate::security::Error as E;
        match e {
            E::UnknownToken(id) => ApiError::NotFound {
                code: "unknown_token",
                message: format!("there is no token `{id}`"),
            },
            E::AlreadyRevoked(id) => ApiError::Conflict {
                code: "already_revoked",
                message: format!("token `{id}` is already revoked"),
            },
            E::ControlCharacters => ApiError::control_characters("name"),
            e @ (E::BadName | E::BadExpiry) => ApiError::bad("body", e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body) = match &self {
            ApiError::TooCostly { .. } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "query_too_costly", "message": message}}),
            ),
            ApiError::Unauthenticated => {
                let body = json!({"error": {"code": "unauthenticated",
                    "message": "a valid bearer token is required: Authorization: Bearer qt_..."}});
                let mut response = (StatusCode::UNAUTHORIZED, Json(body)).into_response();
                response.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    axum::http::HeaderValue::from_static("Bearer realm=\"quantrac\""),
                );
                return response;
            }
            ApiError::Forbidden { .. } => (
                StatusCode::FORBIDDEN,
                json!({"error": {"code": "forbidden", "message": message}}),
            ),
            ApiError::BadParameter { parameter, message } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": "bad_parameter", "parameter": parameter,
                                 "message": format!("{parameter}: {message}")}}),
            ),
            ApiError::BadBody { code, message } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"code": code, "message": message}}),
            ),
            ApiError::BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"error": {"code": "body_too_large", "message": message}}),
            ),
            ApiError::HeadTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                json!({"error": {"code": "head_too_large", "message": message}}),
            ),
            ApiError::NotFound { code, message } => (
                StatusCode::NOT_FOUND,
                json!({"error": {"code": code, "message": message}}),
            ),
            ApiError::Conflict { code, message } => (
                StatusCode::CONFLICT,
                json!({"error": {"code": code, "message": message}}),
            ),
            ApiError::TooManyRequests {
                code,
                message,
                retry_after,
            } => {
                let body = json!({"error": {"code": code, "message": message}});
                let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    (*retry_after).max(1).into(),
                );
                return response;
            }
            ApiError::Unavailable { code, message } => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": {"code": code, "message": message}}),
            ),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error answering a request");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": {"code": "internal",
                                     "message": "internal error; the server log has the details"}}),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::PathRejection) -> Self {
        ApiError::bad("path", rejection.body_text())
    }
}

/// A JSON body that must be an object: `Json<Value>` taken by the handler, then checked and
/// decoded here. An array or a scalar is `invalid_body` (serde would read a struct from an
/// array by position); a body over the limit, chunked or not, is 413.
pub fn object_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let Json(value) = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::BodyTooLarge { limit }
        } else {
            ApiError::invalid_body(e.body_text())
        }
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid_body("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| ApiError::invalid_body(format!("body: {e}")))
}

/// Fallback for paths that match no route.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::NotFound {
        code: "not_found",
        message: format!("no resource at {}", uri.path()),
    }
}

/// Answer for a known path with the wrong method.
pub async fn wrong_method(method: axum::http::Method) -> Response {
    let body = json!({"error": {"code": "method_not_allowed",
                                "message": format!("{method} is not allowed here")}});
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}
