//! `/v1/audit`: the coordinator's own audit events, verified, for auditors and admins.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tessera_audit::filter::parse_time;
use tessera_audit::{file, Filter, TrustedKeys, Verifier};

use super::super::extract::{non_empty, parse_param, ApiQuery};
use super::super::model::AuditEvents;
use super::super::{ApiError, ApiState};

/// Most events one answer carries (and the default).
pub(crate) const MAX_AUDIT_EVENTS: usize = 1000;

/// Query parameters of `GET /v1/audit`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    request: Option<String>,
    key: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/audit`: reads the coordinator's log file, verifies the whole chain with the
/// coordinator's key, and answers the matching events (oldest first, at most `limit`). A
/// broken chain is reported (`verified: false` and where) with the events before the break.
pub(super) async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditEvents>, ApiError> {
    let time = |name: &str, value: Option<String>| {
        non_empty(value)
            .map(|t| parse_time(&t).map_err(|e| ApiError::bad_request(format!("{name}: {e}"))))
            .transpose()
    };
    let filter = Filter {
        request: non_empty(query.request),
        key: non_empty(query.key),
        actor: non_empty(query.actor),
        emitter: None,
        action: non_empty(query.action),
        since: time("since", query.since)?,
        until: time("until", query.until)?,
    };
    let limit = match non_empty(query.limit) {
        None => MAX_AUDIT_EVENTS,
        Some(text) => {
            let limit: usize = parse_param("limit", &text)?;
            if limit == 0 || limit > MAX_AUDIT_EVENTS {
                return Err(ApiError::bad_request(format!(
                    "limit: {limit} is not between 1 and {MAX_AUDIT_EVENTS}"
                )));
            }
            limit
        }
    };
    let log = state.coordinator().audit().clone();
    let Some(path) = log.file().map(|p| p.to_path_buf()) else {
        return Err(ApiError::unavailable(
            "this coordinator keeps no audit log file; read the audit stream instead",
        ));
    };
    let items = tokio::task::spawn_blocking(move || file::read(&path))
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read the audit log: {e}")))?
        .map_err(|e| ApiError::unavailable(format!("cannot read the audit log: {e}")))?;
    let keys = TrustedKeys::new(
        log.cluster(),
        [(log.emitter().clone(), log.verifying_key())].into(),
    );
    let mut verifier = Verifier::new(keys);
    let mut events = Vec::new();
    let mut broken = None;
    for item in items {
        let record = item.as_ref().ok().cloned();
        if let Err(b) = verifier.push(item) {
            broken = Some(b.to_string());
            break;
        }
        if let Some(record) = record.filter(|r| filter.matches(r)) {
            events.push(record);
        }
    }
    let total = events.len();
    if events.len() > limit {
        events.drain(..events.len() - limit);
    }
    Ok(Json(AuditEvents {
        emitter: log.emitter().to_string(),
        verified: broken.is_none(),
        broken,
        matched: total,
        events,
    }))
}
