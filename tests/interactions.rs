//! Sitecore's interaction attributes end to end: the swim example from the Sitecore seed,
//! posted with a channel, a campaign, goals and an engagement value, is stored and returned
//! with them, filtered by them, shown to plugins, exported, and summed on the profile.
//!
//! Run with `cargo test --test interactions`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use reqwest::StatusCode;
use serde_json::json;
use support::{Host, code};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swim_carries_its_channel_campaign_goals_and_engagement_value() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("usms").await;
    let (status, body) = host
        .patch("/v1/tenant", &key, &json!({"allow_untyped_events": true}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = host
        .put_wasm("echo", &key, tally_plugin_wasm::HOSTILE.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.patch(
        "/v1/plugins/echo",
        &key,
        &json!({"config": {"mode": "echo"}}),
    )
    .await;

    // A swim from the Swim.com watch, as the seed describes it.
    let swim = json!({
        "id": "swim-1", "customer": "member-1042", "action": "swim", "label": "Pool swim",
        "timestamp": "2026-11-30T07:15:00Z",
        "channel": "swim.com watch", "campaign": "go-the-distance-2026",
        "goals": ["first-5k-month", "personal-record"], "engagement_value": 25,
        "data": {"distance_m": 2500, "duration_s": 3000, "pace_per_100m_s": 120,
                 "club": "Tamalpais Aquatic Masters", "personal_record": true}
    });
    let (status, body) = host.event(&key, &swim).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let event = &body["event"];
    assert_eq!(event["channel"], "swim.com watch", "{body}");
    assert_eq!(event["campaign"], "go-the-distance-2026", "{body}");
    assert_eq!(event["goals"], json!(["first-5k-month", "personal-record"]));
    // The plugin saw them through the SDK.
    assert_eq!(
        body["triggers"][0]["data"]["interaction"],
        json!({"channel": "swim.com watch", "campaign": "go-the-distance-2026",
               "goals": ["first-5k-month", "personal-record"], "engagement_value": "25"}),
        "{body}"
    );
    let (status, body) = host
        .event(&key, &json!({"id": "swim-2", "customer": "member-1042", "action": "swim",
                             "channel": "app", "engagement_value": "7.5", "data": {"distance_m": 1000}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (_, profile) = host.get("/v1/customers/member-1042", &key).await;
    assert_eq!(profile["summary"]["engagement_value"], "32.5", "{profile}");
    let (_, watch) = host
        .get(
            "/v1/customers/member-1042/events?channel=swim.com%20watch",
            &key,
        )
        .await;
    assert_eq!(watch["items"].as_array().unwrap().len(), 1, "{watch}");
    assert_eq!(watch["items"][0]["id"], "swim-1");
    let (_, campaign) = host
        .get(
            "/v1/customers/member-1042/events?campaign=go-the-distance-2026",
            &key,
        )
        .await;
    assert_eq!(campaign["items"].as_array().unwrap().len(), 1, "{campaign}");
    let response = host
        .request(
            reqwest::Method::GET,
            "/v1/exports/events?channel=app",
            Some(&key),
        )
        .send()
        .await
        .unwrap();
    let exported = response.text().await.unwrap();
    assert_eq!(exported.lines().count(), 1, "{exported}");
    assert!(
        exported.contains("\"engagement_value\":\"7.5\""),
        "{exported}"
    );

    for (field, value) in [
        ("goals", json!("one")),
        ("engagement_value", json!("a lot")),
        ("channel", json!(5)),
    ] {
        let mut bad = json!({"customer": "member-1042", "action": "swim"});
        bad[field] = value;
        let (status, body) = host.event(&key, &bad).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_event"),
            "{field}: {body}"
        );
    }
    host.stop();
}
