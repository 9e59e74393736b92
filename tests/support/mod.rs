//! What the end-to-end tests share: a real `tally serve` process on a loopback port with a
//! temporary data directory, an HTTP client for it, and real wasm plugins (the reference
//! plugins built from plugins/, and small handwritten modules with exact behaviour).

#![allow(dead_code, reason = "each test file uses a part of this module")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

/// The admin key the test hosts are started with.
pub const ADMIN_KEY: &str = "tly_admin_test_0123456789abcdef";

/// A running `tally serve`.
pub struct Host {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its data directory.
    pub data: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    new_line: mpsc::Receiver<String>,
    client: Client,
}

/// How to start a host.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Leave `TALLY_ADMIN_KEY` unset, so the host generates (or keeps) its own.
    pub no_admin_key: bool,
    /// Pass `--demo`.
    pub demo: bool,
    /// Extra arguments of `tally serve`.
    pub args: Vec<String>,
}

impl Host {
    /// Starts a host on `data` with the test admin key.
    pub fn start(data: &Path) -> Host {
        Host::start_with(data, &Options::default())
    }

    /// Starts a host on `data`.
    pub fn start_with(data: &Path, options: &Options) -> Host {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tally"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .env_remove("TALLY_LISTEN")
            .env_remove("TALLY_DATA")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if options.demo {
            command.arg("--demo");
        }
        command.args(&options.args);
        if options.no_admin_key {
            command.env_remove("TALLY_ADMIN_KEY");
        } else {
            command.env("TALLY_ADMIN_KEY", ADMIN_KEY);
        }
        let mut child = command.spawn().expect("tally serve starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (sender, new_line) = mpsc::channel();
        let kept = lines.clone();
        // Reads every line (so the pipe never fills), keeps it, and passes it on.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                kept.lock().unwrap().push(line.clone());
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut host = Host {
            child: Some(child),
            base: String::new(),
            data: data.to_owned(),
            lines,
            new_line,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        };
        let line = host.wait_for_line(|line| line.starts_with("tally listening on http://"));
        let address = line
            .trim_start_matches("tally listening on ")
            .split_whitespace()
            .next()
            .unwrap();
        host.base = address.to_owned();
        host
    }

    /// Waits (up to two minutes: the first start may compile plugins) for a line of
    /// standard output that matches, and returns it.
    pub fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.new_line.recv_timeout(left) {
                Ok(line) if wanted(&line) => return line,
                Ok(_) => {}
                Err(error) => panic!(
                    "no such line from tally serve ({error}); it printed: {:#?}",
                    self.output()
                ),
            }
        }
    }

    /// Everything the host printed so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("running");
        // The shell's own `kill`, so no procps package is needed.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", child.id())])
            .status()
            .expect("sh runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "tally serve exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tally serve did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the host with SIGKILL, as a crash or a power cut would: no graceful shutdown, no
    /// chance to finish or flush anything. Returns how it ended, so that a caller can tell a
    /// host that had already died by itself (which is not a SIGKILL) from one it killed.
    pub fn kill(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // `Child::kill` is SIGKILL on Unix.
        child.kill().expect("SIGKILL is sent");
        child.wait().expect("the killed host is reaped")
    }

    /// A request to `path` with `key`.
    pub fn request(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let builder = self.client.request(method, format!("{}{path}", self.base));
        match key {
            Some(key) => builder.bearer_auth(key),
            None => builder,
        }
    }

    /// GET with a key; the status and the JSON body.
    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        answer(
            self.request(Method::GET, path, Some(key))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// POST JSON with a key.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        answer(
            self.request(Method::POST, path, Some(key))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// PATCH JSON with a key.
    pub async fn patch(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        answer(
            self.request(Method::PATCH, path, Some(key))
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Uploads a module as plugin `name`.
    pub async fn put_wasm(&self, name: &str, key: &str, wasm: &[u8]) -> (StatusCode, Value) {
        answer(
            self.request(Method::PUT, &format!("/v1/plugins/{name}"), Some(key))
                .header("content-type", "application/wasm")
                .body(wasm.to_vec())
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Creates a tenant with the admin key; returns its key.
    pub async fn tenant(&self, id: &str) -> String {
        let (status, body) = self
            .post("/v1/tenants", ADMIN_KEY, &json!({"id": id}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["api_key"].as_str().unwrap().to_owned()
    }

    /// Posts an event; the status and body.
    pub async fn event(&self, key: &str, event: &Value) -> (StatusCode, Value) {
        self.post("/v1/events", key, event).await
    }

    /// Every event of a customer, oldest first, paging through the history.
    pub async fn all_events(&self, key: &str, customer: &str) -> Vec<Value> {
        self.all_events_paged(key, customer, 37).await
    }

    /// Every event of a customer, oldest first, in pages of `limit`.
    pub async fn all_events_paged(&self, key: &str, customer: &str, limit: usize) -> Vec<Value> {
        let mut events = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = self
                .get(
                    &format!(
                        "/v1/customers/{customer}/events?order=oldest&limit={limit}&cursor={cursor}"
                    ),
                    key,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            events.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return events,
            }
        }
    }

    /// Every ledger entry of a customer.
    pub async fn all_ledger(&self, key: &str, customer: &str) -> Vec<Value> {
        self.all_ledger_paged(key, customer, 50).await
    }

    /// Every ledger entry of a customer, oldest first, in pages of `limit`.
    pub async fn all_ledger_paged(&self, key: &str, customer: &str, limit: usize) -> Vec<Value> {
        let mut entries = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, page) = self
                .get(
                    &format!("/v1/customers/{customer}/ledger?limit={limit}&cursor={cursor}"),
                    key,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            entries.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = next.to_owned(),
                None => return entries,
            }
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The status and the body as JSON (`null` for an empty body).
pub async fn answer(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A plugin module written in the WebAssembly text format that ignores its input and
/// answers `output` (a decision, or `{"error": ...}`): exact behaviour for tests, whatever
/// the reference plugins decide.
pub fn answering(output: &str) -> Vec<u8> {
    module(&format!("(i64.const {})", output.len()), output)
}

/// A plugin module that traps on every event.
pub fn trapping() -> Vec<u8> {
    module("(unreachable)", "")
}

/// A plugin module that loops until its fuel runs out: slow, on purpose.
pub fn looping() -> Vec<u8> {
    module("(loop $forever (br $forever)) (unreachable)", "")
}

fn module(evaluate_body: &str, data: &str) -> Vec<u8> {
    assert!(data.len() < 4096);
    let escaped = data.replace('\\', "\\\\").replace('"', "\\\"");
    let text = format!(
        r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "{escaped}")
  (func (export "tally_abi_version") (result i32) (i32.const 1))
  (func (export "tally_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (block $done
      (loop $grow
        (br_if $done (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (unreachable)))
        (br $grow)))
    (local.get $ptr))
  (func (export "tally_evaluate") (param i32 i32) (result i64) {evaluate_body}))"#
    );
    wat::parse_str(text).expect("the fixture is valid WAT")
}

/// A plugin that earns `amount` points for `reason` on every event.
pub fn earning(amount: i64, reason: &str) -> Vec<u8> {
    answering(&json!({"points": [{"amount": amount, "reason": reason}]}).to_string())
}

/// The Voyado repair interaction schema exactly as seeds/000 prints it: one line, with
/// `"showInContactCard": "true"` written as strings.
pub const REPAIR_TYPE: &str = include_str!("../../examples/event-types/repair.json");

/// Voyado's recycled schema, with its `//` comment swallowing the closing braces' line.
pub const RECYCLED_TYPE: &str = include_str!("../../examples/event-types/recycled.json");

/// The Antavo checkout of seeds/002 (numbers written as strings), inside the braces the page
/// leaves out.
pub const ANTAVO_CHECKOUT: &str = include_str!("../../examples/events/antavo-checkout.json");

/// The Antavo form-encoded checkout of seeds/002, byte for byte.
pub const ANTAVO_FORM: &str = include_str!("../../examples/events/antavo-checkout.form");

/// The sum of the `amount`s of ledger entries.
pub fn ledger_sum(entries: &[Value]) -> i64 {
    entries
        .iter()
        .map(|entry| entry["amount"].as_i64().unwrap())
        .sum()
}
