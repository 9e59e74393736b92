//! The host's log as an operator reads it: every answer carries an `x-request-id` (the
//! caller's own, or one the host made), `--log-format json` writes one JSON object a line
//! with that id in it, and a log that is not a terminal has no colour codes.
//!
//! Run with `cargo test --test logs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_each_answer_carries() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("host.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data",
        ])
        .arg(dir.path().join("data"))
        .env("TALLY_ADMIN_KEY", "tly_admin_test_0123456789abcdef")
        .env("RUST_LOG", "info,tower_http=debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let base = loop {
        let line = lines.next().expect("an address").unwrap();
        if let Some(rest) = line.strip_prefix("tally listening on ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    let client = reqwest::Client::new();

    // The caller's id is kept and answered back; without one the host makes one.
    let answer = client
        .get(format!("{base}/v1/tenant"))
        .bearer_auth("tly_not_a_key")
        .header("x-request-id", "checkout-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.headers()["x-request-id"], "checkout-7f3a");
    let made: Vec<String> = {
        let mut made = Vec::new();
        for _ in 0..2 {
            let answer = client.get(format!("{base}/healthz")).send().await.unwrap();
            made.push(
                answer.headers()["x-request-id"]
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        made
    };
    assert!(made.iter().all(|id| id.starts_with("req_")), "{made:?}");
    assert_ne!(made[0], made[1], "each request its own id");

    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a file: {text}"
    );
    let entries: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let ours: Vec<&Value> = entries
        .iter()
        .filter(|entry| entry["span"]["request_id"] == "checkout-7f3a")
        .collect();
    assert!(!ours.is_empty(), "the request's lines carry its id: {text}");
    assert!(
        ours.iter()
            .all(|entry| entry["span"]["path"] == "/v1/tenant"),
        "{text}"
    );
}
