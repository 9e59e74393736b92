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

    // `null` removes the schema: what it refused is taken.
    let (status, body) = host
        .patch("/v1/tenant", &key, &json!({"customer_schema": null}))
        .await;
    assert_eq!(
        (status, &body.get("customer_schema")),
        (StatusCode::OK, &None),
        "{body}"
    );
    let (status, body) = write(
        &host,
        &key,
        Method::PATCH,
        "ann",
        &json!({"attributes": {"language": "xx"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reward_is_never_oversold_and_never_redeemed_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let (status, body) = host
        .put_wasm("points", &key, tally_plugin_wasm::POINTS.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for reward in [
        json!({"id": "tote", "name": "Tote bag", "cost": 100, "stock": 10,
               "perk": {"kind": "voucher", "value": "tote", "valid_days": 30}}),
        json!({"id": "mug", "name": "Mug", "cost": 10, "limit_per_customer": 1,
               "perk": {"kind": "voucher"}}),
        json!({"id": "bike", "name": "Bike", "cost": 100000, "perk": {"kind": "voucher"}}),
    ] {
        let (status, body) = host.post("/v1/rewards", &key, &reward).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = host
        .post(
            "/v1/rewards",
            &key,
            &json!({"id": "tote", "name": "again", "cost": 1, "perk": {"kind": "x"}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "conflict"),
        "{body}"
    );
    let customers: Vec<String> = (0..50).map(|n| format!("c{n:02}")).collect();
    let grants: Vec<Value> = customers
        .iter()
        .map(|customer| json!({"id": format!("grant-{customer}"), "customer": customer, "action": "point_add", "data": {"points": 150}}))
        .collect();
    let (status, body) = host.post("/v1/events/batch", &key, &json!(grants)).await;
    assert_eq!(
        (status, &body["stored"]),
        (StatusCode::OK, &json!(50)),
        "{body}"
    );

    // Fifty customers at once for ten bags.
    let redeem = |customer: &str, reward: &str| {
        host.request(
            Method::POST,
            &format!("/v1/customers/{customer}/rewards/{reward}/redeem"),
            Some(&key),
        )
        .send()
    };
    let keyed = |customer: &str| {
        host.request(
            Method::POST,
            &format!("/v1/customers/{customer}/rewards/tote/redeem"),
            Some(&key),
        )
        .header("idempotency-key", format!("tote-{customer}"))
        .send()
    };
    let answers = futures_all(customers.iter().map(|customer| keyed(customer))).await;
    let mut won = Vec::new();
    for (customer, response) in customers.iter().zip(answers) {
        let (status, body) = answer(response.unwrap()).await;
        match status {
            StatusCode::CREATED => {
                assert_eq!(body["triggers"][0]["name"], "RewardRedeemed", "{body}");
                won.push(customer.clone());
            }
            StatusCode::CONFLICT => assert_eq!(code(&body), "reward_out_of_stock", "{body}"),
            other => panic!("{customer}: {other} {body}"),
        }
    }
    assert_eq!(won.len(), 10, "exactly the stock: {won:?}");
    // A retried redemption is answered as the first, though the stock is gone now.
    let (status, body) = answer(keyed(&won[0]).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, tote) = host.get("/v1/rewards/tote", &key).await;
    assert_eq!(tote["redeemed"], 10, "{tote}");
    for customer in &customers {
        let (_, profile) = host.get(&format!("/v1/customers/{customer}"), &key).await;
        let ledger = host.all_ledger(&key, customer).await;
        assert_eq!(
            profile["points"]["balance"].as_i64(),
            Some(support::ledger_sum(&ledger)),
            "{customer}"
        );
        let expected = if won.contains(customer) { 50 } else { 150 };
        assert_eq!(
            profile["points"]["balance"], expected,
            "{customer}: {profile}"
        );
        if won.contains(customer) {
            assert_eq!(profile["perks"][0]["kind"], "voucher", "{profile}");
            assert!(profile["perks"][0]["valid_until"].is_string(), "{profile}");
        }
    }

    // A limit per customer, a balance too short, a reward that is not there.
    let (status, _) = answer(redeem("c00", "mug").await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = answer(redeem("c00", "mug").await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "reward_limit_reached"),
        "{body}"
    );
    let (_, before) = host.get("/v1/customers/c01", &key).await;
    let (status, body) = answer(redeem("c01", "bike").await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "insufficient_points"),
        "{body}"
    );
    let (status, body) = answer(redeem("c01", "boat").await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "reward_not_found"),
        "{body}"
    );
    let (_, after) = host.get("/v1/customers/c01", &key).await;
    assert_eq!(
        before["event_count"], after["event_count"],
        "refusals store nothing"
    );
    // Posted as an event, a redemption takes the catalogue's cost whatever it says.
    let (status, body) = host
        .event(&key, &json!({"customer": "c02", "action": "reward_redeem", "data": {"reward": "mug", "cost": 0}}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "schema_violation"),
        "{body}"
    );
    let (status, body) = host
        .event(
            &key,
            &json!({"customer": "c02", "action": "reward_redeem", "data": {"reward": "mug"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["points"], -10, "{body}");
    host.stop();
}

/// Runs every future at once and gives their outputs in order.
async fn futures_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.unwrap());
    }
    outputs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_customer_is_forgotten_and_the_books_still_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let (status, body) = host
        .put_wasm("points", &key, tally_plugin_wasm::POINTS.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.patch("/v1/plugins/points", &key, &json!({"config": {"rate": 1}}))
        .await;
    write(
        &host,
        &key,
        Method::PUT,
        "eve",
        &json!({"attributes": {"email": "eve@example.com", "first_name": "Eve"}}),
    )
    .await;
    let (status, body) = host
        .event(&key, &json!({"id": "eve-1", "customer": "eve", "action": "checkout",
                             "data": {"transaction_id": "T-EVE-1", "total": 70, "email": "eve@example.com"}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, before) = host.get("/v1/customers/eve", &key).await;

    let (status, body) = answer(
        host.request(Method::DELETE, "/v1/customers/eve", Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, eve) = host.get("/v1/customers/eve", &key).await;
    assert_eq!(eve["attributes"], json!({}), "{eve}");
    assert_eq!(eve["contact_card"], json!({}), "{eve}");
    assert_eq!(
        eve["points"]["balance"], before["points"]["balance"],
        "the books stay: {eve}"
    );
    let ledger = host.all_ledger(&key, "eve").await;
    assert_eq!(
        eve["points"]["balance"].as_i64(),
        Some(support::ledger_sum(&ledger))
    );
    // No route shows who they were.
    for event in host.all_events(&key, "eve").await {
        assert_eq!(event["data"], json!({}), "{event}");
        assert_eq!(event["ip_address"], Value::Null, "{event}");
    }
    let (_, event) = host.get("/v1/events/eve-1", &key).await;
    assert!(!event.to_string().contains("eve@example.com"), "{event}");
    let (_, found) = host.get("/v1/customers?email=eve@example.com", &key).await;
    assert_eq!(found["items"], json!([]), "{found}");
    let (_, listed) = host.get("/v1/customers", &key).await;
    assert!(!listed.to_string().contains("eve@example.com"), "{listed}");
    // The audit log says it happened, without the id.
    let (_, audit) = host.get("/v1/audit", &key).await;
    assert_eq!(audit["items"][0]["action"], "customer_erased", "{audit}");
    assert_eq!(
        audit["items"][0]["subject"].as_str().unwrap().len(),
        64,
        "{audit}"
    );
    assert!(!audit.to_string().contains("\"eve\""), "{audit}");
    // Only the host writes an erasure; an unknown customer is not there to erase.
    let (status, body) = host
        .event(
            &key,
            &json!({"customer": "eve", "action": "customer_erase"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "reserved_action"),
        "{body}"
    );
    let (status, _) = answer(
        host.request(Method::DELETE, "/v1/customers/nobody", Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Events after it apply as to anyone: the plugin starts again from no state.
    let (status, body) = host
        .event(&key, &json!({"id": "eve-2", "customer": "eve", "action": "checkout", "data": {"transaction_id": "T-EVE-2", "total": 5}}))
        .await;
    assert_eq!(
        (status, &body["points"]),
        (StatusCode::CREATED, &json!(5)),
        "{body}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_moves_points_and_perks_and_later_events_land_on_the_survivor() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let (status, body) = host
        .put_wasm("points", &key, tally_plugin_wasm::POINTS.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.patch(
        "/v1/plugins/points",
        &key,
        &json!({"config": {"rate": 1, "hold_until_accepted": true}}),
    )
    .await;
    let (status, body) = host
        .post(
            "/v1/rewards",
            &key,
            &json!({"id": "mug", "name": "Mug", "cost": 10, "limit_per_customer": 1,
                    "perk": {"kind": "voucher"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Ann, the profile to merge away: points that expire, a held checkout, a perk, an email.
    write(
        &host,
        &key,
        Method::PUT,
        "ann",
        &json!({"attributes": {"email": "ann@example.com", "language": "sv"}}),
    )
    .await;
    let ann_events = [
        json!({"id": "ann-1", "customer": "ann", "action": "point_add",
               "data": {"points": 100, "expires_at": "2099-01-01T00:00:00Z"}}),
        json!({"id": "ann-2", "customer": "ann", "action": "checkout",
               "data": {"transaction_id": "T-ANN", "total": 40}}),
    ];
    for event in &ann_events {
        let (status, body) = host.event(&key, event).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = host
        .post("/v1/customers/ann/rewards/mug/redeem", &key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let perk = body["customer"]["perks"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Bob, the survivor.
    write(
        &host,
        &key,
        Method::PUT,
        "bob",
        &json!({"attributes": {"first_name": "Bob", "language": "en"}}),
    )
    .await;
    let (status, body) = host
        .event(&key, &json!({"id": "bob-1", "customer": "bob", "action": "point_add", "data": {"points": 5}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = host
        .post("/v1/customers/bob/merge", &key, &json!({"from": "ann"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let bob = &body["customer"];
    assert_eq!(bob["points"]["balance"], 95, "5 + 100 - 10: {bob}");
    assert_eq!(bob["points"]["pending"], 40, "the held checkout: {bob}");
    assert_eq!(
        bob["points"]["expiring"][0],
        json!({"amount": 90, "at": "2099-01-01T00:00:00Z"}),
        "ann's points keep their expiry: {bob}"
    );
    assert_eq!(bob["perks"][0]["id"], perk.as_str(), "{bob}");
    assert_eq!(
        bob["attributes"],
        json!({"first_name": "Bob", "language": "en", "email": "ann@example.com"}),
        "the survivor's attributes win, the other's fill the gaps: {bob}"
    );
    assert_eq!(body["triggers"][0]["name"], "CustomerMerged", "{body}");
    // The trigger carries the survivor as the merge left them, whatever happens next.
    let (_, triggers) = host.get("/v1/triggers?limit=500", &key).await;
    let merged = triggers["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|trigger| trigger["name"] == "CustomerMerged")
        .unwrap();
    let snapshot = &merged["customer_snapshot"];
    assert_eq!(snapshot["points"]["balance"], 95, "{merged}");
    assert_eq!(snapshot["summary"]["purchases"], 1, "{merged}");
    assert_eq!(snapshot["summary"]["total_spend"], "40", "{merged}");
    assert_eq!(snapshot["summary"], bob["summary"], "{merged}");
    let (_, ann) = host.get("/v1/customers/ann", &key).await;
    assert_eq!(ann["merged_into"], "bob", "{ann}");
    assert_eq!(ann["points"]["balance"], 0, "{ann}");
    assert_eq!(ann["points"]["pending"], 0, "{ann}");
    assert_eq!(ann["attributes"], json!({}), "{ann}");
    // Each ledger still adds up on its own.
    for (customer, view) in [("ann", &ann), ("bob", bob)] {
        let ledger = host.all_ledger(&key, customer).await;
        let held: i64 = ledger.iter().map(|e| e["held"].as_i64().unwrap_or(0)).sum();
        assert_eq!(
            view["points"]["balance"].as_i64().unwrap()
                + view["points"]["pending"].as_i64().unwrap(),
            support::ledger_sum(&ledger),
            "{customer}: {ledger:?} (held {held})"
        );
    }

    // Asking again is the same merge; merging ann anywhere else, or bob into himself, or
    // someone who is not there, is refused and changes nothing.
    let (status, again) = host
        .post("/v1/customers/bob/merge", &key, &json!({"from": "ann"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["event"]["id"], body["event"]["id"], "{again}");
    host.event(
        &key,
        &json!({"customer": "carl", "action": "point_add", "data": {"points": 1}}),
    )
    .await;
    for (into, from, wanted) in [
        ("carl", "ann", (StatusCode::CONFLICT, "customer_merged")),
        (
            "bob",
            "bob",
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_merge"),
        ),
        ("bob", "nobody", (StatusCode::NOT_FOUND, "not_found")),
    ] {
        let (status, body) = host
            .post(
                &format!("/v1/customers/{into}/merge"),
                &key,
                &json!({"from": from}),
            )
            .await;
        assert_eq!((status, code(&body)), wanted, "{into} from {from}: {body}");
    }
    let (status, body) = host
        .event(
            &key,
            &json!({"customer": "bob", "action": "customer_merge", "data": {"from": "carl"}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "reserved_action"),
        "{body}"
    );

    // Later events for ann are bob's: her checkout accepted, her perk redeemed.
    let (status, body) = host
        .event(
            &key,
            &json!({"id": "ann-3", "customer": "ann", "action": "checkout_accept",
                             "data": {"transaction_id": "T-ANN"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["event"]["customer"], "bob", "{body}");
    assert_eq!(body["customer"]["points"]["balance"], 135, "{body}");
    assert_eq!(body["customer"]["points"]["pending"], 0, "{body}");
    let (status, body) = host
        .post(
            &format!("/v1/customers/ann/perks/{perk}/redeem"),
            &key,
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["triggers"][0]["name"], "CouponRedeemed", "{body}");
    // The email finds the survivor; the alias is not listed.
    let (_, found) = host.get("/v1/customers?email=ann@example.com", &key).await;
    assert_eq!(found["items"][0]["id"], "bob", "{found}");
    let (_, listed) = host.get("/v1/customers", &key).await;
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["bob", "carl"], "{listed}");
    // Both histories stay readable, the merge in each.
    let actions = |events: Vec<Value>| -> Vec<String> {
        events
            .iter()
            .map(|event| event["action"].as_str().unwrap().to_owned())
            .collect()
    };
    let ann_history = actions(host.all_events(&key, "ann").await);
    assert_eq!(ann_history.len(), 5, "{ann_history:?}");
    assert!(
        ann_history.contains(&"customer_merge".to_owned()),
        "{ann_history:?}"
    );
    let bob_history = actions(host.all_events(&key, "bob").await);
    for action in ["customer_merge", "checkout_accept", "perk_redeem"] {
        assert!(bob_history.contains(&action.to_owned()), "{bob_history:?}");
    }

    // After a restart the alias still holds.
    host.stop();
    host = Host::start(dir.path());
    let (status, body) = host
        .event(&key, &json!({"id": "ann-4", "customer": "ann", "action": "point_add", "data": {"points": 1}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["event"]["customer"], "bob", "{body}");
    assert_eq!(body["customer"]["points"]["balance"], 136, "{body}");

    // Forgetting the survivor forgets the person: the alias's history goes too.
    let (status, body) = answer(
        host.request(Method::DELETE, "/v1/customers/bob", Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for customer in ["ann", "bob"] {
        for event in host.all_events(&key, customer).await {
            assert!(
                event["data"] == json!({}) || event["action"] == "customer_erase",
                "{customer}: {event}"
            );
            assert!(
                !event.to_string().contains(&perk),
                "the perk's code: {event}"
            );
        }
    }
    let (_, audit) = host.get("/v1/audit", &key).await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 2, "{audit}");
    host.stop();
}
