//! `/v1/key-changes`: refreshes, reshares and refresh schedules proposed by an admin
//! (`POST /v1/keys/{key}/…`) and approved by others.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;

use super::super::extract::{
    limit_param, next_after, optional_param, parse_param, ApiPath, ApiQuery,
};
use super::super::guard::Authenticated;
use super::super::model::{DecisionBody, KeyChangeList, KeyChangeView};
use super::super::{ApiError, ApiState};
use crate::store::{KeyChangeState, ProposalId};

/// How many changes a list shows unless asked.
const DEFAULT_CHANGES: u32 = 100;
/// The most a list shows.
const MAX_CHANGES: u32 = 1000;

/// The query of `GET /v1/key-changes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /v1/key-changes?state=&limit=&after=`: newest first, a page at a time.
pub(super) async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<KeyChangeList>, ApiError> {
    let filter = optional_param::<KeyChangeState>("state", query.state)?;
    let limit = limit_param(query.limit, DEFAULT_CHANGES, MAX_CHANGES)?;
    let after = optional_param::<ProposalId>("after", query.after)?;
    let changes = state
        .coordinator()
        .list_key_changes(filter, after, limit)
        .await?;
    let next_after = next_after(&changes, limit, |c| c.id);
    Ok(Json(KeyChangeList {
        changes: changes.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// `GET /v1/key-changes/{id}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<KeyChangeView>, ApiError> {
    let id: ProposalId = parse_param("key change id", &id)?;
    Ok(Json(state.coordinator().get_key_change(id).await?.into()))
}

/// `POST /v1/key-changes/{id}/approve`: the caller's approval (an admin other than the
/// proposer), signed with their own key over the change digest. The approval that completes
/// the change carries it out before answering (`applied`, or `failed` with the error).
pub(super) async fn approve(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<KeyChangeView>, ApiError> {
    let id: ProposalId = parse_param("key change id", &id)?;
    let body: DecisionBody = auth.json()?;
    let signature = body.signature().map_err(ApiError::bad_request)?;
    let view = state
        .coordinator()
        .approve_key_change(&auth.caller.name, id, signature)
        .await?;
    Ok(Json(view.into()))
}
