//! Crash test: the real `tally serve`, killed with SIGKILL in the middle of ingest, again and
//! again, on the same data directory.
//!
//! Each cycle posts checkouts from many concurrent clients (fresh ids, the same fresh id twice
//! at once, and re-posts of ids sent before, in this cycle or an earlier one), kills the host
//! with SIGKILL after a random delay, restarts it on the same data and checks:
//!
//! - every event acknowledged (any 2xx: `201`, or `200` replayed) before any kill is stored,
//!   exactly once: its customer's history holds it once, for every acknowledgment since the
//!   first cycle, and `GET /v1/events/{id}` finds those of the cycle just killed; nothing is
//!   stored that was never sent;
//! - no id is ever created (`201`) twice, across all cycles and restarts;
//! - re-posting every id sent in the cycle (acknowledged or not, plus a sample of older ones)
//!   answers a stored one with `replayed: true` and the same event and changes nothing, and
//!   stores the ones the kill lost exactly once; afterwards every id ever sent is stored;
//! - every ledger is append-only across the restart and re-posts (the old ledger is a prefix
//!   of the new one), each entry's running balance follows from the one before, and every
//!   customer's balance, lifetime and event count agree with the whole ledger and history;
//! - the earn entries match the stored checkouts one to one: each checkout has exactly the
//!   entries its two plugins give (a handwritten module that earns 3, and the real `points`
//!   plugin at rate 0.5: `floor(total / 2)`), and no entry exists without a stored event.
//!
//! It is a `harness = false` test so that it can take its own flags:
//!
//! ```sh
//! cargo test --test crash                                  # a few cycles, for CI
//! cargo test --test crash -- --cycles 50                   # soak: more cycles
//! cargo test --test crash -- --seed 1234567 --cycles 4     # again with a printed seed
//! ```
//!
//! Every run prints its seed first. The seed fixes what the clients send and when the kill
//! comes, not how the host's threads interleave, so a failure reproduces often with its seed
//! but not always: run it a few times, or with more cycles. On a failure the data directory
//! is kept and its path printed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failing test should panic"
)]

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Host, earning, ledger_sum};

/// Cycles when no `--cycles` is given: enough kills to matter, few enough for CI.
const DEFAULT_CYCLES: usize = 4;
/// Concurrent clients posting during a cycle.
const CLIENTS: usize = 24;
/// Customers the checkouts are spread over: few enough that each gets many events per cycle
/// (long chains in one batch), enough that batches hold many chains.
const CUSTOMERS: usize = 32;
/// What the handwritten `bonus` plugin earns on every event.
const BONUS: i64 = 3;
/// The kill comes this long after the clients start, at the least and at the most.
const KILL_AFTER_MS: (u64, u64) = (30, 1500);
/// Ids of earlier cycles re-posted after each restart, besides every id of the cycle.
const OLD_REPOSTS: usize = 200;
/// Concurrent re-posting tasks after a restart.
const REPOSTERS: usize = 16;
/// Page size for reading histories and ledgers back: big pages keep a long soak's audits
/// quick, and a soak's customers still span many pages.
const PAGE: usize = 200;
/// `SIGKILL`: how a killed host must have ended.
const SIGKILL: i32 = 9;

const USAGE: &str = "usage: crash [--cycles N] [--seed S] [--list]
  --cycles N  kill and restart the host N times (default 4)
  --seed S    the seed for what is sent and when the kill comes (default: from the clock)
  --list      print the test's name and exit";

fn main() {
    let options = match Flags::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("crash: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    if options.list {
        // `--list --ignored` asks for the ignored tests: there are none.
        if !options.ignored {
            println!("crash: test");
        }
        return;
    }
    if options.ignored {
        println!("0 passed, 0 failed");
        return;
    }
    let seed = options.seed.unwrap_or_else(clock_seed);
    println!(
        "crash: seed {seed}, {cycles} cycles (again: cargo test --test crash -- --seed {seed} --cycles {cycles})",
        cycles = options.cycles
    );
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(seed, options.cycles));
    println!(
        "crash: {} cycles passed in {:.1} s (seed {seed})",
        options.cycles,
        started.elapsed().as_secs_f64()
    );
    println!("1 passed, 0 failed");
}

