//! Event types: interaction-schema documents as marketing platforms write them
//! (`{"id", "displayName", "jsonSchema"}`, JSON Schema 2020-12), `//` comments allowed.
//!
//! - `POST /v1/event-types`: register or replace; 201 when new, 200 when replaced
//! - `GET /v1/event-types`: the built-in types, then the tenant's
//! - `GET /v1/event-types/{id}`: one

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{RawBody, Tenant, blocking, unsupported};
use super::views;
use crate::schema::parse_jsonc;
use crate::service::{ErrorKind, ServiceError};

/// The event-type routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/event-types", post(put).get(list))
        .route("/v1/event-types/{id}", get(one))
}

async fn put(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    body: RawBody,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    // Published schemas are JSON with comments; text/plain is what a copy-paste often sends.
    if !(body.media_type == "application/json"
        || body.media_type.ends_with("+json")
        || body.media_type == "text/plain")
    {
        return Err(unsupported(&body.media_type, "application/json"));
    }
    let text = std::str::from_utf8(&body.bytes).map_err(|_| {
        ApiError::new(
            ErrorKind::BadRequest,
            "invalid_json",
            "the body is not UTF-8",
        )
    })?;
    let document = parse_jsonc(text).map_err(ServiceError::from)?;
    let (event_type, created) = blocking(&state, move |service| {
        service.catalog.put_event_type(&tenant.id, document)
    })
    .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(views::event_type(&event_type))))
}

async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<axum::Json<Value>, ApiError> {
    let types = blocking(&state, move |service| service.catalog.event_types(&tenant)).await?;
    let items: Vec<Value> = types.iter().map(|t| views::event_type(t)).collect();
    Ok(axum::Json(json!({"items": items})))
}

async fn one(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let event_type = blocking(&state, move |service| {
        service.catalog.event_type(&tenant.id, &id)
    })
    .await?;
    Ok(axum::Json(views::event_type(&event_type)))
}
