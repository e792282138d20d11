//! The probes, the OpenAPI document and the metrics.

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::super::model::Health;
use super::super::{metrics, ApiError, ApiState, OPENAPI_JSON};

/// `GET /healthz`: the process answers.
pub(super) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        schema_version: None,
    })
}

/// `GET /readyz`: the database answers and the audit log takes events; 503 with the reason
/// otherwise.
pub(super) async fn readyz(State(state): State<ApiState>) -> Result<Json<Health>, ApiError> {
    // Unauthenticated: the answer names what is wrong, never the error text (which can carry
    // paths, hosts or database details); the log has it for the operators.
    if let Some(failure) = state.coordinator().audit().failure() {
        tracing::warn!(%failure, "not ready: the audit log stopped");
        return Err(ApiError::unavailable(
            "the audit log stopped after a write failure; the coordinator's log says why: fix \
             it and restart"
                .to_owned(),
        ));
    }
    match state.coordinator().store().schema_version().await {
        Ok(version) => Ok(Json(Health {
            status: "ready".into(),
            schema_version: Some(version),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            Err(ApiError::unavailable(
                "the database does not answer; the coordinator's log says why".to_owned(),
            ))
        }
    }
}

/// `GET /openapi.json`.
pub(super) async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI_JSON).into_response()
}

/// `GET /metrics`: Prometheus text format.
pub(super) async fn metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let text = metrics::render(&state).await?;
    Ok((
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response())
}
