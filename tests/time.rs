//! Time in the account, end to end: the real binary on a test clock (`tally serve
//! --test-clock`), moved by `POST /v1/admin/clock`, with the real reference plugins. Each test
//! lives through months of a loyalty program in seconds: points held for the return window
//! and released or cancelled, points expiring on their day, spending taking the soonest
//! lots first, a birthday written once a year across a crash and a downtime.
//!
//! Run with `cargo test --test time`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{ADMIN_KEY, Host, Options, code};

/// The first moment of the tests' calendar: far enough ahead that the test clock, which
/// starts at the real time, is always moved forward to it.
const YEAR: i32 = 2031;

fn day(month: u32, day: u32, time: &str) -> String {
    format!("{YEAR}-{month:02}-{day:02}T{time}Z")
}

fn options() -> Options {
    Options {
        args: vec!["--test-clock".to_owned()],
        ..Options::default()
    }
}

/// Moves the host's clock to `now`; answers once everything due by then is committed.
async fn clock(host: &Host, now: &str) -> Value {
    let (status, body) = host
        .post("/v1/admin/clock", ADMIN_KEY, &json!({"now": now}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn checkout(host: &Host, key: &str, customer: &str, transaction: &str, total: u32, at: &str) {
    let (status, body) = host
        .event(
            key,
            &json!({
                "id": format!("{customer}-{transaction}"),
                "customer": customer,
                "action": "checkout",
                "timestamp": at,
                "data": {"transaction_id": transaction, "total": total},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

async fn post(
    host: &Host,
    key: &str,
    id: &str,
    customer: &str,
    action: &str,
    at: &str,
    data: Value,
) -> Value {
    let (status, body) = host
        .event(
            key,
            &json!({"id": id, "customer": customer, "action": action, "timestamp": at, "data": data}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn points(host: &Host, key: &str, customer: &str) -> Value {
    let (status, profile) = host.get(&format!("/v1/customers/{customer}"), key).await;
    assert_eq!(status, StatusCode::OK, "{profile}");
    profile["points"].clone()
}

/// A tenant running the real `points` plugin with a 14-day return window, points that
/// expire 90 days after they are earned, and the real `birthday` plugin.
async fn program(host: &Host) -> String {
    let key = host.tenant("acme").await;
    let (status, body) = host
        .put_wasm("points", &key, tally_plugin_wasm::POINTS.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = host
        .patch(
            "/v1/plugins/points",
            &key,
            &json!({"config": {"rate": 1, "hold_days": 14, "hold_until_accepted": true, "expires_in_days": 90}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_are_held_released_cancelled_spent_soonest_first_and_expire_on_their_day() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &day(1, 1, "00:00:00")).await;
    let key = program(&host).await;

    // Held for the return window: pending, not spendable.
    checkout(&host, &key, "ada", "T1", 100, &day(1, 1, "00:00:00")).await;
    checkout(&host, &key, "bob", "T2", 50, &day(1, 1, "00:00:00")).await;
    checkout(&host, &key, "cyd", "T3", 100, &day(1, 1, "00:00:00")).await;
    let ada = points(&host, &key, "ada").await;
    assert_eq!(
        (ada["balance"].as_i64(), ada["pending"].as_i64()),
        (Some(0), Some(100)),
        "{ada}"
    );

    // Accepted: released at once.
    clock(&host, &day(1, 3, "00:00:00")).await;
    post(
        &host,
        &key,
        "ada-T1-ok",
        "ada",
        "checkout_accept",
        &day(1, 3, "00:00:00"),
        json!({"transaction_id": "T1"}),
    )
    .await;
    let ada = points(&host, &key, "ada").await;
    assert_eq!(
        (ada["balance"].as_i64(), ada["pending"].as_i64()),
        (Some(100), Some(0)),
        "{ada}"
    );
    let ledger = host.all_ledger(&key, "ada").await;
    assert_eq!(ledger.last().unwrap()["kind"], "release", "{ledger:?}");

    // Rejected while pending: the pending points go, the balance never below zero.
    post(
        &host,
        &key,
        "bob-T2-no",
        "bob",
        "checkout_reject",
        &day(1, 3, "00:00:00"),
        json!({"transaction_id": "T2"}),
    )
    .await;
    let bob = points(&host, &key, "bob").await;
    assert_eq!(
        (
            bob["balance"].as_i64(),
            bob["pending"].as_i64(),
            bob["lifetime"].as_i64()
        ),
        (Some(0), Some(0), Some(0)),
        "{bob}"
    );

    // The window ends: the clock releases the hold at the moment it ends.
    let pass = clock(&host, &day(1, 20, "00:00:00")).await;
    assert!(pass["written"].as_u64().unwrap() >= 1, "{pass}");
    let cyd = points(&host, &key, "cyd").await;
    assert_eq!(
        (cyd["balance"].as_i64(), cyd["pending"].as_i64()),
        (Some(100), Some(0)),
        "{cyd}"
    );
    let events = host.all_events(&key, "cyd").await;
    let release = events
        .iter()
        .find(|event| event["action"] == "points_release")
        .expect("a release event");
    assert_eq!(release["source"], "system");
    assert_eq!(release["timestamp"], day(1, 15, "00:00:00"));

    // Two lots with different expiry; a spend takes the sooner first.
    checkout(&host, &key, "dan", "T4", 100, &day(1, 20, "00:00:00")).await;
    post(
        &host,
        &key,
        "dan-T4-ok",
        "dan",
        "checkout_accept",
        &day(1, 20, "00:00:00"),
        json!({"transaction_id": "T4"}),
    )
    .await;
    clock(&host, &day(2, 19, "00:00:00")).await;
    checkout(&host, &key, "dan", "T5", 100, &day(2, 19, "00:00:00")).await;
    post(
        &host,
        &key,
        "dan-T5-ok",
        "dan",
        "checkout_accept",
        &day(2, 19, "00:00:00"),
        json!({"transaction_id": "T5"}),
    )
    .await;
    post(
        &host,
        &key,
        "dan-spend",
        "dan",
        "point_sub",
        &day(2, 19, "00:00:00"),
        json!({"points": 150}),
    )
    .await;
    let dan = points(&host, &key, "dan").await;
    assert_eq!(dan["balance"], 50, "{dan}");
    assert_eq!(
        dan["expiring"],
        json!([{"amount": 50, "at": day(5, 20, "00:00:00")}]),
        "the lot expiring first was spent first: {dan}"
    );

    // Expiry on the day: cyd's 100 (earned 1 January) expire on 1 April, with a ledger entry
    // and a trigger; ada's too; dan's older lot is spent, so nothing of his expires yet.
    let before_expiry = points(&host, &key, "cyd").await;
    assert_eq!(
        before_expiry["expiring"],
        json!([{"amount": 100, "at": day(4, 1, "00:00:00")}])
    );
    clock(&host, &day(4, 2, "00:00:00")).await;
    let cyd = points(&host, &key, "cyd").await;
    assert_eq!(
        (cyd["balance"].as_i64(), cyd["lifetime"].as_i64()),
        (Some(0), Some(100)),
        "{cyd}"
    );
    let ledger = host.all_ledger(&key, "cyd").await;
    let expired = ledger.last().unwrap();
    assert_eq!(
        (expired["kind"].as_str(), expired["amount"].as_i64()),
        (Some("expire"), Some(-100)),
        "{ledger:?}"
    );
    let expire_event = host
        .all_events(&key, "cyd")
        .await
        .into_iter()
        .find(|event| event["action"] == "point_expire")
        .expect("an expiry event");
    assert_eq!(expire_event["timestamp"], day(4, 1, "00:00:00"));
    assert_eq!(
        expire_event["outcome"]["triggers"][0]["name"], "PointsExpired",
        "the host's own trigger is in the outcome: {expire_event}"
    );
    let (_, triggers) = host.get("/v1/triggers?limit=500", &key).await;
    assert!(
        triggers["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|trigger| trigger["name"] == "PointsExpired" && trigger["customer"] == "cyd"),
        "{triggers}"
    );
    assert_eq!(points(&host, &key, "dan").await["balance"], 50);

    // Moving the clock again writes nothing twice.
    let pass = clock(&host, &day(4, 3, "00:00:00")).await;
    assert_eq!(pass["written"], 0, "{pass}");
    host.stop();

    for customer in ["ada", "bob", "cyd", "dan"] {
        replay_gives_the_same_ledger(dir.path(), "acme", customer);
    }
}

/// Replays a customer's stored history, internal events included, in the order it was
/// applied, through the same plugin versions with the same settings, from a new account, and
/// checks that it writes the same ledger and leaves the same account.
fn replay_gives_the_same_ledger(data: &std::path::Path, tenant: &str, customer: &str) {
    use tally_host::domain::records::RawJson;
    use tally_host::domain::{CustomerId, DueKind, EventId, NewEvent, TenantId, new_account};
    use tally_host::pipeline::{ActivePlugin, evaluate_event};
    use tally_host::runtime::{Limits, Runtime};
    use tally_host::storage::{BatchRead, EventQuery, RedbStore, Store};

    let store = RedbStore::open(data.join("tally.redb")).unwrap();
    let policy = store.tenant(tenant).unwrap().unwrap().policy();
    let runtime = Runtime::new(Limits::default()).unwrap();
    let plugins: Vec<ActivePlugin> = store
        .plugins(tenant)
        .unwrap()
        .into_iter()
        .map(|record| {
            let wasm = store
                .plugin_wasm(tenant, &record.name, record.active_version)
                .unwrap()
                .unwrap();
            ActivePlugin::new(record, Ok(runtime.load(&wasm).unwrap()))
        })
        .collect();
    let query = EventQuery {
        limit: 10_000,
        ..EventQuery::default()
    };
    let mut history = store
        .customer_events(tenant, customer, &query)
        .unwrap()
        .items;
    history.sort_by_key(|event| event.seq);
    let stored_ledger = store.ledger(tenant, customer, 10_000, None).unwrap().items;

    let id = CustomerId::parse(customer).unwrap();
    let mut account = new_account(&id, history[0].received_at);
    let mut states: std::collections::HashMap<String, RawJson> = Default::default();
    let mut ledger = Vec::new();
    for stored in &history {
        let due = stored
            .id
            .strip_prefix("system:")
            .and_then(|rest| rest.split(':').next())
            .and_then(DueKind::from_name);
        let event = NewEvent {
            tenant: TenantId::parse(tenant).unwrap(),
            id: EventId::parse(stored.id.as_str()).unwrap(),
            action: stored.action.clone(),
            label: stored.label.clone(),
            customer: id.clone(),
            timestamp: stored.timestamp,
            source: stored.source.clone(),
            ip_address: stored.ip_address.clone(),
            user_agent: stored.user_agent.clone(),
            data: stored.data.clone(),
            received_at: stored.received_at,
            contact_card: Vec::new(),
            due,
            interaction: None,
        };
        let calls: Vec<_> = plugins
            .iter()
            .filter(|plugin| plugin.runs_for(&event.action))
            .map(|plugin| plugin.call(states.get(&plugin.record.name)))
            .collect();
        let append = evaluate_event(policy, &event, &account, &calls).unwrap();
        for (plugin, state) in &append.plugin_states {
            match state {
                Some(state) => states.insert(plugin.clone(), state.clone()),
                None => states.remove(plugin),
            };
        }
        ledger.extend(append.ledger.iter().map(|new| {
            (
                stored.id.clone(),
                new.plugin.clone(),
                new.entry.amount,
                new.entry.kind(),
                new.held,
                new.entry.expires_at,
            )
        }));
        account = append.customer;
    }
    let stored: Vec<_> = stored_ledger
        .iter()
        .map(|entry| {
            (
                entry.event_id.clone(),
                entry.plugin.clone(),
                entry.amount,
                entry.kind,
                entry.held,
                entry.expires_at,
            )
        })
        .collect();
    assert_eq!(
        ledger, stored,
        "the replay of {customer}'s history wrote another ledger"
    );
    let now = store.customer(tenant, customer).unwrap().unwrap();
    assert_eq!(account.customer.points, now.customer.points, "{customer}");
    assert_eq!(account.lots, now.lots, "{customer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hosts_own_actions_and_future_times_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &day(1, 1, "00:00:00")).await;
    let key = program(&host).await;
    for action in [
        "point_expire",
        "points_release",
        "birthday",
        "tier_review",
        "reminder",
    ] {
        let (status, body) = host
            .event(
                &key,
                &json!({"customer": "eve", "action": action, "data": {}}),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(code(&body), "reserved_action", "{body}");
    }
    let (status, body) = host
        .event(&key, &json!({"customer": "eve", "action": "checkout", "id": "system:birthday:eve:1", "data": {"transaction_id": "X", "total": 1}}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_event"),
        "{body}"
    );
    // Five minutes ahead is clock drift; an hour is a mistake.
    let (status, body) = host
        .event(&key, &json!({"customer": "eve", "action": "checkout", "timestamp": day(1, 1, "01:00:00"), "data": {"transaction_id": "X", "total": 1}}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "timestamp_in_future"),
        "{body}"
    );
    let (status, _) = host.get("/v1/customers/eve", &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing was stored");
    let (status, body) = host
        .event(&key, &json!({"customer": "eve", "action": "checkout", "timestamp": day(1, 1, "00:04:00"), "data": {"transaction_id": "X", "total": 1}}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // Backdating stays allowed (imports need it), and the event keeps when it came.
    let body = post(
        &host,
        &key,
        "old",
        "eve",
        "checkout",
        "2020-01-01T00:00:00Z",
        json!({"transaction_id": "Y", "total": 1}),
    )
    .await;
    assert_eq!(
        body["event"]["received_at"],
        day(1, 1, "00:00:00"),
        "{body}"
    );
    // The clock never goes back.
    let (status, body) = host
        .post(
            "/v1/admin/clock",
            ADMIN_KEY,
            &json!({"now": "2030-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "clock_backwards"),
        "{body}"
    );
    host.stop();

    // Without --test-clock the route does not exist.
    let host = Host::start(dir.path());
    let (status, _) = host
        .post(
            "/v1/admin/clock",
            ADMIN_KEY,
            &json!({"now": "2040-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.stop();
}

async fn birthdays(host: &Host, key: &str, customer: &str) -> Vec<Value> {
    host.all_events(key, customer)
        .await
        .into_iter()
        .filter(|event| event["action"] == "birthday")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_birthday_comes_once_a_year_across_a_crash_and_a_downtime() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &day(1, 1, "00:00:00")).await;
    let key = host.tenant("acme").await;
    let (status, body) = host
        .put_wasm("birthday", &key, tally_plugin_wasm::BIRTHDAY.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = host
        .patch(
            "/v1/tenant",
            &key,
            &json!({"schedule": {"daily_at": "09:00", "birthday": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["schedule"]["daily_at"], "09:00");
    post(
        &host,
        &key,
        "join",
        "eve",
        "opt_in",
        &day(1, 1, "00:00:00"),
        json!({"email": "eve@example.com", "birthday": "1990-03-05"}),
    )
    .await;
    let (_, profile) = host.get("/v1/customers/eve", &key).await;
    assert_eq!(
        profile["scheduled"],
        json!([{"action": "birthday", "kind": "birthday", "at": day(3, 5, "09:00:00")}]),
        "{profile}"
    );

    // On the day, after the daily time: one birthday, at 09:00, from the host.
    clock(&host, &day(3, 5, "12:00:00")).await;
    let found = birthdays(&host, &key, "eve").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["timestamp"], day(3, 5, "09:00:00"));
    assert_eq!(found[0]["source"], "system");
    clock(&host, &day(3, 6, "12:00:00")).await;
    assert_eq!(birthdays(&host, &key, "eve").await.len(), 1);

    // Killed, restarted: still one.
    host.kill();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &day(3, 7, "00:00:00")).await;
    assert_eq!(birthdays(&host, &key, "eve").await.len(), 1);
    host.stop();

    // Down over next year's birthday: caught up on restart, with the moment it was due.
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &format!("{}-03-10T00:00:00Z", YEAR + 1)).await;
    let found = birthdays(&host, &key, "eve").await;
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|event| event["timestamp"] == format!("{}-03-05T09:00:00Z", YEAR + 1)),
        "{found:?}"
    );

    // Killed while the clock's pass may be writing it: once, after the restart.
    let moving = host
        .request(reqwest::Method::POST, "/v1/admin/clock", Some(ADMIN_KEY))
        .json(&json!({"now": format!("{}-03-05T10:00:00Z", YEAR + 2)}))
        .send();
    let _ = tokio::time::timeout(std::time::Duration::from_millis(30), moving).await;
    host.kill();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &format!("{}-03-05T11:00:00Z", YEAR + 2)).await;
    let found = birthdays(&host, &key, "eve").await;
    assert_eq!(found.len(), 3, "{found:?}");
    let (_, profile) = host.get("/v1/customers/eve", &key).await;
    assert_eq!(profile["stats"]["events"]["birthday"], 3, "{profile}");
    assert_eq!(
        profile["perks"].as_array().map(Vec::len),
        Some(3),
        "one perk a birthday: {profile}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_activity_expiry_moves_with_activity_and_is_announced_before() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &day(1, 1, "00:00:00")).await;
    let key = host.tenant("fresh").await;
    let (status, body) = host
        .put_wasm("points", &key, tally_plugin_wasm::POINTS.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.patch("/v1/plugins/points", &key, &json!({"config": {"rate": 1}}))
        .await;
    let (status, body) = host
        .patch(
            "/v1/tenant",
            &key,
            &json!({
                "points_expiry": {"policy": "last_activity", "days": 30},
                "schedule": {"daily_at": "09:00", "expiry_reminder_days": 7},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    checkout(&host, &key, "ida", "T1", 100, &day(1, 1, "00:00:00")).await;
    assert_eq!(
        points(&host, &key, "ida").await["expiring"],
        json!([{"amount": 100, "at": day(1, 31, "00:00:00")}])
    );
    // Activity pushes every lot back.
    clock(&host, &day(1, 20, "00:00:00")).await;
    checkout(&host, &key, "ida", "T2", 10, &day(1, 20, "00:00:00")).await;
    assert_eq!(
        points(&host, &key, "ida").await["expiring"],
        json!([{"amount": 110, "at": day(2, 19, "00:00:00")}])
    );
    clock(&host, &day(2, 13, "00:00:00")).await;
    let reminders: Vec<Value> = host
        .all_events(&key, "ida")
        .await
        .into_iter()
        .filter(|event| event["action"] == "reminder")
        .collect();
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(reminders[0]["timestamp"], day(2, 12, "09:00:00"));
    assert_eq!(reminders[0]["data"]["reason"], "points_expiring");
    assert_eq!(reminders[0]["data"]["amount"], 110);
    assert_eq!(points(&host, &key, "ida").await["balance"], 110);

    clock(&host, &day(2, 18, "00:00:00")).await;
    assert_eq!(points(&host, &key, "ida").await["balance"], 110, "not yet");
    clock(&host, &day(2, 20, "00:00:00")).await;
    let ida = points(&host, &key, "ida").await;
    assert_eq!(
        (ida["balance"].as_i64(), ida["lifetime"].as_i64()),
        (Some(0), Some(110)),
        "{ida}"
    );
    let expired: Vec<i64> = host
        .all_ledger(&key, "ida")
        .await
        .iter()
        .filter(|entry| entry["kind"] == "expire")
        .map(|entry| entry["amount"].as_i64().unwrap())
        .collect();
    // Points that share an expiry share a lot: one entry for both purchases.
    assert_eq!(expired, vec![-110]);
    host.stop();
    replay_gives_the_same_ledger(dir.path(), "fresh", "ida");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_is_lost_at_its_review_when_the_window_falls_short_and_kept_when_not() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &day(1, 10, "10:00:00")).await;
    let key = host.tenant("club").await;
    let (status, body) = host
        .patch(
            "/v1/tenant",
            &key,
            &json!({"schedule": {"tier_review_days": 365}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for (name, wasm, priority, config) in [
        (
            "points",
            tally_plugin_wasm::POINTS.wasm,
            0,
            json!({"rate": 1}),
        ),
        (
            "tiers",
            tally_plugin_wasm::TIERS.wasm,
            10,
            json!({"qualify_by": "window", "review_window_days": 365}),
        ),
    ] {
        let (status, body) = host.put_wasm(name, &key, wasm).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = host
            .patch(
                &format!("/v1/plugins/{name}"),
                &key,
                &json!({"priority": priority, "config": config}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    checkout(&host, &key, "gus", "T1", 2500, &day(1, 10, "10:00:00")).await;
    checkout(&host, &key, "hal", "T2", 2500, &day(1, 10, "10:00:00")).await;
    let (_, gus) = host.get("/v1/customers/gus", &key).await;
    assert_eq!(gus["tier"], "gold", "{gus}");
    assert_eq!(gus["tier_since"], day(1, 10, "10:00:00"));
    let next_review = format!("{}-01-10T10:00:00Z", YEAR + 1);
    assert!(
        gus["scheduled"]
            .as_array()
            .unwrap()
            .iter()
            .any(|due| due["action"] == "tier_review" && due["at"] == next_review),
        "{gus}"
    );
    clock(&host, &day(12, 1, "10:00:00")).await;
    checkout(&host, &key, "hal", "T3", 2100, &day(12, 1, "10:00:00")).await;

    clock(&host, &format!("{}-01-11T00:00:00Z", YEAR + 1)).await;
    let (_, gus) = host.get("/v1/customers/gus", &key).await;
    assert_eq!(gus["tier"], "bronze", "nothing earned in the year: {gus}");
    let review = host
        .all_events(&key, "gus")
        .await
        .into_iter()
        .find(|event| event["action"] == "tier_review")
        .expect("a review");
    assert_eq!(review["timestamp"], next_review);
    let lost = &review["outcome"]["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|trigger| trigger["name"] == "TierLost")
        .expect("TierLost")["data"];
    assert_eq!(
        (lost["tier"].as_str(), lost["new_tier"].as_str()),
        (Some("gold"), Some("bronze")),
        "{lost}"
    );
    // The plugin shows its figures on the profile: what the window holds, what is needed.
    let shown = &gus["plugins"]["tiers"];
    assert_eq!(
        (&shown["tier"], &shown["points_in_window"]),
        (&json!("bronze"), &json!(0)),
        "{gus}"
    );
    assert_eq!(shown["next_tier"], "silver", "{gus}");
    let (_, hal) = host.get("/v1/customers/hal", &key).await;
    assert_eq!(hal["tier"], "gold", "2,100 earned in the window: {hal}");
    assert_eq!(hal["plugins"]["tiers"]["points_in_window"], 2100, "{hal}");
    assert_eq!(
        hal["plugins"]["tiers"]["points_needed_to_maintain_tier"], 0,
        "{hal}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_changed_later_reach_the_customers_already_there() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &day(1, 1, "00:00:00")).await;
    let key = host.tenant("acme").await;
    for customer in ["kim", "lea", "max"] {
        post(
            &host,
            &key,
            &format!("join-{customer}"),
            customer,
            "opt_in",
            &day(1, 1, "00:00:00"),
            json!({"birthday": "04-02"}),
        )
        .await;
    }
    let (_, kim) = host.get("/v1/customers/kim", &key).await;
    assert_eq!(kim["scheduled"], json!([]), "birthdays are off: {kim}");

    let (status, body) = host
        .patch(
            "/v1/tenant",
            &key,
            &json!({"schedule": {"daily_at": "10:00", "birthday": true}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The walk over the tenant's customers runs in the background.
    let wanted = json!([{"action": "birthday", "kind": "birthday", "at": day(4, 2, "10:00:00")}]);
    for customer in ["kim", "lea", "max"] {
        let mut seen = Value::Null;
        for _ in 0..200 {
            seen =
                host.get(&format!("/v1/customers/{customer}"), &key).await.1["scheduled"].clone();
            if seen == wanted {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(seen, wanted, "{customer}");
    }
    clock(&host, &day(4, 3, "00:00:00")).await;
    for customer in ["kim", "lea", "max"] {
        assert_eq!(
            birthdays(&host, &key, customer).await.len(),
            1,
            "{customer}"
        );
    }
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perk_is_redeemed_once_and_never_after_it_expired() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &options());
    clock(&host, &day(1, 1, "00:00:00")).await;
    let key = host.tenant("acme").await;
    let welcome = support::answering(&format!(
        r#"{{"perks": [{{"kind": "coupon", "id": "WELCOME10", "value": 10, "valid_until": "{}"}}]}}"#,
        day(1, 31, "23:59:59")
    ));
    let (status, body) = host.put_wasm("welcome", &key, &welcome).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    host.patch("/v1/plugins/welcome", &key, &json!({"actions": ["opt_in"]}))
        .await;
    for customer in ["ann", "ben"] {
        post(
            &host,
            &key,
            &format!("join-{customer}"),
            customer,
            "opt_in",
            &day(1, 1, "00:00:00"),
            json!({}),
        )
        .await;
    }
    let (_, ann) = host.get("/v1/customers/ann", &key).await;
    assert_eq!(
        ann["perks"][0]["status"],
        Value::Null,
        "active is the default: {ann}"
    );
    assert_eq!(ann["perks"][0]["issued_at"], day(1, 1, "00:00:00"));

    // Redeemed once; a retry with the same Idempotency-Key is that redemption again.
    let redeem = |customer: &str, code: &str, idempotency: Option<&str>| {
        let mut request = host.request(
            reqwest::Method::POST,
            &format!("/v1/customers/{customer}/perks/{code}/redeem"),
            Some(&key),
        );
        if let Some(idempotency) = idempotency {
            request = request.header("idempotency-key", idempotency);
        }
        request.send()
    };
    let (status, body) =
        support::answer(redeem("ann", "WELCOME10", Some("till-1")).await.unwrap()).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["customer"]["perks"][0]["status"], "redeemed", "{body}");
    assert_eq!(body["triggers"][0]["name"], "CouponRedeemed", "{body}");
    assert_eq!(body["triggers"][0]["data"]["value"], 10, "{body}");
    let (status, _) =
        support::answer(redeem("ann", "WELCOME10", Some("till-1")).await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "the same redemption, replayed");
    let (status, body) = support::answer(redeem("ann", "WELCOME10", None).await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "perk_redeemed"),
        "{body}"
    );
    let (status, body) = support::answer(redeem("ann", "NOPE", None).await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "perk_not_found"),
        "{body}"
    );
    let (_, ann) = host.get("/v1/customers/ann", &key).await;
    assert_eq!(ann["event_count"], 2, "refusals store nothing: {ann}");

    // Ben's expires after its last moment, through the clock.
    clock(&host, &day(2, 2, "00:00:00")).await;
    let (_, ben) = host.get("/v1/customers/ben", &key).await;
    assert_eq!(ben["perks"][0]["status"], "expired", "{ben}");
    let (status, body) = support::answer(redeem("ben", "WELCOME10", None).await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "perk_expired"),
        "{body}"
    );
    let (status, body) = host
        .event(
            &key,
            &json!({"customer": "ben", "action": "perk_redeem", "data": {"code": "WELCOME10"}}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNPROCESSABLE_ENTITY, "perk_expired"),
        "{body}"
    );
    let (_, triggers) = host.get("/v1/triggers?limit=500", &key).await;
    let names: Vec<&str> = triggers["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|trigger| trigger["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "LoyaltyOptIn",
            "LoyaltyOptIn",
            "CouponRedeemed",
            "PerkExpired"
        ],
        "{triggers}"
    );
    host.stop();
}
