//! The service's one error type: a kind (which the API turns into an HTTP status), a stable
//! machine-readable code, a message for a person and structured details. The service decides
//! what went wrong; only the API knows about status codes.

use serde_json::{Value, json};

use crate::domain::EventRefusal;
use crate::pipeline::writer::{IngestError, SubmitError};
use crate::runtime::LoadError;
use crate::schema::SchemaError;
use crate::storage::StoreError;

/// What sort of failure, for the caller to map (HTTP status, exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed: bad JSON, a bad form body, a bad query.
    BadRequest,
    /// No key, or a key that is nobody's.
    Unauthorized,
    /// A valid key that may not do this.
    Forbidden,
    /// The thing does not exist (or belongs to another tenant).
    NotFound,
    /// The thing to create exists.
    Conflict,
    /// A body or module over its limit.
    TooLarge,
    /// Well-formed, but refused: a schema violation, an unknown action, an invalid plugin.
    Unprocessable,
    /// The event queue is full: retry shortly.
    Overloaded,
    /// Storage failed or the host is stopping: nothing was stored, retry.
    Unavailable,
    /// A bug or an unexpected backend failure; details are logged, never shown.
    Internal,
}

/// A failure with its code, message and details.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ServiceError {
    /// What sort of failure.
    pub kind: ErrorKind,
    /// Stable, machine-readable: `schema_violation`, `unknown_action`, `not_found`, ...
    pub code: &'static str,
    /// For a person: what is wrong and how to fix it.
    pub message: String,
    /// Structured details (violations with paths, the JSON error's line and column, ...);
    /// `null` when there are none.
    pub details: Value,
}

impl ServiceError {
    /// An error with no details.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> ServiceError {
        ServiceError {
            kind,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// The same error with `details`.
    pub fn with_details(mut self, details: Value) -> ServiceError {
        self.details = details;
        self
    }

    /// `not_found`.
    pub fn not_found(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::NotFound, "not_found", message)
    }

    /// `invalid_request`: a well-formed body with a field of the wrong type or value.
    pub fn invalid_request(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Unprocessable, "invalid_request", message)
    }

    /// `invalid_event`: an event envelope (customer, action, id, timestamp, ...) that is wrong.
    pub fn invalid_event(field: &str, message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Unprocessable, "invalid_event", message)
            .with_details(json!({ "field": field }))
    }

    /// `internal`: the message is logged by whoever reports it, and never shown to clients.
    pub fn internal(message: impl Into<String>) -> ServiceError {
        ServiceError::new(ErrorKind::Internal, "internal", message)
    }
}

impl From<SchemaError> for ServiceError {
    fn from(error: SchemaError) -> ServiceError {
        let message = error.to_string();
        let code = error.code();
        match error {
            SchemaError::InvalidJson { line, column, .. } => {
                ServiceError::new(ErrorKind::BadRequest, code, message)
                    .with_details(json!({ "line": line, "column": column }))
            }
            SchemaError::InvalidForm { .. } => {
                ServiceError::new(ErrorKind::BadRequest, code, message)
            }
            SchemaError::InvalidCsv { line, .. } => {
                ServiceError::new(ErrorKind::BadRequest, code, message)
                    .with_details(json!({ "line": line }))
            }
            SchemaError::InvalidEventType { path, .. }
            | SchemaError::InvalidSchema { path, .. } => {
                ServiceError::new(ErrorKind::Unprocessable, code, message)
                    .with_details(json!({ "path": path }))
            }
            SchemaError::UnknownAction { action, .. } => {
                ServiceError::new(ErrorKind::Unprocessable, code, message)
                    .with_details(json!({ "action": action }))
            }
            SchemaError::SchemaViolation {
                type_id,
                violations,
            } => ServiceError::new(ErrorKind::Unprocessable, code, message)
                .with_details(json!({ "event_type": type_id, "violations": violations })),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> ServiceError {
        match error {
            StoreError::NotFound(message) => ServiceError::not_found(message),
            StoreError::Conflict(message) => {
                ServiceError::new(ErrorKind::Conflict, "conflict", message)
            }
            StoreError::Invalid(message) => ServiceError::invalid_request(message),
            other => ServiceError::internal(other.to_string()),
        }
    }
}

impl From<LoadError> for ServiceError {
    fn from(error: LoadError) -> ServiceError {
        let message = error.to_string();
        match error {
            LoadError::TooLarge { size, limit } => {
                ServiceError::new(ErrorKind::TooLarge, "plugin_too_large", message)
                    .with_details(json!({ "size": size, "limit": limit }))
            }
            LoadError::Invalid { .. } => {
                ServiceError::new(ErrorKind::Unprocessable, "invalid_plugin", message)
            }
            LoadError::Refused { problems } => {
                ServiceError::new(ErrorKind::Unprocessable, "invalid_plugin", message)
                    .with_details(json!({ "problems": problems }))
            }
            LoadError::Host(_) => ServiceError::internal(message),
        }
    }
}

impl From<IngestError> for ServiceError {
    fn from(error: IngestError) -> ServiceError {
        let message = error.to_string();
        match error {
            IngestError::PluginRejected {
                plugin,
                version,
                code,
                message: plugin_message,
            } => ServiceError::new(ErrorKind::Unprocessable, "plugin_rejected", message)
                .with_details(json!({
                    "plugin": plugin,
                    "version": version,
                    "code": code,
                    "message": plugin_message,
                })),
            IngestError::Refused(refusal) => refusal.into(),
            IngestError::Storage(_) => ServiceError::new(
                ErrorKind::Unavailable,
                "storage_unavailable",
                "the event could not be stored and nothing of it was; retry",
            ),
            IngestError::Internal(_) => ServiceError::internal(message),
        }
    }
}

impl From<EventRefusal> for ServiceError {
    fn from(refusal: EventRefusal) -> ServiceError {
        let kind = match refusal {
            EventRefusal::PerkNotFound { .. } | EventRefusal::CustomerNotFound { .. } => {
                ErrorKind::NotFound
            }
            EventRefusal::CustomerMerged { .. } => ErrorKind::Conflict,
            EventRefusal::MergeWithItself { .. } | EventRefusal::MergeUnreadable => {
                ErrorKind::Unprocessable
            }
            EventRefusal::PerkRedeemed { .. } => ErrorKind::Conflict,
            EventRefusal::PerkExpired { .. }
            | EventRefusal::InsufficientPoints { .. }
            | EventRefusal::RewardLimitReached { .. }
            | EventRefusal::RewardUnreadable { .. } => ErrorKind::Unprocessable,
            EventRefusal::RewardOutOfStock { .. } => ErrorKind::Conflict,
        };
        ServiceError::new(kind, refusal.code(), refusal.to_string())
    }
}

impl From<SubmitError> for ServiceError {
    fn from(error: SubmitError) -> ServiceError {
        match error {
            SubmitError::Full => ServiceError::new(
                ErrorKind::Overloaded,
                "overloaded",
                "the host has more events waiting than it accepts; retry in a second",
            ),
            SubmitError::Closed => ServiceError::new(
                ErrorKind::Unavailable,
                "shutting_down",
                "the host is shutting down; retry against the next one",
            ),
        }
    }
}
