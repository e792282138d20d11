//! The authentication layer of every `/v1` route: checks the authentication headers' form and
//! freshness, then authenticates the signed request against the active policy, reading the
//! body only as far as it must (a body that declares its hash is read, up to
//! [`MAX_BODY_BYTES`], after its signature verified; one that does not is read up to
//! [`UNDECLARED_BODY_BYTES`] first), takes a token from the caller's rate limit (429 beyond
//! it, see [`super::limits`]), checks the route's permission, and hands the handler the
//! [`Authenticated`] caller and body. Failed authentications are rate-limited together.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use tessera_audit::NewEvent;

use super::state::now_unix;
use super::{ApiError, ApiState};
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::auth::{
    check_presented, require, AuthError, Caller, Permission, MAX_BODY_BYTES, UNDECLARED_BODY_BYTES,
};

/// An authenticated call, as the guard hands it to the handler.
#[derive(Clone, Debug)]
pub struct Authenticated {
    /// Who is calling.
    pub caller: Caller,
    /// The body exactly as signed.
    pub body: Bytes,
}

impl Authenticated {
    /// The body as JSON of type `T`; a malformed body is a 400 with the parser's message.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.is_empty() {
            return Err(ApiError::bad_request(
                "the request needs a JSON body (content-type application/json)",
            ));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// The state of one route's guard.
#[derive(Clone)]
pub(crate) struct Guard {
    pub(crate) state: ApiState,
    pub(crate) permission: Permission,
}

/// The middleware: authenticate, authorise, then run the handler. Every authenticated `/v1`
/// call is recorded in the coordinator's audit log (`api.call` with its status, or
/// `api.refused` when the caller lacks the permission); failed authentications are logged and
/// counted, not audited (they name nobody).
pub(crate) async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    match admit(&guard, request).await {
        Ok((request, caller)) => {
            let response = next.run(request).await;
            if path.starts_with("/v1/") {
                guard.state.coordinator().audit().note(
                    NewEvent::new(caller, "api.call", format!("api:{method} {path}"))
                        .detail("status", response.status().as_u16()),
                );
            }
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn admit(guard: &Guard, request: Request) -> Result<(Request, String), ApiError> {
    let (mut parts, body) = request.into_parts();
    let (caller, body) = match authenticate_call(guard, &parts, body).await {
        Ok(authenticated) => authenticated,
        Err(Refusal::Auth(e)) => {
            // Beyond their shared budget, failures are answered 429 and not logged one by one
            // (a failing nonce store is the coordinator's fault, not the caller's).
            if !matches!(e, AuthError::Unavailable(_)) {
                if let Some(limited) = guard.state.limits().check_failed_auth() {
                    return Err(limited);
                }
            }
            tracing::info!(
                method = %parts.method,
                path = %parts.uri.path(),
                error = %e,
                "request refused"
            );
            return Err(e.into());
        }
        Err(Refusal::Api(e)) => return Err(e),
    };
    // Per principal, once authenticated: garbage cannot spend a real principal's budget.
    guard.state.limits().check_principal(&caller.name)?;
    require(&caller, guard.permission).inspect_err(|e| {
        tracing::info!(
            method = %parts.method,
            path = %parts.uri.path(),
            error = %e,
            "request refused"
        );
        guard.state.coordinator().audit().note(
            NewEvent::new(
                caller.name.as_str(),
                "api.refused",
                format!("api:{} {}", parts.method, parts.uri.path()),
            )
            .detail("reason", e),
        );
    })?;
    let name = caller.name.clone();
    parts.extensions.insert(Authenticated {
        caller,
        body: body.clone(),
    });
    Ok((Request::from_parts(parts, Body::from(body)), name))
}

/// Why a call was not authenticated: the caller's fault (counted against the shared budget of
/// failures), or the coordinator's.
enum Refusal {
    Auth(AuthError),
    Api(ApiError),
}

impl From<AuthError> for Refusal {
    fn from(e: AuthError) -> Self {
        Refusal::Auth(e)
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

/// Authenticates a call, reading its body only as far as needed: the cheap header checks
/// first (no body, no policy); then, for a body that declares its hash, the signature over
/// that hash before the body is read, and the body against it after; for one that does not,
/// at most [`UNDECLARED_BODY_BYTES`] before the signature is checked.
async fn authenticate_call(
    guard: &Guard,
    parts: &Parts,
    body: Body,
) -> Result<(Caller, Bytes), Refusal> {
    let declared_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(ApiError::too_large(MAX_BODY_BYTES).into());
    }
    let headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    // The target exactly as received: never a decoded or routed path.
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    let presented = check_presented(parts.method.as_str(), target, &headers, now_unix())?;
    match presented.content_sha256() {
        Some(declared) => {
            let policy = guard.state.active_policy().await?;
            let caller = presented
                .verify(&declared, &policy, guard.state.nonce_store())
                .await?;
            let body = read_body(body, MAX_BODY_BYTES)
                .await?
                .ok_or(ApiError::too_large(MAX_BODY_BYTES))?;
            let actual: [u8; 32] = Sha256::digest(&body).into();
            if actual != declared {
                return Err(AuthError::BodyMismatch.into());
            }
            Ok((caller, body))
        }
        None => {
            let undeclared = AuthError::UndeclaredBody {
                limit: UNDECLARED_BODY_BYTES,
            };
            if declared_length.is_some_and(|n| n > UNDECLARED_BODY_BYTES as u64) {
                return Err(undeclared.into());
            }
            let body = read_body(body, UNDECLARED_BODY_BYTES)
                .await?
                .ok_or(undeclared)?;
            let policy = guard.state.active_policy().await?;
            let caller = presented
                .verify(
                    &Sha256::digest(&body).into(),
                    &policy,
                    guard.state.nonce_store(),
                )
                .await?;
            Ok((caller, body))
        }
    }
}

/// The whole body if it has at most `limit` bytes; `None` if it has more.
async fn read_body(body: Body, limit: usize) -> Result<Option<Bytes>, ApiError> {
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) => {
            let inner = e.into_inner();
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
            while let Some(error) = source {
                if error.is::<http_body_util::LengthLimitError>() {
                    return Ok(None);
                }
                source = error.source();
            }
            Err(ApiError::bad_request(format!(
                "cannot read the request body: {inner}"
            )))
        }
    }
}

/// Logs every call: method, path (without the query), status and time taken.
pub(crate) async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    if response.status().is_server_error() {
        tracing::warn!(%method, %path, status, elapsed_ms, "api call");
    } else if path.starts_with("/v1/") {
        tracing::info!(%method, %path, status, elapsed_ms, "api call");
    } else {
        // Probes and scrapes: frequent and uninteresting.
        tracing::debug!(%method, %path, status, elapsed_ms, "api call");
    }
    response
}
