//! The coordinator's REST API (axum): JSON over HTTP, versioned under `/v1`, described by the
//! OpenAPI 3.1 document served at `GET /openapi.json` ([`OPENAPI_JSON`]).
//!
//! # Routes
//!
//! [`ROUTES`] is the table the router is built from (and that the tests hold against the
//! OpenAPI document). Permissions are those of [`crate::auth::rbac`].
//!
//! | Method | Path | Permission | Answers |
//! |---|---|---|---|
//! | GET | `/healthz` | none | 200 `{"status":"ok"}` while the process runs |
//! | GET | `/readyz` | none | 200 when the database answers and the audit log takes events, else 503 with the reason |
//! | GET | `/openapi.json` | none | the OpenAPI document |
//! | GET | `/metrics` | `ReadMetrics` (see below) | Prometheus text (see [Metrics](#metrics)) |
//! | GET | `/v1/committees` | `ReadKeys` | `{"committees": [..]}` |
//! | POST | `/v1/committees` | `SetupCommittees` | 202 with the committee `creating`; poll the next route |
//! | GET | `/v1/committees/{parties}` | `ReadKeys` | one committee (`p1,p2,p3`) |
//! | GET | `/v1/keys` | `ReadKeys` | `{"keys": [..]}` |
//! | POST | `/v1/keys` | `CreateKeys` | key generation on a ready committee; the ready key |
//! | POST | `/v1/keys/{key}/refresh` | `CreateKeys` | new shares of the same key (docs/protocols/reshare.md); the key |
//! | POST | `/v1/keys/{key}/reshare` | `CreateKeys` | the key handed to a ready committee and threshold; the key |
//! | GET | `/v1/keys/{key}` | `ReadKeys` | one key, by name or id |
//! | GET | `/v1/keys/{key}/address?path=0/7` | `ReadKeys` | public key and address at a path |
//! | GET | `/v1/key-changes?state=&limit=&after=` | `ReadKeys` | a page of summaries, newest first, and `next_after` |
//! | GET | `/v1/key-changes/{id}` | `ReadKeys` | one key change |
//! | POST | `/v1/requests` | `SubmitRequests` | submit; idempotent by the client's id |
//! | GET | `/v1/requests?state=&key=&limit=&after=` | `ReadRequests` | a page of summaries, newest first, and `next_after` |
//! | GET | `/v1/requests/{id}` | `ReadRequests` | one request |
//! | POST | `/v1/requests/{id}/approve` | `ApproveRequests` | the caller's approval |
//! | POST | `/v1/requests/{id}/reject` | `ApproveRequests` | the caller's rejection |
//! | POST | `/v1/requests/{id}/cancel` | `CancelRequests` | cancel (the submitter) |
//! | GET | `/v1/policy` | `ReadPolicy` | the active policy |
//! | POST | `/v1/policy/proposals` | `ProposePolicy` | propose a new document |
//! | GET | `/v1/policy/proposals?state=&limit=&after=` | `ReadPolicy` | a page of summaries, newest first, and `next_after` |
//! | GET | `/v1/policy/proposals/{id}` | `ReadPolicy` | one proposal |
//! | POST | `/v1/policy/proposals/{id}/approve` | `ApprovePolicy` | the caller's approval |
//! | GET | `/v1/audit?request=&key=&actor=&action=&since=&until=&limit=&before=` | `ReadAudit` | the coordinator's audit events, its chain verified |
//!
//! Bodies and responses are the types of [`model`].
//!
//! # Authentication
//!
//! Every route with a permission is a signed request ([`crate::auth`]: four `x-tessera-*`
//! headers over the method, the raw path and query, a timestamp, a nonce and the body hash).
//! The body is read up to [`MAX_BODY_BYTES`](crate::auth::MAX_BODY_BYTES) (413 beyond), the
//! signature checked against the principals of the **active policy** and the nonce
//! remembered (by default in the coordinator's database, shared by replicas), then the
//! permission checked. Approvals and rejections carry a second signature, the approver's
//! own over the request digest: the API signature only says who is calling.
//!
//! `/healthz`, `/readyz` and `/openapi.json` need no authentication. **`/metrics` needs
//! `ReadMetrics`** (auditors and admins) by default: request volumes are business data and
//! the scrape is cheap to sign (`tessera_coordinator::client`); with
//! [`ApiOptions::public_metrics`] it is open, for a scraper on a trusted network.
//!
//! # Metrics
//!
//! `GET /metrics` answers in the Prometheus text format (0.0.4). Gauges are read when scraped;
//! counters (`_total`) count since the process started:
//!
//! | Metric | Type | Labels | Meaning |
//! |---|---|---|---|
//! | `tessera_coordinator_requests` | gauge | `state` | sign requests in each state (every state, 0 included) |
//! | `tessera_coordinator_keys` | gauge | `status` | keys by status |
//! | `tessera_coordinator_committees` | gauge | `status` | committees by status |
//! | `tessera_coordinator_policy_revision` | gauge | | the active policy's revision |
//! | `tessera_coordinator_party_consecutive_failures` | gauge | `party` | sessions failed in a row with the party blamed or silent |
//! | `tessera_coordinator_party_seconds_since_failure` | gauge | `party` | seconds since its last failure (parties that failed) |
//! | `tessera_coordinator_sessions_total` | counter | `operation`, `outcome` | sessions run (aux_info, keygen, sign, online_sign; ok, failed) |
//! | `tessera_coordinator_session_seconds_total` | counter | `operation`, `outcome` | time spent in them |
//! | `tessera_coordinator_stage_seconds` | histogram | `operation`, `stage` | where approvals' and requests' time goes ([stages](crate::service::ServiceCounters::stages)) |
//! | `tessera_coordinator_policy_refusals_total` | counter | `stage` | requests refused by policy at `submit`, on `approval` re-evaluation, or by the `nodes` |
//! | `tessera_coordinator_api_rate_limited_total` | counter | `principal` | calls answered 429 (`""`: failed authentications) |
//! | `tessera_coordinator_audit_events` | gauge | | events in the coordinator's audit chain |
//! | `tessera_coordinator_audit_forward_dropped_total` | counter | | events the stream forwarder re-read from the file |
//!
//! # Errors
//!
//! Every error is `{"error": code, "message": text, "reasons": [..]}` ([`model::ErrorBody`];
//! `reasons` only for `denied`):
//!
//! | Status | Codes | When |
//! |---|---|---|
//! | 400 | `bad_request` | malformed JSON (with the parser's message), ids, paths, headers, invalid input |
//! | 401 | `unauthenticated`, `bad_signature`, `replayed` | missing headers, clock skew; a signature that does not verify or an unknown principal (one answer); reused nonce |
//! | 403 | `forbidden` | the caller's roles do not permit the route, or the service refuses the principal |
//! | 404 | `not_found` | no such request, key, committee, proposal or route |
//! | 405 | `method_not_allowed` | the route exists for another method |
//! | 409 | `conflict` | a reused id with other content, a request in the wrong state, a duplicate decision |
//! | 413 | `payload_too_large` | the body is over the limit |
//! | 422 | `denied` | the policy denies the request, with every reason |
//! | 429 | `rate_limited` | the principal is over its rate limit, or failed authentications are over theirs; `Retry-After` says when to retry ([`ApiOptions::rate_limit_per_second`]) |
//! | 503 | `unavailable` | database down, no quorum, key or committee not ready |
//!
//! No handler panics on input; database errors are logged and answered with a generic 503.
//!
//! # Running
//!
//! [`router`] builds the service; [`serve`] runs it on a listener with the nonce-pruning
//! task ([`spawn_nonce_pruner`], every [`NONCE_PRUNE_INTERVAL`]) until a shutdown future
//! completes.

