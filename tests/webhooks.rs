//! Webhooks end to end: a real host delivering its triggers to a real receiver on loopback,
//! signed per Standard Webhooks (checked here with an HMAC of the test's own, not the host's
//! code), through failures, retries, a dead letter, a redelivery, a rotation and a SIGKILL.
//!
//! Run with `cargo test --test webhooks`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use support::{Host, Options, answer, code};

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    id: String,
    timestamp: String,
    signatures: String,
    body: Value,
    raw: Bytes,
    answered: u16,
}

/// A webhook receiver on loopback that answers 500 to its first `fail_first` requests (or
/// to all while `down`), answers its first `slow_first` only after two seconds, and keeps
/// everything it got.
#[derive(Debug, Default)]
struct Receiver {
    fail_first: usize,
    slow_first: usize,
    /// Requests that came in, answered or not yet.
    arrived: usize,
    down: bool,
    got: Vec<Got>,
}

async fn start_receiver(receiver: Arc<Mutex<Receiver>>) -> String {
    let handler = move |headers: HeaderMap, body: Bytes| {
        let receiver = receiver.clone();
        async move {
            let slow = {
                let mut receiver = receiver.lock().unwrap();
                receiver.arrived += 1;
                receiver.arrived <= receiver.slow_first
            };
            if slow {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            let mut receiver = receiver.lock().unwrap();
            let fail = receiver.down || receiver.got.len() < receiver.fail_first;
            let status = if fail {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::NO_CONTENT
            };
            let header = |name: &str| {
                headers
                    .get(name)
                    .map(|value| value.to_str().unwrap().to_owned())
                    .unwrap_or_default()
            };
            receiver.got.push(Got {
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signatures: header("webhook-signature"),
                body: serde_json::from_slice(&body).unwrap(),
                raw: body,
                answered: status.as_u16(),
            });
            status
        }
    };
    let app = axum::Router::new().route("/hook", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/hook")
}

/// Whether `got` carries a valid signature by `secret`: the spec's HMAC-SHA256 of
/// `id.timestamp.body` with the base64 key after `whsec_`, one of the space-separated
/// `v1,<base64>` signatures.
fn signed_by(got: &Got, secret: &str) -> bool {
    let key = BASE64.decode(secret.trim_start_matches("whsec_")).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{}.{}.", got.id, got.timestamp).as_bytes());
    mac.update(&got.raw);
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    got.signatures
        .split(' ')
        .any(|signature| signature == expected)
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Adds an endpoint for `triggers` at `url`, which must be taken; answers its id and body.
async fn add_endpoint(host: &Host, key: &str, url: &str, triggers: &[&str]) -> (String, Value) {
    let (status, endpoint) = host
        .post(
            "/v1/webhooks",
            key,
            &json!({"url": url, "triggers": triggers}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    (endpoint["id"].as_str().unwrap().to_owned(), endpoint)
}

/// Polls endpoint `id` until `done` says so (or a minute passes), and returns it.
async fn endpoint_when(host: &Host, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (_, endpoint) = host.get(&format!("/v1/webhooks/{id}"), key).await;
        if done(&endpoint) {
            return endpoint;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the endpoint did not get there: {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A host that may deliver to loopback, retrying on `schedule`, with `more` arguments.
fn delivering(schedule: &str, more: &[&str]) -> Options {
    let mut args = vec![
        "--allow-private-webhooks",
        "--webhook-retry-schedule",
        schedule,
    ];
    args.extend(more);
    Options {
        args: args.into_iter().map(str::to_owned).collect(),
        ..Options::default()
    }
}

async fn opt(host: &Host, key: &str, customer: &str, action: &str, n: usize) {
    let (status, body) = host
        .event(
            key,
            &json!({"id": format!("{customer}-{n}"), "customer": customer, "action": action}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The delivered requests, one per message id, in the order they arrived.
fn delivered(receiver: &Mutex<Receiver>) -> Vec<Got> {
    let receiver = receiver.lock().unwrap();
    let mut seen = HashMap::new();
    receiver
        .got
        .iter()
        .filter(|got| got.answered < 300)
        .filter(|got| seen.insert(got.id.clone(), ()).is_none())
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triggers_arrive_signed_in_order_through_failures_and_a_rotation() {
    let receiver = Arc::new(Mutex::new(Receiver {
        fail_first: 2,
        ..Receiver::default()
    }));
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &delivering("0.2,0.2,0.2,0.2", &[]));
    let key = host.tenant("acme").await;
    let (id, endpoint) = add_endpoint(&host, &key, &url, &["*"]).await;
    let secret = endpoint["secrets"][0]["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("whsec_"), "{endpoint}");

    for (n, action) in ["opt_in", "opt_out", "opt_in"].iter().enumerate() {
        for customer in ["ann", "bob"] {
            opt(&host, &key, customer, action, n).await;
        }
    }
    wait_until("six deliveries", || delivered(&receiver).len() == 6).await;
    let got = receiver.lock().unwrap().got.clone();
    // The first two attempts failed and were retried with the same id.
    assert_eq!(got[0].answered, 500);
    assert!(
        got.iter()
            .skip(1)
            .any(|later| later.id == got[0].id && later.answered == 204)
    );
    for request in &got {
        assert!(signed_by(request, &secret), "{request:?}");
        let at: i64 = request.timestamp.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - at).abs() < 120, "{request:?}");
    }
    // In order per customer (customers side by side), each with what a marketing tool reads.
    let arrived = delivered(&receiver);
    for customer in ["ann", "bob"] {
        let names: Vec<&str> = arrived
            .iter()
            .filter(|got| got.body["data"]["customer_id"] == customer)
            .map(|got| got.body["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["LoyaltyOptIn", "LoyaltyOptOut", "LoyaltyOptIn"],
            "{customer}"
        );
    }
    let first = &arrived[0].body;
    assert_eq!(first["data"]["event"]["action"], "opt_in", "{first}");
    assert_eq!(
        first["data"]["customer"]["summary"]["member"], true,
        "{first}"
    );

    // The log tells the story; the endpoint counts it.
    let (_, log) = host.get(&format!("/v1/webhooks/{id}/attempts"), &key).await;
    let outcomes: Vec<&str> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|attempt| attempt["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "retrying").count(),
        2,
        "{log}"
    );
    // A customer's delivery that went ahead of another's failure is sent again after it.
    assert!(
        outcomes.iter().filter(|o| **o == "delivered").count() >= 6,
        "{log}"
    );
    let (_, endpoint) = host.get(&format!("/v1/webhooks/{id}"), &key).await;
    assert_eq!(endpoint["delivery"]["delivered"], 6, "{endpoint}");

    // A rotation: both secrets sign until the old one expires.
    let (status, rotated) = host
        .post(&format!("/v1/webhooks/{id}/rotate"), &key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secrets"][0]["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    opt(&host, &key, "cid", "opt_in", 0).await;
    wait_until("the seventh delivery", || delivered(&receiver).len() == 7).await;
    let last = delivered(&receiver).pop().unwrap();
    assert!(
        signed_by(&last, &secret) && signed_by(&last, &new_secret),
        "{last:?}"
    );
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_is_dead_lettered_after_its_retries_and_can_be_redelivered() {
    let receiver = Arc::new(Mutex::new(Receiver {
        down: true,
        ..Receiver::default()
    }));
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(dir.path(), &delivering("0.1", &[]));
    let key = host.tenant("acme").await;
    let (id, _) = add_endpoint(&host, &key, &url, &["LoyaltyOptIn"]).await;
    opt(&host, &key, "ann", "opt_in", 0).await;
    opt(&host, &key, "ann", "opt_out", 1).await;

    // One try and one retry, then given up on; the opt-out is not this endpoint's.
    endpoint_when(&host, &key, &id, |endpoint| {
        endpoint["delivery"]["dead_lettered"] == 1
    })
    .await;
    assert_eq!(receiver.lock().unwrap().got.len(), 2);
    let (_, log) = host.get(&format!("/v1/webhooks/{id}/attempts"), &key).await;
    assert_eq!(log["items"][0]["outcome"], "dead_lettered", "{log}");
    assert_eq!(log["items"][0]["status"], 500, "{log}");

    // Back up, and asked to deliver again from the start.
    receiver.lock().unwrap().down = false;
    let (status, body) = host
        .post(
            &format!("/v1/webhooks/{id}/redeliver"),
            &key,
            &json!({"after": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_until("the redelivery", || delivered(&receiver).len() == 1).await;
    assert_eq!(delivered(&receiver)[0].body["type"], "LoyaltyOptIn");
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_across_a_kill_mid_delivery() {
    let receiver = Arc::new(Mutex::new(Receiver::default()));
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut host = Host::start_with(dir.path(), &delivering("0.2", &[]));
    let key = host.tenant("acme").await;
    add_endpoint(&host, &key, &url, &["*"]).await;
    for n in 0..20 {
        opt(&host, &key, &format!("c{n}"), "opt_in", n).await;
    }
    host.kill();
    host = Host::start_with(dir.path(), &delivering("0.2", &[]));
    wait_until("every trigger", || delivered(&receiver).len() == 20).await;
    let mut customers: Vec<String> = delivered(&receiver)
        .iter()
        .map(|got| got.body["data"]["customer_id"].as_str().unwrap().to_owned())
        .collect();
    customers.sort();
    customers.dedup();
    assert_eq!(customers.len(), 20);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_refused_unless_the_operator_allows_them() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let (status, body) = host
            .post(
                "/v1/webhooks",
                &key,
                &json!({"url": url, "triggers": ["*"]}),
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNPROCESSABLE_ENTITY, "private_destination"),
            "{url}: {body}"
        );
    }
    for (body, wanted) in [
        (
            json!({"url": "ftp://example.com/x", "triggers": ["*"]}),
            "invalid_webhook",
        ),
        (
            json!({"url": "https://example.com/x", "triggers": []}),
            "invalid_webhook",
        ),
        (json!({"url": "https://example.com/x"}), "invalid_request"),
    ] {
        let (status, answered) = host.post("/v1/webhooks", &key, &body).await;
        assert_eq!(
            (status, code(&answered)),
            (StatusCode::UNPROCESSABLE_ENTITY, wanted),
            "{body}: {answered}"
        );
    }
    let (status, created) = host
        .post(
            "/v1/webhooks",
            &key,
            &json!({"url": "https://example.com/hook", "triggers": ["TierEarned"]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap();
    let (status, _) = answer(
        host.request(Method::DELETE, &format!("/v1/webhooks/{id}"), Some(&key))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = host.get(&format!("/v1/webhooks/{id}"), &key).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_turned_off_the_tenant_told_and_the_outbox_pruned() {
    let failing = Arc::new(Mutex::new(Receiver {
        down: true,
        ..Receiver::default()
    }));
    let told = Arc::new(Mutex::new(Receiver::default()));
    let (failing_url, told_url) = (
        start_receiver(failing.clone()).await,
        start_receiver(told.clone()).await,
    );
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(
        dir.path(),
        &delivering("0.05", &["--outbox-retention-hours", "0"]),
    );
    let key = host.tenant("acme").await;
    let (id, _) = add_endpoint(&host, &key, &failing_url, &["LoyaltyOptIn"]).await;
    add_endpoint(&host, &key, &told_url, &["WebhookEndpointDisabled"]).await;
    for n in 0..5 {
        opt(&host, &key, &format!("c{n}"), "opt_in", n).await;
    }

    // Five dead letters in a row turn the endpoint off, and the tenant hears of it.
    wait_until("the tenant told", || !delivered(&told).is_empty()).await;
    let notice = &delivered(&told)[0].body;
    assert_eq!(notice["type"], "WebhookEndpointDisabled", "{notice}");
    assert_eq!(notice["data"]["trigger"]["endpoint"], json!(id), "{notice}");
    let (_, endpoint) = host.get(&format!("/v1/webhooks/{id}"), &key).await;
    assert_eq!(endpoint["enabled"], false, "{endpoint}");
    assert_eq!(endpoint["delivery"]["dead_lettered"], 5, "{endpoint}");
    assert!(
        endpoint["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("5 triggers in a row"),
        "{endpoint}"
    );

    // Past the retention (none here) and past every enabled endpoint, the outbox is pruned:
    // the opt-ins and the notice are gone from it.
    let started = Instant::now();
    loop {
        let (_, triggers) = host.get("/v1/triggers", &key).await;
        if triggers["items"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the outbox was not pruned: {triggers}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_times_out_and_gets_the_trigger_again() {
    let receiver = Arc::new(Mutex::new(Receiver {
        slow_first: 1,
        ..Receiver::default()
    }));
    let url = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start_with(
        dir.path(),
        &delivering("0.1,0.1", &["--webhook-timeout-ms", "300"]),
    );
    let key = host.tenant("acme").await;
    let (id, _) = add_endpoint(&host, &key, &url, &["*"]).await;
    opt(&host, &key, "ann", "opt_in", 0).await;
    endpoint_when(&host, &key, &id, |endpoint| {
        endpoint["delivery"]["delivered"] == 1
    })
    .await;
    // The first attempt gave up waiting and was retried with the same id.
    let (_, log) = host.get(&format!("/v1/webhooks/{id}/attempts"), &key).await;
    let attempts = log["items"].as_array().unwrap();
    let oldest = attempts.last().unwrap();
    assert_eq!(oldest["outcome"], "retrying", "{log}");
    assert_eq!(oldest["error"], "no answer within 300 ms", "{log}");
    assert_eq!(attempts[0]["outcome"], "delivered", "{log}");
    assert_eq!(attempts[0]["message_id"], oldest["message_id"], "{log}");
    host.stop();
}
