//! Group commit: the one writer of events.
//!
//! Request handlers validate an event, then hand it to the writer through a bounded queue
//! with a oneshot for the answer. The writer runs on its own OS thread (redb writes and wasm
//! evaluation block): it takes the first waiting event, drains everything else waiting up to
//! a maximum batch, and runs one [`Store::write_batch`] for all of them. Inside it, in arrival
//! order, each event is checked for a repeated id (idempotent replay), evaluated by the
//! tenant's plugins on the customer as the batch has left them so far, and appended with its
//! ledger entries, customer, plugin states and triggers. Only after the batch commits
//! (durably) is any request answered, so a success means the event is on disk; a failed
//! commit answers every event of the batch with an error, and nothing of it was stored.
//!
//! One writer applying events in queue order is what gives "events of one customer in
//! arrival order, no lost updates" without locks: no two evaluations of a customer overlap.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use serde_json::{Map, Value, json};
use tally_sdk::{Customer, Event, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::{PluginCall, PluginResult, run_plugins};
use crate::runtime::{EvalError, Plugin};
use crate::schema::ContactCardValue;
use crate::storage::{
    AppendEvent, BatchTxn, CustomerRecord, EventOutcome, NewLedgerEntry, NewTrigger, OnError,
    PluginErrorRecord, PluginRecord, PluginRun, PluginStatus, Store, StoreError, StoredEvent,
};

/// A validated event on its way to the writer.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its id, given or generated.
    pub id: String,
    /// Its action, which has a type or is allowed untyped.
    pub action: String,
    /// The sender's name for the action.
    pub label: Option<String>,
    /// The customer's id.
    pub customer: String,
    /// When it happened.
    pub timestamp: Timestamp,
    /// Where it came from: `api`, `import`, `demo`.
    pub source: String,
    /// The sender's address.
    pub ip_address: Option<String>,
    /// The sender's user agent.
    pub user_agent: Option<String>,
    /// The action's attributes, checked against its type.
    pub data: Value,
    /// When the host received it, RFC 3339.
    pub received_at: String,
    /// The contact-card fields of its type present in `data`.
    pub contact_card: Vec<ContactCardValue>,
}

/// What the writer made of an event.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The event as stored (the first one, for a replay).
    pub event: StoredEvent,
    /// The customer after the event (now, for a replay).
    pub customer: CustomerRecord,
    /// True when the id was already stored and nothing new happened.
    pub replayed: bool,
}

/// Why an event was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// A plugin with `on_error = reject` failed on it.
    #[error("plugin {plugin} (version {version}) rejected the event: {message}")]
    PluginRejected {
        /// The plugin.
        plugin: String,
        /// Its version.
        version: u32,
        /// The plugin error's code (`plugin_error`, `trap`, `out_of_fuel`, ...).
        code: String,
        /// The plugin error's message.
        message: String,
    },
    /// The batch could not be committed; nothing of it was stored, and retrying may work.
    #[error("the event could not be stored: {0}")]
    Storage(StoreError),
    /// A bug: the store refused what the pipeline built, or the writer failed.
    #[error("{0}")]
    Internal(String),
}

/// Why the writer did not take an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: the caller should answer 503 and have the client retry.
    #[error("the event queue is full")]
    Full,
    /// The writer is shutting down.
    #[error("the host is shutting down")]
    Closed,
}

/// A plugin of a tenant as the writer runs it.
#[derive(Debug, Clone)]
pub struct ActivePlugin {
    /// Its settings.
    pub record: PluginRecord,
    /// Its active version, loaded; or why it could not be.
    pub plugin: Result<Plugin, String>,
}

impl ActivePlugin {
    /// Whether it runs for events of `action`.
    pub fn runs_for(&self, action: &str) -> bool {
        self.record.enabled
            && self
                .record
                .actions
                .as_ref()
                .is_none_or(|actions| actions.iter().any(|a| a == action))
    }
}

/// Where the writer gets a tenant's plugins from, in the order they run.
pub trait PluginSource: Send + Sync {
    /// Every plugin of `tenant`, by priority then name, with its active version loaded.
    fn active_plugins(&self, tenant: &str) -> Result<Vec<ActivePlugin>, StoreError>;
}

type Reply = oneshot::Sender<Result<Ingested, IngestError>>;

struct Job {
    event: NewEvent,
    reply: Reply,
}

/// The handle to the writer thread: submit events, and shut it down.
#[derive(Debug)]
pub struct Writer {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("event", &self.event.id)
            .finish()
    }
}

