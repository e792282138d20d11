//! Extractors whose refusals are the API's JSON errors (axum's own answer in plain text).

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::ApiError;

/// A path parameter; a bad one is a 400 in the API's error shape.
pub(crate) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// The query string; a bad one is a 400 in the API's error shape. Unknown parameters are
/// refused when `T` denies unknown fields.
pub(crate) struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// An optional query value: absent or empty means none.
pub(crate) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// A list's `limit` query value: `default` when absent, otherwise 1 to `max`.
pub(crate) fn limit_param(value: Option<String>, default: u32, max: u32) -> Result<u32, ApiError> {
    let limit = match non_empty(value) {
        Some(text) => parse_param::<u32>("limit", &text)?,
        None => return Ok(default),
    };
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(format!(
            "limit: {limit} is not between 1 and {max}"
        )));
    }
    Ok(limit)
}

/// An optional query value, parsed (absent or empty means none), naming it in the error.
pub(crate) fn optional_param<T>(name: &str, value: Option<String>) -> Result<Option<T>, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    non_empty(value)
        .map(|text| parse_param(name, &text))
        .transpose()
}

/// The `next_after` of a page of `limit` items: the last item's id (by `id`) when the page is
/// full, since there may be more.
pub(crate) fn next_after<T, I>(items: &[T], limit: u32, id: impl Fn(&T) -> I) -> Option<I> {
    items
        .last()
        .filter(|_| items.len() >= limit as usize)
        .map(id)
}

/// Parses a text parameter, naming it in the error.
pub(crate) fn parse_param<T>(name: &str, value: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
}
