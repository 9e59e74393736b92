//! Segment's HTTP Tracking API end to end: messages as Segment's spec shows them, sent with
//! the tenant's key as the write key (HTTP Basic), become events the reference plugins earn
//! on; identify writes the profile; a tenant's mapping reads its own events.
//!
//! Run with `cargo test --test segment`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Host, answer, code};

async fn segment(host: &Host, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
    let write_key = base64::engine::general_purpose::STANDARD.encode(format!("{key}:"));
    answer(
        host.request(Method::POST, &format!("/v1/segment/{path}"), None)
            .header("authorization", format!("Basic {write_key}"))
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_messages_become_events_the_plugins_earn_on() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let (status, body) = host
        .put_wasm("points", &key, tally_plugin_wasm::POINTS.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.patch("/v1/plugins/points", &key, &json!({"config": {"rate": 1}}))
        .await;

    // Segment's identify example.
    let (status, body) = segment(
        &host,
        &key,
        "identify",
        &json!({
            "anonymousId": "507f191e810c19729de860ea",
            "context": {"ip": "8.8.8.8", "userAgent": "Mozilla/5.0 (Macintosh)"},
            "messageId": "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
            "receivedAt": "2015-02-23T22:28:55.387Z",
            "sentAt": "2015-02-23T22:28:55.111Z",
            "timestamp": "2015-02-23T22:28:55.111Z",
            "traits": {"name": "Peter Gibbons", "email": "peter@example.com", "plan": "premium", "logins": 5},
            "type": "identify",
            "userId": "97980cfea0067",
            "version": "1.1"
        }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["event"]["action"], "profile_update", "{body}");
    assert_eq!(body["event"]["ip_address"], "8.8.8.8", "{body}");
    assert_eq!(body["event"]["source"], "segment", "{body}");
    assert_eq!(
        body["customer"]["attributes"]["email"], "peter@example.com",
        "{body}"
    );

    // Segment's Order Completed example (e-commerce spec), for the same user.
    let order = json!({
        "type": "track",
        "userId": "97980cfea0067",
        "messageId": "ajs-order-50314b8e",
        "timestamp": "2015-02-24T10:00:00.250Z",
        "event": "Order Completed",
        "properties": {
            "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
            "order_id": "50314b8e9bcf000000000000",
            "affiliation": "Google Store",
            "total": 27.50, "subtotal": 22.50, "revenue": 25.00, "shipping": 3, "tax": 2,
            "discount": 2.5, "coupon": "hasbros", "currency": "USD",
            "products": [
                {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32", "name": "Monopoly: 3rd Edition",
                 "price": 19, "quantity": 1, "category": "Games"},
                {"product_id": "505bd76785ebb509fc183733", "sku": "46493-32", "name": "Uno Card Game",
                 "price": 3, "quantity": 2, "category": "Games"}
            ]
        }
    });
    let (status, body) = segment(&host, &key, "track", &order).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["event"]["action"], "checkout", "{body}");
    assert_eq!(body["event"]["label"], "Order Completed", "{body}");
    assert_eq!(
        body["event"]["data"]["transaction_id"],
        "50314b8e9bcf000000000000"
    );
    assert_eq!(
        body["event"]["data"]["items"][1]["product_name"],
        "Uno Card Game"
    );
    assert_eq!(body["customer"]["points"]["balance"], 27, "{body}");
    // messageId is the idempotent id.
    let (status, again) = segment(&host, &key, "track", &order).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["replayed"], true, "{again}");

    // A batch: a refund of that order, an event of the tenant's own mapping, and one bad message.
    let (status, body) = host
        .patch(
            "/v1/tenant",
            &key,
            &json!({"segment": {"events": {"Review Written": {"action": "point_add", "data": {"points": "reward.points"}}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = segment(
        &host,
        &key,
        "batch",
        &json!({"batch": [
            {"type": "track", "userId": "97980cfea0067", "messageId": "refund-1",
             "event": "Order Refunded", "properties": {"order_id": "50314b8e9bcf000000000000"}},
            {"type": "track", "userId": "97980cfea0067", "messageId": "review-1",
             "event": "Review Written", "properties": {"reward": {"points": 15}}},
            {"type": "page", "userId": "97980cfea0067", "name": "Home"}
        ]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (&body["stored"], &body["failed"]),
        (&json!(2), &json!(1)),
        "{body}"
    );
    assert_eq!(
        body["results"][2]["error"]["code"], "unsupported_segment_type",
        "{body}"
    );
    let (_, customer) = host.get("/v1/customers/97980cfea0067", &key).await;
    assert_eq!(
        customer["points"]["balance"], 15,
        "refunded, then reviewed: {customer}"
    );

    // Without a user, or without a key, nothing is stored.
    let (status, body) = segment(&host, &key, "track", &json!({"event": "Order Completed"})).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_event"),
        "{body}"
    );
    let (status, _) = segment(&host, "tly_not_a_key", "track", &order).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    host.stop();
}
