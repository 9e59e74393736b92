//! Tenants: created by the admin, each with an API key shown once; a tenant reads and
//! changes its own settings (such as turning on untyped custom events).
//!
//! - `POST /v1/tenants` (admin): create; 201 with `api_key`
//! - `GET /v1/tenants` (admin): list
//! - `POST /v1/tenants/{id}/key` (admin): a new key for the tenant; the old one stops working
//! - `GET /v1/tenant`, `PATCH /v1/tenant` (tenant key): the caller's own tenant

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, Json, Tenant, blocking, present_or_null};
use serde::Deserialize;

use crate::domain::{PointsExpiry, Schedule};
use crate::service::{NewTenant, ServiceError, TenantPatch};

/// The tenant routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/tenants", post(create).get(list))
        .route("/v1/tenants/{id}/key", post(rotate_key))
        .route("/v1/tenant", get(own).patch(update))
}

async fn create(
    State(state): State<AppState>,
    _: Admin,
    Json(new): Json<NewTenantBody>,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    let (tenant, key) = blocking(&state, move |service| {
        service.tenants.create_tenant(new.into())
    })
    .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"tenant": tenant, "api_key": key})),
    ))
}

async fn list(State(state): State<AppState>, _: Admin) -> Result<axum::Json<Value>, ApiError> {
    let tenants = blocking(&state, |service| service.tenants.tenants()).await?;
    Ok(axum::Json(json!({"items": tenants})))
}

async fn rotate_key(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let (tenant, key) = blocking(&state, move |service| {
        let tenant = service
            .tenants
            .tenant(&id)?
            .ok_or_else(|| ServiceError::not_found(format!("no tenant {id:?}")))?;
        let key = service.tenants.rotate_tenant_key(&id)?;
        Ok((tenant, key))
    })
    .await?;
    Ok(axum::Json(json!({"tenant": tenant, "api_key": key})))
}

async fn own(Tenant(tenant): Tenant) -> axum::Json<Value> {
    axum::Json(json!(tenant))
}

async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Json(patch): Json<TenantPatchBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let updated = blocking(&state, move |service| {
        service.tenants.update_tenant(&tenant.id, patch.into())
    })
    .await?;
    Ok(axum::Json(json!(updated)))
}

/// What `POST /v1/tenants` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenantBody {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    allow_untyped_events: bool,
    #[serde(default)]
    allow_negative_balance: bool,
}

impl From<NewTenantBody> for NewTenant {
    fn from(body: NewTenantBody) -> NewTenant {
        NewTenant {
            id: body.id,
            name: body.name,
            allow_untyped_events: body.allow_untyped_events,
            allow_negative_balance: body.allow_negative_balance,
        }
    }
}

/// What `PATCH /v1/tenant` takes; absent fields stay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantPatchBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    allow_untyped_events: Option<bool>,
    #[serde(default)]
    allow_negative_balance: Option<bool>,
    #[serde(default)]
    points_expiry: Option<PointsExpiry>,
    #[serde(default)]
    schedule: Option<Schedule>,
    #[serde(default)]
    future_tolerance_seconds: Option<u32>,
    #[serde(default)]
    membership_required: Option<bool>,
    /// `null` removes the schema.
    #[serde(default, deserialize_with = "present_or_null")]
    customer_schema: Option<Option<Value>>,
    #[serde(default)]
    segment: Option<crate::domain::records::SegmentMapping>,
}

impl From<TenantPatchBody> for TenantPatch {
    fn from(body: TenantPatchBody) -> TenantPatch {
        TenantPatch {
            name: body.name,
            allow_untyped_events: body.allow_untyped_events,
            allow_negative_balance: body.allow_negative_balance,
            points_expiry: body.points_expiry,
            schedule: body.schedule,
            future_tolerance_seconds: body.future_tolerance_seconds,
            membership_required: body.membership_required,
            customer_schema: body.customer_schema,
            segment: body.segment,
        }
    }
}
