//! Events: posted one at a time (JSON or Antavo's form encoding), in batches, or as a CSV
//! import; read back by id. Events are immutable: there is no update or delete route.
//!
//! - `POST /v1/events`: 201 with the stored event, what it produced and the customer after
//!   it; 200 with `"replayed": true` (and `Tally-Replayed: true`) for an id already stored
//! - `POST /v1/events/batch`: a JSON array (or `{"events": [...]}`), each answered on its own
//! - `POST /v1/events/import` (`text/csv`): one event per row, answered like a batch
//! - `GET /v1/events/{id}`

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{ApiError, error_body, status_of};
use super::extract::{Admin, RawBody, RequestOrigin, Tenant, blocking, parse_json, unsupported};
use super::views;
use crate::domain::Policy;
use crate::pipeline::writer::Ingested;
use crate::schema::csv_to_events;
use crate::service::{Checked, ErrorKind, Origin, ServiceError};
use crate::storage::TenantRecord;

/// The event routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/events", post(post_event))
        .route("/v1/events/batch", post(post_batch))
        .route("/v1/events/import", post(post_import))
        .route("/v1/events/{id}", get(get_event))
        .route("/v1/tenants/{tenant}/events", post(post_as_operator))
}

async fn post_event(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    super::extract::EventBody(input): super::extract::EventBody,
) -> Result<Response, ApiError> {
    ingest_one(&state, tenant, origin, input).await
}

/// `POST /v1/tenants/{tenant}/events` with the admin key: an operator registers an event by
/// hand for a tenant (a purchase the till missed, a goodwill award). It is any event a
/// tenant could post, with source `platform` and `data.admin` saying who registered it (the
/// body's `admin`, `"admin"` when absent), so the history tells it from the tenant's own.
async fn post_as_operator(
    State(state): State<AppState>,
    _: Admin,
    RequestOrigin(mut origin): RequestOrigin,
    Path(tenant): Path<String>,
    super::extract::EventBody(mut input): super::extract::EventBody,
) -> Result<Response, ApiError> {
    let lookup = tenant.clone();
    let tenant = blocking(&state, move |service| service.tenants.tenant(&lookup))
        .await?
        .ok_or_else(|| ServiceError::not_found(format!("no tenant {tenant:?}")))?;
    let Value::Object(fields) = &mut input else {
        return Err(ServiceError::invalid_request("an event is a JSON object").into());
    };
    let admin = match fields.remove("admin") {
        None | Some(Value::Null) => "admin".to_owned(),
        Some(Value::String(who)) if !who.trim().is_empty() => who,
        Some(_) => {
            return Err(ServiceError::invalid_event(
                "admin",
                "\"admin\" names who registered the event (a string)",
            )
            .into());
        }
    };
    match fields
        .entry("data")
        .or_insert_with(|| Value::Object(serde_json::Map::new()))
    {
        Value::Object(data) => {
            data.insert("admin".to_owned(), Value::String(admin));
        }
        _ => {
            return Err(ServiceError::invalid_event(
                "data",
                "\"data\" must be a JSON object of the action's attributes",
            )
            .into());
        }
    }
    origin.source = "platform".to_owned();
    ingest_one(&state, tenant, origin, input).await
}

/// Checks one event as posted, stores it and answers with it: `201`, or `200` with
/// `Tally-Replayed: true` for an id stored before. What `POST /v1/events` does, and the
/// routes that are events in another shape (redeeming a perk).
pub(super) async fn ingest_one(
    state: &AppState,
    tenant: TenantRecord,
    origin: Origin,
    input: Value,
) -> Result<Response, ApiError> {
    let policy = tenant.policy();
    // Checking an event is quick computation once the tenant's types are cached; only the
    // first event after a type changed reads them from the store, off the async runtime.
    let event = match state.service.ingest.check_now(&tenant, input, &origin) {
        Checked::Ready(event) => event,
        Checked::Invalid(error) => return Err(error.into()),
        Checked::NeedsTypes(input) => {
            blocking(state, move |service| {
                service.ingest.prepare_event(&tenant, input, &origin)
            })
            .await?
        }
    };
    let ingested = state.service.ingest.ingest(event).await?;
    Ok(ingested_response(&ingested, &policy))
}

