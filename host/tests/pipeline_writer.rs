//! The group-commit writer on its own: a real redb file and the real `points` plugin, with
//! events submitted faster than one batch commits, so that batches are evaluated while the
//! previous one is still being written.
//!
//! What it pins down: events of one customer chain across batches without lost updates
//! (each balance is the sum of its ledger, each count the number of events); an id posted
//! twice at once is stored once; and when a commit fails, nothing of it is stored and the
//! events evaluated on top of it are either refused or start again from what is on disk.
//!
//! Run: `cargo test -p tally-host --test pipeline_writer`

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "tests fail loudly on a broken expectation"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tally_host::domain::{CustomerId, EventId, TenantId};
use tally_host::pipeline::writer::{IngestError, Ingested, NewEvent, Writer};
use tally_host::pipeline::{ActivePlugin, RuleSource, TenantRules};
use tally_host::runtime::{Limits, Plugin, Runtime};
use tally_host::storage::{
    BatchRead, BatchTxn, CustomerRecord, EventQuery, OnError, PluginRecord, PluginVersion, RawJson,
    RedbStore, Store, StoreError, TenantRecord,
};
use tally_sdk::Timestamp;

const TENANT: &str = "acme";

/// One plugin for every action: `points` (one point per currency unit) unless a test says
/// otherwise.
struct OnePlugin {
    name: &'static str,
    config: Value,
    plugin: Plugin,
}

impl RuleSource for OnePlugin {
    fn rules(&self, _tenant: &str) -> Result<TenantRules, StoreError> {
        let plugins = vec![ActivePlugin::new(
            PluginRecord {
                name: self.name.to_owned(),
                versions: vec![PluginVersion {
                    version: 1,
                    sha256: String::new(),
                    size: 0,
                    uploaded_at: "2026-11-23T00:00:00Z".parse().expect("a time"),
                }],
                active_version: 1,
                config: self.config.clone(),
                actions: None,
                priority: 0,
                enabled: true,
                on_error: OnError::Skip,
            },
            Ok(self.plugin.clone()),
        )];
        Ok(TenantRules {
            plugins,
            policy: Default::default(),
        })
    }
}

/// Methods that call the same method of the field `$to`.
macro_rules! delegate {
    ($to:ident: $($name:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> $out { self.$to.$name($($arg),*) })*
    };
}

/// A redb store whose next `fail_next` commits fail, and which refuses to append the event
/// `refuse` as if the pipeline had built it on the wrong state.
struct Flaky {
    store: RedbStore,
    fail_next: AtomicUsize,
    refuse: Mutex<Option<String>>,
}

/// A batch transaction that refuses one event id.
struct Refusing<'a> {
    txn: &'a mut dyn BatchTxn,
    id: &'a str,
}

impl BatchRead for Refusing<'_> {
    delegate! { txn:
        plugin_state(tenant: &str, plugin: &str, customer: &str) -> Result<Option<RawJson>, StoreError>;
        event(tenant: &str, id: &str) -> Result<Option<tally_host::storage::StoredEvent>, StoreError>;
        customer(tenant: &str, id: &str) -> Result<Option<CustomerRecord>, StoreError>;
    }
}

impl BatchTxn for Refusing<'_> {
    fn append(
        &mut self,
        append: tally_host::storage::AppendEvent,
    ) -> Result<tally_host::storage::Appended, StoreError> {
        if append.event.id == self.id {
            return Err(StoreError::Inconsistent(format!(
                "event {} refused by the test",
                self.id
            )));
        }
        self.txn.append(append)
    }
}

impl BatchRead for Flaky {
    delegate! { store:
        plugin_state(tenant: &str, plugin: &str, customer: &str) -> Result<Option<RawJson>, StoreError>;
        event(tenant: &str, id: &str) -> Result<Option<tally_host::storage::StoredEvent>, StoreError>;
        customer(tenant: &str, id: &str) -> Result<Option<CustomerRecord>, StoreError>;
    }
}