impl Writer {
    /// Starts the writer thread with a queue of `capacity` events and batches of at most
    /// `max_batch`.
    pub fn start(
        store: Arc<dyn Store>,
        plugins: Arc<dyn PluginSource>,
        capacity: usize,
        max_batch: usize,
    ) -> std::io::Result<Writer> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let thread = std::thread::Builder::new()
            .name("tally-writer".to_owned())
            .spawn(move || run(receiver, store.as_ref(), plugins.as_ref(), max_batch.max(1)))?;
        Ok(Writer {
            sender: Mutex::new(Some(sender)),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `event`; the receiver gets the answer once its batch has committed.
    pub fn submit(
        &self,
        event: NewEvent,
    ) -> Result<oneshot::Receiver<Result<Ingested, IngestError>>, SubmitError> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(SubmitError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .try_send(Job { event, reply })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SubmitError::Full,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })?;
        Ok(answer)
    }

    /// Stops taking events, lets the writer commit and answer everything queued, and waits
    /// for it to finish. Call it after the server stopped accepting requests.
    pub fn shutdown(&self) {
        // Dropping the last sender ends the writer's loop once the queue is empty.
        drop(
            self.sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the writer thread panicked");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    mut receiver: mpsc::Receiver<Job>,
    store: &dyn Store,
    plugins: &dyn PluginSource,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    // `blocking_recv` answers `None` once every sender is dropped and the queue is empty.
    while let Some(first) = receiver.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let jobs = std::mem::take(&mut batch);
        let count = jobs.len();
        // A bug in one batch must not stop the writer: its requests get an error (their reply
        // senders are dropped) and the next batch runs.
        let outcome = catch_unwind(AssertUnwindSafe(|| commit_batch(store, plugins, jobs)));
        if outcome.is_err() {
            tracing::error!(
                count,
                "the writer panicked on a batch; its events were not stored"
            );
        }
    }
    tracing::debug!("the writer has committed everything queued and stops");
}

/// The answer an event gets once its batch has committed.
enum Pending {
    // Boxed: an answer is moved around once per event, and most of a batch is stored.
    Stored(Box<Ingested>),
    Refused(IngestError),
}

fn commit_batch(store: &dyn Store, plugins: &dyn PluginSource, jobs: Vec<Job>) {
    let count = jobs.len();
    let started = std::time::Instant::now();
    // Plugins are looked up (and compiled, on a cold cache) before the write transaction, so
    // a slow compile does not hold it open. Settings changed from here on apply next batch.
    let mut by_tenant: HashMap<String, Result<Vec<ActivePlugin>, StoreError>> = HashMap::new();
    for job in &jobs {
        if !by_tenant.contains_key(&job.event.tenant) {
            let tenant = job.event.tenant.clone();
            let loaded = plugins.active_plugins(&tenant);
            by_tenant.insert(tenant, loaded);
        }
    }
    let mut answers: Vec<Pending> = Vec::with_capacity(count);
    let committed = store.write_batch(&mut |txn| {
        // `write_batch` does not retry, but clearing keeps the answers right if it ever did.
        answers.clear();
        for job in &jobs {
            let tenant_plugins = match by_tenant.get(&job.event.tenant) {
                Some(Ok(list)) => list.as_slice(),
                Some(Err(error)) => return Err(error.clone()),
                None => &[],
            };
            answers.push(apply_event(txn, &job.event, tenant_plugins)?);
        }
        Ok(())
    });
    match committed {
        Ok(()) => {
            for (job, answer) in jobs.into_iter().zip(answers) {
                let reply = match answer {
                    Pending::Stored(ingested) => Ok(*ingested),
                    Pending::Refused(error) => Err(error),
                };
                // The client may have gone away; the event is stored all the same.
                let _ = job.reply.send(reply);
            }
            tracing::debug!(count, elapsed = ?started.elapsed(), "batch committed");
        }
        Err(error) => {
            tracing::error!(%error, count, "a batch of events could not be committed");
            for job in jobs {
                let _ = job.reply.send(Err(IngestError::Storage(error.clone())));
            }
        }
    }
}

/// Evaluates one event inside the batch and appends it. `Err` aborts the whole batch (a
/// storage failure); an event that is refused on its own gets `Ok(Pending::Refused)`.
fn apply_event(
    txn: &mut dyn BatchTxn,
    new: &NewEvent,
    plugins: &[ActivePlugin],
) -> Result<Pending, StoreError> {
    let tenant = new.tenant.as_str();
    if let Some(event) = txn.event(tenant, &new.id)? {
        let customer = txn
            .customer(tenant, &event.customer)?
            .unwrap_or_else(|| empty_customer(&event.customer, &new.received_at));
        return Ok(Pending::Stored(Box::new(Ingested {
            event,
            customer,
            replayed: true,
        })));
    }
    let before = txn
        .customer(tenant, &new.customer)?
        .unwrap_or_else(|| empty_customer(&new.customer, &new.received_at));

    let subscribed: Vec<&ActivePlugin> =
        plugins.iter().filter(|p| p.runs_for(&new.action)).collect();
    let mut states = Vec::with_capacity(subscribed.len());
    for active in &subscribed {
        states.push(txn.plugin_state(tenant, &active.record.name, &new.customer)?);
    }
    let event = match wire_event(new) {
        Ok(event) => event,
        Err(why) => return Ok(Pending::Refused(IngestError::Internal(why))),
    };
    let results = evaluate(tenant, &event, &before.customer, &subscribed, &states);

    for (active, result) in subscribed.iter().zip(&results.results) {
        if let Err(error) = &result.outcome
            && active.record.on_error == OnError::Reject
        {
            return Ok(Pending::Refused(IngestError::PluginRejected {
                plugin: result.name.clone(),
                version: result.version,
                code: error.code().to_owned(),
                message: error.to_string(),
            }));
        }
    }

    let append = build_append(new, before, results);
    match txn.append(append) {
        Ok(event) => {
            let customer = txn.customer(tenant, &new.customer)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "customer {} vanished after an append",
                    new.customer
                ))
            })?;
            Ok(Pending::Stored(Box::new(Ingested {
                event,
                customer,
                replayed: false,
            })))
        }
        // The store refused what the pipeline built (a bug): this event only, nothing written.
        Err(
            error
            @ (StoreError::Inconsistent(_) | StoreError::Conflict(_) | StoreError::Invalid(_)),
        ) => {
            tracing::error!(%error, event = %new.id, "the store refused an evaluated event");
            Ok(Pending::Refused(IngestError::Internal(error.to_string())))
        }
        Err(error) => Err(error),
    }
}

