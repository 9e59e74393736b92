//! Events in and out in bulk through the real host: import jobs, exports and webhook
//! delivery, each against issue 27's figure.
//!
//! ```sh
//! cargo bench --bench bulk                              # 200,000 rows, 20,000 deliveries
//! cargo bench --bench bulk -- --rows 1000000 --deliveries 50000 --customers 5000
//! ```
//!
//! 1. **Import** (`POST /v1/imports`, polled until `done`): a CSV of Antavo-style checkouts
//!    for `--customers` customers, into a host with the three reference plugins (points,
//!    tiers, engagement, on every action), then into a host with none. Rows/s counts from
//!    the `202` to `done`: every row evaluated and committed durably.
//! 2. **Export** of the first host's events (`GET /v1/exports/events`), NDJSON then CSV,
//!    read to the end: events/s, and the host's resident memory before and at its peak
//!    during the export (constant memory means the peak does not grow with the events).
//! 3. **Webhook delivery**: `--deliveries` opt-ins of as many customers imported into a
//!    host with `--allow-private-webhooks`, an endpoint added after them that wants every
//!    trigger, and a redelivery from the start of the outbox: deliveries/s until a local
//!    receiver (axum, answering 204) has had every one.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench that cannot set itself up should stop"
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const ADMIN_KEY: &str = "bench-admin-key-0123456789";

struct Options {
    rows: usize,
    customers: usize,
    deliveries: usize,
}