impl Store for Flaky {
    delegate! { store:
        create_tenant(tenant: &TenantRecord, hash: [u8; 32]) -> Result<(), StoreError>;
        tenant(id: &str) -> Result<Option<TenantRecord>, StoreError>;
        tenants() -> Result<Vec<TenantRecord>, StoreError>;
        tenant_by_key_hash(hash: [u8; 32]) -> Result<Option<TenantRecord>, StoreError>;
        update_tenant(tenant: &TenantRecord) -> Result<(), StoreError>;
        set_tenant_key_hash(tenant: &str, hash: [u8; 32]) -> Result<(), StoreError>;
        admin_key_hash() -> Result<Option<[u8; 32]>, StoreError>;
        set_admin_key_hash(hash: [u8; 32]) -> Result<(), StoreError>;
        put_event_type(tenant: &str, record: &tally_host::storage::EventTypeRecord) -> Result<(), StoreError>;
        event_type(tenant: &str, id: &str) -> Result<Option<tally_host::storage::EventTypeRecord>, StoreError>;
        event_types(tenant: &str) -> Result<Vec<tally_host::storage::EventTypeRecord>, StoreError>;
        add_plugin_version(tenant: &str, name: &str, wasm: &[u8], sha256: &str, uploaded_at: Timestamp) -> Result<PluginRecord, StoreError>;
        update_plugin(tenant: &str, plugin: &PluginRecord) -> Result<(), StoreError>;
        plugin(tenant: &str, name: &str) -> Result<Option<PluginRecord>, StoreError>;
        plugins(tenant: &str) -> Result<Vec<PluginRecord>, StoreError>;
        plugin_wasm(tenant: &str, name: &str, version: u32) -> Result<Option<Vec<u8>>, StoreError>;
        customer_events(tenant: &str, customer: &str, query: &EventQuery) -> Result<tally_host::storage::Page<tally_host::storage::StoredEvent>, StoreError>;
        ledger(tenant: &str, customer: &str, limit: usize, cursor: Option<&str>) -> Result<tally_host::storage::Page<tally_host::storage::LedgerEntry>, StoreError>;
        outbox(tenant: &str, after: u64, limit: usize) -> Result<Vec<tally_host::storage::OutboxTrigger>, StoreError>;
        due(tenant: &str, until: Timestamp, limit: usize) -> Result<Vec<tally_host::storage::DueWork>, StoreError>;
        reschedule(tenant: &str) -> Result<usize, StoreError>;
        audit(tenant: &str, after: u64, limit: usize) -> Result<Vec<tally_host::storage::AuditEntry>, StoreError>;
        put_reward(tenant: &str, reward: &tally_host::storage::RewardRecord, create: bool) -> Result<(), StoreError>;
        reward(tenant: &str, id: &str) -> Result<Option<(tally_host::storage::RewardRecord, u64)>, StoreError>;
        rewards(tenant: &str) -> Result<Vec<(tally_host::storage::RewardRecord, u64)>, StoreError>;
        last_outbox_seq(tenant: &str) -> Result<u64, StoreError>;
        events(tenant: &str, after: Option<&str>, limit: usize, keep: &dyn Fn(&tally_host::storage::StoredEvent) -> bool) -> Result<tally_host::storage::Page<tally_host::storage::StoredEvent>, StoreError>;
        create_webhook(tenant: &str, webhook: &tally_host::storage::WebhookRecord) -> Result<(), StoreError>;
        update_webhook(tenant: &str, id: &str, change: &mut dyn FnMut(&mut tally_host::storage::WebhookRecord), attempts: &[tally_host::storage::DeliveryAttempt]) -> Result<tally_host::storage::WebhookRecord, StoreError>;
        webhook(tenant: &str, id: &str) -> Result<Option<tally_host::storage::WebhookRecord>, StoreError>;
        webhooks(tenant: Option<&str>) -> Result<Vec<(String, tally_host::storage::WebhookRecord)>, StoreError>;
        delete_webhook(tenant: &str, id: &str) -> Result<bool, StoreError>;
        webhook_attempts(tenant: &str, id: &str, before: Option<u64>, limit: usize) -> Result<Vec<tally_host::storage::DeliveryAttempt>, StoreError>;
        add_trigger(tenant: &str, trigger: &tally_host::storage::OutboxTrigger) -> Result<u64, StoreError>;
        prune_outbox(tenant: &str, up_to: u64, before: Timestamp, limit: usize) -> Result<usize, StoreError>;
        create_import(tenant: &str, job: &tally_host::storage::ImportJob) -> Result<(), StoreError>;
        update_import(tenant: &str, id: &str, change: &mut dyn FnMut(&mut tally_host::storage::ImportJob), errors: &[tally_host::storage::ImportRowError]) -> Result<tally_host::storage::ImportJob, StoreError>;
        import(tenant: &str, id: &str) -> Result<Option<tally_host::storage::ImportJob>, StoreError>;
        imports(tenant: Option<&str>) -> Result<Vec<(String, tally_host::storage::ImportJob)>, StoreError>;
        import_errors(tenant: &str, id: &str, after: u64, limit: usize) -> Result<Vec<tally_host::storage::ImportRowError>, StoreError>;
        customers(tenant: &str, after: Option<&str>, limit: usize, keep: &dyn Fn(&CustomerRecord) -> bool) -> Result<tally_host::storage::Page<CustomerRecord>, StoreError>;
        customers_by_email(tenant: &str, email: &str) -> Result<Vec<CustomerRecord>, StoreError>;
        read_batch(work: &mut dyn FnMut(&dyn BatchRead) -> Result<(), StoreError>) -> Result<(), StoreError>;
    }