mod error;
mod extract;
mod guard;
mod handlers;
mod limits;
mod metrics;
pub mod model;
mod routes;
mod state;

use std::future::{Future, IntoFuture};
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;

pub use error::ApiError;
pub use guard::Authenticated;
pub use limits::{RateLimitCounts, RATE_LIMIT_WARNING_INTERVAL};
pub use routes::{Endpoint, Method, Route, ROUTES};
pub use state::{spawn_nonce_pruner, ApiOptions, ApiState, Nonces, NONCE_PRUNE_INTERVAL};
pub use state::{DEFAULT_RATE_LIMIT_BURST, DEFAULT_RATE_LIMIT_PER_SECOND};

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The API's router over `state`: every route of [`ROUTES`], JSON 404 and 405 answers, and an
/// access log (`tracing`).
pub fn router(state: ApiState) -> Router {
    let mut router: Router<ApiState> = Router::new();
    for route in ROUTES {
        let mut method_router = handlers::method_router(route);
        let open_metrics = route.endpoint == Endpoint::Metrics && state.options().public_metrics;
        if let Some(permission) = route.permission.filter(|_| !open_metrics) {
            let guard = guard::Guard {
                state: state.clone(),
                permission,
            };
            method_router = method_router.route_layer(from_fn_with_state(guard, guard::guard));
        }
        router = router.route(route.path, method_router);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn(guard::access_log))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}; GET /openapi.json lists the routes",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} is not allowed on {}; GET /openapi.json lists the routes",
        request.method(),
        request.uri().path()
    ))
}

/// How long [`serve`] lets calls in progress finish after the shutdown signal (a key
/// generation may take minutes; it goes on in the service regardless).
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(30);

/// Serves the API on `listener` until `shutdown` completes, then stops accepting and lets
/// calls in progress finish for at most [`SHUTDOWN_DRAIN`]. Prunes expired nonces every
/// [`NONCE_PRUNE_INTERVAL`] meanwhile. Does not stop the
/// [`Coordinator`](crate::service::Coordinator): call its `shutdown` afterwards.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "coordinator API listening (plain HTTP)");
    }
    serve_on(listener, state, shutdown).await
}

/// As [`serve`], over HTTPS with `tls` ([`crate::tls::server_config`]): each TLS handshake
/// runs on its own task with a deadline, so a client that never completes one delays nobody.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: ApiState,
    tls: std::sync::Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "coordinator API listening (HTTPS)");
    }
    serve_on(
        crate::tls::TlsListener::new(listener, tls)?,
        state,
        shutdown,
    )
    .await
}

async fn serve_on<L>(
    listener: L,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let pruner = spawn_nonce_pruner(state.nonces().clone(), NONCE_PRUNE_INTERVAL);
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(true);
    };
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(signal)
        .into_future();
    let drained = async move {
        let _ = stopped.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    let result = tokio::select! {
        result = server => result,
        () = drained => {
            tracing::warn!(
                drain = ?SHUTDOWN_DRAIN,
                "API calls still running after the drain time; stopping without them"
            );
            Ok(())
        }
    };
    pruner.abort();
    result
}
