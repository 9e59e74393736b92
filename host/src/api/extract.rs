//! Extractors whose rejections speak our error shape: the caller's key (tenant or admin),
//! JSON bodies (bad JSON is 400 `invalid_json` with line and column, a wrong content type
//! 415, a wrong field 422 `invalid_request` with its path), event bodies (JSON or Antavo's
//! form encoding), raw bodies (413 `payload_too_large` past the route's limit), query
//! strings, and where a request came from.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::auth;
use crate::schema::form_to_json;
use crate::service::{ErrorKind, Origin, Principal, Service, ServiceError};
use crate::storage::TenantRecord;

/// Runs blocking service work (storage, wasm) off the async runtime.
pub async fn blocking<T, F>(state: &AppState, work: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce(&Service) -> Result<T, ServiceError> + Send + 'static,
{
    let service = state.service.clone();
    match tokio::task::spawn_blocking(move || work(&service)).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(error) => Err(ApiError::from(ServiceError::internal(format!(
            "a blocking task failed: {error}"
        )))),
    }
}

/// The key a request carries: `Authorization: Bearer <key>`, or (for senders written for
/// Antavo's API) an `api_key` query parameter.
fn presented_key(parts: &Parts) -> Result<String, ApiError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        let text = value.to_str().unwrap_or_default();
        return auth::bearer_token(text)
            .map(str::to_owned)
            .or_else(|| auth::basic_user(text))
            .ok_or_else(|| {
                unauthorized(
                    "the Authorization header must be \"Bearer <key>\" (or Basic with the key \
                     as the user name, as Segment sends a write key)",
                )
            });
    }
    let from_query = parts.uri.query().and_then(|query| {
        url_pairs(query)
            .find(|(name, _)| name == "api_key")
            .map(|(_, value)| value)
    });
    from_query
        .filter(|key| !key.is_empty())
        .ok_or_else(|| unauthorized("this route needs a key: send \"Authorization: Bearer <key>\""))
}

fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(&text.replace('+', " "))
                .decode_utf8()
                .ok()
                .map(|text| text.into_owned())
        };
        Some((decode(name)?, decode(value)?))
    })
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorKind::Unauthorized, "unauthorized", message)
}

async fn principal(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let key = presented_key(parts)?;
    // A key seen before is answered from memory; only a new one reads the store.
    if let Some(known) = state.service.tenants.known_principal(&key) {
        return Ok(known);
    }
    blocking(state, move |service| service.tenants.authenticate(&key))
        .await?
        .ok_or_else(|| unauthorized("the key is not valid"))
}

/// The tenant whose key the request carries. Every tenant route takes one, and reads and
/// writes only under this tenant's id.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantRecord);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Tenant, ApiError> {
        match principal(parts, state).await? {
            Principal::Tenant(tenant) => Ok(Tenant(tenant)),
            Principal::Admin => Err(ApiError::new(
                ErrorKind::Forbidden,
                "forbidden",
                "the admin key manages tenants; use a tenant's key for its data",
            )),
        }
    }
}

/// The admin key.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Admin, ApiError> {
        match principal(parts, state).await? {
            Principal::Admin => Ok(Admin),
            Principal::Tenant(_) => Err(ApiError::new(
                ErrorKind::Forbidden,
                "forbidden",
                "this route needs the admin key",
            )),
        }
    }
}

/// Where the request came from, recorded on the events it posts.
#[derive(Debug, Clone)]
pub struct RequestOrigin(pub Origin);

impl<S: Send + Sync> FromRequestParts<S> for RequestOrigin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> Result<RequestOrigin, Self::Rejection> {
        let ip_address = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(address)| address.ip().to_string());
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(|text| text.chars().take(512).collect());
        Ok(RequestOrigin(Origin {
            source: "api".to_owned(),
            ip_address,
            user_agent,
        }))
    }
}

/// A whole request body within the route's size limit, with its media type.
#[derive(Debug)]
pub struct RawBody {
    /// The media type without parameters, lowercased; empty when none was sent.
    pub media_type: String,
    /// The bytes.
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<RawBody, ApiError> {
        let media_type = media_type(request.headers());
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorKind::TooLarge,
                        "payload_too_large",
                        "the request body is larger than this route accepts",
                    )
                } else {
                    ApiError::new(ErrorKind::BadRequest, "invalid_body", rejection.body_text())
                }
            })?;
        Ok(RawBody { media_type, bytes })
    }
}

pub(super) fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.split(';').next())
        .map(|text| text.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

/// A 415 naming what the route reads.
pub fn unsupported(media_type: &str, expected: &str) -> ApiError {
    let sent = if media_type.is_empty() {
        "no Content-Type".to_owned()
    } else {
        format!("Content-Type {media_type}")
    };
    ApiError::with_status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("this route reads {expected}; the request has {sent}"),
    )
}

/// Parses JSON text, with the line and column of a syntax error.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|error| {
        // serde_json ends its message with the position, which the message starts with here.
        let text = error.to_string();
        let position = format!(" at line {} column {}", error.line(), error.column());
        let reason = text.strip_suffix(&position).unwrap_or(&text);
        ApiError::new(
            ErrorKind::BadRequest,
            "invalid_json",
            format!(
                "invalid JSON at line {}, column {}: {reason}",
                error.line(),
                error.column()
            ),
        )
        .with_details(json!({"line": error.line(), "column": error.column()}))
    })
}

/// Reads a JSON value as `T`, naming the path of the field at fault.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = if path == "." {
            error.inner().to_string()
        } else {
            format!("{path}: {}", error.inner())
        };
        ApiError::from(ServiceError::invalid_request(message).with_details(json!({"path": path})))
    })
}

/// A JSON body read as `T`.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Json<T>, ApiError> {
        let body = RawBody::from_request(request, state).await?;
        if !is_json(&body.media_type) {
            return Err(unsupported(&body.media_type, "application/json"));
        }
        from_value(parse_json(&body.bytes)?).map(Json)
    }
}

/// An event body: JSON, or `application/x-www-form-urlencoded` with bracket nesting as
/// Antavo's Events API takes it (`data[items][0][price]=200`). Both give the same value.
#[derive(Debug)]
pub struct EventBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for EventBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<EventBody, ApiError> {
        let body = RawBody::from_request(request, state).await?;
        if is_json(&body.media_type) {
            return parse_json(&body.bytes).map(EventBody);
        }
        if body.media_type == "application/x-www-form-urlencoded" {
            let text = std::str::from_utf8(&body.bytes).map_err(|_| {
                ApiError::new(
                    ErrorKind::BadRequest,
                    "invalid_form",
                    "the form body is not UTF-8",
                )
            })?;
            return form_to_json(text)
                .map(EventBody)
                .map_err(|error| ApiError::from(ServiceError::from(error)));
        }
        Err(unsupported(
            &body.media_type,
            "application/json or application/x-www-form-urlencoded",
        ))
    }
}

/// A query string read as `T`; a bad one is 400 `invalid_query`.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<QueryParams<T>, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| {
                ApiError::new(
                    ErrorKind::BadRequest,
                    "invalid_query",
                    rejection.body_text(),
                )
            })
    }
}

/// For an optional member of a patch body: `Some(None)` when it is given as `null` (clear
/// it), `None` when it is left out (keep it). Use with `#[serde(default, deserialize_with =
/// "present_or_null")]`.
pub fn present_or_null<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}