    fn write_batch(
        &self,
        work: &mut dyn FnMut(&mut dyn BatchTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let fail = self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            // Do the work, then fail as a commit would: nothing of it is kept.
            let _ = self.store.write_batch(&mut |txn| {
                work(txn)?;
                Err(StoreError::backend("the disk is full"))
            });
            return Err(StoreError::backend("the disk is full"));
        }
        let refuse = self.refuse.lock().expect("not poisoned").clone();
        match refuse {
            Some(id) => self.store.write_batch(&mut |txn| {
                work(&mut Refusing {
                    txn,
                    id: id.as_str(),
                })
            }),
            None => self.store.write_batch(work),
        }
    }
}

struct Host {
    store: Arc<Flaky>,
    writer: Writer,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn host() -> Host {
    host_with(tally_plugin_wasm::POINTS, Value::Null)
}

fn host_with(plugin: tally_plugin_wasm::Plugin, config: Value) -> Host {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Arc::new(Flaky {
        store: RedbStore::open(dir.path().join("tally.redb")).expect("a store"),
        fail_next: AtomicUsize::new(0),
        refuse: Mutex::new(None),
    });
    store
        .create_tenant(
            &TenantRecord {
                id: TenantId::parse(TENANT).expect("a tenant id"),
                name: "Acme".to_owned(),
                created_at: "2026-11-23T00:00:00Z".parse().expect("a time"),
                allow_untyped_events: false,
                allow_negative_balance: false,
                points_expiry: Default::default(),
                schedule: Default::default(),
                future_tolerance_seconds: 300,
                membership_required: false,
                segment: Default::default(),
                customer_schema: None,
            },
            [7; 32],
        )
        .expect("a tenant");
    let runtime = Runtime::new(Limits::default()).expect("a runtime");
    let source = OnePlugin {
        name: plugin.name,
        config,
        plugin: runtime.load(plugin.wasm).expect("the plugin loads"),
    };
    // A small batch limit, so that the events below make many batches.
    // Two evaluation threads whatever the machine, so that chains run in parallel here.
    let writer = Writer::start(store.clone(), Arc::new(source), 4096, 8, 2).expect("a writer");
    Host {
        store,
        writer,
        runtime: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a tokio runtime"),
        _dir: dir,
    }
}

fn checkout(id: &str, customer: &str, total: u32) -> NewEvent {
    NewEvent {
        tenant: TenantId::parse(TENANT).expect("a tenant id"),
        id: EventId::parse(id).expect("an event id"),
        action: "checkout".to_owned(),
        label: None,
        customer: CustomerId::parse(customer).expect("a customer id"),
        timestamp: "2026-11-23T10:00:00Z".parse::<Timestamp>().expect("a time"),
        source: "api".to_owned(),
        ip_address: None,
        user_agent: None,
        data: RawJson::from_value(&json!({"transaction_id": id, "total": total, "items": []})),
        received_at: "2026-11-23T10:00:00Z".parse::<Timestamp>().expect("a time"),
        contact_card: Vec::new(),
        due: None,
        interaction: Default::default(),
    }
}

impl Host {
    /// Submits every event at once, then waits for every answer.
    fn post_all(&self, events: Vec<NewEvent>) -> Vec<Result<Ingested, IngestError>> {
        let waiting: Vec<_> = events
            .into_iter()
            .map(|event| self.writer.submit(event).expect("queued"))
            .collect();
        self.runtime.block_on(async {
            let mut answers = Vec::new();
            for answer in waiting {
                answers.push(answer.await.expect("answered"));
            }
            answers
        })
    }

