//! `/v1/policy`: the active policy and changes proposed and approved by admins.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;

use super::super::extract::{
    limit_param, next_after, optional_param, parse_param, ApiPath, ApiQuery,
};
use super::super::guard::Authenticated;
use super::super::model::{DecisionBody, PolicyView, ProposalList, ProposalView, ProposeBody};
use super::super::{ApiError, ApiState};
use crate::service::ProposePolicy;
use crate::store::{ProposalId, ProposalState};

/// How many proposals a list shows unless asked.
const DEFAULT_PROPOSALS: u32 = 100;
/// The most a list shows.
const MAX_PROPOSALS: u32 = 1000;

fn proposal_id(text: &str) -> Result<ProposalId, ApiError> {
    parse_param("proposal id", text)
}

/// `GET /v1/policy`.
pub(super) async fn get(State(state): State<ApiState>) -> Result<Json<PolicyView>, ApiError> {
    Ok(Json(state.coordinator().policy().await?.into()))
}

/// `POST /v1/policy/proposals`: proposes a new document as the caller (an admin).
pub(super) async fn propose(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<ProposalView>, ApiError> {
    let body: ProposeBody = auth.json()?;
    let proposal = ProposePolicy {
        id: body.id,
        document: body.document.into_bytes(),
        lifetime_secs: body.lifetime_secs,
    };
    let view = state
        .coordinator()
        .propose_policy(&auth.caller.name, proposal)
        .await?;
    Ok(Json(view.into()))
}

/// The query of `GET /v1/policy/proposals`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /v1/policy/proposals?state=&limit=&after=`: newest first, a page at a time.
pub(super) async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ProposalList>, ApiError> {
    let filter = optional_param::<ProposalState>("state", query.state)?;
    let limit = limit_param(query.limit, DEFAULT_PROPOSALS, MAX_PROPOSALS)?;
    let after = optional_param::<ProposalId>("after", query.after)?;
    let proposals = state
        .coordinator()
        .list_proposals(filter, after, limit)
        .await?;
    let next_after = next_after(&proposals, limit, |c| c.id);
    Ok(Json(ProposalList {
        proposals: proposals.into_iter().map(Into::into).collect(),
        next_after,
    }))
}

/// `GET /v1/policy/proposals/{id}`.
pub(super) async fn get_proposal(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ProposalView>, ApiError> {
    let id = proposal_id(&id)?;
    Ok(Json(state.coordinator().get_proposal(id).await?.into()))
}

/// `POST /v1/policy/proposals/{id}/approve`: the caller's approval (an admin other than the
/// proposer), signed with their own key over the change digest.
pub(super) async fn approve(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<ProposalView>, ApiError> {
    let id = proposal_id(&id)?;
    let body: DecisionBody = auth.json()?;
    let signature = body.signature().map_err(ApiError::bad_request)?;
    let view = state
        .coordinator()
        .approve_policy(&auth.caller.name, id, signature)
        .await?;
    Ok(Json(view.into()))
}
