//! The one error response: `{"error": {"code", "message", "details"}}` with a status from
//! the error's kind. Internal errors are logged in full and answered with "internal error"
//! only, so nothing about the host's insides reaches a client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::service::{ErrorKind, ServiceError};

/// An error as the API answers it.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl ApiError {
    /// An error of `kind` with `code` and `message`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError(ServiceError::new(kind, code, message))
    }

    /// The same error with `details`.
    pub fn with_details(self, details: Value) -> ApiError {
        ApiError(self.0.with_details(details))
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        status_of(self.0.kind)
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        ApiError(error)
    }
}

/// The status for each kind of failure.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error body, as the API and the batch routes (one per item) write it.
pub fn error_body(error: &ServiceError) -> Value {
    if error.kind == ErrorKind::Internal {
        // Logged once, here, where the response is made.
        tracing::error!(code = error.code, message = %error.message, "internal error");
        return json!({"error": {"code": "internal", "message": "internal error", "details": null}});
    }
    json!({"error": {"code": error.code, "message": error.message, "details": error.details}})
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(error_body(&self.0))).into_response();
        if matches!(self.0.kind, ErrorKind::Overloaded | ErrorKind::Unavailable) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.0.kind == ErrorKind::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tally\""),
            );
        }
        response
    }
}