/// What the plugins made of one event, with the results of those that could not be loaded
/// placed where they would have run.
struct Evaluated {
    results: Vec<PluginResult>,
    customer: Customer,
}

/// Runs the subscribed plugins in order. A plugin whose module cannot be loaded counts as a
/// failed plugin (its `on_error` applies) rather than stopping the others.
fn evaluate(
    tenant: &str,
    event: &Event,
    customer: &Customer,
    subscribed: &[&ActivePlugin],
    states: &[Option<Value>],
) -> Evaluated {
    let mut results = Vec::with_capacity(subscribed.len());
    let mut customer = customer.clone();
    // Consecutive loadable plugins run together through `run_plugins`, the one place that
    // chains decisions; an unloadable one is recorded between them.
    let mut start = 0;
    while start < subscribed.len() {
        let end = subscribed[start..]
            .iter()
            .position(|p| p.plugin.is_err())
            .map_or(subscribed.len(), |offset| start + offset);
        if end > start {
            let calls: Vec<PluginCall<'_>> = subscribed[start..end]
                .iter()
                .zip(&states[start..end])
                .filter_map(|(active, state)| {
                    let plugin = active.plugin.as_ref().ok()?;
                    Some(PluginCall {
                        name: &active.record.name,
                        version: active.record.active_version,
                        plugin,
                        config: Some(&active.record.config),
                        state: state.as_ref(),
                    })
                })
                .collect();
            let outcome = run_plugins(tenant, event, customer, &calls);
            customer = outcome.customer;
            results.extend(outcome.results);
        }
        if let Some(broken) = subscribed.get(end) {
            let reason = broken.plugin.as_ref().err().cloned().unwrap_or_default();
            results.push(PluginResult {
                name: broken.record.name.clone(),
                version: broken.record.active_version,
                outcome: Err(EvalError::Host {
                    reason: format!("the plugin could not be loaded: {reason}"),
                }),
                logs: Vec::new(),
                fuel_used: None,
            });
        }
        start = end + 1;
    }
    Evaluated { results, customer }
}

