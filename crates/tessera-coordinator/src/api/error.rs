//! The API's errors: one JSON shape, `{"error": code, "message": text, "reasons": [..]}`, with
//! the status the cause calls for (and a `Retry-After` header on 429).

use std::time::Duration;

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::model::ErrorBody;
use crate::auth::AuthError;
use crate::service::ServiceError;

/// A failed API call: the status and the [`ErrorBody`] sent back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable error code.
    pub code: &'static str,
    /// The message for people.
    pub message: String,
    /// The policy's reasons, for `denied`.
    pub reasons: Option<Vec<String>>,
    /// For `rate_limited` (429): how long to wait before retrying, sent as the `Retry-After`
    /// header in whole seconds, rounded up (at least 1).
    pub retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            reasons: None,
            retry_after: None,
        }
    }

    /// 400: the input cannot be used as given.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404: no such resource or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 405: the route exists for other methods.
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        )
    }

    /// 413: the body is larger than the limit.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than the {limit} bytes accepted"),
        )
    }

    /// 429: the caller is over its rate limit; retry after `retry_after`.
    pub fn rate_limited(retry_after: Duration, message: impl Into<String>) -> Self {
        ApiError {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
        }
    }

    /// The `Retry-After` value: whole seconds, rounded up, at least 1 (so that a client that
    /// obeys it is not refused again at once).
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after
            .map(|d| d.as_millis().div_ceil(1000).max(1) as u64)
    }

    /// 503: the coordinator cannot serve this now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code.to_owned(),
            message: self.message.clone(),
            reasons: self.reasons.clone(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = self.retry_after_secs();
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let code = match &e {
            AuthError::TooLarge { .. } | AuthError::UndeclaredBody { .. } => "payload_too_large",
            AuthError::InvalidRequest(_) | AuthError::Malformed(..) | AuthError::BodyMismatch => {
                "bad_request"
            }
            AuthError::BadSignature(_) => "bad_signature",
            AuthError::Replayed => "replayed",
            AuthError::Missing(_) | AuthError::Stale { .. } | AuthError::FromTheFuture { .. } => {
                "unauthenticated"
            }
            AuthError::Forbidden { .. } => "forbidden",
            AuthError::Unavailable(source) => {
                tracing::error!(error = %source, "nonce store failed");
                "unavailable"
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::NotFound(message) => ApiError::not_found(message),
            e @ ServiceError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", e.to_string())
            }
            e @ ServiceError::Invalid(_) => ApiError::bad_request(e.to_string()),
            ServiceError::Denied { reasons } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "denied",
                message: "the policy denies the request; nothing will sign it: submit a \
                          different request (see reasons)"
                    .into(),
                reasons: Some(reasons),
                retry_after: None,
            },
            ServiceError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            ServiceError::Unavailable(message) => ApiError::unavailable(message),
            ServiceError::Store(source) => {
                // The database's own words stay in the log.
                tracing::error!(error = %source, "coordinator database error");
                ApiError::unavailable(
                    "the coordinator's database failed; try again later (the coordinator's log \
                     has the cause)",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Permission;

    #[test]
    fn statuses_follow_the_cause() {
        let cases: Vec<(ApiError, u16, &str)> = vec![
            (AuthError::Replayed.into(), 401, "replayed"),
            (
                AuthError::BadSignature("a".into()).into(),
                401,
                "bad_signature",
            ),
            (AuthError::Missing("x").into(), 401, "unauthenticated"),
            (
                AuthError::TooLarge { size: 2, limit: 1 }.into(),
                413,
                "payload_too_large",
            ),
            (
                AuthError::Forbidden {
                    name: "a".into(),
                    permission: Permission::ReadKeys,
                }
                .into(),
                403,
                "forbidden",
            ),
            (ServiceError::NotFound("n".into()).into(), 404, "not_found"),
            (ServiceError::Invalid("i".into()).into(), 400, "bad_request"),
            (ServiceError::Conflict("c".into()).into(), 409, "conflict"),
            (
                ServiceError::Unavailable("u".into()).into(),
                503,
                "unavailable",
            ),
            (
                ServiceError::Denied {
                    reasons: vec!["r".into()],
                }
                .into(),
                422,
                "denied",
            ),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status.as_u16(), status, "{error}");
            assert_eq!(error.code, code, "{error}");
        }
        let denied: ApiError = ServiceError::Denied {
            reasons: vec!["too much".into()],
        }
        .into();
        assert_eq!(denied.body().reasons, Some(vec!["too much".to_owned()]));
    }

    #[test]
    fn rate_limited_is_a_429_with_retry_after_rounded_up() {
        for (wait_ms, header) in [(1, "1"), (999, "1"), (1000, "1"), (1001, "2"), (0, "1")] {
            let e = ApiError::rate_limited(Duration::from_millis(wait_ms), "slow down");
            assert_eq!((e.status.as_u16(), e.code), (429, "rate_limited"));
            let response = e.into_response();
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(response.headers()[RETRY_AFTER], header, "{wait_ms} ms");
        }
        let other = ApiError::bad_request("x").into_response();
        assert!(other.headers().get(RETRY_AFTER).is_none());
    }
}
