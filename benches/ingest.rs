//! The ingest load generator: durable events per second through the real host, side by side
//! in one run with (a) raw redb inserts of the same records in the same batch sizes and
//! (b) a bare axum route under the same load generator.
//!
//! Run: `cargo bench --bench ingest` (options after `--`: `--events N`, `--connections C`,
//! `--customers K`; defaults 20000, 32, 1000; `--plugins DIR` uploads `DIR/points.wasm`,
//! `DIR/tiers.wasm` and `DIR/engagement.wasm` instead of this build's, to compare two builds of
//! the plugins on one host; `--host PATH` runs that `tally` binary instead of this build's, and
//! `--tally-only` skips the two baselines; `--random-ids` gives events ids scattered over the
//! key space, as UUIDs are, instead of `bench-N`; `--compare PATH` measures this build's host (or
//! `--host`'s) and the `tally` binary at PATH in `--rounds N` interleaved pairs, default 6,
//! alternating which goes first, and prints each pair and the means: on a shared machine one
//! pair cannot show a change of less than ~15%).
//!
//! What it does:
//! 1. Starts the real `tally serve` binary on a loopback port with a fresh data directory,
//!    creates a tenant and uploads three reference plugins (points, tiers, engagement), all
//!    subscribed to every action.
//! 2. Posts ~1 KB Antavo-style checkout events from `C` keep-alive connections, each
//!    connection one request at a time, and measures events/s and p50/p99 latency. Every
//!    2xx answer means the event was committed with fsync. The client is a plain HTTP/1.1
//!    writer and reader on one thread (see [`read_response`]): it shares the two cores with
//!    the server it measures, so it should cost as little as it can.
//! 3. Runs the same load generator against a bare axum route that parses the JSON and answers
//!    201: the ceiling of HTTP and JSON on this machine.
//! 4. Inserts the same records (event, customer, ledger entry) straight into redb, committing
//!    `C` events per transaction with immediate durability: the most the host could queue in
//!    one batch is one event per connection, so that is the batch size it commits at under load.
//!    This is the ceiling of durable storage on this machine.

#![allow(
    clippy::expect_used,
    reason = "a benchmark stops loudly when its set-up fails"
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Options {
    events: usize,
    connections: usize,
    customers: usize,
    /// A directory of `points.wasm`, `tiers.wasm` and `engagement.wasm` to upload instead of
    /// the ones this build embeds: compares two builds of the plugins (or the SDK) on one
    /// build of the host, in one run after the other.
    plugins: Option<std::path::PathBuf>,
    /// A `tally` binary to run instead of this build's.
    host: Option<std::path::PathBuf>,
    /// Measure the host alone, without the bare axum route and raw redb.
    tally_only: bool,
    /// Event ids spread over the key space, as UUIDs are, instead of `bench-N` in sequence.
    random_ids: bool,
    /// A second `tally` binary to measure against the first, in interleaved pairs.
    compare: Option<std::path::PathBuf>,
    /// How many pairs `--compare` runs.
    rounds: usize,
}

impl Options {
    fn from_args() -> Options {
        let mut options = Options {
            events: 20_000,
            connections: 32,
            customers: 1000,
            plugins: None,
            host: None,
            tally_only: false,
            random_ids: false,
            compare: None,
            rounds: 6,
        };
        let args: Vec<String> = std::env::args().collect();
        let given = |name: &str| {
            args.iter()
                .position(|arg| arg == name)
                .and_then(|at| args.get(at + 1))
        };
        let value = |name: &str| given(name).and_then(|text| text.parse().ok());
        if let Some(events) = value("--events") {
            options.events = events;
        }
        if let Some(connections) = value("--connections") {
            options.connections = connections;
        }
        if let Some(customers) = value("--customers") {
            options.customers = customers;
        }
        options.plugins = given("--plugins").map(std::path::PathBuf::from);
        options.host = given("--host").map(std::path::PathBuf::from);
        options.tally_only = args.iter().any(|arg| arg == "--tally-only");
        options.random_ids = args.iter().any(|arg| arg == "--random-ids");
        options.compare = given("--compare").map(std::path::PathBuf::from);
        if let Some(rounds) = value("--rounds") {
            options.rounds = rounds;
        }
        options
    }
}