    /// Balance and event count agree with the ledger and the history.
    fn assert_consistent(&self, customer: &str) -> CustomerRecord {
        let record = self
            .store
            .customer(TENANT, customer)
            .expect("readable")
            .expect("stored");
        let ledger = self
            .store
            .ledger(TENANT, customer, 10_000, None)
            .expect("a ledger");
        let sum: i64 = ledger.items.iter().map(|entry| entry.amount).sum();
        assert_eq!(record.customer.points.balance, sum, "{customer}'s balance");
        let history = self
            .store
            .customer_events(
                TENANT,
                customer,
                &EventQuery {
                    limit: 10_000,
                    ..EventQuery::default()
                },
            )
            .expect("a history");
        assert_eq!(
            record.event_count,
            history.items.len() as u64,
            "{customer}'s count"
        );
        record
    }
}

#[test]
fn events_of_one_customer_chain_across_pipelined_batches() {
    let host = host();
    let events: Vec<NewEvent> = (0..300)
        .map(|n| checkout(&format!("e{n}"), &format!("c{}", n % 5), 10))
        .collect();
    let answers = host.post_all(events);
    assert!(
        answers
            .iter()
            .all(|answer| answer.as_ref().is_ok_and(|a| !a.replayed))
    );
    for customer in 0..5 {
        let record = host.assert_consistent(&format!("c{customer}"));
        assert_eq!(record.event_count, 60);
        assert_eq!(record.customer.points.balance, 600);
    }
    // Each answer carries the customer as that event left them: counts 1..=60 per customer.
    let mut counts: Vec<u64> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .filter(|answer| answer.customer.customer.id == "c0")
        .map(|answer| answer.customer.event_count)
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, (1..=60).collect::<Vec<u64>>());
}