/// The command line. Anything else libtest would be given (`--nocapture`, `--quiet`,
/// `--test-threads=2`, a filter) is ignored, so `cargo test` and test runners can pass it.
#[derive(Debug)]
struct Flags {
    cycles: usize,
    seed: Option<u64>,
    list: bool,
    ignored: bool,
}

impl Flags {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Flags, String> {
        let mut flags = Flags {
            cycles: DEFAULT_CYCLES,
            seed: None,
            list: false,
            ignored: false,
        };
        while let Some(arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            match name {
                "--cycles" | "--seed" => {
                    let value = inline
                        .or_else(|| args.next())
                        .ok_or_else(|| format!("{name} needs a value"))?;
                    let number: u64 = value
                        .parse()
                        .map_err(|_| format!("{name} {value}: not a whole number"))?;
                    if name == "--cycles" {
                        flags.cycles = usize::try_from(number)
                            .ok()
                            .filter(|&cycles| cycles >= 1)
                            .ok_or_else(|| format!("--cycles {value}: at least 1"))?;
                    } else {
                        flags.seed = Some(number);
                    }
                }
                "--list" => flags.list = true,
                "--ignored" => flags.ignored = true,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                _ => {}
            }
        }
        Ok(flags)
    }
}

fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos());
    // Small enough to type back in.
    (nanos as u64 ^ u64::from(std::process::id())) % 1_000_000_000
}

/// SplitMix64: a tiny seeded generator, so a run's choices follow from its seed alone.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next();
        rng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

/// What the test knows of one event id: what it sent, and what the host answered.
#[derive(Debug, Clone)]
struct Sent {
    customer: String,
    total: u64,
    /// Seconds after the first timestamp: the event's own time.
    at: u64,
    /// The cycle it was first sent in.
    cycle: usize,
    /// How many answers said `201 Created`: more than one is a double apply.
    created: u32,
    /// The cycle of its first 2xx answer; from then on it must be stored.
    acked_in: Option<usize>,
}

impl Sent {
    /// The event as posted; the same body every time the id is sent.
    fn event(&self, id: &str) -> Value {
        json!({
            "id": id,
            "customer": self.customer,
            "action": "checkout",
            "timestamp": timestamp(self.at),
            "data": {"transaction_id": format!("t-{id}"), "total": self.total},
        })
    }

    /// The points plugin at rate 0.5 gives `floor(total / 2)`.
    fn points_earned(&self) -> i64 {
        i64::try_from(self.total / 2).unwrap()
    }

    fn expected_points(&self) -> i64 {
        BONUS + self.points_earned()
    }
}

/// `2026-01-01T00:00:00Z` plus `seconds`, in months of 28 days (any valid time will do).
fn timestamp(seconds: u64) -> String {
    let day = seconds / 86_400;
    format!(
        "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        1 + (day / 28) % 12,
        1 + day % 28,
        (seconds / 3600) % 24,
        (seconds / 60) % 60,
        seconds % 60
    )
}

/// Every id sent so far, shared by the clients of a cycle.
#[derive(Debug, Default)]
struct Book {
    /// Ids in the order first sent: re-posts draw from it.
    order: Vec<String>,
    sent: HashMap<String, Sent>,
    /// Seconds handed out as event times.
    clock: u64,
}

impl Book {
    fn register(&mut self, id: &str, customer: String, total: u64, cycle: usize) {
        self.clock += 1;
        self.order.push(id.to_owned());
        self.sent.insert(
            id.to_owned(),
            Sent {
                customer,
                total,
                at: self.clock,
                cycle,
                created: 0,
                acked_in: None,
            },
        );
    }
}