/// Events per second and latency percentiles of one run.
struct Figures {
    name: &'static str,
    events_per_second: f64,
    p50: Duration,
    p99: Duration,
    /// The host's CPU time per event, in µs; measured for the tally runs only.
    host_cpu_micros: Option<f64>,
}

/// CPU time the host's threads spent, by thread name, in nanoseconds. Throughput on a shared
/// machine is noisy; CPU time per event is what a change to the host actually moves.
fn host_cpu(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut by_name = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        // schedstat: time on CPU (ns), time waiting to run (ns), timeslices.
        let on_cpu = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        *by_name.entry(name.trim().to_owned()).or_insert(0) += on_cpu;
    }
    by_name
}

/// Bytes the host has had written to the disk (`write_bytes` of `/proc/<pid>/io`): with
/// redb's copy-on-write pages, what an event costs the disk is mostly whole pages rewritten.
fn host_disk_writes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("write_bytes: "))
                .and_then(|value| value.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The machine's CPU time by state (`user nice system idle iowait irq softirq steal`, in
/// ticks), from the first line of `/proc/stat`: idle time during a run means the host was
/// waiting (for the disk, or for work), not short of CPU.
fn machine_cpu() -> Vec<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|text| {
            let first = text.lines().next()?.strip_prefix("cpu ")?.to_owned();
            Some(
                first
                    .split_whitespace()
                    .take(8)
                    .filter_map(|field| field.parse().ok())
                    .collect(),
            )
        })
        .unwrap_or_default()
}

/// The shares of the machine's CPU time between two `machine_cpu` readings.
fn machine_shares(before: &[u64], after: &[u64]) -> String {
    let spent: Vec<u64> = after
        .iter()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect();
    let total = spent.iter().sum::<u64>().max(1) as f64;
    let share = |at: usize| spent.get(at).copied().unwrap_or(0) as f64 * 100.0 / total;
    format!(
        "machine CPU during the run: user {:.0}%, system {:.0}%, idle {:.0}%, iowait {:.0}%, softirq {:.0}%, steal {:.0}%",
        share(0) + share(1),
        share(2) + share(5),
        share(3),
        share(4),
        share(6),
        share(7)
    )
}

/// The host's CPU time per event between two `host_cpu` readings, by thread name.
fn cpu_per_event(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    events: usize,
) -> (String, f64) {
    let mut parts = Vec::new();
    let mut total = 0;
    for (name, spent) in after {
        let spent = spent.saturating_sub(before.get(name).copied().unwrap_or(0));
        total += spent;
        if spent > 0 {
            parts.push(format!(
                "{name} {:.0}",
                spent as f64 / events as f64 / 1000.0
            ));
        }
    }
    let micros = total as f64 / events as f64 / 1000.0;
    (
        format!(
            "host CPU per event (µs): total {micros:.0} = {}",
            parts.join(", ")
        ),
        micros,
    )
}

fn checkout(sequence: usize, customers: usize, random_ids: bool) -> Value {
    let transaction = format!("T-{sequence:08}");
    let items: Vec<Value> = (0..4)
        .map(|item| {
            json!({
                "transaction_id": transaction,
                "product_id": format!("UFA-8888-9439{item}-EN/38/YELLOW"),
                "product_name": "Yellow T-Shirt",
                "product_url": "https://example.com/yellow-t-shirt",
                "quantity": "1",
                "subtotal": "50",
                "price": "50",
                "product_category": "t-shirts"
            })
        })
        .collect();
    json!({
        "id": if random_ids { scattered_id(sequence) } else { format!("bench-{sequence}") },
        "customer": format!("customer-{}", sequence % customers),
        "action": "checkout",
        "data": {"total": "200", "transaction_id": transaction, "items": items}
    })
}