/// The event as plugins see it.
pub fn wire_event(new: &NewEvent) -> Result<Event, String> {
    let mut event = Event::new(
        new.id.clone(),
        new.action.clone(),
        new.customer.clone(),
        new.timestamp,
        &new.data,
    )
    .map_err(|error| error.to_string())?;
    event.label.clone_from(&new.label);
    event.source.clone_from(&new.source);
    Ok(event)
}

/// A customer the host has not seen before.
pub fn empty_customer(id: &str, now: &str) -> CustomerRecord {
    CustomerRecord {
        customer: Customer {
            id: id.to_owned(),
            ..Customer::default()
        },
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
        event_count: 0,
        contact_card: Map::new(),
    }
}

fn build_append(new: &NewEvent, before: CustomerRecord, evaluated: Evaluated) -> AppendEvent {
    let mut outcome = EventOutcome::default();
    let mut ledger = Vec::new();
    let mut triggers = Vec::new();
    let mut plugin_states = Vec::new();
    for result in &evaluated.results {
        let (status, error) = match &result.outcome {
            Ok(decision) => {
                for entry in &decision.points {
                    ledger.push(NewLedgerEntry {
                        plugin: result.name.clone(),
                        entry: entry.clone(),
                    });
                }
                for trigger in &decision.triggers {
                    triggers.push(NewTrigger {
                        plugin: result.name.clone(),
                        trigger: trigger.clone(),
                    });
                }
                if let Some(state) = &decision.state {
                    // `null` clears the state; anything else replaces it.
                    let kept = (!state.is_null()).then(|| state.clone());
                    plugin_states.push((result.name.clone(), kept));
                }
                outcome.points.extend(decision.points.iter().cloned());
                outcome.perks.extend(decision.perks.iter().cloned());
                outcome.triggers.extend(decision.triggers.iter().cloned());
                if decision.tier.is_some() {
                    outcome.tier.clone_from(&decision.tier);
                }
                (PluginStatus::Ok, None)
            }
            Err(error) => (
                PluginStatus::Error,
                Some(PluginErrorRecord {
                    code: error.code().to_owned(),
                    message: error.to_string(),
                }),
            ),
        };
        outcome.plugins.push(PluginRun {
            name: result.name.clone(),
            version: result.version,
            status,
            error,
        });
    }
    let points = ledger
        .iter()
        .fold(0_i64, |sum, new| sum.saturating_add(new.entry.amount));

    let mut customer = before;
    // The plugins' effect (points, tier, perks) as they chained it; then what the host keeps.
    customer.customer = evaluated.customer;
    customer.event_count = customer.event_count.saturating_add(1);
    customer.updated_at.clone_from(&new.received_at);
    record_stats(&mut customer.customer.stats, new);
    record_attributes(&mut customer.customer.attributes, new);
    record_contact_card(&mut customer.contact_card, new);

    AppendEvent {
        tenant: new.tenant.clone(),
        event: StoredEvent {
            seq: 0,
            id: new.id.clone(),
            action: new.action.clone(),
            label: new.label.clone(),
            date: new.timestamp.date_string(),
            timestamp: new.timestamp,
            customer: new.customer.clone(),
            points,
            source: new.source.clone(),
            ip_address: new.ip_address.clone(),
            user_agent: new.user_agent.clone(),
            data: new.data.clone(),
            received_at: new.received_at.clone(),
            outcome,
        },
        customer,
        ledger,
        plugin_states,
        triggers,
    }
}

/// The counters plugins see in `customer.stats`: events per action, and the first and last
/// event time (business time, from the events).
fn record_stats(stats: &mut Map<String, Value>, new: &NewEvent) {
    let events = stats
        .entry("events")
        .or_insert_with(|| Value::Object(Map::new()));
    if !events.is_object() {
        *events = Value::Object(Map::new());
    }
    if let Value::Object(per_action) = events {
        let count = per_action
            .get(&new.action)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        per_action.insert(new.action.clone(), json!(count.saturating_add(1)));
    }
    let at = new.timestamp;
    let read = |stats: &Map<String, Value>, key: &str| {
        stats
            .get(key)
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<Timestamp>().ok())
    };
    if read(stats, "first_event_at").is_none_or(|first| at < first) {
        stats.insert("first_event_at".to_owned(), json!(at.to_string()));
    }
    if read(stats, "last_event_at").is_none_or(|last| at > last) {
        stats.insert("last_event_at".to_owned(), json!(at.to_string()));
    }
}

