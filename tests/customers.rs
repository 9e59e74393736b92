//! Customers end to end: profiles written through the API, checked against the tenant's
//! customer schema and recorded in the history; membership that decides who earns.
//!
//! Run with `cargo test --test customers`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Host, answer, code};

async fn write(
    host: &Host,
    key: &str,
    method: Method,
    customer: &str,
    body: &Value,
) -> (StatusCode, Value) {
    answer(
        host.request(method, &format!("/v1/customers/{customer}"), Some(key))
            .json(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_are_written_checked_against_the_schema_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let schema = json!({
        "type": "object",
        "properties": {
            "email": {"type": "string", "pattern": "@"},
            "language": {"enum": ["en", "sv"]},
            "prefs": {"type": "object", "properties": {"news": {"type": "boolean"}, "sms": {"type": "boolean"}}}
        },
        "required": ["email"]
    });
    let (status, body) = host
        .patch("/v1/tenant", &key, &json!({"customer_schema": schema}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = host
        .patch(
            "/v1/tenant",
            &key,
            &json!({"customer_schema": {"type": "objekt"}}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a schema that cannot be used: {body}"
    );

    let (status, body) = write(
        &host,
        &key,
        Method::PUT,
        "ann",
        &json!({"attributes": {"email": "ann@example.com", "language": "sv", "prefs": {"news": true}}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["customer"]["attributes"]["language"], "sv");

    // Refused whole, with the field, and nothing stored.
    let (status, body) = write(
        &host,
        &key,
        Method::PATCH,
        "ann",
        &json!({"attributes": {"language": "xx"}}),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "schema_violation"),
        "{body}"
    );
    assert_eq!(
        body["error"]["details"]["violations"][0]["path"], "/language",
        "{body}"
    );
    let (status, body) = write(
        &host,
        &key,
        Method::PUT,
        "ann",
        &json!({"attributes": {"language": "en"}}),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "schema_violation"),
        "a whole profile needs its email: {body}"
    );
    let (status, body) = write(
        &host,
        &key,
        Method::PATCH,
        "ann",
        &json!({"attributes": {}, "extra": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (_, ann) = host.get("/v1/customers/ann", &key).await;
    assert_eq!(ann["event_count"], 1, "{ann}");

    // A merge patch: objects merge, null removes.
    let (status, body) = write(
        &host,
        &key,
        Method::PATCH,
        "ann",
        &json!({"attributes": {"prefs": {"sms": false}, "language": null}, "id": "profile-2"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let attributes = &body["customer"]["attributes"];
    assert_eq!(
        attributes["prefs"],
        json!({"news": true, "sms": false}),
        "{attributes}"
    );
    assert_eq!(attributes.get("language"), None, "{attributes}");
    assert_eq!(attributes["email"], "ann@example.com");
    // The same write again is a replay.
    let (status, _) = write(
        &host,
        &key,
        Method::PATCH,
        "ann",
        &json!({"attributes": {"prefs": {"sms": false}, "language": null}, "id": "profile-2"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // Both writes are in the history, for plugins and replays.
    let actions: Vec<Value> = host
        .all_events(&key, "ann")
        .await
        .into_iter()
        .map(|event| event["action"].clone())
        .collect();
    assert_eq!(actions, [json!("profile_update"), json!("profile_update")]);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_earn_where_the_tenant_requires_membership() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let (status, body) = host
        .put_wasm("points", &key, tally_plugin_wasm::POINTS.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.patch("/v1/plugins/points", &key, &json!({"config": {"rate": 1}}))
        .await;
    let (status, body) = host
        .patch("/v1/tenant", &key, &json!({"membership_required": true}))
        .await;
    assert_eq!(
        (status, &body["membership_required"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );

    let checkout = |id: &str| json!({"id": id, "customer": "cat", "action": "checkout", "data": {"transaction_id": id, "total": 40}});
    let (status, body) = host.event(&key, &checkout("T1")).await;
    assert_eq!(status, StatusCode::CREATED, "the event is stored: {body}");
    assert_eq!(body["points"], 0, "{body}");
    assert_eq!(body["errors"][0]["code"], "not_a_member", "{body}");
    assert_eq!(
        body["customer"]["member"],
        json!(false),
        "not a member: {body}"
    );

    let (status, body) = host
        .event(
            &key,
            &json!({"customer": "cat", "action": "opt_in", "data": {"email": "cat@example.com"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["triggers"][0]["name"], "LoyaltyOptIn", "{body}");
    assert_eq!(body["customer"]["member"], true, "{body}");
    let (_, body) = host.event(&key, &checkout("T2")).await;
    assert_eq!(body["points"], 40, "a member earns: {body}");

    let (_, body) = host
        .event(
            &key,
            &json!({"customer": "cat", "action": "opt_out", "data": {}}),
        )
        .await;
    assert_eq!(body["triggers"][0]["name"], "LoyaltyOptOut", "{body}");
    let (_, body) = host.event(&key, &checkout("T3")).await;
    assert_eq!(body["points"], 0, "{body}");
    let (_, cat) = host.get("/v1/customers/cat", &key).await;
    assert_eq!(cat["points"]["balance"], 40, "{cat}");
    // What a marketer reads.
    let summary = &cat["summary"];
    assert_eq!(
        (
            &summary["purchases"],
            &summary["total_spend"],
            &summary["average_order"]
        ),
        (&json!(3), &json!("120"), &json!(40.0)),
        "{summary}"
    );
    assert_eq!(
        (&summary["points_earned"], &summary["member"]),
        (&json!(40), &json!(false)),
        "{summary}"
    );
    assert!(
        summary["last_purchase_at"].is_string() && summary["last_seen_at"].is_string(),
        "{summary}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_are_listed_by_condition_and_found_by_email() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let other = host.tenant("other").await;
    for (customer, email, language) in [
        ("c1", "Ann@Example.com", "sv"),
        ("c2", "bob@example.com", "en"),
        ("c3", "ann@example.com ", "sv"),
        ("c4", "dan@example.com", "sv"),
    ] {
        let (status, body) = write(
            &host,
            &key,
            Method::PUT,
            customer,
            &json!({"attributes": {"email": email, "language": language}}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    write(
        &host,
        &other,
        Method::PUT,
        "x1",
        &json!({"attributes": {"email": "ann@example.com"}}),
    )
    .await;

    // An email finds every customer that has it, whatever its case, in this tenant only.
    let (status, body) = host.get("/v1/customers?email=ANN@example.com", &key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c3"], "{body}");
    // An email changed leaves the index.
    write(
        &host,
        &key,
        Method::PATCH,
        "c3",
        &json!({"attributes": {"email": "cyd@example.com"}}),
    )
    .await;
    let (_, body) = host.get("/v1/customers?email=ann@example.com", &key).await;
    assert_eq!(body["items"].as_array().unwrap().len(), 1, "{body}");
    let (_, body) = host.get("/v1/customers?email=cyd@example.com", &key).await;
    assert_eq!(body["items"][0]["id"], "c3", "{body}");

    // Conditions and pages.
    let (_, body) = host
        .get("/v1/customers?attribute.language=sv&limit=2", &key)
        .await;
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c3"], "{body}");
    let cursor = body["next_cursor"]
        .as_str()
        .expect("another page")
        .to_owned();
    let (_, body) = host
        .get(
            &format!("/v1/customers?attribute.language=sv&limit=2&cursor={cursor}"),
            &key,
        )
        .await;
    assert_eq!(body["items"][0]["id"], "c4", "{body}");
    assert_eq!(body["next_cursor"], Value::Null, "{body}");
    let (status, body) = host.get("/v1/customers?colour=red", &key).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query"),
        "{body}"
    );
    host.stop();
}
