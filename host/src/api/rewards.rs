//! The tenant's reward catalogue:
//!
//! - `POST /v1/rewards`: add a reward; 201
//! - `GET /v1/rewards`, `GET /v1/rewards/{id}`: the catalogue, each with `redeemed`
//! - `PATCH /v1/rewards/{id}`: change one (`enabled: false` takes it out)
//!
//! Customers redeem them with `POST /v1/customers/{id}/rewards/{reward}/redeem`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tally_sdk::Timestamp;

use super::AppState;
use super::error::ApiError;
use super::extract::{Json, Tenant, blocking, present_or_null};
use crate::domain::records::RewardPerk;
use crate::service::{NewReward, RewardPatch, RewardView};

/// The reward routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/rewards", post(create).get(list))
        .route("/v1/rewards/{id}", get(one).patch(update))
}

/// What `POST /v1/rewards` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRewardBody {
    id: String,
    name: String,
    cost: i64,
    perk: RewardPerk,
    #[serde(default)]
    stock: Option<u64>,
    #[serde(default)]
    limit_per_customer: Option<u32>,
    #[serde(default)]
    active_from: Option<Timestamp>,
    #[serde(default)]
    active_until: Option<Timestamp>,
}

/// What `PATCH /v1/rewards/{id}` takes; absent fields stay, `null` clears an optional one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RewardPatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    cost: Option<i64>,
    #[serde(default)]
    perk: Option<RewardPerk>,
    #[serde(default, deserialize_with = "present_or_null")]
    stock: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present_or_null")]
    limit_per_customer: Option<Option<u32>>,
    #[serde(default, deserialize_with = "present_or_null")]
    active_from: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "present_or_null")]
    active_until: Option<Option<Timestamp>>,
    #[serde(default)]
    enabled: Option<bool>,
}

async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Json(body): Json<NewRewardBody>,
) -> Result<(StatusCode, axum::Json<RewardView>), ApiError> {
    let new = NewReward {
        id: body.id,
        name: body.name,
        cost: body.cost,
        perk: body.perk,
        stock: body.stock,
        limit_per_customer: body.limit_per_customer,
        active_from: body.active_from,
        active_until: body.active_until,
    };
    let created = blocking(&state, move |service| {
        service.catalog.create_reward(&tenant.id, new)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(created)))
}

async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<axum::Json<Value>, ApiError> {
    let rewards = blocking(&state, move |service| service.catalog.rewards(&tenant.id)).await?;
    Ok(axum::Json(json!({"items": rewards})))
}

async fn one(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<RewardView>, ApiError> {
    let reward = blocking(&state, move |service| {
        service.catalog.reward(&tenant.id, &id)
    })
    .await?;
    Ok(axum::Json(reward))
}

async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Json(body): Json<RewardPatchBody>,
) -> Result<axum::Json<RewardView>, ApiError> {
    let patch = RewardPatch {
        name: body.name,
        cost: body.cost,
        perk: body.perk,
        stock: body.stock,
        limit_per_customer: body.limit_per_customer,
        active_from: body.active_from,
        active_until: body.active_until,
        enabled: body.enabled,
    };
    let updated = blocking(&state, move |service| {
        service.catalog.update_reward(&tenant.id, &id, patch)
    })
    .await?;
    Ok(axum::Json(updated))
}
