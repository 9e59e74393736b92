//! Bulk imports as background jobs:
//!
//! - `POST /v1/imports` with a CSV file (`Content-Type: text/csv`, Antavo's import format as
//!   `POST /v1/events/import` takes it) or NDJSON (`application/x-ndjson`, one event a line
//!   as `POST /v1/events` takes it), of any number of rows: the body is written to disk as it
//!   arrives, and `202` answers the job, with `Location: /v1/imports/{id}`
//! - `GET /v1/imports`, `GET /v1/imports/{id}`: jobs with their state and progress
//! - `GET /v1/imports/{id}/errors?after=&limit=`: the rows refused, in row order
//! - `POST /v1/imports/{id}/cancel`: stop a job; the rows stored before stay stored

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::customers::page_limit;
use super::error::ApiError;
use super::extract::{QueryParams, Tenant, blocking, media_type, unsupported};
use crate::domain::imports::{ImportFormat, ImportJob};
use crate::service::{ErrorKind, ServiceError};

/// The import routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/imports", post(create).get(list))
        .route("/v1/imports/{id}", get(one))
        .route("/v1/imports/{id}/errors", get(errors))
        .route("/v1/imports/{id}/cancel", post(cancel))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateQuery {
    /// `csv` or `ndjson`, when the Content-Type does not say.
    #[serde(default)]
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ErrorsQuery {
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn create(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    QueryParams(query): QueryParams<CreateQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let media_type = media_type(request.headers());
    let format = match (query.format.as_deref(), media_type.as_str()) {
        (Some("csv"), _) | (None, "text/csv" | "application/csv") => ImportFormat::Csv,
        (Some("ndjson"), _)
        | (None, "application/x-ndjson" | "application/ndjson" | "application/jsonl") => {
            ImportFormat::Ndjson
        }
        (Some(other), _) => {
            return Err(ApiError::from(ServiceError::invalid_request(format!(
                "format={other}: an import is `csv` or `ndjson`"
            ))));
        }
        (None, _) => {
            return Err(unsupported(
                &media_type,
                "text/csv or application/x-ndjson (or say ?format=csv|ndjson)",
            ));
        }
    };
    let mut upload = state.service.imports.upload(&tenant.id, format).await?;
    let mut body = request.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::new(
                ErrorKind::BadRequest,
                "invalid_body",
                format!("the upload broke off: {error}"),
            )
        })?;
        upload.write(&chunk).await?;
    }
    let job = upload.finish().await?;
    let mut response = (StatusCode::ACCEPTED, axum::Json(view(&job))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/imports/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

async fn list(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
) -> Result<axum::Json<Value>, ApiError> {
    let jobs = blocking(&state, move |service| service.imports.list(&tenant.id)).await?;
    Ok(axum::Json(
        json!({"items": jobs.iter().map(view).collect::<Vec<_>>()}),
    ))
}

async fn one(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let job = blocking(&state, move |service| service.imports.get(&tenant.id, &id)).await?;
    Ok(axum::Json(view(&job)))
}

async fn errors(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<ErrorsQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    let limit = page_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    let errors = blocking(&state, move |service| {
        service.imports.errors(&tenant.id, &id, after, limit)
    })
    .await?;
    let next = (errors.len() == limit)
        .then(|| errors.last().map(|error| error.row))
        .flatten();
    Ok(axum::Json(json!({"items": errors, "next": next})))
}

async fn cancel(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let job = blocking(&state, move |service| {
        service.imports.cancel(&tenant.id, &id)
    })
    .await?;
    Ok(axum::Json(view(&job)))
}

/// A job as the API shows it: its record, with the progress spelled out.
fn view(job: &ImportJob) -> Value {
    let progress = &job.progress;
    json!({
        "id": job.id,
        "state": job.state.name(),
        "format": job.format.name(),
        "bytes": job.bytes,
        "bytes_read": progress.offset,
        "sha256": job.sha256,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "rows": {
            "read": progress.rows_read,
            "stored": progress.stored,
            "replayed": progress.replayed,
            "failed": progress.failed,
        },
        "rate": progress.rate(),
        "cancel_requested": job.cancel_requested,
        "error": job.error,
        "errors": format!("/v1/imports/{}/errors", job.id),
    })
}
