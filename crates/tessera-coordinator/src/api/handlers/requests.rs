//! `/v1/requests`: sign requests, their approvals, rejections and cancellation.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use tessera_policy::PrincipalSignature;
use tessera_wire::RequestId;

use super::super::extract::{next_after, non_empty, parse_param, ApiPath, ApiQuery};
use super::super::guard::Authenticated;
use super::super::model::{DecisionBody, RequestPage, RequestSummary, RequestView, SubmitBody};
use super::super::{ApiError, ApiState};
use crate::service::Submit;
use crate::store::{RequestFilter, RequestState};

fn request_id(text: &str) -> Result<RequestId, ApiError> {
    parse_param("request id", text)
}

/// `POST /v1/requests`: submits as the caller. Idempotent by id; denied by policy is a 422
/// with the reasons.
pub(super) async fn submit(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<RequestView>, ApiError> {
    let body: SubmitBody = auth.json()?;
    let payload = body.payload.to_payload().map_err(ApiError::bad_request)?;
    let submit = Submit {
        id: body.id,
        key: body.key,
        path: body.path.0,
        payload,
        lifetime_secs: body.lifetime_secs,
    };
    let view = state
        .coordinator()
        .submit(&auth.caller.name, submit)
        .await?;
    Ok(Json(view.into()))
}

/// The query of `GET /v1/requests`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    key: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /v1/requests?state=&key=&limit=&after=`: newest first.
pub(super) async fn list(
    State(state): State<ApiState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<RequestPage>, ApiError> {
    let mut filter = RequestFilter::default();
    if let Some(text) = non_empty(query.state) {
        filter.state = Some(parse_param::<RequestState>("state", &text)?);
    }
    if let Some(key) = non_empty(query.key) {
        filter.key_id = Some(state.coordinator().get_key(&key).await?.id);
    }
    if let Some(text) = non_empty(query.limit) {
        let limit: u32 = parse_param("limit", &text)?;
        if limit == 0 || limit > RequestFilter::MAX_LIMIT {
            return Err(ApiError::bad_request(format!(
                "limit: {limit} is not between 1 and {}",
                RequestFilter::MAX_LIMIT
            )));
        }
        filter.limit = limit;
    }
    if let Some(text) = non_empty(query.after) {
        filter.after = Some(parse_param("after", &text)?);
    }
    let requests: Vec<RequestSummary> = state
        .coordinator()
        .list(&filter)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    let next_after = next_after(&requests, filter.limit, |r| r.id);
    Ok(Json(RequestPage {
        requests,
        next_after,
    }))
}

/// `GET /v1/requests/{id}`.
pub(super) async fn get(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RequestView>, ApiError> {
    let id = request_id(&id)?;
    Ok(Json(state.coordinator().get(id).await?.into()))
}

/// The request id and the caller's signature that a sign, approve or reject call carries.
fn signed_decision(
    id: &str,
    auth: &Authenticated,
) -> Result<(RequestId, PrincipalSignature), ApiError> {
    let id = request_id(id)?;
    let body: DecisionBody = auth.json()?;
    let signature = body.signature().map_err(ApiError::bad_request)?;
    Ok((id, signature))
}

/// `POST /v1/requests/{id}/sign`: the submitter's own signature over the request digest of
/// the request it submitted (nodes sign nothing its submitter did not sign).
pub(super) async fn sign(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<RequestView>, ApiError> {
    let (id, signature) = signed_decision(&id, &auth)?;
    let view = state
        .coordinator()
        .sign_as_submitter(&auth.caller.name, id, signature)
        .await?;
    Ok(Json(view.into()))
}

/// `POST /v1/requests/{id}/approve`: the caller's approval, signed with their own key over
/// the request digest.
pub(super) async fn approve(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<RequestView>, ApiError> {
    let (id, signature) = signed_decision(&id, &auth)?;
    let view = state
        .coordinator()
        .approve(&auth.caller.name, id, signature)
        .await?;
    Ok(Json(view.into()))
}

/// `POST /v1/requests/{id}/reject`: the caller's rejection, signed with their own key over
/// the rejection digest.
pub(super) async fn reject(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<RequestView>, ApiError> {
    let (id, signature) = signed_decision(&id, &auth)?;
    let view = state
        .coordinator()
        .reject(&auth.caller.name, id, signature)
        .await?;
    Ok(Json(view.into()))
}

/// `POST /v1/requests/{id}/cancel` (no body).
pub(super) async fn cancel(
    State(state): State<ApiState>,
    ApiPath(id): ApiPath<String>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<RequestView>, ApiError> {
    let id = request_id(&id)?;
    let view = state.coordinator().cancel(&auth.caller.name, id).await?;
    Ok(Json(view.into()))
}
