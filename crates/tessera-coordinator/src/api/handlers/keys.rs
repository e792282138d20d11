//! `/v1/keys`: threshold keys and their addresses.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use tessera_chain::bitcoin::BitcoinNetwork;
use tessera_chain::Chain;
use tessera_wire::PartyId;

use super::super::extract::{non_empty, parse_param, ApiPath, ApiQuery};
use super::super::guard::Authenticated;
use super::super::model::{
    CreateKeyBody, DerivationPath, KeyAddress, KeyChangeView, KeyList, KeyView, RefreshKeyBody,
    RefreshScheduleBody, ReshareKeyBody,
};
use super::super::{ApiError, ApiState};
use crate::service::ProposeKeyChange;
use tessera_policy::KeyOperation;

/// `GET /v1/keys`.
pub(super) async fn list(State(state): State<ApiState>) -> Result<Json<KeyList>, ApiError> {
    let keys = state.coordinator().list_keys().await?;
    Ok(Json(KeyList {
        keys: keys.into_iter().map(Into::into).collect(),
    }))
}

/// `POST /v1/keys`: runs key generation on a ready committee and answers with the ready key
/// (idempotent by name).
pub(super) async fn create(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
) -> Result<Json<KeyView>, ApiError> {
    let body: CreateKeyBody = auth.json()?;
    let committee: Vec<PartyId> = body.committee.iter().map(|p| p.0).collect();
    tracing::info!(key = %body.name, by = %auth.caller.name, "key generation requested");
    let key = state
        .coordinator()
        .create_key(&body.name, committee, body.threshold, body.kind)
        .await?;
    Ok(Json(key.into()))
}

/// Proposes a key change as the caller (an admin).
async fn propose(
    state: &ApiState,
    auth: &Authenticated,
    proposal: ProposeKeyChange,
) -> Result<Json<KeyChangeView>, ApiError> {
    tracing::info!(key = %proposal.key, operation = %proposal.operation, by = %auth.caller.name, "key change proposed");
    let view = state
        .coordinator()
        .propose_key_change(&auth.caller.name, proposal)
        .await?;
    Ok(Json(view.into()))
}

/// `POST /v1/keys/{key}/refresh`: proposes new shares of the same key on its committee,
/// carried out once the admins approved.
pub(super) async fn refresh(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyChangeView>, ApiError> {
    let body: RefreshKeyBody = auth.json()?;
    let proposal = ProposeKeyChange {
        id: body.id,
        key,
        operation: KeyOperation::Refresh,
        lifetime_secs: body.lifetime_secs,
    };
    propose(&state, &auth, proposal).await
}

/// `POST /v1/keys/{key}/reshare`: proposes to hand the key to a ready committee with a
/// threshold, carried out once the admins approved.
pub(super) async fn reshare(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyChangeView>, ApiError> {
    let body: ReshareKeyBody = auth.json()?;
    let mut committee: Vec<PartyId> = body.committee.iter().map(|p| p.0).collect();
    committee.sort();
    let proposal = ProposeKeyChange {
        id: body.id,
        key,
        operation: KeyOperation::Reshare {
            committee,
            threshold: body.threshold,
        },
        lifetime_secs: body.lifetime_secs,
    };
    propose(&state, &auth, proposal).await
}

/// `POST /v1/keys/{key}/refresh-schedule`: proposes how often the key is refreshed
/// automatically (or to stop), applied once the admins approved.
pub(super) async fn schedule_refresh(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyChangeView>, ApiError> {
    let body: RefreshScheduleBody = auth.json()?;
    let proposal = ProposeKeyChange {
        id: body.id,
        key,
        operation: KeyOperation::RefreshSchedule {
            every_secs: body.every_secs,
        },
        lifetime_secs: body.lifetime_secs,
    };
    propose(&state, &auth, proposal).await
}

/// `POST /v1/keys/{key}/activate`: resends the activation of the key's last rotation to the
/// participants it has not reached; answers with the key.
pub(super) async fn activate(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    tracing::info!(%key, by = %auth.caller.name, "activation resend requested");
    Ok(Json(
        state.coordinator().complete_activation(&key).await?.into(),
    ))
}

/// `GET /v1/keys/{key}` (name or id).
pub(super) async fn get(
    State(state): State<ApiState>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    Ok(Json(state.coordinator().get_key(&key).await?.into()))
}

/// The query of `GET /v1/keys/{key}/address`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddressQuery {
    path: Option<String>,
    chain: Option<String>,
    network: Option<String>,
}

/// `GET /v1/keys/{key}/address?path=0/7&chain=bitcoin&network=regtest` (chain: the key's
/// default; network: mainnet).
pub(super) async fn address(
    State(state): State<ApiState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<AddressQuery>,
) -> Result<Json<KeyAddress>, ApiError> {
    let path: DerivationPath = match non_empty(query.path) {
        Some(text) => parse_param("path", &text)?,
        None => DerivationPath::default(),
    };
    let chain: Option<Chain> = match non_empty(query.chain) {
        Some(text) => Some(parse_param("chain", &text)?),
        None => None,
    };
    let network: BitcoinNetwork = match non_empty(query.network) {
        Some(text) => parse_param("network", &text)?,
        None => BitcoinNetwork::Mainnet,
    };
    Ok(Json(
        state
            .coordinator()
            .key_address(&key, &path.0, chain, network)
            .await?
            .into(),
    ))
}
