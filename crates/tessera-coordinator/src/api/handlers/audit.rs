//! `/v1/audit`: the coordinator's own audit events, verified, for auditors and admins.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tessera_audit::filter::parse_time;
use tessera_audit::{FileIndex, Filter, TrustedKeys};

use super::super::extract::{non_empty, parse_param, ApiQuery};
use super::super::model::AuditEvents;
use super::super::{ApiError, ApiState};

/// Most events one answer carries (and the default).
pub(crate) const MAX_AUDIT_EVENTS: usize = 1000;
/// Most records one answer looks at (a filter that matches rarely pages on with
/// `next_before`).
pub(crate) const MAX_AUDIT_SCAN: usize = 10_000;

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
    before: Option<String>,
}

/// `GET /v1/audit`: a page of the coordinator's log: the newest matching events before
/// `before`, at most `limit`, oldest first. The log is verified (chain and signatures) once per
/// record as it grows ([`FileIndex`]), not per call; a broken chain is reported (`verified:
/// false` and where) with the events before the break.
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
    let before = non_empty(query.before)
        .map(|text| parse_param::<u64>("before", &text))
        .transpose()?;
    let log = state.coordinator().audit().clone();
    let Some(path) = log.file().map(|p| p.to_path_buf()) else {
        return Err(ApiError::unavailable(
            "this coordinator keeps no audit log file; read the audit stream instead",
        ));
    };
    let index = state.audit_index();
    let emitter = log.emitter().clone();
    let keys = TrustedKeys::new(
        log.cluster(),
        [(emitter.clone(), log.verifying_key())].into(),
    );
    let (page, broken) = tokio::task::spawn_blocking(move || {
        let mut index = index.lock().unwrap_or_else(|p| p.into_inner());
        let index = index.get_or_insert_with(|| FileIndex::new(&path, keys));
        index.refresh()?;
        let page = index.page(&filter, before, limit, MAX_AUDIT_SCAN)?;
        Ok::<_, tessera_audit::AuditError>((page, index.broken().map(str::to_owned)))
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("cannot read the audit log: {e}")))?
    .map_err(|e| ApiError::unavailable(format!("cannot read the audit log: {e}")))?;
    Ok(Json(AuditEvents {
        emitter: emitter.to_string(),
        verified: broken.is_none(),
        broken,
        matched: page.events.len(),
        events: page.events,
        next_before: page.next_before,
    }))
}