/// What a run knows to report a failure: the seed and where it was.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    seed: u64,
    cycles: usize,
    cycle: usize,
}

impl Ctx {
    fn check(&self, phase: &str, problems: &[String]) {
        if problems.is_empty() {
            return;
        }
        let mut message = format!(
            "crash test failed: seed {}, cycle {} of {}, {phase}: {} broken invariant(s)",
            self.seed,
            self.cycle,
            self.cycles,
            problems.len()
        );
        for problem in problems.iter().take(25) {
            let _ = write!(message, "\n  - {problem}");
        }
        if problems.len() > 25 {
            let _ = write!(message, "\n  ... and {} more", problems.len() - 25);
        }
        let _ = write!(
            message,
            "\nagain: cargo test --test crash -- --seed {} --cycles {}",
            self.seed, self.cycles
        );
        panic!("{message}");
    }
}

/// An HTTP client the spawned tasks can own (a `Host` stays with the test, which kills it).
#[derive(Debug, Clone)]
struct Api {
    client: reqwest::Client,
    base: String,
    key: String,
}

/// How the host answered one post.
enum Answer {
    /// A status line came back; the body if it could be read too.
    Status(StatusCode, Option<Value>),
    /// No answer: the connection failed or broke before a status came.
    Lost(String),
}

impl Api {
    fn new(host: &Host, key: &str) -> Api {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            base: host.base.clone(),
            key: key.to_owned(),
        }
    }

    async fn post_event(&self, event: &Value) -> Answer {
        let sent = self
            .client
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(&self.key)
            .json(event)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                // The status alone is the acknowledgment: the host answers only after the
                // commit, so a 201 whose body the kill cut off still counts.
                let body = response
                    .bytes()
                    .await
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                Answer::Status(status, body)
            }
            Err(error) => Answer::Lost(error.to_string()),
        }
    }
}

/// Records an answer for `id` in the book; what it broke goes to `problems`. Returns whether
/// the host answered at all.
fn record(
    book: &Mutex<Book>,
    problems: &Mutex<Vec<String>>,
    id: &str,
    cycle: usize,
    answer: &Answer,
    killed: bool,
) -> bool {
    let mut book = book.lock().unwrap();
    let sent = book.sent.get_mut(id).unwrap();
    let mut broken = Vec::new();
    let answered = match answer {
        Answer::Lost(error) => {
            if !killed {
                broken.push(format!(
                    "posting {id} failed before the kill, with the host up: {error}"
                ));
            }
            false
        }
        Answer::Status(status, body) => {
            if status.is_success() && sent.acked_in.is_none() {
                sent.acked_in = Some(cycle);
            }
            match *status {
                StatusCode::CREATED => {
                    sent.created += 1;
                    if sent.created > 1 {
                        broken.push(format!(
                            "{id} was created (201) {} times: applied more than once",
                            sent.created
                        ));
                    }
                }
                StatusCode::OK => {}
                // The queue was full or the host is stopping: not stored, may be sent again.
                StatusCode::SERVICE_UNAVAILABLE => {}
                other => broken.push(format!(
                    "posting {id} answered {other}: {}",
                    body.as_ref().map_or_else(String::new, Value::to_string)
                )),
            }
            if status.is_success()
                && let Some(body) = body
            {
                broken.extend(check_answer(id, sent, *status, body));
            }
            true
        }
    };
    drop(book);
    problems.lock().unwrap().extend(broken);
    answered
}

