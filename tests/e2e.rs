//! End-to-end tests of `tally serve`: the real binary on a loopback port with a temporary
//! data directory, spoken to over HTTP, with real wasm plugins and a real redb file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use std::collections::{BTreeMap, HashSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{
    ADMIN_KEY, ANTAVO_CHECKOUT, ANTAVO_FORM, Host, Options, RECYCLED_TYPE, REPAIR_TYPE, answer,
    answering, code, earning, ledger_sum, looping, trapping,
};

fn repair_event(id: &str, customer: &str, at: &str) -> Value {
    json!({
        "id": id,
        "customer": customer,
        "action": "repair",
        "timestamp": at,
        "data": {
            "registrationDate": at,
            "productModel": "Wool coat",
            "brand": "Tally Outdoors",
            "storeId": "STO-01",
            "isFreeRepair": true
        }
    })
}

async fn post_type(host: &Host, key: &str, document: &str) -> (StatusCode, Value) {
    answer(
        host.request(Method::POST, "/v1/event-types", Some(key))
            .header("content-type", "application/json")
            .body(document.to_owned())
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_tenant_types_plugins_events_profile_history_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());

    let health = host
        .request(Method::GET, "/healthz", None)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let key = host.tenant("acme").await;
    assert!(key.starts_with("tly_"));
    // Senders written for Antavo's API pass the key as a query parameter.
    let response = host
        .request(Method::GET, &format!("/v1/tenant?api_key={key}"), None)
        .send()
        .await
        .unwrap();
    let (status, body) = answer(response).await;
    assert_eq!(
        (status, &body["id"]),
        (StatusCode::OK, &json!("acme")),
        "{body}"
    );

    // Voyado's interaction schemas as published, `//` comments included.
    let (status, body) = post_type(&host, &key, REPAIR_TYPE).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "repair");
    assert!(body["contact_card"].as_array().unwrap().len() >= 5);
    let (status, body) = post_type(&host, &key, RECYCLED_TYPE).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = post_type(&host, &key, REPAIR_TYPE).await;
    assert_eq!(status, StatusCode::OK, "replacing answers 200: {body}");
    let (status, body) = host.get("/v1/event-types", &key).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    for id in [
        "checkout",
        "checkout_update",
        "checkout_reject",
        "point_add",
        "point_sub",
        "opt_in",
        "opt_out",
        "repair",
        "recycled",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    let (status, body) = host.get("/v1/event-types/repair", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["display_name"], "Repair");
    assert_eq!(
        body["document"]["jsonSchema"]["properties"]["brand"]["displayName"],
        "Brand"
    );
    let (status, body) = host.get("/v1/event-types/checkout", &key).await;
    assert_eq!((status, &body["builtin"]), (StatusCode::OK, &json!(true)));

    // Plugins: an exact one (5 points on repairs) and the reference plugins.
    let (status, bonus) = host
        .put_wasm("bonus", &key, &earning(5, "repair bonus"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bonus}");
    assert_eq!(bonus["active_version"], 1);
    assert_eq!(bonus["enabled"], true);
    assert_eq!(
        bonus["actions"],
        Value::Null,
        "a new plugin runs for every action"
    );
    assert_eq!(bonus["versions"][0]["sha256"].as_str().unwrap().len(), 64);
    let (status, again) = host
        .put_wasm("bonus", &key, &earning(5, "repair bonus"))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the same module again changes nothing: {again}"
    );
    assert_eq!(again["versions"].as_array().unwrap().len(), 1);
    let (status, body) = host
        .patch(
            "/v1/plugins/bonus",
            &key,
            &json!({"actions": ["repair"], "priority": 5, "config": {"note": "x"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["actions"], json!(["repair"]));
    for (plugin, priority) in [
        (tally_plugin_wasm::POINTS, 10),
        (tally_plugin_wasm::TIERS, 20),
    ] {
        let (status, body) = host.put_wasm(plugin.name, &key, plugin.wasm).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, _) = host
            .patch(
                &format!("/v1/plugins/{}", plugin.name),
                &key,
                &json!({"priority": priority}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = host.get("/v1/plugins", &key).await;
    assert_eq!(status, StatusCode::OK);
    let order: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["bonus", "points", "tiers"],
        "listed in the order they run"
    );

    // Simulate: what bonus would do, with nothing stored.
    let (status, sim) = host
        .post(
            "/v1/plugins/bonus/simulate",
            &key,
            &repair_event("sim-1", "ada", "2026-11-01T10:00:00Z"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sim}");
    assert_eq!(sim["decision"]["points"][0]["amount"], 5);
    assert_eq!(sim["customer_after"]["points"]["balance"], 5);
    assert_eq!(sim["stored"], false);
    let (status, _) = host.get("/v1/customers/ada", &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a simulation stores nothing");
    let (status, _) = host.get("/v1/events/sim-1", &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Events.
    let (status, first) = host
        .event(&key, &repair_event("r-1", "ada", "2026-11-01T10:00:00Z"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    assert_eq!(first["replayed"], false);
    let event = &first["event"];
    for field in [
        "id",
        "action",
        "label",
        "date",
        "timestamp",
        "customer",
        "points",
        "source",
        "ip_address",
        "user_agent",
    ] {
        assert!(
            event.get(field).is_some(),
            "event attribute {field} missing: {event}"
        );
    }
    assert_eq!(event["date"], "2026-11-01");
    assert_eq!(event["source"], "api");
    assert_eq!(event["ip_address"], "127.0.0.1");
    let entries = first["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["amount"] == 5 && e["reason"] == "repair bonus"),
        "{first}"
    );
    assert_eq!(
        first["points"].as_i64().unwrap(),
        entries
            .iter()
            .map(|e| e["amount"].as_i64().unwrap())
            .sum::<i64>()
    );
    assert_eq!(first["customer"]["id"], "ada");
    assert_eq!(first["customer"]["event_count"], 1);
    assert_eq!(first["errors"], json!([]), "{first}");

    // The Antavo checkout as it stands, and as its form-encoded curl sends it.
    let antavo: Value = serde_json::from_str(ANTAVO_CHECKOUT).unwrap();
    let (status, checkout) = host.event(&key, &antavo).await;
    assert_eq!(status, StatusCode::CREATED, "{checkout}");
    assert!(
        checkout["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["reason"] != "repair bonus"),
        "bonus is subscribed to repairs only: {checkout}"
    );
    let form = host
        .request(Method::POST, "/v1/events", Some(&key))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(ANTAVO_FORM.trim().to_owned())
        .send()
        .await
        .unwrap();
    let (status, form_event) = answer(form).await;
    assert_eq!(status, StatusCode::CREATED, "{form_event}");
    assert_eq!(form_event["event"]["customer"], "374397439743");
    assert_eq!(
        form_event["event"]["data"]["items"][0]["product_name"],
        "Yellow T-Shirt"
    );
    assert!(
        form_event["event"]["id"]
            .as_str()
            .unwrap()
            .starts_with("evt_"),
        "an id is generated"
    );

    for (id, at) in [
        ("r-2", "2026-11-03T10:00:00Z"),
        ("r-3", "2026-11-02T10:00:00Z"),
    ] {
        let (status, body) = host.event(&key, &repair_event(id, "ada", at)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = host
        .event(&key, &json!({"id": "c-ada", "customer": "ada", "action": "checkout", "label": "Web order", "timestamp": "2026-11-04T09:00:00Z", "data": {"transaction_id": "T-9", "total": 99.5}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["event"]["label"], "Web order");

    // Rollback: version 2 earns 7; going back to version 1 earns 5 again.
    let (status, body) = host
        .put_wasm("bonus", &key, &earning(7, "repair bonus"))
        .await;
    assert_eq!(
        (status, &body["active_version"]),
        (StatusCode::CREATED, &json!(2)),
        "{body}"
    );
    let (_, v2) = host
        .event(&key, &repair_event("r-4", "bob", "2026-11-05T10:00:00Z"))
        .await;
    assert!(
        v2["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["amount"] == 7),
        "{v2}"
    );
    let (status, body) = host
        .patch("/v1/plugins/bonus", &key, &json!({"active_version": 1}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, v1) = host
        .event(&key, &repair_event("r-5", "bob", "2026-11-06T10:00:00Z"))
        .await;
    assert!(
        v1["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["amount"] == 5),
        "{v1}"
    );
    let (status, body) = host.get("/v1/plugins/bonus", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["versions"].as_array().unwrap().len(), 2);
    assert_eq!(body["active_version"], 1);
    let (status, body) = host
        .patch("/v1/plugins/bonus", &key, &json!({"active_version": 9}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
    );
    let (status, sim) = host
        .post(
            "/v1/plugins/bonus/simulate?version=2",
            &key,
            &repair_event("sim-2", "bob", "2026-11-07T10:00:00Z"),
        )
        .await;
    assert_eq!(
        (status, &sim["decision"]["points"][0]["amount"]),
        (StatusCode::OK, &json!(7)),
        "{sim}"
    );
    let (_, bob) = host.get("/v1/customers/bob", &key).await;
    // The profile adds what expires next; the plugin's view has the three numbers.
    let mut stored_points = bob["points"].clone();
    stored_points.as_object_mut().unwrap().remove("expiring");
    assert_eq!(
        sim["customer_before"]["points"], stored_points,
        "bob as stored now"
    );
    assert_eq!(
        sim["customer_after"]["points"]["balance"],
        bob["points"]["balance"].as_i64().unwrap() + 7
    );

    // The profile.
    let (status, ada) = host.get("/v1/customers/ada", &key).await;
    assert_eq!(status, StatusCode::OK, "{ada}");
    assert_eq!(ada["event_count"], 4);
    assert_eq!(ada["stats"]["events"]["repair"], 3);
    assert_eq!(ada["stats"]["events"]["checkout"], 1);
    assert_eq!(ada["stats"]["first_event_at"], "2026-11-01T10:00:00Z");
    assert_eq!(ada["stats"]["last_event_at"], "2026-11-04T09:00:00Z");
    let brand = &ada["contact_card"]["repair.brand"];
    assert_eq!(brand["value"], "Tally Outdoors");
    assert_eq!(brand["display_name"], "Brand");
    assert_eq!(
        brand["event_id"], "r-2",
        "the latest repair's value is shown"
    );

    // The history: newest first by default, paginated, filtered by action and time.
    let (status, page) = host.get("/v1/customers/ada/events?limit=2", &key).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c-ada", "r-2"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = host
        .get(
            &format!("/v1/customers/ada/events?limit=2&cursor={cursor}"),
            &key,
        )
        .await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r-3", "r-1"]);
    assert_eq!(page["next_cursor"], Value::Null);
    let (_, page) = host
        .get("/v1/customers/ada/events?action=repair&order=oldest&from=2026-11-02T00:00:00Z&to=2026-11-04T00:00:00Z", &key)
        .await;
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r-3", "r-2"]);
    let (status, body) = host
        .get("/v1/customers/ada/events?order=sideways", &key)
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_query")
    );

    // The ledger: every entry with its event, summing to the balance.
    for customer in ["ada", "bob", "374397439743"] {
        let (_, profile) = host.get(&format!("/v1/customers/{customer}"), &key).await;
        let entries = host.all_ledger(&key, customer).await;
        assert_eq!(
            ledger_sum(&entries),
            profile["points"]["balance"].as_i64().unwrap(),
            "{customer}"
        );
        for entry in &entries {
            assert_eq!(entry["event"]["id"], entry["event_id"]);
        }
    }
    let ledger = host.all_ledger(&key, "ada").await;
    let bonus_entries: Vec<&Value> = ledger.iter().filter(|e| e["plugin"] == "bonus").collect();
    assert_eq!(bonus_entries.len(), 3);
    assert_eq!(bonus_entries[0]["event"]["action"], "repair");

    // One event read back, as stored.
    let (status, body) = host.get("/v1/events/r-1", &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["event"], first["event"]);

    // Events are immutable: no update or delete.
    for method in [Method::PUT, Method::PATCH, Method::DELETE] {
        let response = host
            .request(method, "/v1/events/r-1", Some(&key))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_everything_and_shutdown_commits_what_was_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    post_type(&host, &key, REPAIR_TYPE).await;
    let (status, _) = host.put_wasm("bonus", &key, &earning(3, "bonus")).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = host
        .event(
            &key,
            &repair_event("before-1", "ada", "2026-11-01T10:00:00Z"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, before) = host.get("/v1/customers/ada", &key).await;

    // Many events in flight, then SIGTERM. A plugin that burns its whole fuel budget on
    // opt-outs keeps the writer busy, so the signal comes while requests wait for it: they
    // are finished and committed, and every event answered 201 is on disk.
    host.put_wasm("slow", &key, &looping()).await;
    let (status, _) = host
        .patch("/v1/plugins/slow", &key, &json!({"actions": ["opt_out"]}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut posts = Vec::new();
    for n in 0..40 {
        let request = host
            .request(Method::POST, "/v1/events", Some(&key))
            .json(&json!({"id": format!("flight-{n}"), "customer": "bob", "action": "opt_out"}));
        posts.push(tokio::spawn(async move {
            request.send().await.map(|r| r.status())
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    tokio::task::spawn_blocking(move || host.stop())
        .await
        .unwrap();
    let mut accepted = Vec::new();
    for (n, post) in posts.into_iter().enumerate() {
        if let Ok(Ok(status)) = post.await
            && status == StatusCode::CREATED
        {
            accepted.push(n);
        }
    }

    let host = Host::start(dir.path());
    let (status, after) = host.get("/v1/customers/ada", &key).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the tenant key still works after a restart"
    );
    assert_eq!(after, before);
    for n in &accepted {
        let (status, _) = host.get(&format!("/v1/events/flight-{n}"), &key).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "flight-{n} was accepted, so it must be stored"
        );
    }
    assert!(
        !accepted.is_empty(),
        "requests in flight at SIGTERM are finished"
    );
    {
        let (_, bob) = host.get("/v1/customers/bob", &key).await;
        let stored = host.all_events(&key, "bob").await;
        assert_eq!(stored.len() as u64, bob["event_count"].as_u64().unwrap());
        assert!(stored.len() >= accepted.len());
        assert_eq!(
            ledger_sum(&host.all_ledger(&key, "bob").await),
            bob["points"]["balance"].as_i64().unwrap()
        );
    }
    let (status, body) = host.get("/v1/event-types/repair", &key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = host.get("/v1/plugins/bonus", &key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The plugin is loaded from the store again, and a repeated id is still a replay.
    let (status, body) = host
        .event(
            &key,
            &repair_event("after-1", "ada", "2026-11-03T10:00:00Z"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["points"], 3);
    let (status, body) = host
        .event(
            &key,
            &repair_event("before-1", "ada", "2026-11-01T10:00:00Z"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["replayed"], true);
    let entries = host.all_ledger(&key, "ada").await;
    let (_, profile) = host.get("/v1/customers/ada", &key).await;
    assert_eq!(
        ledger_sum(&entries),
        profile["points"]["balance"].as_i64().unwrap()
    );
    assert_eq!(
        host.all_events(&key, "ada").await.len() as u64,
        profile["event_count"].as_u64().unwrap()
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_admin_key_is_printed_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start_with(
        dir.path(),
        &Options {
            no_admin_key: true,
            ..Options::default()
        },
    );
    let line = host.wait_for_line(|line| line.trim_start().starts_with("tly_admin_"));
    let admin = line.trim().to_owned();
    let (status, body) = host
        .post("/v1/tenants", &admin, &json!({"id": "acme"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.stop();
    let host = Host::start_with(
        dir.path(),
        &Options {
            no_admin_key: true,
            ..Options::default()
        },
    );
    let (status, body) = host.get("/v1/tenants", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"][0]["id"], "acme");
    // Everything a start prints comes before it serves: no key the second time.
    assert!(
        !host.output().iter().any(|line| line.contains("tly_admin_")),
        "{:?}",
        host.output()
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_event_id_awards_once_even_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    host.put_wasm("bonus", &key, &earning(10, "bonus")).await;
    post_type(&host, &key, REPAIR_TYPE).await;

    let event = repair_event("once", "ada", "2026-11-01T10:00:00Z");
    let (status, first) = host.event(&key, &event).await;
    assert_eq!(status, StatusCode::CREATED);
    let response = host
        .request(Method::POST, "/v1/events", Some(&key))
        .json(&event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers().get("tally-replayed").unwrap(), "true");
    let (status, again) = answer(response).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["event"], first["event"]);

    // Eight clients post one new id at the same moment.
    let event = repair_event("race", "bob", "2026-11-01T10:00:00Z");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let request = host
            .request(Method::POST, "/v1/events", Some(&key))
            .json(&event);
        tasks.push(tokio::spawn(async move {
            answer(request.send().await.unwrap()).await
        }));
    }
    let mut created = 0;
    let mut seqs = HashSet::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => assert_eq!(body["replayed"], true),
            other => panic!("{other}: {body}"),
        }
        seqs.insert(body["event"]["seq"].as_u64().unwrap());
    }
    assert_eq!(created, 1, "exactly one request stores the event");
    assert_eq!(seqs.len(), 1, "every request sees the same event");
    let (_, bob) = host.get("/v1/customers/bob", &key).await;
    assert_eq!(bob["event_count"], 1);
    assert_eq!(bob["points"]["balance"], 10, "awarded once");
    assert_eq!(host.all_ledger(&key, "bob").await.len(), 1);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_clients_at_once_keep_every_balance_equal_to_its_ledger() {
    const CLIENTS: usize = 8;
    const EVENTS_PER_CLIENT: usize = 50;
    const CUSTOMERS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    post_type(&host, &key, REPAIR_TYPE).await;
    host.put_wasm("bonus", &key, &earning(3, "bonus")).await;
    for plugin in [tally_plugin_wasm::POINTS, tally_plugin_wasm::TIERS] {
        host.put_wasm(plugin.name, &key, plugin.wasm).await;
    }

    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let requests: Vec<_> = (0..EVENTS_PER_CLIENT)
            .map(|n| {
                let customer = format!("c{}", (client + n) % CUSTOMERS);
                let event = if n % 5 == 0 {
                    json!({"id": format!("e-{client}-{n}"), "customer": customer, "action": "checkout",
                           "timestamp": "2026-11-01T10:00:00Z",
                           "data": {"transaction_id": format!("t-{client}-{n}"), "total": "120"}})
                } else {
                    repair_event(&format!("e-{client}-{n}"), &customer, "2026-11-01T10:00:00Z")
                };
                host.request(Method::POST, "/v1/events", Some(&key)).json(&event)
            })
            .collect();
        clients.push(tokio::spawn(async move {
            let mut stored = Vec::new();
            for request in requests {
                let (status, body) = answer(request.send().await.unwrap()).await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                stored.push(body["event"]["id"].as_str().unwrap().to_owned());
            }
            stored
        }));
    }
    let mut accepted = Vec::new();
    for client in clients {
        accepted.extend(client.await.unwrap());
    }
    assert_eq!(accepted.len(), CLIENTS * EVENTS_PER_CLIENT);

    let mut seen = BTreeMap::new();
    let mut total_events = 0;
    for customer in 0..CUSTOMERS {
        let customer = format!("c{customer}");
        let (status, profile) = host.get(&format!("/v1/customers/{customer}"), &key).await;
        assert_eq!(status, StatusCode::OK);
        let ledger = host.all_ledger(&key, &customer).await;
        assert_eq!(
            ledger_sum(&ledger),
            profile["points"]["balance"].as_i64().unwrap(),
            "{customer}"
        );
        // Every ledger entry's running balance follows from the one before: no lost update.
        let mut balance = 0;
        for entry in &ledger {
            balance += entry["amount"].as_i64().unwrap();
            assert_eq!(entry["balance_after"].as_i64().unwrap(), balance);
        }
        let bonus: i64 = ledger
            .iter()
            .filter(|e| e["plugin"] == "bonus")
            .map(|e| e["amount"].as_i64().unwrap())
            .sum();
        let events = host.all_events(&key, &customer).await;
        assert_eq!(
            bonus,
            3 * events.len() as i64,
            "bonus earns 3 per event, once each"
        );
        assert_eq!(
            events.len() as u64,
            profile["event_count"].as_u64().unwrap()
        );
        for event in events {
            *seen
                .entry(event["id"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        total_events += profile["event_count"].as_u64().unwrap();
    }
    assert_eq!(total_events as usize, accepted.len());
    for id in &accepted {
        assert_eq!(seen.get(id), Some(&1), "{id} is stored exactly once");
    }
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_sees_nothing_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let a = host.tenant("tenant-a").await;
    let b = host.tenant("tenant-b").await;
    post_type(&host, &b, REPAIR_TYPE).await;
    host.put_wasm("secret", &b, &earning(2, "b only")).await;
    let (status, _) = host
        .event(
            &b,
            &repair_event("b-event", "b-customer", "2026-11-01T10:00:00Z"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);

    for path in [
        "/v1/customers/b-customer",
        "/v1/customers/b-customer/events",
        "/v1/customers/b-customer/ledger",
        "/v1/events/b-event",
        "/v1/plugins/secret",
        "/v1/event-types/repair",
    ] {
        let (status, body) = host.get(path, &a).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(code(&body), "not_found");
    }
    let (_, list) = host.get("/v1/plugins", &a).await;
    assert_eq!(list["items"], json!([]));
    let (status, _) = host
        .patch("/v1/plugins/secret", &a, &json!({"enabled": false}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = host
        .post(
            "/v1/plugins/secret/simulate",
            &a,
            &json!({"customer": "x", "action": "opt_in"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A's repair is unknown to A (B's type), and B's event id is A's own, separate event.
    let (status, body) = host
        .event(
            &a,
            &repair_event("b-event", "b-customer", "2026-11-01T10:00:00Z"),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_action")
    );
    let (status, body) = host
        .event(
            &a,
            &json!({"id": "b-event", "customer": "b-customer", "action": "opt_in", "data": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["points"], 0, "B's plugin does not run for A");
    let (_, b_event) = host.get("/v1/events/b-event", &b).await;
    assert_eq!(
        b_event["event"]["action"], "repair",
        "B's event is untouched"
    );
    let (_, b_customer) = host.get("/v1/customers/b-customer", &b).await;
    assert_eq!(b_customer["event_count"], 1);
    assert_eq!(b_customer["points"]["balance"], 2);

    // Keys: none, wrong, or the wrong kind.
    let response = host
        .request(Method::GET, "/v1/customers/x", None)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = host.get("/v1/customers/x", "tly_not_a_key").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNAUTHORIZED, "unauthorized")
    );
    let (status, body) = host.post("/v1/tenants", &a, &json!({"id": "evil"})).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));
    let (status, body) = host.get("/v1/customers/x", ADMIN_KEY).await;
    assert_eq!((status, code(&body)), (StatusCode::FORBIDDEN, "forbidden"));

    // A new key for A: the old one stops working at once.
    let (status, rotated) = host
        .post("/v1/tenants/tenant-a/key", ADMIN_KEY, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_key = rotated["api_key"].as_str().unwrap();
    let (status, _) = host.get("/v1/tenant", &a).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = host.get("/v1/tenant", new_key).await;
    assert_eq!((status, &body["id"]), (StatusCode::OK, &json!("tenant-a")));
    let (status, body) = host
        .post("/v1/tenants", ADMIN_KEY, &json!({"id": "tenant-b"}))
        .await;
    assert_eq!((status, code(&body)), (StatusCode::CONFLICT, "conflict"));
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_right_4xx_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    post_type(&host, &key, REPAIR_TYPE).await;
    let raw = |body: &str, content_type: &str| {
        host.request(Method::POST, "/v1/events", Some(&key))
            .header("content-type", content_type)
            .body(body.to_owned())
    };

    let (status, body) = answer(
        raw("{\"customer\": \"x\",\n \"action\": }", "application/json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_json"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["line"], 2);
    assert!(body["error"]["details"]["column"].as_u64().is_some());

    let cases = [
        (
            json!({"customer": true, "action": "opt_in"}),
            "invalid_event",
            "customer",
        ),
        (
            json!({"customer": "x", "action": 5}),
            "invalid_event",
            "action",
        ),
        (
            json!({"customer": "x", "action": "opt_in", "data": [1]}),
            "invalid_event",
            "data",
        ),
        (
            json!({"customer": "x", "action": "opt_in", "timestamp": "yesterday"}),
            "invalid_event",
            "timestamp",
        ),
        (
            json!({"customer": "x", "action": "opt_in", "id": "x".repeat(129)}),
            "invalid_event",
            "id",
        ),
        (
            json!({"customer": "x", "action": "opt_in", "costumer": "y"}),
            "invalid_event",
            "costumer",
        ),
        (json!({"action": "opt_in"}), "invalid_event", "customer"),
        (
            json!({"customer": "", "action": "opt_in"}),
            "invalid_event",
            "customer",
        ),
    ];
    for (event, expected, field) in cases {
        let (status, body) = host.event(&key, &event).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, expected),
            "{event}: {body}"
        );
        assert_eq!(body["error"]["details"]["field"], field, "{body}");
    }

    let (status, body) = host
        .event(&key, &json!({"customer": "x", "action": "repair", "data": {"brand": 7, "registrationDate": "yesterday"}}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "schema_violation"),
        "{body}"
    );
    let paths: HashSet<&str> = body["error"]["details"]["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains("/brand") && paths.contains("/registrationDate"),
        "every violation by path: {body}"
    );

    let (status, body) = host
        .event(
            &key,
            &json!({"customer": "x", "action": "teleport", "data": {}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_action"),
        "{body}"
    );
    let (status, body) = host
        .event(
            &key,
            &json!({"customer": "x", "action": "checkout", "data": {"total": "abc"}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "schema_violation"),
        "{body}"
    );

    let big = json!({"customer": "x", "action": "opt_in", "data": {"first_name": "x".repeat((1 << 20) + 1000)}});
    let (status, body) = host.event(&key, &big).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
        "{body}"
    );

    let (status, body) = answer(raw("customer=x", "text/plain").send().await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );

    let (status, body) = host
        .put_wasm("broken", &key, b"\0asm\x01\0\0\0garbage")
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin"),
        "{body}"
    );
    let (status, body) = host
        .put_wasm("broken", &key, &wat::parse_str("(module)").unwrap())
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin"),
        "{body}"
    );
    assert!(
        !body["error"]["details"]["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (status, _) = host.get("/v1/plugins/broken", &key).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused module is not stored"
    );
    let (status, body) = host
        .patch("/v1/tenant", &key, &json!({"allow_untyped_events": "yes"}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request"),
        "{body}"
    );

    // A trapping plugin: with `skip` the event stands and the failure is recorded; with
    // `reject` nothing is stored.
    let (status, _) = host.put_wasm("crashy", &key, &trapping()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, skipped) = host
        .event(&key, &repair_event("skip-1", "sam", "2026-11-01T10:00:00Z"))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{skipped}");
    assert_eq!(skipped["errors"][0]["plugin"], "crashy");
    assert_eq!(skipped["errors"][0]["code"], "trap");
    let (status, _) = host
        .patch("/v1/plugins/crashy", &key, &json!({"on_error": "reject"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = host
        .event(
            &key,
            &repair_event("reject-1", "rita", "2026-11-01T10:00:00Z"),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "plugin_rejected"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["plugin"], "crashy");
    assert_eq!(body["error"]["details"]["code"], "trap");
    let (status, _) = host.get("/v1/events/reject-1", &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Nothing of any refused event was stored.
    for customer in ["x", "rita"] {
        let (status, _) = host.get(&format!("/v1/customers/{customer}"), &key).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{customer}");
    }
    let (_, sam) = host.get("/v1/customers/sam", &key).await;
    assert_eq!(sam["event_count"], 1);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untyped_events_batches_and_csv_imports() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;

    let swim = json!({"customer": "kim", "action": "swim", "data": {"meters": 1500}});
    let (status, body) = host.event(&key, &swim).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_action")
    );
    let (status, body) = host
        .patch("/v1/tenant", &key, &json!({"allow_untyped_events": true}))
        .await;
    assert_eq!(
        (status, &body["allow_untyped_events"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    let (status, body) = host.event(&key, &swim).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, body) = host
        .post("/v1/events/batch", &key, &json!([
            {"id": "b1", "customer": "kim", "action": "opt_in", "data": {"email": "kim@example.com"}},
            {"id": "b2", "customer": "kim", "action": "checkout", "data": {"total": "x"}},
            {"id": "b1", "customer": "kim", "action": "opt_in"},
        ]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let statuses: Vec<u64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 422, 200]);
    assert_eq!(body["results"][1]["error"]["code"], "schema_violation");

    let csv = include_str!("../examples/events/opt-in.csv");
    let import = || {
        host.request(Method::POST, "/v1/events/import", Some(&key))
            .header("content-type", "text/csv")
            .body(csv)
    };
    let (status, body) = answer(import().send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["stored"].as_u64(), body["failed"].as_u64()),
        (Some(3), Some(0)),
        "{body}"
    );
    let (_, body) = answer(import().send().await.unwrap()).await;
    assert_eq!(
        body["replayed"], 3,
        "importing the same file again stores nothing twice"
    );
    let (status, bill) = host
        .get("/v1/customers/bill.overback@example.com", &key)
        .await;
    assert_eq!(status, StatusCode::OK, "{bill}");
    assert_eq!(bill["attributes"]["first_name"], "Bill");
    assert_eq!(bill["attributes"]["opted_in"], true);
    let (_, event) = host.get("/v1/events/345454656512", &key).await;
    assert_eq!(event["event"]["source"], "import");

    // Triggers plugins send wait in the tenant's outbox, in order.
    // The imported opt-ins sent the host's LoyaltyOptIn before: the plugin's come after.
    let (_, earlier) = host.get("/v1/triggers?limit=500", &key).await;
    let start = earlier["items"]
        .as_array()
        .unwrap()
        .last()
        .map_or(0, |trigger| trigger["seq"].as_u64().unwrap());
    let notify = answering(r#"{"triggers": [{"name": "Notified", "data": {"via": "wat"}}]}"#);
    host.put_wasm("notify", &key, &notify).await;
    for id in ["n1", "n2"] {
        let (status, body) = host
            .event(
                &key,
                &json!({"id": id, "customer": "kim", "action": "swim", "data": {"meters": 50}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["triggers"][0]["name"], "Notified");
    }
    let (status, outbox) = host
        .get(&format!("/v1/triggers?after={start}&limit=1"), &key)
        .await;
    assert_eq!(status, StatusCode::OK, "{outbox}");
    assert_eq!(outbox["items"][0]["event_id"], "n1");
    assert_eq!(outbox["items"][0]["plugin"], "notify");
    let after = outbox["next_after"].as_u64().unwrap();
    let (_, outbox) = host.get(&format!("/v1/triggers?after={after}"), &key).await;
    let events: Vec<&str> = outbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["n2"]);
    assert_eq!(outbox["next_after"], Value::Null);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_sets_up_the_reference_plugins_and_runs_again_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        demo: true,
        ..Options::default()
    };
    let mut host = Host::start_with(dir.path(), &options);
    host.wait_for_line(|line| line.contains("Serving until Ctrl-C"));
    let output = host.output().join("\n");
    assert!(output.contains("Customers:"), "{output}");
    assert!(
        !output.contains("refused"),
        "every sample event is accepted: {output}"
    );
    let key_line = host
        .output()
        .into_iter()
        .find(|l| l.starts_with("Demo API key"))
        .unwrap();
    let key = key_line.rsplit(' ').next().unwrap().to_owned();
    let (status, plugins) = host.get("/v1/plugins", &key).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = plugins["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["points", "tiers", "circular", "engagement"]);
    for customer in ["374397439743", "ada", "grace"] {
        let (status, profile) = host.get(&format!("/v1/customers/{customer}"), &key).await;
        assert_eq!(status, StatusCode::OK, "{customer}");
        let entries = host.all_ledger(&key, customer).await;
        assert_eq!(
            ledger_sum(&entries),
            profile["points"]["balance"].as_i64().unwrap()
        );
    }
    let (_, before) = host.get("/v1/customers/ada", &key).await;
    host.stop();

    let mut host = Host::start_with(dir.path(), &options);
    host.wait_for_line(|line| line.contains("Serving until Ctrl-C"));
    let output = host.output().join("\n");
    assert!(output.contains("(already posted)"), "{output}");
    let key_line = host
        .output()
        .into_iter()
        .find(|l| l.starts_with("Demo API key"))
        .unwrap();
    let key = key_line.rsplit(' ').next().unwrap().to_owned();
    let (_, after) = host.get("/v1/customers/ada", &key).await;
    assert_eq!(after, before, "running the demo again changes nothing");
    let (_, plugins) = host.get("/v1/plugins", &key).await;
    for plugin in plugins["items"].as_array().unwrap() {
        assert_eq!(plugin["versions"].as_array().unwrap().len(), 1, "{plugin}");
    }
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        args: vec![
            "--queue-capacity".into(),
            "1".into(),
            "--max-batch".into(),
            "1".into(),
        ],
        ..Options::default()
    };
    let host = Host::start_with(dir.path(), &options);
    let key = host.tenant("acme").await;
    // Each event takes the writer a whole fuel budget, so the queue of one fills up.
    host.put_wasm("slow", &key, &looping()).await;
    let mut tasks = Vec::new();
    for n in 0..24 {
        let request = host
            .request(Method::POST, "/v1/events", Some(&key))
            .json(&json!({"id": format!("q-{n}"), "customer": "ada", "action": "opt_in"}));
        tasks.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            let (status, body) = answer(response).await;
            (n, status, retry_after, body)
        }));
    }
    let mut stored = Vec::new();
    let mut overloaded = 0;
    for task in tasks {
        let (n, status, retry_after, body) = task.await.unwrap();
        match status {
            StatusCode::CREATED => {
                let failure = body["errors"][0]["code"].as_str().unwrap();
                assert!(
                    matches!(failure, "out_of_fuel" | "deadline_exceeded"),
                    "{body}"
                );
                stored.push(n);
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(code(&body), "overloaded");
                assert_eq!(retry_after.as_deref(), Some("1"));
                overloaded += 1;
            }
            other => panic!("{other}: {body}"),
        }
    }
    assert!(overloaded > 0, "some requests found the queue full");
    assert!(!stored.is_empty());
    let (_, ada) = host.get("/v1/customers/ada", &key).await;
    assert_eq!(
        ada["event_count"].as_u64().unwrap() as usize,
        stored.len(),
        "a 503 stored nothing"
    );
    host.stop();
}

/// The host keeps keys and event types in memory; a change to either takes effect on the
/// very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_posted_after_events_applies_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let repair = repair_event("r1", "ada", "2026-11-20T10:00:00Z");

    // Checked once without the type (which caches the tenant's types)...
    let (status, body) = host.event(&key, &repair).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_action")
    );
    // ... then the type is posted, and the same event is taken.
    let (status, body) = post_type(&host, &key, REPAIR_TYPE).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = host.event(&key, &repair).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.stop();
}
