//! Exports end to end: what was posted comes back out, as NDJSON and CSV, filtered, and
//! resumed from where it stopped.
//!
//! Run with `cargo test --test exports`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::Host;

async fn export(host: &Host, key: &str, path: &str) -> (StatusCode, String, String) {
    let response = host
        .request(Method::GET, path, Some(key))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let kind = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, response.text().await.unwrap())
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_gives_back_what_was_posted() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let (status, body) = host
        .put_wasm("points", &key, tally_plugin_wasm::POINTS.wasm)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut posted = BTreeSet::new();
    for chunk in 0..2 {
        let events: Vec<Value> = (0..700)
            .map(|n| {
                let n = chunk * 700 + n;
                let id = format!("e{n:05}");
                posted.insert(id.clone());
                let (action, data) = if n % 7 == 0 {
                    ("opt_in", json!({}))
                } else {
                    (
                        "checkout",
                        json!({"transaction_id": format!("T{n}"), "total": 10}),
                    )
                };
                json!({"id": id, "customer": format!("c{:03}", n % 300), "action": action,
                       "data": data, "timestamp": format!("2026-11-{:02}T10:00:00Z", 1 + n % 28)})
            })
            .collect();
        let (status, body) = host.post("/v1/events/batch", &key, &json!(events)).await;
        assert_eq!((status, &body["stored"]), (StatusCode::OK, &json!(700)));
    }

    let (status, kind, text) = export(&host, &key, "/v1/exports/events").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(kind, "application/x-ndjson");
    let exported: BTreeSet<String> = lines(&text)
        .iter()
        .map(|event| event["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(exported, posted, "every event, once");

    // Resumed after the 1,000th id, the rest and nothing else.
    let thousandth = posted.iter().nth(999).unwrap();
    let (_, _, rest) = export(
        &host,
        &key,
        &format!("/v1/exports/events?after={thousandth}"),
    )
    .await;
    assert_eq!(lines(&rest).len(), 400);
    // Filtered.
    let (_, _, opt_ins) = export(&host, &key, "/v1/exports/events?action=opt_in").await;
    assert_eq!(lines(&opt_ins).len(), 200);
    let (_, _, early) = export(
        &host,
        &key,
        "/v1/exports/events?from=2026-11-01T00:00:00Z&to=2026-11-02T00:00:00Z",
    )
    .await;
    assert_eq!(lines(&early).len(), 50, "days 1 of 28");
    let (_, _, one) = export(&host, &key, "/v1/exports/events?customer=c007").await;
    assert!(lines(&one).iter().all(|event| event["customer"] == "c007"));
    assert_eq!(lines(&one).len(), 5);
    // A customer's export resumes after an event id too.
    let second = lines(&one)[1]["id"].as_str().unwrap().to_owned();
    let (_, _, rest_of_one) = export(
        &host,
        &key,
        &format!("/v1/exports/events?customer=c007&after={second}"),
    )
    .await;
    assert_eq!(lines(&rest_of_one), lines(&one)[2..].to_vec());

    // CSV, with a header.
    let (status, kind, csv) =
        export(&host, &key, "/v1/exports/events?format=csv&action=opt_in").await;
    assert_eq!(status, StatusCode::OK);
    assert!(kind.starts_with("text/csv"), "{kind}");
    let mut rows = csv.lines();
    assert_eq!(
        rows.next(),
        Some("id,action,customer,timestamp,received_at,points,source,label,data")
    );
    assert_eq!(rows.count(), 200);

    // Customers, and the ledger adding up to their balances.
    let (_, _, customers) = export(&host, &key, "/v1/exports/customers").await;
    let customers = lines(&customers);
    assert_eq!(customers.len(), 300);
    let balances: i64 = customers
        .iter()
        .map(|customer| customer["points"]["balance"].as_i64().unwrap())
        .sum();
    let (_, _, ledger) = export(&host, &key, "/v1/exports/ledger").await;
    let entries: i64 = lines(&ledger)
        .iter()
        .map(|entry| entry["amount"].as_i64().unwrap())
        .sum();
    assert!(balances > 0);
    assert_eq!(entries, balances);
    let (_, _, csv) = export(&host, &key, "/v1/exports/ledger?format=csv").await;
    assert!(csv.starts_with("customer,seq,event_id,"), "{csv}");

    let (status, _, _) = export(&host, &key, "/v1/exports/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = export(&host, &key, "/v1/exports/events?customer=nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    host.stop();
}

/// `tally import` and `tally export`, the real binary against a real host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_imports_a_large_file_once_and_exports_it() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let ndjson: String = (0..2500)
        .map(|n| {
            let event = if n == 1234 {
                json!({"customer": format!("c{n}"), "action": "checkout", "data": {"total": "x"}})
            } else {
                json!({"customer": format!("c{}", n % 400), "action": "opt_in"})
            };
            format!("{event}\n")
        })
        .collect();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, ndjson).unwrap();
    let csv = dir.path().join("opt-in.csv");
    std::fs::write(&csv, include_str!("../examples/events/opt-in.csv")).unwrap();
    let tally = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(args)
            .env("TALLY_URL", &host.base)
            .env("TALLY_KEY", &key)
            .output()
            .unwrap()
    };
    let summary = |output: &std::process::Output| -> Value {
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
            panic!("{}", String::from_utf8_lossy(&output.stderr));
        })
    };

    let first = tally(&["import", file.to_str().unwrap()]);
    assert_eq!(first.status.code(), Some(1), "one row fails");
    let counts = summary(&first);
    assert_eq!(
        (&counts["read"], &counts["stored"], &counts["failed"]),
        (&json!(2500), &json!(2499), &json!(1)),
        "{counts}"
    );
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("row 1235 (line 1235): schema_violation"),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Read again, nothing is stored twice.
    let again = summary(&tally(&["import", file.to_str().unwrap()]));
    assert_eq!(
        (&again["stored"], &again["replayed"]),
        (&json!(0), &json!(2499)),
        "{again}"
    );
    let csv_import = tally(&["import", csv.to_str().unwrap()]);
    assert!(
        csv_import.status.success(),
        "{}",
        String::from_utf8_lossy(&csv_import.stderr)
    );

    let out = dir.path().join("events.out");
    let export = tally(&[
        "export",
        "events",
        "--action",
        "opt_in",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let exported = std::fs::read_to_string(&out).unwrap();
    assert!(
        exported.lines().count() >= 2499,
        "{}",
        exported.lines().count()
    );
    host.stop();
}