/// The profile fields an `opt_in` carries (Antavo's opt-in events and CSV imports bring the
/// customer's email and name), and the opt-in flag itself.
fn record_attributes(attributes: &mut Map<String, Value>, new: &NewEvent) {
    const PROFILE_FIELDS: [&str; 5] = ["email", "first_name", "last_name", "phone", "language"];
    match new.action.as_str() {
        "opt_in" => {
            for field in PROFILE_FIELDS {
                if let Some(value) = new.data.get(field).filter(|v| !v.is_null()) {
                    attributes.insert(field.to_owned(), value.clone());
                }
            }
            attributes.insert("opted_in".to_owned(), Value::Bool(true));
            attributes.insert("opted_in_at".to_owned(), json!(new.timestamp.to_string()));
        }
        "opt_out" => {
            attributes.insert("opted_in".to_owned(), Value::Bool(false));
            attributes.insert("opted_out_at".to_owned(), json!(new.timestamp.to_string()));
        }
        _ => {}
    }
}

/// The contact card keeps the latest value of every `showInContactCard` field, keyed
/// `action.property` (several interaction types have a `date`), with the event it came from.
/// An event older than the value already shown does not replace it.
fn record_contact_card(card: &mut Map<String, Value>, new: &NewEvent) {
    for field in &new.contact_card {
        let key = format!("{}.{}", new.action, field.property);
        let newer = card
            .get(&key)
            .and_then(|shown| shown.get("at"))
            .and_then(Value::as_str)
            .and_then(|at| at.parse::<Timestamp>().ok())
            .is_none_or(|shown_at| new.timestamp >= shown_at);
        if newer {
            card.insert(
                key,
                json!({
                    "action": new.action,
                    "property": field.property,
                    "display_name": field.display_name,
                    "value": field.value,
                    "event_id": new.id,
                    "at": new.timestamp.to_string(),
                }),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;

    fn event(action: &str, at: &str, data: Value) -> NewEvent {
        NewEvent {
            tenant: "acme".to_owned(),
            id: format!("{action}-{at}"),
            action: action.to_owned(),
            label: None,
            customer: "ada".to_owned(),
            timestamp: at.parse().unwrap(),
            source: "api".to_owned(),
            ip_address: None,
            user_agent: None,
            data,
            received_at: "2026-11-23T00:00:00Z".to_owned(),
            contact_card: Vec::new(),
        }
    }

    #[test]
    fn stats_count_actions_and_keep_the_first_and_last_event_time() {
        let mut stats = Map::new();
        for (action, at) in [
            ("checkout", "2026-11-02T00:00:00Z"),
            ("repair", "2026-11-01T00:00:00Z"),
            ("checkout", "2026-11-03T00:00:00Z"),
        ] {
            record_stats(&mut stats, &event(action, at, json!({})));
        }
        assert_eq!(
            Value::Object(stats),
            json!({
                "events": {"checkout": 2, "repair": 1},
                "first_event_at": "2026-11-01T00:00:00Z",
                "last_event_at": "2026-11-03T00:00:00Z",
            })
        );
    }

    #[test]
    fn contact_card_keeps_the_latest_value_per_action_and_property() {
        let mut card = Map::new();
        let field = |value: &str| ContactCardValue {
            property: "brand".to_owned(),
            display_name: "Brand".to_owned(),
            value: json!(value),
        };
        for (at, brand) in [
            ("2026-11-02T00:00:00Z", "new"),
            ("2026-11-01T00:00:00Z", "older, posted later"),
        ] {
            let mut repair = event("repair", at, json!({"brand": brand}));
            repair.contact_card = vec![field(brand)];
            record_contact_card(&mut card, &repair);
        }
        assert_eq!(card["repair.brand"]["value"], "new");
        assert_eq!(card["repair.brand"]["display_name"], "Brand");
        assert_eq!(card["repair.brand"]["at"], "2026-11-02T00:00:00Z");
    }

    #[test]
    fn opt_in_and_opt_out_set_profile_attributes() {
        let mut attributes = Map::new();
        let data = json!({"email": "ada@example.com", "first_name": "Ada", "channel": "web"});
        record_attributes(
            &mut attributes,
            &event("opt_in", "2026-11-01T00:00:00Z", data),
        );
        assert_eq!(attributes["email"], "ada@example.com");
        assert_eq!(attributes["opted_in"], true);
        assert!(!attributes.contains_key("channel"));
        record_attributes(
            &mut attributes,
            &event("opt_out", "2026-11-02T00:00:00Z", json!({})),
        );
        assert_eq!(attributes["opted_in"], false);
        assert_eq!(attributes["first_name"], "Ada");
    }
}
