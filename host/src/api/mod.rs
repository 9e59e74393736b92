//! The HTTP API (axum, JSON). One module per resource, each with its `router()`;
//! [`app`] puts them together with the body limits, the request trace layer and the
//! fallbacks, and [`serve`] runs it with graceful shutdown.
//!
//! Handlers only translate: they authenticate, read the body, call the service (blocking
//! work off the async runtime) and shape the answer. Every error is an [`ApiError`] in the one
//! shape `{"error": {"code", "message", "details"}}`. The route reference with a curl example
//! per route is docs/api.md.

mod admin;
mod customers;
mod error;
mod event_types;
mod events;
mod exports;
mod extract;
mod imports;
mod plugins;
mod rewards;
mod segment;
mod tenants;
mod views;
mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderName;
use axum::http::Request;
use axum::routing::get;
use serde_json::json;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, TraceLayer};

pub use self::error::{ApiError, error_body, status_of};
use crate::service::{ErrorKind, Service};

/// What every handler gets: the service.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The host.
    pub service: Arc<Service>,
}

impl AppState {
    /// State around a service.
    pub fn new(service: Arc<Service>) -> AppState {
        AppState { service }
    }
}

/// The header that carries a request's id, both ways: a caller's own is kept, otherwise the
/// host gives one; it is answered back and on every log line of the request.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids `req_<process>_<n>`: a random process prefix (ids of two hosts, or of one
/// host before and after a restart, do not collide) and a counter, so making one costs no
/// system call.
#[derive(Debug, Clone)]
struct RequestIds {
    process: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> RequestIds {
        let process = crate::auth::random_hex(4).unwrap_or_else(|_| "00000000".to_owned());
        RequestIds {
            process: process.into(),
            next: Arc::default(),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        axum::http::HeaderValue::from_str(&format!("req_{}_{n}", self.process))
            .ok()
            .map(RequestId::new)
    }
}

/// The whole API.
pub fn app(state: AppState) -> Router {
    let config = state.service.config();
    let json_limit = config.max_body_bytes;
    let wasm_limit = config.max_wasm_bytes;
    Router::new()
        .route("/healthz", get(healthz))
        .merge(tenants::router())
        .merge(event_types::router())
        .merge(plugins::router(wasm_limit))
        .merge(events::router())
        .merge(customers::router())
        .merge(rewards::router())
        .merge(webhooks::router())
        .merge(segment::router())
        .merge(exports::router())
        .merge(imports::router())
        .merge(admin::router(config.test_clock))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Routes that take modules set their own, larger limit; this is everyone else's.
        .layer(DefaultBodyLimit::max(json_limit))
        // Layers run bottom to top: the id is set first, then traced, then answered.
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(
            // The span names method, path and request id only: a query may carry an
            // `api_key`. Every line logged while a request is answered carries its span.
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<axum::body::Body>| {
                    let id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|id| id.to_str().ok())
                        .unwrap_or_default();
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                })
                // A 503 under load is the queue working as meant, not a failure to shout
                // about; internal errors are logged where they are answered.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), RequestIds::default()))
        .with_state(state)
}

async fn healthz() -> axum::Json<serde_json::Value> {
    axum::Json(json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        "not_found",
        "no such route; see docs/api.md",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting, lets the
/// requests in flight finish, and waits until the writer has committed and answered every
/// event it accepted.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Arc<Service>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = app(AppState::new(service.clone()));
    let clock = tokio::spawn(crate::service::run_clock(service.clone()));
    let webhooks = tokio::spawn(crate::service::run_webhooks(service.webhooks.clone()));
    let imports = tokio::spawn(crate::service::run_imports(service.clone()));
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // The clock stops first: what it queued is committed with the rest; what it did not
    // queue stays due in the store for the next start.
    clock.abort();
    // Delivery stops where it is: its cursor is in the store, so the next start goes on
    // (a trigger whose answer was lost is sent again, with the same webhook-id).
    webhooks.abort();
    // An import stops between chunks: what it queued is committed with the rest, and the
    // next start resumes at its last stored progress (rows read again are replays).
    imports.abort();
    // Whatever the server's outcome, everything the writer accepted is committed.
    let stopping = service.clone();
    if let Err(error) = tokio::task::spawn_blocking(move || stopping.shutdown()).await {
        tracing::error!(%error, "stopping the writer failed");
    }
    served
}