/// A plugin sees the host's counters as they were before the event (the README says so):
/// on a customer's n-th checkout, `stats.events.checkout` is n - 1, within a batch's chain
/// and across batches alike.
#[test]
fn plugins_see_the_stats_as_they_were_before_the_event() {
    let host = host_with(tally_plugin_wasm::HOSTILE, json!({"mode": "echo"}));
    let events: Vec<NewEvent> = (0..20)
        .map(|n| checkout(&format!("e{n}"), "ada", 10))
        .collect();
    let mut seen: Vec<u64> = host
        .post_all(events)
        .into_iter()
        .map(|answer| {
            let event = answer.expect("stored").event;
            let echo = &event.outcome.triggers[0].data.to_value();
            echo["stats"]["events"]["checkout"].as_u64().unwrap_or(0)
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<u64>>());
    let record = host.assert_consistent("ada");
    assert_eq!(record.customer.stats.events("checkout"), 20);
}

#[test]
fn an_id_posted_twice_at_once_is_stored_once() {
    let host = host();
    let answers = host.post_all(vec![
        checkout("same", "ada", 10),
        checkout("same", "ada", 10),
        checkout("other", "ada", 5),
        checkout("same", "ada", 10),
    ]);
    let answers: Vec<&Ingested> = answers.iter().map(|a| a.as_ref().expect("ok")).collect();
    assert!(!answers[0].replayed);
    assert!(answers[1].replayed && answers[3].replayed);
    assert_eq!(answers[1].event.seq, answers[0].event.seq);
    let record = host.assert_consistent("ada");
    assert_eq!(record.event_count, 2);
    assert_eq!(record.customer.points.balance, 15);
}

#[test]
fn a_failed_commit_stores_nothing_and_what_follows_starts_from_disk() {
    let host = host();
    host.post_all(vec![checkout("before", "ada", 100)])
        .remove(0)
        .expect("stored");

    host.store.fail_next.store(1, Ordering::SeqCst);
    let failed = host.post_all(vec![checkout("lost", "ada", 10)]);
    assert!(matches!(failed[0], Err(IngestError::Storage(_))));
    assert!(
        host.store
            .event(TENANT, "lost")
            .expect("readable")
            .is_none()
    );
    host.assert_consistent("ada");

    // Many at once, the first commit failing: batches evaluated on top of it while it was
    // being written are refused; the others start from what is on disk.
    host.store.fail_next.store(1, Ordering::SeqCst);
    let answers = host.post_all(
        (0..40)
            .map(|n| checkout(&format!("after{n}"), "ada", 1))
            .collect(),
    );
    let refused = answers
        .iter()
        .filter(|answer| matches!(answer, Err(IngestError::Storage(_))))
        .count();
    let stored = answers.iter().filter(|answer| answer.is_ok()).count();
    assert!(refused >= 1, "the failed commit's events are refused");
    assert_eq!(refused + stored, 40);
    let record = host.assert_consistent("ada");
    assert_eq!(record.event_count, 1 + stored as u64);
    assert_eq!(record.customer.points.balance, 100 + stored as i64);

    // And the writer goes on as before.
    host.post_all(vec![checkout("later", "ada", 1)])
        .remove(0)
        .expect("stored");
    host.assert_consistent("ada");
}

/// The writer keeps committed customers in its overlay as a cache. When the store refuses an
/// event, what the overlay holds of its customer was never stored: the customer is dropped
/// before the refusal is answered, so the next event starts from what is on disk instead of
/// being refused in turn.
#[test]
fn after_the_store_refuses_an_event_the_next_starts_from_disk() {
    let host = host();
    host.post_all(vec![checkout("first", "ada", 100)])
        .remove(0)
        .expect("stored");
    *host.store.refuse.lock().expect("not poisoned") = Some("refused".to_owned());
    let refused = host
        .post_all(vec![checkout("refused", "ada", 10)])
        .remove(0);
    assert!(
        matches!(refused, Err(IngestError::Internal(ref message)) if message.contains("refused by the test")),
        "{refused:?}"
    );
    let next = host
        .post_all(vec![checkout("next", "ada", 1)])
        .remove(0)
        .expect("stored on what is on disk");
    assert_eq!(next.customer.event_count, 2);
    assert_eq!(next.customer.customer.points.balance, 101);
    let record = host.assert_consistent("ada");
    assert_eq!(record.event_count, 2);
}
