//! The tenant's webhook endpoints, to which its triggers are delivered (Standard Webhooks):
//!
//! - `POST /v1/webhooks` `{"url", "triggers": [names] | ["*"]}`: add one; 201 with its `id`
//!   and `secrets[0].secret` (`whsec_...`)
//! - `GET /v1/webhooks`, `GET /v1/webhooks/{id}`: endpoints with where delivery stands
//! - `PATCH /v1/webhooks/{id}` `{"url"?, "triggers"?, "enabled"?}`; `DELETE /v1/webhooks/{id}`
//! - `POST /v1/webhooks/{id}/rotate`: a new secret, the old one valid 24 hours more
//! - `POST /v1/webhooks/{id}/redeliver` `{"after": seq}`: deliver again from the outbox
//! - `GET /v1/webhooks/{id}/attempts?before=&limit=`: the delivery log, newest first

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::customers::page_limit;
use super::error::ApiError;
use super::extract::{Json, QueryParams, Tenant, blocking};
use crate::domain::records::WebhookRecord;
use crate::service::{NewWebhook, WebhookPatch};

/// The webhook routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/webhooks", post(create).get(list))
        .route("/v1/webhooks/{id}", get(one).patch(update).delete(remove))
        .route("/v1/webhooks/{id}/rotate", post(rotate))
        .route("/v1/webhooks/{id}/redeliver", post(redeliver))
        .route("/v1/webhooks/{id}/attempts", get(attempts))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWebhookBody {
    url: String,
    triggers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookPatchBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    triggers: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedeliverBody {
    /// Deliver every wanted trigger after this outbox number.
    after: u64,
}

#[derive(Debug, Deserialize)]
struct AttemptsQuery {
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Json(body): Json<NewWebhookBody>,
) -> Result<(StatusCode, axum::Json<WebhookRecord>), ApiError> {
    let new = NewWebhook {
        url: body.url,
        triggers: body.triggers,
    };
    let created = blocking(&state, move |service| {
        service.webhooks.create(&tenant.id, new)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<axum::Json<Value>, ApiError> {
    let webhooks = blocking(&state, move |service| service.webhooks.list(&tenant.id)).await?;
    Ok(axum::Json(json!({"items": webhooks})))
}

async fn one(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookRecord>, ApiError> {
    let webhook = blocking(&state, move |service| service.webhooks.get(&tenant.id, &id)).await?;
    Ok(axum::Json(webhook))
}

async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Json(body): Json<WebhookPatchBody>,
) -> Result<axum::Json<WebhookRecord>, ApiError> {
    let patch = WebhookPatch {
        url: body.url,
        triggers: body.triggers,
        enabled: body.enabled,
    };
    let webhook = blocking(&state, move |service| {
        service.webhooks.update(&tenant.id, &id, patch)
    })
    .await?;
    Ok(axum::Json(webhook))
}

async fn remove(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |service| {
        service.webhooks.delete(&tenant.id, &id)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<WebhookRecord>, ApiError> {
    let webhook = blocking(&state, move |service| {
        service.webhooks.rotate(&tenant.id, &id)
    })
    .await?;
    Ok(axum::Json(webhook))
}

async fn redeliver(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Json(body): Json<RedeliverBody>,
) -> Result<axum::Json<WebhookRecord>, ApiError> {
    let webhook = blocking(&state, move |service| {
        service.webhooks.redeliver(&tenant.id, &id, body.after)
    })
    .await?;
    Ok(axum::Json(webhook))
}

async fn attempts(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<AttemptsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = page_limit(query.limit)?;
    let items = blocking(&state, move |service| {
        service
            .webhooks
            .attempts(&tenant.id, &id, query.before, limit)
    })
    .await?;
    let next_before = (items.len() == limit)
        .then(|| items.last().map(|attempt| attempt.seq))
        .flatten();
    Ok(axum::Json(
        json!({"items": items, "next_before": next_before}),
    ))
}