fn options() -> Options {
    let mut options = Options {
        rows: 200_000,
        customers: 5_000,
        deliveries: 20_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            args.next()
                .and_then(|value| value.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--rows" => options.rows = number("--rows"),
            "--customers" => options.customers = number("--customers"),
            "--deliveries" => options.deliveries = number("--deliveries"),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    options
}

struct Host {
    child: Child,
    base: String,
    client: reqwest::Client,
    _data: tempfile::TempDir,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Host {
    fn start(args: &[&str]) -> Host {
        let data = tempfile::tempdir().expect("a temp dir");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(args)
            .env("TALLY_ADMIN_KEY", ADMIN_KEY)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("tally serve starts");
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let base = loop {
            let line = lines.next().expect("an address").expect("readable stdout");
            if let Some(rest) = line.strip_prefix("tally listening on ") {
                break rest.split_whitespace().next().expect("a URL").to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Host {
            child,
            base,
            client: reqwest::Client::new(),
            _data: data,
        }
    }

    async fn tenant(&self, plugins: bool) -> String {
        let created = json_of(
            self.client
                .post(format!("{}/v1/tenants", self.base))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"id": "bench", "name": "Bench"})),
        )
        .await;
        let key = created["api_key"].as_str().expect("an api_key").to_owned();
        if plugins {
            for plugin in [
                tally_plugin_wasm::POINTS,
                tally_plugin_wasm::TIERS,
                tally_plugin_wasm::ENGAGEMENT,
            ] {
                let response = self
                    .client
                    .put(format!("{}/v1/plugins/{}", self.base, plugin.name))
                    .bearer_auth(&key)
                    .header("content-type", "application/wasm")
                    .body(plugin.wasm.to_vec())
                    .send()
                    .await
                    .unwrap();
                assert!(response.status().is_success(), "uploading {}", plugin.name);
            }
        }
        key
    }

    /// Imports `file` as a job and waits for it: seconds from the 202 to `done`, and the job.
    async fn import(&self, key: &str, file: Vec<u8>) -> (f64, Value) {
        let job = json_of(
            self.client
                .post(format!("{}/v1/imports", self.base))
                .bearer_auth(key)
                .header("content-type", "text/csv")
                .body(file),
        )
        .await;
        let started = Instant::now();
        let id = job["id"].as_str().expect("a job id").to_owned();
        loop {
            let job = json_of(
                self.client
                    .get(format!("{}/v1/imports/{id}", self.base))
                    .bearer_auth(key),
            )
            .await;
            match job["state"].as_str() {
                Some("done") => return (started.elapsed().as_secs_f64(), job),
                Some("queued" | "running") => {}
                _ => panic!("the import did not finish: {job}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The host's resident memory, in KiB.
    fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }
}

/// Sends `request` and reads its answer as JSON.
async fn json_of(request: reqwest::RequestBuilder) -> Value {
    request.send().await.unwrap().json().await.unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn checkouts(rows: usize, customers: usize) -> Vec<u8> {
    let mut file = String::with_capacity(rows * 80);
    file.push_str(
        "action,customer,transaction_id,total,currency,items[0][sku],items[0][quantity]\n",
    );
    for row in 0..rows {
        file.push_str(&format!(
            "checkout,c{},T{row},{}.50,EUR,SKU-{},{}\n",
            row % customers,
            10 + row % 190,
            row % 97,
            1 + row % 3
        ));
    }
    file.into_bytes()
}

fn opt_ins(customers: usize) -> Vec<u8> {
    let mut file = String::from("action,customer\n");
    for customer in 0..customers {
        file.push_str(&format!("opt_in,m{customer}\n"));
    }
    file.into_bytes()
}

/// Reads an export to its end: events and seconds, and the host's peak memory meanwhile.
async fn export(host: &Host, key: &str, format: &str) -> (usize, f64, u64) {
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), host.child.id());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let started = Instant::now();
    let mut response = host
        .client
        .get(format!("{}/v1/exports/events?format={format}", host.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let mut lines = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        lines += chunk.iter().filter(|&&byte| byte == b'\n').count();
    }
    let seconds = started.elapsed().as_secs_f64();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let events = if format == "csv" { lines - 1 } else { lines };
    (events, seconds, peak.load(Ordering::Relaxed))
}

async fn receiver(count: Arc<AtomicU64>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_body: axum::body::Bytes| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(&options));
}

async fn run(options: &Options) {
    let file = checkouts(options.rows, options.customers);
    println!(
        "{} checkout rows of {} customers, {:.1} MB",
        options.rows,
        options.customers,
        file.len() as f64 / 1e6
    );

    // 1. Imports, with the reference plugins and without.
    let host = Host::start(&[]);
    let key = host.tenant(true).await;
    let (seconds, job) = host.import(&key, file.clone()).await;
    assert_eq!(job["rows"]["stored"], json!(options.rows), "{job}");
    let with_plugins = options.rows as f64 / seconds;
    println!(
        "import, 3 plugins:  {with_plugins:>9.0} rows/s ({seconds:.1} s; the job's own rate {})",
        job["rate"]
    );
    {
        let bare = Host::start(&[]);
        let bare_key = bare.tenant(false).await;
        let (seconds, job) = bare.import(&bare_key, file).await;
        assert_eq!(job["rows"]["stored"], json!(options.rows), "{job}");
        println!(
            "import, no plugins: {:>9.0} rows/s ({seconds:.1} s)",
            options.rows as f64 / seconds
        );
    }

    // 2. Exports of the first host's events.
    let before = host.rss_kib();
    for format in ["ndjson", "csv"] {
        let (events, seconds, peak) = export(&host, &key, format).await;
        assert_eq!(events, options.rows, "every event exported");
        println!(
            "export, {format:<6}:    {:>9.0} events/s ({seconds:.2} s); host RSS {} MiB before, peak {} MiB",
            events as f64 / seconds,
            before / 1024,
            peak / 1024
        );
    }
    drop(host);

    // 3. Webhook delivery to a local receiver.
    let host = Host::start(&["--allow-private-webhooks"]);
    let key = host.tenant(false).await;
    host.import(&key, opt_ins(options.deliveries)).await;
    let count = Arc::new(AtomicU64::new(0));
    let address = receiver(count.clone()).await;
    let endpoint = json_of(
        host.client
            .post(format!("{}/v1/webhooks", host.base))
            .bearer_auth(&key)
            .json(&json!({"url": format!("http://{address}/hook"), "triggers": ["*"]})),
    )
    .await;
    let id = endpoint["id"].as_str().expect("an endpoint id");
    let started = Instant::now();
    let redelivered = host
        .client
        .post(format!("{}/v1/webhooks/{id}/redeliver", host.base))
        .bearer_auth(&key)
        .json(&json!({"after": 0}))
        .send()
        .await
        .unwrap();
    assert!(redelivered.status().is_success());
    let wanted = options.deliveries as u64;
    while count.load(Ordering::Relaxed) < wanted {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {wanted} delivered",
            count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "webhooks:           {:>9.0} deliveries/s ({wanted} in {seconds:.2} s)",
        wanted as f64 / seconds
    );
}
