//! An operator registers an event by hand for a tenant, with the admin key: stored as the
//! tenant's, with source `platform` and who did it in `data.admin`.
//!
//! Run with `cargo test --test operator`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::json;
use support::{ADMIN_KEY, Host, answer, code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_registers_an_event_for_a_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let post = |path: &str, key: &str, body: serde_json::Value| {
        host.request(Method::POST, path, Some(key))
            .json(&body)
            .send()
    };
    let (status, body) = answer(
        post(
            "/v1/tenants/acme/events",
            ADMIN_KEY,
            json!({"id": "manual-1", "customer": "ada", "action": "point_add",
                   "admin": "support@acme", "data": {"points": 50}}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["event"]["source"], "platform", "{body}");
    assert_eq!(body["event"]["data"]["admin"], "support@acme", "{body}");
    let (_, event) = host.get("/v1/events/manual-1", &key).await;
    assert_eq!(
        event["event"]["source"], "platform",
        "the tenant sees it: {event}"
    );

    // A tenant's key cannot, and an unknown tenant is not there.
    let (status, body) = answer(
        post(
            "/v1/tenants/acme/events",
            &key,
            json!({"customer": "ada", "action": "opt_in"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{body}"
    );
    let (status, _) = answer(
        post(
            "/v1/tenants/nobody/events",
            ADMIN_KEY,
            json!({"customer": "ada", "action": "opt_in"}),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.stop();
}
