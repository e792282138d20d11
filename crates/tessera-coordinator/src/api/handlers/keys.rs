//! `/v1/keys`: threshold keys and their addresses.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;
use tessera_wire::PartyId;

use super::super::extract::{non_empty, parse_param, ApiPath, ApiQuery};
use super::super::guard::Authenticated;
use super::super::model::{
    CreateKeyBody, DerivationPath, KeyAddress, KeyList, KeyView, ReshareKeyBody,
};
use super::super::{ApiError, ApiState};

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
        .create_key(&body.name, committee, body.threshold)
        .await?;
    Ok(Json(key.into()))
}

/// `POST /v1/keys/{key}/refresh`: new shares of the same key on its committee; answers with
/// the key once every holder activated them.
pub(super) async fn refresh(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    tracing::info!(%key, by = %auth.caller.name, "key refresh requested");
    Ok(Json(state.coordinator().refresh_key(&key).await?.into()))
}

/// `POST /v1/keys/{key}/reshare`: the key handed to a ready committee with a threshold;
/// answers with the key once every participant activated the new shares.
pub(super) async fn reshare(
    State(state): State<ApiState>,
    Extension(auth): Extension<Authenticated>,
    ApiPath(key): ApiPath<String>,
) -> Result<Json<KeyView>, ApiError> {
    let body: ReshareKeyBody = auth.json()?;
    let committee: Vec<PartyId> = body.committee.iter().map(|p| p.0).collect();
    tracing::info!(%key, by = %auth.caller.name, committee = %PartyId::list(&committee), threshold = body.threshold, "key reshare requested");
    let view = state
        .coordinator()
        .reshare_key(&key, committee, body.threshold)
        .await?;
    Ok(Json(view.into()))
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
}

/// `GET /v1/keys/{key}/address?path=0/7`.
pub(super) async fn address(
    State(state): State<ApiState>,
    ApiPath(key): ApiPath<String>,
    ApiQuery(query): ApiQuery<AddressQuery>,
) -> Result<Json<KeyAddress>, ApiError> {
    let path: DerivationPath = match non_empty(query.path) {
        Some(text) => parse_param("path", &text)?,
        None => DerivationPath::default(),
    };
    Ok(Json(
        state.coordinator().key_address(&key, &path.0).await?.into(),
    ))
}