/// The answer to an event written: 201 with what it did, or 200 with `"replayed": true`
/// (and `Tally-Replayed: true`) for an id stored before.
pub(super) fn ingested_response(ingested: &Ingested, policy: &Policy) -> Response {
    let status = if ingested.replayed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, axum::Json(views::ingested(ingested, policy))).into_response();
    if ingested.replayed {
        response
            .headers_mut()
            .insert("tally-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn post_batch(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(origin): RequestOrigin,
    body: RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    if !(body.media_type == "application/json" || body.media_type.ends_with("+json")) {
        return Err(unsupported(&body.media_type, "application/json"));
    }
    let events = match parse_json(&body.bytes)? {
        Value::Array(events) => events,
        Value::Object(mut wrapper) if wrapper.contains_key("events") => {
            match wrapper.remove("events") {
                Some(Value::Array(events)) => events,
                _ => return Err(not_a_list()),
            }
        }
        _ => return Err(not_a_list()),
    };
    ingest_all(&state, tenant, origin, events).await
}

fn not_a_list() -> ApiError {
    ApiError::from(ServiceError::invalid_request(
        "a batch is a JSON array of events (or {\"events\": [...]})",
    ))
}

async fn post_import(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    RequestOrigin(mut origin): RequestOrigin,
    body: RawBody,
) -> Result<axum::Json<Value>, ApiError> {
    if !matches!(body.media_type.as_str(), "text/csv" | "application/csv") {
        return Err(unsupported(&body.media_type, "text/csv"));
    }
    let text = std::str::from_utf8(&body.bytes).map_err(|_| {
        ApiError::new(
            ErrorKind::BadRequest,
            "invalid_csv",
            "the CSV file is not UTF-8",
        )
    })?;
    let mut events = csv_to_events(text).map_err(ServiceError::from)?;
    // A row without an id gets one derived from the file and the row, so importing the same
    // file again stores nothing twice.
    let file = hex::encode(&Sha256::digest(text.as_bytes())[..8]);
    for (row, event) in events.iter_mut().enumerate() {
        if let Value::Object(fields) = event
            && !fields.contains_key("id")
        {
            fields.insert("id".to_owned(), json!(format!("import-{file}-{}", row + 1)));
        }
    }
    origin.source = "import".to_owned();
    ingest_all(&state, tenant, origin, events).await
}

/// Checks every event, queues the good ones in order, and answers each on its own:
/// `{"results": [{"status", ...the single-event answer or the error...}], "stored",
/// "replayed", "failed"}`.
async fn ingest_all(
    state: &AppState,
    tenant: TenantRecord,
    origin: Origin,
    events: Vec<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = state.service.config().max_batch_events;
    if events.len() > limit {
        return Err(ApiError::new(
            ErrorKind::TooLarge,
            "payload_too_large",
            format!(
                "{} events in one request; at most {limit} are taken, send the rest in another",
                events.len()
            ),
        ));
    }
    let policy = tenant.policy();
    let prepared = blocking(state, move |service| {
        service.ingest.prepare_events(&tenant, events, &origin)
    })
    .await?;
    let answers = state.service.ingest.ingest_many(prepared).await;
    Ok(axum::Json(batch_answer(&answers, &policy)))
}

/// Each event's answer on its own: `{"results": [{"status", ...the single-event answer or
/// the error...}], "stored", "replayed", "failed"}`.
pub(super) fn batch_answer(answers: &[Result<Ingested, ServiceError>], policy: &Policy) -> Value {
    let (mut stored, mut replayed, mut failed) = (0, 0, 0);
    let results: Vec<Value> = answers
        .iter()
        .map(|answer| match answer {
            Ok(ingested) => {
                // A view always serializes: it is made of JSON values and plain fields.
                let mut body = serde_json::to_value(views::ingested(ingested, policy))
                    .unwrap_or_else(|_| json!({"event": {"id": ingested.event.id}}));
                let status = if ingested.replayed {
                    replayed += 1;
                    StatusCode::OK
                } else {
                    stored += 1;
                    StatusCode::CREATED
                };
                if let Value::Object(fields) = &mut body {
                    fields.insert("status".to_owned(), json!(status.as_u16()));
                }
                body
            }
            Err(error) => {
                failed += 1;
                let mut body = error_body(error);
                if let Value::Object(fields) = &mut body {
                    fields.insert("status".to_owned(), json!(status_of(error.kind).as_u16()));
                }
                body
            }
        })
        .collect();
    json!({
        "stored": stored,
        "replayed": replayed,
        "failed": failed,
        "results": results,
    })
}

async fn get_event(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let event = blocking(&state, move |service| {
        service.queries.event(&tenant.id, &id)
    })
    .await?;
    Ok(axum::Json(json!({
        "event": event,
        "errors": views::plugin_errors(&event),
    })))
}
