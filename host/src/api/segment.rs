//! Segment's HTTP Tracking API, so a CDP can send Tally what it sends Segment: the tenant's
//! key is the write key (HTTP Basic user name, or a bearer token).
//!
//! - `POST /v1/segment/track`, `POST /v1/segment/identify`: one message, answered as
//!   `POST /v1/events` answers
//! - `POST /v1/segment/batch` `{"batch": [...]}`: messages of either type, each answered on
//!   its own as `POST /v1/events/batch` answers
//!
//! See [`crate::service::translate`] for what a message becomes.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::post;
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use super::events::{batch_answer, ingested_response};
use super::extract::{Json, RequestOrigin, Tenant, blocking};
use crate::domain::NewEvent;
use crate::domain::records::TenantRecord;
use crate::service::{ErrorKind, Origin, ServiceError, translate};

/// The Segment routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/segment/track", post(track))
        .route("/v1/segment/identify", post(identify))
        .route("/v1/segment/batch", post(batch))
}

async fn track(
    state: State<AppState>,
    tenant: Tenant,
    origin: RequestOrigin,
    Json(message): Json<Value>,
) -> Result<Response, ApiError> {
    one(state, tenant, origin, message, "track").await
}

async fn identify(
    state: State<AppState>,
    tenant: Tenant,
    origin: RequestOrigin,
    Json(message): Json<Value>,
) -> Result<Response, ApiError> {
    one(state, tenant, origin, message, "identify").await
}

async fn one(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    message: Value,
    kind: &'static str,
) -> Result<Response, ApiError> {
    let policy = tenant.policy();
    let mut events = prepare(&state, tenant, origin, vec![message], Some(kind)).await?;
    let event = events
        .pop()
        .ok_or_else(|| ServiceError::internal("a message was lost"))??;
    let ingested = state.service.ingest.ingest(event).await?;
    Ok(ingested_response(&ingested, &policy))
}

async fn batch(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    Json(body): Json<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    let Some(Value::Array(messages)) = body.get("batch").cloned() else {
        return Err(
            ServiceError::invalid_request("a Segment batch is {\"batch\": [messages]}").into(),
        );
    };
    let limit = state.service.config().max_batch_events;
    if messages.len() > limit {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            "payload_too_large",
            format!(
                "{} messages in one batch; at most {limit} are taken",
                messages.len()
            ),
        ));
    }
    let policy = tenant.policy();
    let events = prepare(&state, tenant, origin, messages, None).await?;
    let answers = state.service.ingest.ingest_many(events).await;
    Ok(axum::Json(batch_answer(&answers, &policy)))
}

/// Each message read as an event and checked as a posted one, with the end user's address
/// and agent from its context; in order, each on its own.
async fn prepare(
    state: &AppState,
    tenant: TenantRecord,
    origin: Origin,
    messages: Vec<Value>,
    kind: Option<&'static str>,
) -> Result<Vec<Result<NewEvent, ServiceError>>, ApiError> {
    blocking(state, move |service| {
        let origin = Origin {
            source: "segment".to_owned(),
            ..origin
        };
        let translated: Vec<_> = messages
            .iter()
            .map(|message| translate(message, kind, &tenant.segment))
            .collect();
        let readable: Vec<Value> = translated
            .iter()
            .filter_map(|message| message.as_ref().ok().map(|message| message.event.clone()))
            .collect();
        let mut prepared = service
            .ingest
            .prepare_events(&tenant, readable, &origin)?
            .into_iter();
        Ok::<_, ServiceError>(
            translated
                .into_iter()
                .map(|message| {
                    let message = message?;
                    let mut event = prepared.next().ok_or_else(|| {
                        ServiceError::internal("a Segment message was not checked")
                    })??;
                    if message.ip_address.is_some() {
                        event.ip_address = message.ip_address;
                    }
                    if message.user_agent.is_some() {
                        event.user_agent = message.user_agent;
                    }
                    Ok(event)
                })
                .collect(),
        )
    })
    .await
}
