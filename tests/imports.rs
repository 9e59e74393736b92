//! Bulk imports as jobs, end to end on the real binary: a file is taken at once and read in
//! the background; its progress is polled; bad rows are reported by row and line while the
//! rest are stored; a job killed mid-file with SIGKILL resumes at the next start and ends
//! with every row stored once; a job can be cancelled.
//!
//! Run with `cargo test --test imports`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::{Host, answer, code};

/// Posts a file to `POST /v1/imports`.
async fn upload(host: &Host, key: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Value) {
    let response = host
        .request(Method::POST, "/v1/imports", Some(key))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    if response.status() == StatusCode::ACCEPTED {
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let (status, job) = answer(response).await;
        assert_eq!(
            location,
            format!("/v1/imports/{}", job["id"].as_str().unwrap())
        );
        return (status, job);
    }
    answer(response).await
}

/// Polls a job until `done` says so (or fifteen minutes pass: a million rows on a slow
/// machine), and returns it.
async fn poll(host: &Host, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, job) = host.get(&format!("/v1/imports/{id}"), key).await;
        assert_eq!(status, StatusCode::OK, "{job}");
        if done(&job) {
            return job;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "the import did not get there: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ended(job: &Value) -> bool {
    matches!(job["state"].as_str(), Some("done" | "failed" | "cancelled"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_stores_every_good_row_and_reports_the_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;

    // Antavo's opt-in file from the seeds, unchanged.
    let opt_ins = include_bytes!("../examples/events/opt-in.csv").to_vec();
    let (status, job) = upload(&host, &key, "text/csv", opt_ins.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert!(job["id"].as_str().unwrap().starts_with("imp_"));
    assert_eq!(job["state"], "queued");
    let job = poll(&host, &key, job["id"].as_str().unwrap(), ended).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        job["rows"],
        json!({"read": 3, "stored": 3, "replayed": 0, "failed": 0})
    );
    assert_eq!(job["bytes_read"], job["bytes"]);
    let (_, bill) = host
        .get("/v1/customers/bill.overback@example.com", &key)
        .await;
    assert_eq!(bill["attributes"]["first_name"], "Bill", "{bill}");
    let (_, event) = host.get("/v1/events/345454656512", &key).await;
    assert_eq!(event["event"]["source"], "import");

    // The same file again stores nothing twice.
    let (_, again) = upload(&host, &key, "text/csv", opt_ins).await;
    let again = poll(&host, &key, again["id"].as_str().unwrap(), ended).await;
    assert_eq!(
        again["rows"],
        json!({"read": 3, "stored": 0, "replayed": 3, "failed": 0})
    );

    // A CSV with a quoted field across lines and rows that are wrong: each bad row is
    // reported with its row, line and code, and the rest are stored.
    let csv = "action,customer,note\n\
               opt_in,c1,plain\n\
               ,c2,no action\n\
               opt_in,c3,\"two\nlines\"\n\
               opt_in,c4,too,many\n\
               opt_in,c5,last\n";
    let (_, job) = upload(&host, &key, "text/csv", csv.into()).await;
    let id = job["id"].as_str().unwrap().to_owned();
    let job = poll(&host, &key, &id, ended).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(
        job["rows"],
        json!({"read": 5, "stored": 3, "replayed": 0, "failed": 2})
    );
    let (status, report) = host.get(&format!("/v1/imports/{id}/errors"), &key).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    let rows: Vec<(u64, u64, &str)> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["row"].as_u64().unwrap(),
                row["line"].as_u64().unwrap(),
                row["code"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [(2, 3, "invalid_csv"), (4, 6, "invalid_csv")],
        "{report}"
    );
    let (_, c3) = host.get("/v1/customers/c3/events", &key).await;
    assert_eq!(c3["items"][0]["data"]["note"], "two\nlines", "{c3}");

    // NDJSON: a line that is not JSON and an event that breaks its schema fail alone.
    let ndjson = [
        json!({"id": "n1", "customer": "c6", "action": "opt_in"}).to_string(),
        String::new(),
        "{not json".to_owned(),
        json!({"customer": "c7", "action": "checkout", "data": {"total": "lots"}}).to_string(),
        json!({"customer": "c8", "action": "opt_in"}).to_string(),
    ]
    .join("\n");
    let (status, job) = upload(&host, &key, "application/x-ndjson", ndjson.into()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let job = poll(&host, &key, &id, ended).await;
    assert_eq!(
        job["rows"],
        json!({"read": 4, "stored": 2, "replayed": 0, "failed": 2}),
        "{job}"
    );
    let (_, report) = host.get(&format!("/v1/imports/{id}/errors"), &key).await;
    let codes: Vec<(u64, &str)> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["line"].as_u64().unwrap(), row["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [(3, "invalid_json"), (4, "schema_violation")],
        "{report}"
    );
    assert!(
        report["items"][1]["id"]
            .as_str()
            .unwrap()
            .starts_with("import-"),
        "a row without an id is given one: {report}"
    );

    // The list, newest first; a finished job cannot be cancelled; what is not a file of
    // events is refused before anything is written.
    let (_, list) = host.get("/v1/imports", &key).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    assert_eq!(list["items"][0]["id"], json!(id));
    let (status, body) = host
        .post(&format!("/v1/imports/{id}/cancel"), &key, &json!({}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "import_finished")
    );
    let (status, body) = upload(&host, &key, "application/json", b"[]".to_vec()).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
    );
    let (status, body) = upload(&host, &key, "text/csv", b"_id,email\n1,a@b\n".to_vec()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let failed = poll(&host, &key, body["id"].as_str().unwrap(), ended).await;
    assert_eq!(failed["state"], "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no `action` column"),
        "{failed}"
    );
    let other = host.tenant("other").await;
    let (status, _) = host.get(&format!("/v1/imports/{id}"), &other).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a tenant sees only its own imports"
    );
}

/// Rows of the file the kill test imports.
fn rows() -> usize {
    std::env::var("TALLY_TEST_IMPORT_ROWS")
        .ok()
        .and_then(|rows| rows.parse().ok())
        .unwrap_or(1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_import_resumes_and_stores_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let rows = rows();
    let mut file = String::with_capacity(rows * 64);
    file.push_str("action,customer,transaction_id,total\n");
    for row in 0..rows {
        file.push_str(&format!(
            "checkout,c{},T{row},{}\n",
            row % 5_000,
            1 + row % 90
        ));
    }
    let (status, job) = upload(&host, &key, "text/csv", file.into_bytes()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_owned();
    let halfway = (rows / 3) as u64;
    let seen = poll(&host, &key, &id, |job| {
        job["rows"]["read"].as_u64().unwrap() >= halfway
    })
    .await;
    assert_eq!(seen["state"], "running", "{seen}");
    assert!(seen["rate"].as_u64().unwrap() > 0, "{seen}");
    host.kill();

    let host = Host::start(dir.path());
    let job = poll(&host, &key, &id, ended).await;
    assert_eq!(job["state"], "done", "{job}");
    let read = &job["rows"];
    assert_eq!(read["read"], json!(rows), "{job}");
    assert_eq!(read["failed"], 0, "{job}");
    assert_eq!(
        read["stored"].as_u64().unwrap() + read["replayed"].as_u64().unwrap(),
        rows as u64,
        "{job}"
    );

    // Every row is one event: the export of the tenant's events holds each transaction once.
    let response = host
        .request(Method::GET, "/v1/exports/events?format=csv", Some(&key))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let mut ids: Vec<&str> = text
        .lines()
        .skip(1)
        .map(|line| line.split(',').next().unwrap())
        .collect();
    assert_eq!(ids.len(), rows, "one event a row");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), rows, "no row stored twice");
    // And the customer's spend counts each once.
    let (_, customer) = host.get("/v1/customers/c1", &key).await;
    let expected: i64 = (0..rows)
        .filter(|row| row % 5_000 == 1)
        .map(|row| 1 + (row % 90) as i64)
        .sum();
    assert_eq!(
        customer["summary"]["total_spend"],
        json!(expected.to_string()),
        "{customer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_import_stops_and_keeps_what_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(dir.path());
    let key = host.tenant("acme").await;
    let rows = 200_000;
    let mut file = String::new();
    for row in 0..rows {
        file.push_str(
            &json!({"customer": format!("c{}", row % 100), "action": "opt_in"}).to_string(),
        );
        file.push('\n');
    }
    let (_, job) = upload(&host, &key, "application/x-ndjson", file.into_bytes()).await;
    let id = job["id"].as_str().unwrap().to_owned();
    poll(&host, &key, &id, |job| {
        job["rows"]["read"].as_u64().unwrap() > 0
    })
    .await;
    let (status, cancelling) = host
        .post(&format!("/v1/imports/{id}/cancel"), &key, &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{cancelling}");
    let job = poll(&host, &key, &id, ended).await;
    assert_eq!(job["state"], "cancelled", "{job}");
    let read = job["rows"]["read"].as_u64().unwrap();
    assert!(read < rows, "it stopped before the end: {job}");
    assert_eq!(job["rows"]["stored"].as_u64().unwrap(), read, "{job}");
    // Nothing is read after it stopped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, later) = host.get(&format!("/v1/imports/{id}"), &key).await;
    assert_eq!(later["rows"], job["rows"]);
}
