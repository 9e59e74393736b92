//! The host's clock under load: what a tick with nothing due costs as customers grow, and
//! how fast the clock writes internal events when many fall due at once.
//!
//! ```sh
//! cargo bench --bench clock                       # 1,000 and 1,000,000 customers, 10,000 due
//! cargo bench --bench clock -- --customers 1000,100000 --due 5000
//! ```
//!
//! For each customer count it builds a store straight through the storage API (one tenant,
//! every customer holding a lot of points whose expiry is indexed as due, far in the future
//! for all but `--due` of them, which expire at one moment), then:
//!
//! 1. times `Store::due` for a moment before anything is due: the clock's tick when there is
//!    nothing to do, which must not grow with the customers;
//! 2. starts the real `tally serve --test-clock` on that store, moves its clock past the
//!    moment with `POST /v1/admin/clock` (which answers once every internal event is
//!    committed) and reports the internal events written a second.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a bench that cannot set itself up should stop"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde_json::{Value, json};
use tally_host::auth::hash_key;
use tally_host::domain::records::{
    AppendEvent, EventOutcome, NewLedgerEntry, RawJson, StoredEvent, TenantRecord,
};
use tally_host::domain::{CustomerId, Due, DueKind, Lot, TenantId, new_account};
use tally_host::storage::{RedbStore, Store};
use tally_sdk::{PointEntry, Timestamp};

const ADMIN_KEY: &str = "bench-admin-key-0123456789";
const TENANT_KEY: &str = "tly_bench_tenant_key_0123456789abcdef";

struct Options {
    customers: Vec<usize>,
    due: usize,
}

fn options() -> Options {
    let mut options = Options {
        customers: vec![1_000, 1_000_000],
        due: 10_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--customers" => {
                options.customers = args
                    .next()
                    .expect("--customers takes a list")
                    .split(',')
                    .map(|n| n.parse().expect("a number of customers"))
                    .collect();
            }
            "--due" => options.due = args.next().expect("--due N").parse().expect("a number"),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    options
}

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

/// A store of one tenant whose `customers` each hold 100 points, `due` of them expiring at
/// `moment` and the rest in 2040.
fn build(dir: &std::path::Path, customers: usize, due: usize, moment: Timestamp) -> RedbStore {
    let store = RedbStore::open(dir.join("tally.redb")).unwrap();
    let tenant = TenantRecord {
        id: TenantId::parse("acme").unwrap(),
        name: "Acme".to_owned(),
        created_at: at("2030-01-01T00:00:00Z"),
        allow_untyped_events: true,
        allow_negative_balance: false,
        points_expiry: Default::default(),
        schedule: Default::default(),
        future_tolerance_seconds: 300,
        membership_required: false,
        segment: Default::default(),
        customer_schema: None,
    };
    store.create_tenant(&tenant, hash_key(TENANT_KEY)).unwrap();
    let earned = at("2030-06-01T00:00:00Z");
    let later = at("2040-01-01T00:00:00Z");
    let mut next = 0;
    while next < customers {
        let end = (next + 20_000).min(customers);
        store
            .write_batch(&mut |txn| {
                for index in next..end {
                    let expires = if index < due { moment } else { later };
                    txn.append(seeded(index, earned, expires))?;
                }
                Ok(())
            })
            .unwrap();
        next = end;
    }
    store
}

fn seeded(index: usize, earned: Timestamp, expires: Timestamp) -> AppendEvent {
    let id = CustomerId::parse(format!("c-{index:07}")).unwrap();
    let entry = PointEntry::new(100, "seed").expiring(expires);
    let mut record = new_account(&id, earned);
    record.customer.points.balance = 100;
    record.customer.points.lifetime = 100;
    record.event_count = 1;
    record.lots = vec![Lot {
        event_id: format!("seed-{index}"),
        amount: 100,
        expires_at: Some(expires),
        pending: None,
    }];
    record.due = vec![Due {
        kind: DueKind::PointExpire,
        at: expires,
        data: Value::Null,
    }];
    AppendEvent {
        tenant: "acme".to_owned(),
        event: StoredEvent {
            seq: 0,
            id: format!("seed-{index}"),
            action: "point_add".to_owned(),
            label: None,
            date: earned.date_string(),
            timestamp: earned,
            customer: id.to_string(),
            points: 100,
            source: "import".to_owned(),
            ip_address: None,
            user_agent: None,
            data: RawJson::from_value(&json!({"points": 100})),
            received_at: earned,
            channel: None,
            campaign: None,
            goals: Vec::new(),
            engagement_value: None,
            outcome: EventOutcome::default(),
        },
        customer: record,
        ledger: vec![NewLedgerEntry {
            plugin: "seed".to_owned(),
            entry,
            held: 0,
        }],
        plugin_states: Vec::new(),
        triggers: Vec::new(),
        reward: None,
        erase: false,
        merged: None,
        snapshot: None,
    }
}

/// Microseconds one idle tick (a read of what is due, with nothing due) takes, the median of
/// `rounds` of 1,000 ticks.
fn idle_tick(store: &RedbStore, before: Timestamp, rounds: usize) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..1_000 {
                assert!(store.due("acme", before, 4096).unwrap().is_empty());
            }
            started.elapsed().as_secs_f64() * 1e6 / 1_000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

struct Host {
    child: Child,
    base: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_host(data: &std::path::Path) -> Host {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["serve", "--test-clock", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .env("TALLY_ADMIN_KEY", ADMIN_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tally serve starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("an address line").expect("stdout");
        if let Some(rest) = line.strip_prefix("tally listening on ") {
            break rest
                .split_whitespace()
                .next()
                .expect("an address")
                .to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Host { child, base }
}

fn main() {
    let options = options();
    let moment = at("2031-01-01T00:00:00Z");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    println!(
        "{:>10} | {:>12} | {:>14} | {:>9} | {:>16}",
        "customers", "build (s)", "idle tick (µs)", "due", "internal events/s"
    );
    let mut ticks = Vec::new();
    for &customers in &options.customers {
        let dir = tempfile::tempdir().unwrap();
        let due = options.due.min(customers);
        let started = Instant::now();
        let store = build(dir.path(), customers, due, moment);
        let build_seconds = started.elapsed().as_secs_f64();
        let tick = idle_tick(&store, moment.plus_seconds(-1), 9);
        ticks.push(tick);
        drop(store);

        let host = start_host(dir.path());
        let (written, seconds) = runtime.block_on(async {
            let started = Instant::now();
            let answer: Value = client
                .post(format!("{}/v1/admin/clock", host.base))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"now": moment.plus_seconds(1)}))
                .send()
                .await
                .expect("the clock answers")
                .json()
                .await
                .expect("JSON");
            let seconds = started.elapsed().as_secs_f64();
            (answer["written"].as_u64().expect("a count"), seconds)
        });
        assert_eq!(written, due as u64, "every due moment written once");
        let rate = written as f64 / seconds;
        println!(
            "{customers:>10} | {build_seconds:>12.1} | {tick:>14.2} | {due:>9} | {rate:>16.0}"
        );
    }
    if let (Some(first), Some(last)) = (ticks.first(), ticks.last()) {
        println!(
            "idle tick at {} / at {} customers: {:.2}",
            options.customers.last().unwrap_or(&0),
            options.customers.first().unwrap_or(&0),
            last / first
        );
    }
}
