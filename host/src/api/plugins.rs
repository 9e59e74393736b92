//! Plugins: wasm modules uploaded per tenant, each upload an immutable version.
//!
//! - `PUT /v1/plugins/{name}` (`application/wasm`): a new version, validated and compiled;
//!   201, or 200 when the bytes are the active version already
//! - `PATCH /v1/plugins/{name}`: config, actions, priority, enabled, active version, on_error
//! - `GET /v1/plugins`, `GET /v1/plugins/{name}`: settings and versions with their sha256
//! - `POST /v1/plugins/{name}/simulate[?version=N]`: what it would decide; stores nothing

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{
    EventBody, Json, QueryParams, RawBody, RequestOrigin, Tenant, blocking, unsupported,
};
use super::views;
use crate::domain::records::OnError;
use crate::service::PluginPatch;

/// The plugin routes; uploads take modules up to `wasm_limit` bytes.
pub fn router(wasm_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/v1/plugins", get(list))
        .route(
            "/v1/plugins/{name}",
            get(one).patch(update).merge(
                // Only uploads take modules; one byte over the runtime's limit lets the
                // runtime name the size, anything larger is cut off and answered 413 here.
                put(upload).layer(DefaultBodyLimit::max(wasm_limit.saturating_add(1))),
            ),
        )
        .route("/v1/plugins/{name}/simulate", post(simulate))
}

async fn upload(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    body: RawBody,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    if !matches!(
        body.media_type.as_str(),
        "application/wasm" | "application/octet-stream"
    ) {
        return Err(unsupported(&body.media_type, "application/wasm"));
    }
    let uploaded = blocking(&state, move |service| {
        service
            .catalog
            .upload_plugin(&tenant.id, &name, &body.bytes)
    })
    .await?;
    let status = if uploaded.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(json!(uploaded.plugin))))
}

async fn update(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    Json(patch): Json<PluginPatchBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let record = blocking(&state, move |service| {
        service
            .catalog
            .update_plugin(&tenant.id, &name, patch.into())
    })
    .await?;
    Ok(axum::Json(json!(record)))
}

async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<axum::Json<Value>, ApiError> {
    let plugins = blocking(&state, move |service| service.catalog.plugins(&tenant.id)).await?;
    Ok(axum::Json(json!({"items": plugins})))
}

async fn one(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let plugin = blocking(&state, move |service| {
        service.catalog.plugin(&tenant.id, &name)
    })
    .await?;
    Ok(axum::Json(json!(plugin)))
}

#[derive(Debug, Deserialize)]
struct SimulateQuery {
    #[serde(default)]
    version: Option<u32>,
}

async fn simulate(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    QueryParams(query): QueryParams<SimulateQuery>,
    RequestOrigin(origin): RequestOrigin,
    EventBody(input): EventBody,
) -> Result<axum::Json<Value>, ApiError> {
    let simulation = blocking(&state, move |service| {
        service
            .ingest
            .simulate(&tenant, &name, query.version, input, &origin)
    })
    .await?;
    Ok(axum::Json(views::simulation(&simulation)))
}

/// What `PATCH /v1/plugins/{name}` takes; absent fields stay, and `null` is told apart from
/// absent where it means something (`config: null` clears it, `actions: null` means every
/// action).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginPatchBody {
    #[serde(default, deserialize_with = "present")]
    config: Option<Value>,
    #[serde(default, deserialize_with = "present_actions")]
    actions: Option<Option<Vec<String>>>,
    #[serde(default)]
    priority: Option<i32>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, alias = "version")]
    active_version: Option<u32>,
    #[serde(default)]
    on_error: Option<OnError>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

fn present_actions<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Vec<String>>>, D::Error> {
    Option::<Vec<String>>::deserialize(deserializer).map(Some)
}

impl From<PluginPatchBody> for PluginPatch {
    fn from(body: PluginPatchBody) -> PluginPatch {
        PluginPatch {
            config: body.config,
            actions: body.actions,
            priority: body.priority,
            enabled: body.enabled,
            active_version: body.active_version,
            on_error: body.on_error,
        }
    }
}
