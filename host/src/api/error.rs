//! The one error response: `{"error": {"code", "message", "details"}}` with a status from
//! the error's kind. Internal errors are logged in full and answered with "internal error"
//! only, so nothing about the host's insides reaches a client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::service::{ErrorKind, ServiceError};

/// An error as the API answers it: a service error, with the status its kind maps to, or
/// one that only HTTP has (a route that does not take the method).
#[derive(Debug)]
pub struct ApiError {
    error: ServiceError,
    status: StatusCode,
}

impl ApiError {
    /// An error of `kind` with `code` and `message`.
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> ApiError {
        ServiceError::new(kind, code, message).into()
    }

    /// An error only HTTP has, such as a method or a media type a route does not take:
    /// answered with `status`, and with `code` and `message` in the one error shape.
    pub fn with_status(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            error: ServiceError::new(ErrorKind::BadRequest, code, message),
            status,
        }
    }

    /// `405 method_not_allowed`: the route exists, but not with this method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::with_status(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method; see docs/api.md",
        )
    }

    /// The same error with `details`.
    pub fn with_details(self, details: Value) -> ApiError {
        ApiError {
            error: self.error.with_details(details),
            status: self.status,
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ServiceError> for ApiError {
    fn from(error: ServiceError) -> ApiError {
        ApiError {
            status: status_of(error.kind),
            error,
        }
    }
}

/// The status for each kind of failure.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
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
        let mut response = (status, Json(error_body(&self.error))).into_response();
        if matches!(
            self.error.kind,
            ErrorKind::Overloaded | ErrorKind::Unavailable
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.error.kind == ErrorKind::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tally\""),
            );
        }
        response
    }
}