/// A unique id whose place in the key order has nothing to do with `sequence`, as a client's
/// random UUIDs would (splitmix64: a bijection, so no two sequences share an id).
fn scattered_id(sequence: usize) -> String {
    let mut z = (sequence as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

/// One request as the load generator sends it: head and body in one buffer, built before
/// the clock starts so that the run measures the server, not the building of requests.
fn request_bytes(address: SocketAddr, key: Option<&str>, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /v1/events HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n",
        body.len()
    );
    if let Some(key) = key {
        request.push_str(&format!("authorization: Bearer {key}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// Every body as a request, shared by the load's connections.
fn requests(address: SocketAddr, key: Option<&str>, bodies: &[Vec<u8>]) -> Arc<Vec<Vec<u8>>> {
    Arc::new(
        bodies
            .iter()
            .map(|body| request_bytes(address, key, body))
            .collect(),
    )
}

/// Why one request of the load did not get a 2xx.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0} {1}")]
    Status(u16, String),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Protocol(String),
}

/// Reads one response off a keep-alive connection; `buffer` carries bytes read past it.
///
/// The load generator is a plain HTTP/1.1 client over a socket (httparse reads the head)
/// rather than a general one: reqwest costs two to three times the CPU per request, on the
/// same two cores as the host it measures. Both servers it talks to (`tally serve` and the bare axum route)
/// answer with a `content-length`, so that is the only framing it needs, and it refuses any
/// other loudly.
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    buffer: &mut Vec<u8>,
) -> Result<(), Failure> {
    use tokio::io::AsyncReadExt;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response
            .parse(buffer)
            .map_err(|error| Failure::Protocol(format!("unreadable response head: {error}")))?;
        if let httparse::Status::Complete(head) = parsed {
            let status = response.code.unwrap_or(0);
            let length = response
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("content-length"))
                .and_then(|header| {
                    std::str::from_utf8(header.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or_else(|| Failure::Protocol("a response without content-length".into()))?;
            let end = head + length;
            while buffer.len() < end {
                if stream.read_buf(buffer).await.map_err(Failure::Io)? == 0 {
                    return Err(Failure::Protocol(
                        "the connection closed mid-response".into(),
                    ));
                }
            }
            // The body is read only to report a failure.
            let failed = (!(200..300).contains(&status))
                .then(|| String::from_utf8_lossy(&buffer[head..end]).into_owned());
            buffer.drain(..end);
            return match failed {
                None => Ok(()),
                Some(body) => Err(Failure::Status(status, body)),
            };
        }
        if stream.read_buf(buffer).await.map_err(Failure::Io)? == 0 {
            return Err(Failure::Protocol(
                "the connection closed before a response".into(),
            ));
        }
    }
}

/// Sends `requests` from `connections` keep-alive connections, one request in flight each;
/// returns the time it took, each success's latency and the number of failures.
async fn load(
    address: SocketAddr,
    requests: Arc<Vec<Vec<u8>>>,
    connections: usize,
) -> (Duration, Vec<Duration>, usize) {
    use tokio::io::AsyncWriteExt;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for connection in 0..connections {
        let requests = requests.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            let mut stream = None;
            let mut buffer = Vec::with_capacity(16 * 1024);
            for request in requests.iter().skip(connection).step_by(connections) {
                let sent = Instant::now();
                let outcome = async {
                    if stream.is_none() {
                        let opened = tokio::net::TcpStream::connect(address)
                            .await
                            .map_err(Failure::Io)?;
                        opened.set_nodelay(true).map_err(Failure::Io)?;
                        buffer.clear();
                        stream = Some(opened);
                    }
                    let open = stream
                        .as_mut()
                        .ok_or_else(|| Failure::Protocol("no stream".into()))?;
                    open.write_all(request).await.map_err(Failure::Io)?;
                    read_response(open, &mut buffer).await
                }
                .await;
                match outcome {
                    Ok(()) => latencies.push(sent.elapsed()),
                    Err(failure) => {
                        failures += 1;
                        if failures == 1 {
                            eprintln!("a request failed: {failure}");
                        }
                        // The connection may be mid-response: start the next on a new one.
                        stream = None;
                    }
                }
            }
            (latencies, failures)
        });
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    while let Some(done) = tasks.join_next().await {
        let (mut some, failed) = done.expect("a load task");
        latencies.append(&mut some);
        failures += failed;
    }
    (started.elapsed(), latencies, failures)
}

fn figures(name: &'static str, elapsed: Duration, mut latencies: Vec<Duration>) -> Figures {
    latencies.sort();
    let at = |fraction: f64| {
        latencies
            .get(
                ((latencies.len() as f64 * fraction) as usize)
                    .min(latencies.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or_default()
    };
    Figures {
        name,
        events_per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        host_cpu_micros: None,
    }
}

struct Host {
    child: Child,
    address: SocketAddr,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host(binary: &std::path::Path, data: &std::path::Path) -> Host {
    let mut child = Command::new(binary)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("TALLY_ADMIN_KEY", "bench-admin-key")
        .env(
            "RUST_LOG",
            std::env::var("INGEST_HOST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        )
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("INGEST_HOST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .expect("tally serve starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("tally serve prints its address")
            .expect("readable stdout");
        if let Some(rest) = line.strip_prefix("tally listening on http://") {
            let address = rest.split_whitespace().next().expect("an address");
            break address.parse().expect("a socket address");
        }
    };
    // Keep draining stdout so the host never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Host { child, address }
}

async fn run_tally(
    options: &Options,
    binary: &std::path::Path,
    bodies: Arc<Vec<Vec<u8>>>,
    warmup: Arc<Vec<Vec<u8>>>,
) -> Figures {
    let data = tempfile::tempdir().expect("a temp dir");
    let host = start_host(binary, data.path());
    let base = format!("http://{}", host.address);
    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth("bench-admin-key")
        .json(&json!({"id": "bench", "name": "Bench"}))
        .send()
        .await
        .expect("create a tenant")
        .json()
        .await
        .expect("the tenant's key");
    let key = created["api_key"].as_str().expect("an api_key").to_owned();
    for plugin in [
        tally_plugin_wasm::POINTS,
        tally_plugin_wasm::TIERS,
        tally_plugin_wasm::ENGAGEMENT,
    ] {
        let wasm = match &options.plugins {
            Some(dir) => std::fs::read(dir.join(format!("{}.wasm", plugin.name)))
                .expect("read a plugin from --plugins"),
            None => plugin.wasm.to_vec(),
        };
        let response = client
            .put(format!("{base}/v1/plugins/{}", plugin.name))
            .bearer_auth(&key)
            .header("content-type", "application/wasm")
            .body(wasm)
            .send()
            .await
            .expect("upload a plugin");
        assert!(
            response.status().is_success(),
            "uploading {}: {}",
            plugin.name,
            response.text().await.unwrap_or_default()
        );
    }
    let (warmup, bodies) = (
        requests(host.address, Some(&key), &warmup),
        requests(host.address, Some(&key), &bodies),
    );
    load(host.address, warmup, options.connections).await;
    let pid = host.child.id();
    let (before, generator_before) = (host_cpu(pid), host_cpu(std::process::id()));
    let written_before = host_disk_writes(pid);
    let machine_before = machine_cpu();
    let (elapsed, latencies, failures) = load(host.address, bodies, options.connections).await;
    let machine_after = machine_cpu();
    assert_eq!(failures, 0, "every event is accepted");
    println!("{}", machine_shares(&machine_before, &machine_after));
    let (cpu_line, host_cpu_micros) = cpu_per_event(&before, &host_cpu(pid), latencies.len());
    println!("{cpu_line}");
    println!(
        "host disk writes per event: {:.1} KiB",
        host_disk_writes(pid).saturating_sub(written_before) as f64
            / latencies.len() as f64
            / 1024.0
    );
    let generator = host_cpu(std::process::id())
        .values()
        .sum::<u64>()
        .saturating_sub(generator_before.values().sum::<u64>());
    println!(
        "load generator CPU per event (µs): {:.0}",
        generator as f64 / latencies.len() as f64 / 1000.0
    );
    Figures {
        host_cpu_micros: Some(host_cpu_micros),
        ..figures(
            "tally: POST /v1/events, 3 plugins, durable",
            elapsed,
            latencies,
        )
    }
}

fn run_bare_axum(
    generator: &tokio::runtime::Runtime,
    options: &Options,
    bodies: Arc<Vec<Vec<u8>>>,
    warmup: Arc<Vec<Vec<u8>>>,
) -> Figures {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/v1/events",
        post(|axum::Json(event): axum::Json<Value>| async move {
            (
                axum::http::StatusCode::CREATED,
                axum::Json(json!({"id": event["id"], "points": 0})),
            )
        }),
    );
    // The server gets a runtime of its own, as `tally serve` has, apart from the load
    // generator's.
    let server = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a server runtime");
    let listener = server
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a port");
    let address = listener.local_addr().expect("an address");
    server.spawn(async move { axum::serve(listener, app).await });
    let (warmup, bodies) = (
        requests(address, None, &warmup),
        requests(address, None, &bodies),
    );
    // The generator's `block_on`, not `.await`: the server's runtime is built and dropped
    // here, outside any runtime.
    generator.block_on(load(address, warmup, options.connections));
    let machine_before = machine_cpu();
    let (elapsed, latencies, failures) =
        generator.block_on(load(address, bodies, options.connections));
    println!(
        "bare axum: {}",
        machine_shares(&machine_before, &machine_cpu())
    );
    server.shutdown_background();
    assert_eq!(failures, 0);
    figures(
        "bare axum route: parse JSON, answer 201",
        elapsed,
        latencies,
    )
}

fn run_raw_redb(options: &Options, bodies: &[Vec<u8>]) -> Figures {
    use redb::{Database, TableDefinition};
    const EVENTS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("events");
    const CUSTOMERS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("customers");
    const LEDGER: TableDefinition<'_, (&str, &str, u64), &[u8]> = TableDefinition::new("ledger");
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = Database::create(dir.path().join("raw.redb")).expect("a redb file");
    let ledger_entry = br#"{"amount":200,"kind":"earn","reason":"checkout","plugin":"points","balance_after":200}"#;
    let customer =
        br#"{"id":"c","points":{"balance":200,"lifetime":200},"tier":"bronze","event_count":1}"#;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut sequence = 0u64;
    for batch in bodies.chunks(options.connections) {
        let batch_started = Instant::now();
        let txn = db.begin_write().expect("a write transaction");
        {
            let mut events = txn.open_table(EVENTS).expect("events");
            let mut customers = txn.open_table(CUSTOMERS).expect("customers");
            let mut ledger = txn.open_table(LEDGER).expect("ledger");
            for body in batch {
                let event: Value = serde_json::from_slice(body).expect("JSON");
                let (id, who) = (
                    event["id"].as_str().unwrap_or(""),
                    event["customer"].as_str().unwrap_or(""),
                );
                sequence += 1;
                events
                    .insert(("bench", id), body.as_slice())
                    .expect("insert");
                customers
                    .insert(("bench", who), customer.as_slice())
                    .expect("insert");
                ledger
                    .insert(("bench", who, sequence), ledger_entry.as_slice())
                    .expect("insert");
            }
        }
        txn.commit().expect("a durable commit");
        // Every event of a batch waits for the batch's commit.
        latencies.extend(std::iter::repeat_n(batch_started.elapsed(), batch.len()));
    }
    figures(
        "raw redb: same records, same batch size, fsync",
        started.elapsed(),
        latencies,
    )
}

fn main() {
    // `cargo bench` passes `--bench`; this is not a criterion bench, so that flag is ignored.
    let options = Options::from_args();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..options.events)
            .map(|n| {
                serde_json::to_vec(&checkout(n, options.customers, options.random_ids))
                    .expect("JSON")
            })
            .collect(),
    );
    let warmup: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..1000)
            .map(|n| {
                serde_json::to_vec(&checkout(
                    options.events + n,
                    options.customers,
                    options.random_ids,
                ))
                .expect("JSON")
            })
            .collect(),
    );
    println!(
        "ingest: {} events of {} bytes, {} connections, {} customers, {} cores",
        options.events,
        bodies[0].len(),
        options.connections,
        options.customers,
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    );
    // One thread for the load generator: it needs a fraction of a core, and a second worker
    // would only add wake-ups on the two cores the server under test runs on.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let binary = options
        .host
        .clone()
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tally").into());
    if let Some(other) = &options.compare {
        compare(&runtime, &options, [&binary, other], &bodies, &warmup);
        return;
    }
    let tally = runtime.block_on(run_tally(&options, &binary, bodies.clone(), warmup.clone()));
    let mut rows = vec![tally];
    if !options.tally_only {
        rows.push(run_bare_axum(&runtime, &options, bodies.clone(), warmup));
        rows.push(run_raw_redb(&options, &bodies));
    }
    println!();
    println!(
        "{:<48} {:>12} {:>10} {:>10} {:>14}",
        "", "events/s", "p50", "p99", "tally / this"
    );
    let tally_per_second = rows[0].events_per_second;
    for row in &rows {
        println!(
            "{:<48} {:>12.0} {:>10.2?} {:>10.2?} {:>14.2}",
            row.name,
            row.events_per_second,
            row.p50,
            row.p99,
            tally_per_second / row.events_per_second
        );
    }
}

/// `--compare`: the two hosts in interleaved pairs, A first in rounds 1, 3, ... and B first
/// in rounds 2, 4, ..., so that a machine slowing down during the run does not favour either.
fn compare(
    runtime: &tokio::runtime::Runtime,
    options: &Options,
    binaries: [&std::path::PathBuf; 2],
    bodies: &Arc<Vec<Vec<u8>>>,
    warmup: &Arc<Vec<Vec<u8>>>,
) {
    println!("A: {}", binaries[0].display());
    println!("B: {}", binaries[1].display());
    let mut pairs = Vec::new();
    for round in 0..options.rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut pair: [Option<Figures>; 2] = [None, None];
        for which in order {
            println!(
                "round {} of {}: {}",
                round + 1,
                options.rounds,
                ["A", "B"][which]
            );
            let figures = runtime.block_on(run_tally(
                options,
                binaries[which],
                bodies.clone(),
                warmup.clone(),
            ));
            pair[which] = Some(figures);
        }
        if let [Some(a), Some(b)] = pair {
            pairs.push((a, b));
        }
    }
    println!();
    println!(
        "{:>5} {:>12} {:>12} {:>8} {:>10} {:>10} {:>8}",
        "round", "A events/s", "B events/s", "B / A", "A µs/ev", "B µs/ev", "B / A"
    );
    let micros = |figures: &Figures| figures.host_cpu_micros.unwrap_or(f64::NAN);
    for (round, (a, b)) in pairs.iter().enumerate() {
        println!(
            "{:>5} {:>12.0} {:>12.0} {:>8.3} {:>10.1} {:>10.1} {:>8.3}",
            round + 1,
            a.events_per_second,
            b.events_per_second,
            b.events_per_second / a.events_per_second,
            micros(a),
            micros(b),
            micros(b) / micros(a)
        );
    }
    let count = pairs.len().max(1) as f64;
    let mean =
        |value: &dyn Fn(&(Figures, Figures)) -> f64| pairs.iter().map(value).sum::<f64>() / count;
    let faster = pairs
        .iter()
        .filter(|(a, b)| b.events_per_second > a.events_per_second)
        .count();
    let cheaper = pairs.iter().filter(|(a, b)| micros(b) < micros(a)).count();
    println!(
        "means: A {:.0} events/s, {:.1} µs/event; B {:.0} events/s, {:.1} µs/event",
        mean(&|(a, _)| a.events_per_second),
        mean(&|(a, _)| micros(a)),
        mean(&|(_, b)| b.events_per_second),
        mean(&|(_, b)| micros(b)),
    );
    println!(
        "B / A, mean of the pairs: events/s {:.3}, CPU per event {:.3}; B faster in {faster} of {} pairs, cheaper in {cheaper}",
        mean(&|(a, b)| b.events_per_second / a.events_per_second),
        mean(&|(a, b)| micros(b) / micros(a)),
        pairs.len()
    );
}
