//! `/v1/committees`: the party sets that share auxiliary info.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use tessera_wire::PartyId;
use tokio::time::Instant;

use super::super::extract::ApiPath;
use super::super::guard::Authenticated;
use super::super::model::{parse_parties, CommitteeList, CommitteeView, SetupCommitteeBody};
use super::super::{ApiError, ApiState};
use crate::service::ServiceError;
use crate::store::CommitteeStatus;

/// How long `POST /v1/committees` waits for the set-up to be recorded before answering.
const SETUP_ACK_WAIT: Duration = Duration::from_secs(10);
/// How often it looks.
const SETUP_POLL: Duration = Duration::from_millis(20);

/// `GET /v1/committees`.
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<CommitteeList>, ApiError> {
    let committees = state.coordinator().list_committees().await?;
    Ok(Json(CommitteeList {
        committees: committees.into_iter().map(Into::into).collect(),
    }))
}

/// `GET /v1/committees/{parties}` (`p1,p2,p3`, any order).
pub(super) async fn get(
    State(state): State<ApiState>,
    ApiPath(parties): ApiPath<String>,
) -> Result<Json<CommitteeView>, ApiError> {
    let parties = parse_parties(&parties).map_err(ApiError::bad_request)?;
    Ok(Json(
        state.coordinator().get_committee(&parties).await?.into(),
    ))
}

/// `POST /v1/committees`: starts the set-up (auxiliary info: minutes) and answers 202 with
/// the committee `creating` once it is recorded; the client polls `GET
/// /v1/committees/{parties}`. A committee already ready is answered 200 as is.
pub(super) async fn setup(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Response, ApiError> {
    let body: SetupCommitteeBody = auth.json()?;
    let parties: Vec<PartyId> = body.parties.iter().map(|p| p.0).collect();
    let coordinator = state.coordinator().clone();
    match coordinator.get_committee(&parties).await {
        Ok(view) if view.status == CommitteeStatus::Creating => {
            return Err(ServiceError::Conflict(format!(
                "committee {} is being set up; wait for it (poll GET /v1/committees/{})",
                PartyId::list(&view.parties),
                super::super::model::parties_segment(&view.parties)
            ))
            .into())
        }
        Ok(_) | Err(ServiceError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let run_parties = parties.clone();
    // The set-up outlives this call: the service records its outcome.
    let mut task = tokio::spawn(async move { coordinator.setup_committee(run_parties).await });
    tracing::info!(
        committee = %PartyId::list(&parties),
        by = %auth.caller.name,
        "committee set-up requested"
    );
    let deadline = Instant::now() + SETUP_ACK_WAIT;
    loop {
        tokio::select! {
            biased;
            joined = &mut task => {
                let view: CommitteeView = joined
                    .map_err(|e| ApiError::unavailable(format!("the set-up task failed: {e}")))??
                    .into();
                let status = if view.status == CommitteeStatus::Ready {
                    StatusCode::OK
                } else {
                    StatusCode::ACCEPTED
                };
                return Ok((status, Json(view)).into_response());
            }
            _ = tokio::time::sleep(SETUP_POLL) => {}
        }
        match state.coordinator().get_committee(&parties).await {
            Ok(view) if view.status == CommitteeStatus::Creating => {
                return Ok((StatusCode::ACCEPTED, Json(CommitteeView::from(view))).into_response())
            }
            Ok(_) | Err(ServiceError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Err(ApiError::unavailable(
                "the set-up was not recorded in time; list the committees to see whether it \
                 started",
            ));
        }
    }
}