/// What a 2xx answer for `id` must say.
fn check_answer(id: &str, sent: &Sent, status: StatusCode, body: &Value) -> Vec<String> {
    let mut broken = Vec::new();
    let replayed = status == StatusCode::OK;
    if body["replayed"] != replayed {
        broken.push(format!(
            "{id} answered {status} with replayed {}",
            body["replayed"]
        ));
    }
    if body["event"]["id"] != id || body["event"]["customer"] != sent.customer.as_str() {
        broken.push(format!(
            "{id} answered {status} for another event: id {}, customer {}",
            body["event"]["id"], body["event"]["customer"]
        ));
    }
    if body["points"].as_i64() != Some(sent.expected_points()) {
        broken.push(format!(
            "{id} (total {}) answered {status} with {} points, not {}",
            sent.total,
            body["points"],
            sent.expected_points()
        ));
    }
    broken
}

/// One client: posts until the host is killed. Fresh ids mostly; now and then the same fresh
/// id twice at once, or an id sent before (by any client, in any cycle, answered or not).
async fn client(
    api: Api,
    book: Arc<Mutex<Book>>,
    problems: Arc<Mutex<Vec<String>>>,
    killed: Arc<AtomicBool>,
    cycle: usize,
    number: usize,
    mut rng: Rng,
) {
    let mut n = 0;
    while !killed.load(Ordering::SeqCst) {
        let roll = rng.below(100);
        let (id, twice) = if roll < 15 {
            let book = book.lock().unwrap();
            if book.order.is_empty() {
                continue;
            }
            let pick = rng.below(book.order.len() as u64) as usize;
            (book.order[pick].clone(), false)
        } else {
            let id = format!("k{cycle}-{number}-{n}");
            n += 1;
            let customer = format!("c{}", rng.below(CUSTOMERS as u64));
            // At least 2, so that `points` earns at least 1: it writes no entry for nothing.
            let total = 2 + rng.below(499);
            book.lock().unwrap().register(&id, customer, total, cycle);
            (id, roll < 20)
        };
        let event = book.lock().unwrap().sent[&id].event(&id);
        let answered = if twice {
            let (first, second) = tokio::join!(api.post_event(&event), api.post_event(&event));
            let killed = killed.load(Ordering::SeqCst);
            let first = record(&book, &problems, &id, cycle, &first, killed);
            let second = record(&book, &problems, &id, cycle, &second, killed);
            first && second
        } else {
            let answer = api.post_event(&event).await;
            record(
                &book,
                &problems,
                &id,
                cycle,
                &answer,
                killed.load(Ordering::SeqCst),
            )
        };
        if !answered {
            return;
        }
    }
}

