//! The test clock, on a host started with `tally serve --test-clock` (the route does not
//! exist otherwise):
//!
//! - `POST /v1/admin/clock` (admin) `{"now": "<RFC 3339>"}`: moves the clock forward (never
//!   back) and answers once every internal event due up to then is committed
//! - `GET /v1/admin/clock` (admin): where the clock stands

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tally_sdk::Timestamp;

use super::AppState;
use super::error::ApiError;
use super::extract::{Admin, Json};
use crate::service::{ClockError, ErrorKind};

/// The clock routes; none unless the host runs on a test clock.
pub fn router(test_clock: bool) -> Router<AppState> {
    if !test_clock {
        return Router::new();
    }
    Router::new().route("/v1/admin/clock", get(read).post(advance))
}

async fn read(State(state): State<AppState>, _: Admin) -> axum::Json<Value> {
    axum::Json(json!({"now": state.service.ingest.clock().now()}))
}

/// What `POST /v1/admin/clock` takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    now: Timestamp,
}

async fn advance(
    State(state): State<AppState>,
    _: Admin,
    Json(body): Json<ClockBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let ingest = &state.service.ingest;
    ingest.clock().advance_to(body.now).map_err(|error| {
        let code = match error {
            ClockError::NotATestClock => "not_a_test_clock",
            ClockError::Backwards { .. } => "clock_backwards",
        };
        ApiError::new(ErrorKind::Conflict, code, error.to_string())
    })?;
    let pass = ingest.write_due(body.now).await?;
    Ok(axum::Json(json!({
        "now": body.now,
        "written": pass.written,
        "replayed": pass.replayed,
        "failed": pass.failed,
    })))
}
