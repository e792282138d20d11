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
    if let Some(failure) = state.coordinator().audit().failure() {
        tracing::warn!(%failure, "not ready: the audit log stopped");
        return Err(ApiError::unavailable(format!(
            "the audit log stopped after a write failure ({failure}); fix the disk and restart"
        )));
    }
    match state.coordinator().store().schema_version().await {
        Ok(version) => Ok(Json(Health {
            status: "ready".into(),
            schema_version: Some(version),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            Err(ApiError::unavailable(format!(
                "the database does not answer: {e}"
            )))
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