/// Sets up the tenant on a new host: a handwritten plugin that earns exactly [`BONUS`] on
/// every event, and the real `points` plugin at rate 0.5 (a config that must survive
/// restarts, or the earnings change).
async fn set_up(host: &Host) -> String {
    let key = host.tenant("acme").await;
    let (status, body) = host.put_wasm("bonus", &key, &earning(BONUS, "bonus")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let points = tally_plugin_wasm::POINTS;
    let (status, body) = host.put_wasm(points.name, &key, points.wasm).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = host
        .patch(
            "/v1/plugins/points",
            &key,
            &json!({"config": {"rate": "0.5"}, "on_error": "reject"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    key
}

/// A cycle's load: starts the clients, kills the host after a random delay, waits for the
/// clients to notice. Returns the delay.
async fn load_and_kill(
    host: Host,
    key: &str,
    book: Book,
    ctx: Ctx,
    rng: &mut Rng,
) -> (Book, Duration) {
    let api = Api::new(&host, key);
    let book = Arc::new(Mutex::new(book));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let killed = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for number in 0..CLIENTS {
        clients.push(tokio::spawn(client(
            api.clone(),
            book.clone(),
            problems.clone(),
            killed.clone(),
            ctx.cycle,
            number,
            Rng::new(ctx.seed, (ctx.cycle * 1000 + number + 1) as u64),
        )));
    }
    let delay =
        Duration::from_millis(KILL_AFTER_MS.0 + rng.below(KILL_AFTER_MS.1 - KILL_AFTER_MS.0));
    tokio::time::sleep(delay).await;
    // Before the kill, so that a client whose post fails can tell the kill from a bug.
    killed.store(true, Ordering::SeqCst);
    let status = host.kill();
    let mut broken = Vec::new();
    if status.signal() != Some(SIGKILL) {
        broken.push(format!(
            "the host had already ended by itself before the kill: {status}"
        ));
    }
    for client in clients {
        if let Err(error) = client.await {
            broken.push(format!("a client task failed: {error}"));
        }
    }
    broken.extend(problems.lock().unwrap().drain(..));
    ctx.check("posting before the kill", &broken);
    (unshare(book), delay)
}

/// The book back from the tasks that shared it, all finished.
fn unshare(book: Arc<Mutex<Book>>) -> Book {
    Arc::try_unwrap(book)
        .expect("every task holding the book has finished")
        .into_inner()
        .unwrap()
}

/// What the host holds, read back over HTTP.
#[derive(Debug, Default)]
struct Stored {
    /// Event id → (customer, seq).
    events: HashMap<String, (String, u64)>,
    /// Customer → its whole ledger, oldest first.
    ledgers: BTreeMap<String, Vec<Value>>,
}

/// Reads every customer's profile, history and ledger and checks them against the book.
/// With `complete`, every id ever sent must be stored; otherwise every acknowledged one.
async fn audit(host: &Host, key: &str, book: &Book, complete: bool) -> (Stored, Vec<String>) {
    let mut stored = Stored::default();
    let mut broken = Vec::new();
    let mut copies: HashMap<String, usize> = HashMap::new();
    for customer in (0..CUSTOMERS).map(|n| format!("c{n}")) {
        let (status, profile) = host.get(&format!("/v1/customers/{customer}"), key).await;
        if status == StatusCode::NOT_FOUND {
            // No event of theirs is stored; any that should be is reported as missing below.
            continue;
        }
        if status != StatusCode::OK {
            broken.push(format!("GET customer {customer}: {status} {profile}"));
            continue;
        }
        let history = host.all_events_paged(key, &customer, PAGE).await;
        let ledger = host.all_ledger_paged(key, &customer, PAGE).await;
        let mut totals: HashMap<String, &Sent> = HashMap::new();
        for event in &history {
            let id = event["id"].as_str().unwrap_or_default().to_owned();
            *copies.entry(id.clone()).or_default() += 1;
            let Some(sent) = book.sent.get(&id) else {
                broken.push(format!("{customer} holds {id}, which was never sent"));
                continue;
            };
            let total = &event["data"]["total"];
            if sent.customer != customer || total.as_u64() != Some(sent.total) {
                broken.push(format!(
                    "{id} is stored for {customer} with total {total}; it was sent for {} with total {}",
                    sent.customer, sent.total
                ));
            }
            if event["points"].as_i64() != Some(sent.expected_points()) {
                broken.push(format!(
                    "stored {id} (total {}) has {} points, not {}",
                    sent.total,
                    event["points"],
                    sent.expected_points()
                ));
            }
            stored.events.insert(
                id.clone(),
                (customer.clone(), event["seq"].as_u64().unwrap_or(0)),
            );
            totals.insert(id, sent);
        }
        broken.extend(check_ledger(
            &customer, &profile, &history, &ledger, &totals,
        ));
        stored.ledgers.insert(customer, ledger);
    }
    for (id, count) in &copies {
        if *count > 1 {
            broken.push(format!("{id} is stored {count} times"));
        }
    }
    // In the order sent, so that a failure lists the earliest losses first.
    for (id, sent) in book.order.iter().map(|id| (id, &book.sent[id])) {
        let must = complete || sent.acked_in.is_some();
        if must && !copies.contains_key(id) {
            broken.push(match sent.acked_in {
                Some(cycle) => format!(
                    "{id} (customer {}, sent in cycle {}) was acknowledged in cycle {cycle} but is not stored",
                    sent.customer, sent.cycle
                ),
                None => format!(
                    "{id} (customer {}) was re-posted after the restart but is not stored",
                    sent.customer
                ),
            });
        }
    }
    (stored, broken)
}

/// One customer: the ledger adds up, follows from its history, and the profile agrees.
fn check_ledger(
    customer: &str,
    profile: &Value,
    history: &[Value],
    ledger: &[Value],
    sent: &HashMap<String, &Sent>,
) -> Vec<String> {
    let mut broken = Vec::new();
    let (mut balance, mut lifetime, mut last_seq) = (0, 0, 0);
    let mut by_event: HashMap<&str, Vec<(String, i64, String, String)>> = HashMap::new();
    for entry in ledger {
        let amount = entry["amount"].as_i64().unwrap_or(i64::MIN);
        balance += amount;
        if entry["kind"] == "earn" {
            lifetime += amount;
        }
        let seq = entry["seq"].as_u64().unwrap_or(0);
        if seq <= last_seq {
            broken.push(format!(
                "{customer}'s ledger goes from seq {last_seq} to {seq}"
            ));
        }
        last_seq = seq;
        if entry["balance_after"].as_i64() != Some(balance)
            || entry["lifetime_after"].as_i64() != Some(lifetime)
        {
            broken.push(format!(
                "{customer}'s ledger entry {seq} says balance {} and lifetime {}, its entries sum to {balance} and {lifetime}",
                entry["balance_after"], entry["lifetime_after"]
            ));
        }
        let event = entry["event_id"].as_str().unwrap_or_default();
        by_event.entry(event).or_default().push((
            entry["plugin"].as_str().unwrap_or_default().to_owned(),
            amount,
            entry["kind"].as_str().unwrap_or_default().to_owned(),
            entry["reason"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let sum = ledger_sum(ledger);
    let points = &profile["points"];
    if points["balance"].as_i64() != Some(sum) || points["lifetime"].as_i64() != Some(lifetime) {
        broken.push(format!(
            "{customer} has balance {} and lifetime {}, the sum of its whole ledger ({} entries) is {sum} and {lifetime}",
            points["balance"],
            points["lifetime"],
            ledger.len()
        ));
    }
    if profile["event_count"].as_u64() != Some(history.len() as u64) {
        broken.push(format!(
            "{customer} has event_count {}, its history holds {} events",
            profile["event_count"],
            history.len()
        ));
    }
    for (id, sent) in sent {
        let mut entries = by_event.remove(id.as_str()).unwrap_or_default();
        entries.sort();
        let expected = vec![
            (
                "bonus".to_owned(),
                BONUS,
                "earn".to_owned(),
                "bonus".to_owned(),
            ),
            (
                "points".to_owned(),
                sent.points_earned(),
                "earn".to_owned(),
                "checkout".to_owned(),
            ),
        ];
        if entries != expected {
            broken.push(format!(
                "checkout {id} of {customer} (total {}) has ledger entries {entries:?}, not {expected:?}",
                sent.total
            ));
        }
    }
    for (event, entries) in by_event {
        broken.push(format!(
            "{customer}'s ledger has {} entries for event {event:?}, which is not in its history",
            entries.len()
        ));
    }
    broken
}

/// `GET /v1/events/{id}` for each id: found, and the event sent.
async fn check_by_id(host: &Host, key: &str, book: &Book, ids: &[String]) -> Vec<String> {
    let mut broken = Vec::new();
    for id in ids {
        let sent = &book.sent[id];
        let (status, body) = host.get(&format!("/v1/events/{id}"), key).await;
        if status != StatusCode::OK {
            broken.push(format!(
                "{id} was acknowledged in cycle {:?}; GET /v1/events/{id} answers {status} {body}",
                sent.acked_in
            ));
        } else if body["event"]["customer"] != sent.customer.as_str()
            || body["event"]["data"]["total"].as_u64() != Some(sent.total)
        {
            broken.push(format!(
                "GET /v1/events/{id} is not the event sent: {}",
                body["event"]
            ));
        }
    }
    broken
}

/// Re-posts `ids` from several tasks at once. A stored id must come back `200`, replayed, as
/// the same event; an id the kill lost is stored now, once. Returns how many were replays.
async fn repost(
    api: &Api,
    book: Book,
    stored: &Stored,
    ids: Vec<String>,
    cycle: usize,
) -> (Book, usize, Vec<String>) {
    let book = Arc::new(Mutex::new(book));
    let problems = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut shares: Vec<Vec<(String, Option<u64>)>> = vec![Vec::new(); REPOSTERS];
    for (n, id) in ids.into_iter().enumerate() {
        let seq = stored.events.get(&id).map(|(_, seq)| *seq);
        shares[n % REPOSTERS].push((id, seq));
    }
    for share in shares {
        let (api, book, problems) = (api.clone(), book.clone(), problems.clone());
        tasks.push(tokio::spawn(async move {
            let mut replays = 0;
            for (id, seq) in share {
                let (event, was_acked) = {
                    let book = book.lock().unwrap();
                    let sent = &book.sent[&id];
                    (sent.event(&id), sent.acked_in.is_some())
                };
                let answer = api.post_event(&event).await;
                let mut broken = Vec::new();
                match (&answer, seq) {
                    (Answer::Status(StatusCode::OK, Some(body)), Some(seq)) => {
                        replays += 1;
                        if body["event"]["seq"].as_u64() != Some(seq) {
                            broken.push(format!(
                                "re-posting stored {id} (seq {seq}) answered event seq {}",
                                body["event"]["seq"]
                            ));
                        }
                    }
                    (Answer::Status(StatusCode::CREATED, _), None) if was_acked => {
                        broken.push(format!(
                            "{id} was acknowledged before the kill, yet re-posting it stored it anew"
                        ));
                    }
                    (Answer::Status(StatusCode::CREATED, _), None) => {}
                    (Answer::Status(status, body), _) => broken.push(format!(
                        "re-posting {id} ({}) answered {status}: {}",
                        if seq.is_some() { "stored" } else { "not stored" },
                        body.as_ref().map_or_else(String::new, Value::to_string)
                    )),
                    (Answer::Lost(error), _) => {
                        broken.push(format!("re-posting {id}: no answer: {error}"));
                    }
                }
                problems.lock().unwrap().extend(broken);
                if let Answer::Status(..) = answer {
                    record(&book, &problems, &id, cycle, &answer, false);
                }
            }
            replays
        }));
    }
    let mut replays = 0;
    let mut broken = Vec::new();
    for task in tasks {
        match task.await {
            Ok(count) => replays += count,
            Err(error) => broken.push(format!("a re-posting task failed: {error}")),
        }
    }
    broken.extend(problems.lock().unwrap().drain(..));
    drop(problems);
    (unshare(book), replays, broken)
}

/// After the re-posts: each old ledger is a prefix of the new one, which grew by exactly the
/// entries of the events stored now.
fn check_append_only(
    before: &Stored,
    after: &Stored,
    created: &HashMap<String, usize>,
) -> Vec<String> {
    let mut broken = Vec::new();
    for (customer, ledger) in &after.ledgers {
        let old = before.ledgers.get(customer).map_or(&[][..], Vec::as_slice);
        if ledger.len() < old.len() || ledger[..old.len()] != *old {
            broken.push(format!(
                "{customer}'s ledger changed under the re-posts: {} entries before, {} after, the old ones not a prefix",
                old.len(),
                ledger.len()
            ));
        }
        let new = created.get(customer).copied().unwrap_or(0);
        if ledger.len() != old.len() + 2 * new {
            broken.push(format!(
                "{customer}'s ledger grew from {} to {} entries on re-posts that stored {new} events ({} expected)",
                old.len(),
                ledger.len(),
                old.len() + 2 * new
            ));
        }
    }
    broken
}

/// Keeps the data directory when the test fails, for a look at the redb file.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl KeepOnPanic {
    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(dir) = self.0.take()
        {
            eprintln!(
                "crash: the data directory is kept: {}",
                dir.keep().display()
            );
        }
    }
}

async fn run(seed: u64, cycles: usize) {
    let dir = KeepOnPanic(Some(tempfile::tempdir().unwrap()));
    let mut rng = Rng::new(seed, 0);
    let mut host = Host::start(dir.path());
    let key = set_up(&host).await;
    let mut book = Book::default();
    for cycle in 1..=cycles {
        let ctx = Ctx {
            seed,
            cycles,
            cycle,
        };
        let started = Instant::now();
        let delay;
        (book, delay) = load_and_kill(host, &key, book, ctx, &mut rng).await;
        let (sent, acked, unanswered) = {
            let this: Vec<&Sent> = book.sent.values().filter(|s| s.cycle == cycle).collect();
            let acked = this.iter().filter(|s| s.acked_in.is_some()).count();
            (this.len(), acked, this.len() - acked)
        };
        let restarting = Instant::now();
        host = Host::start(dir.path());
        let restart = restarting.elapsed();

        // Right after the restart, before anything is posted again: what the kill left.
        let (before, mut broken) = audit(&host, &key, &book, false).await;
        let acked_now: Vec<String> = {
            let mut ids: Vec<String> = book
                .sent
                .iter()
                .filter(|(_, sent)| sent.acked_in == Some(cycle))
                .map(|(id, _)| id.clone())
                .collect();
            ids.sort();
            ids
        };
        broken.extend(check_by_id(&host, &key, &book, &acked_now).await);
        ctx.check("after the restart", &broken);
        let unanswered_stored = before
            .events
            .keys()
            .filter(|id| book.sent[*id].cycle == cycle && book.sent[*id].acked_in.is_none())
            .count();

        // Every id of the cycle, answered or not, and a sample of older ones.
        let ids: Vec<String> = {
            let mut ids: Vec<String> = book
                .order
                .iter()
                .filter(|id| book.sent[*id].cycle == cycle)
                .cloned()
                .collect();
            let older: Vec<&String> = book
                .order
                .iter()
                .filter(|id| book.sent[*id].cycle < cycle)
                .collect();
            for _ in 0..OLD_REPOSTS.min(older.len()) {
                ids.push(older[rng.below(older.len() as u64) as usize].clone());
            }
            ids
        };
        let reposted = ids.len();
        let mut created: HashMap<String, usize> = HashMap::new();
        for id in ids.iter().collect::<HashSet<_>>() {
            if !before.events.contains_key(id) {
                *created.entry(book.sent[id].customer.clone()).or_default() += 1;
            }
        }
        let stored_now: usize = created.values().sum();
        let api = Api::new(&host, &key);
        let (replays, broken);
        (book, replays, broken) = repost(&api, book, &before, ids, cycle).await;
        ctx.check("re-posting every id after the restart", &broken);

        let (after, mut broken) = audit(&host, &key, &book, true).await;
        broken.extend(check_append_only(&before, &after, &created));
        ctx.check("after the re-posts", &broken);
        println!(
            "crash: cycle {cycle}: killed after {} ms: {sent} ids sent, {acked} acknowledged, \
             {unanswered} unanswered ({unanswered_stored} of them stored anyway); restart {} ms; \
             re-posted {reposted}: {replays} replays, {stored_now} stored now; {} events and {} \
             ledger entries check out ({:.1} s)",
            delay.as_millis(),
            restart.as_millis(),
            after.events.len(),
            after.ledgers.values().map(Vec::len).sum::<usize>(),
            started.elapsed().as_secs_f64()
        );
    }
    // A clean stop after all the kills: the host still shuts down as it should.
    tokio::task::spawn_blocking(move || host.stop())
        .await
        .unwrap();
}
