//! Events in: checking a posted event, queueing it for the writer and waiting for its commit,
//! and simulating one plugin on an event without storing anything.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tally_sdk::{Customer, Decision};

use super::catalog::Catalog;
use super::clock::Clock;
use super::error::{ErrorKind, ServiceError};
use super::events::{self, Origin};
use crate::domain::records::{CustomerRecord, RawJson, TenantRecord};
use crate::domain::schedule::merge_event_id;
use crate::domain::{CustomerId, EventId, EventRefusal, new_account};
use crate::pipeline::writer::{IngestError, Ingested, NewEvent, SubmitError, Writer};
use crate::pipeline::{ActivePlugin, NotApplied, PluginFailure, evaluate_event_reporting};
use crate::runtime::LogLine;
use crate::schema::EventTypes;
use crate::storage::Store;

/// What a plugin would decide on an event, with nothing stored.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// The plugin.
    pub plugin: String,
    /// The version that ran.
    pub version: u32,
    /// The event as the plugin saw it.
    pub event: NewEvent,
    /// The customer as stored now (a new one if unknown).
    pub customer_before: Customer,
    /// The customer as the event would leave them: the decision applied, and what the host
    /// itself keeps (statistics, profile fields), exactly as a posted event would.
    pub customer_after: Customer,
    /// The plugin's state for the customer before.
    pub state_before: Option<Value>,
    /// The decision, or why there is none.
    pub outcome: Result<Decision, PluginFailure>,
    /// What the plugin logged.
    pub logs: Vec<LogLine>,
    /// Instructions used.
    pub fuel_used: Option<u64>,
}

/// An event checked without the store, or why not.
#[derive(Debug)]
pub enum Checked {
    /// The event, ready for the writer.
    Ready(NewEvent),
    /// The event is not valid.
    Invalid(ServiceError),
    /// The tenant's event types are not in memory: check it with
    /// [`Ingest::prepare_event`] off the async runtime.
    NeedsTypes(Value),
}

/// Events in.
pub struct Ingest {
    pub(super) store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    writer: Writer,
    /// Every "now" of events in: when they are received, what is too far in the future, what
    /// is due.
    pub(super) clock: Clock,
    /// Held by the pass writing what is due ([`Ingest::write_due`]), so passes run one at a
    /// time.
    pub(super) due_pass: tokio::sync::Mutex<()>,
    /// One lock a tenant for redeeming rewards (see `redeem_reward`).
    reward_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    pub(super) fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        writer: Writer,
        clock: Clock,
    ) -> Ingest {
        Ingest {
            store,
            catalog,
            writer,
            clock,
            due_pass: tokio::sync::Mutex::new(()),
            reward_locks: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The host's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Stops taking events and waits until everything queued is committed and answered.
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }

    /// Runs one plugin (its active version, or `version`) on an event against the customer's
    /// current state; stores nothing.
    pub fn simulate(
        &self,
        tenant: &TenantRecord,
        name: &str,
        version: Option<u32>,
        input: Value,
        origin: &Origin,
    ) -> Result<Simulation, ServiceError> {
        let record = self.catalog.plugin(&tenant.id, name)?;
        let version = version.unwrap_or(record.active_version);
        if !record.versions.iter().any(|v| v.version == version) {
            return Err(ServiceError::not_found(format!(
                "plugin {name} has no version {version}"
            )));
        }
        let event = self.prepare_event(tenant, input, origin)?;
        let plugin = self.catalog.loaded_plugin(&tenant.id, name, version)?;
        let account = self
            .store
            .customer(&tenant.id, event.customer.as_str())?
            .unwrap_or_else(|| new_account(&event.customer, event.received_at));
        let state = self
            .store
            .plugin_state(&tenant.id, name, event.customer.as_str())?;
        let active = ActivePlugin::new(record, Ok(plugin));
        let mut call = active.call(state.as_ref());
        call.version = version;
        let mut evaluation =
            evaluate_event_reporting(tenant.policy(), &event, &account, &[call], |_, _| {})
                .map_err(|error| match error {
                    NotApplied::Refused(refusal) => refusal.into(),
                    other => ServiceError::internal(other.to_string()),
                })?;
        let result =
            evaluation.runs.results.pop().ok_or_else(|| {
                ServiceError::internal("the pipeline ran no plugin for a simulation")
            })?;
        // A rejection is shown as the plugin's error; the customer stays as they are.
        let customer_after = match evaluation.applied {
            Ok(append) => append.customer.customer,
            Err(_) => account.customer.clone(),
        };
        Ok(Simulation {
            plugin: name.to_owned(),
            version,
            event,
            customer_before: account.customer,
            customer_after,
            state_before: state.as_ref().map(RawJson::to_value),
            outcome: result.outcome,
            logs: result.logs,
            fuel_used: result.fuel_used,
        })
    }

    /// Checks a posted event as [`Ingest::prepare_event`] does when that needs nothing from
    /// the store (the tenant's event types were read before, and are unchanged).
    pub fn check_now(&self, tenant: &TenantRecord, input: Value, origin: &Origin) -> Checked {
        match self.catalog.cached_types(tenant) {
            Some(types) => match self.read(tenant, &types, input, origin, self.clock.now()) {
                Ok(event) => Checked::Ready(event),
                Err(error) => Checked::Invalid(error),
            },
            None => Checked::NeedsTypes(input),
        }
    }

    /// Checks a posted event (envelope, action, data) for the writer.
    pub fn prepare_event(
        &self,
        tenant: &TenantRecord,
        input: Value,
        origin: &Origin,
    ) -> Result<NewEvent, ServiceError> {
        let types = self.catalog.types_of(tenant)?;
        self.read(tenant, &types, input, origin, self.clock.now())
    }

    /// Checks many events at once (a batch or an import), each on its own.
    pub fn prepare_events(
        &self,
        tenant: &TenantRecord,
        inputs: Vec<Value>,
        origin: &Origin,
    ) -> Result<Vec<Result<NewEvent, ServiceError>>, ServiceError> {
        let types = self.catalog.types_of(tenant)?;
        let received = self.clock.now();
        Ok(inputs
            .into_iter()
            .map(|input| self.read(tenant, &types, input, origin, received))
            .collect())
    }

    /// One posted event read against its type, and a profile it writes against the tenant's
    /// customer schema: every check an event from outside passes.
    fn read(
        &self,
        tenant: &TenantRecord,
        types: &EventTypes,
        input: Value,
        origin: &Origin,
        now: tally_sdk::Timestamp,
    ) -> Result<NewEvent, ServiceError> {
        let event = events::read_event(tenant, types, input, origin, now)?;
        self.catalog.check_profile(tenant, &event)?;
        Ok(event)
    }

    /// Forgets who a customer is (their right to be forgotten): a `customer_erase` event
    /// through the writer, so it is ordered with their other events, after which their
    /// attributes, perk codes, contact card, plugin states and the personal data of every
    /// stored event are gone for good; amounts, actions and times stay for the tenant's books,
    /// and the tenant's audit log records it without the customer's id.
    ///
    /// Erasing a customer others were merged into erases those ids' histories too: they are
    /// the same person.
    pub async fn erase(
        &self,
        tenant: &TenantRecord,
        customer: &str,
        origin: &Origin,
    ) -> Result<Ingested, ServiceError> {
        let (id, record) = self.existing_customer(tenant, customer).await?;
        let erasure = |id| {
            let event = self.host_event(
                tenant,
                events::generate_id()?,
                "customer_erase",
                id,
                json!({}),
                origin,
            );
            Ok::<_, ServiceError>(self.writer.submit(event)?)
        };
        let erased = receive(erasure(id)?).await?;
        for alias in &record.aliases {
            let alias = CustomerId::parse(alias).map_err(|error| {
                ServiceError::internal(format!("customer {customer} has an alias that {error}"))
            })?;
            receive(erasure(alias)?).await?;
        }
        Ok(erased)
    }

    /// Merges customer `from` into `survivor`: a `customer_merge` event on the survivor
    /// through the writer, which moves the other's points, perks and profile to them in one
    /// step and makes `from` an alias of theirs (see `domain::merge`). Its id is the host's
    /// `system:customer_merge:<from>`, so asking again is a replay; asking to merge `from`
    /// into someone else afterwards is `409 customer_merged`.
    pub async fn merge(
        &self,
        tenant: &TenantRecord,
        survivor: &str,
        from: &str,
        origin: &Origin,
    ) -> Result<Ingested, ServiceError> {
        let (survivor_id, _) = self.existing_customer(tenant, survivor).await?;
        let (from_id, _) = self.existing_customer(tenant, from).await?;
        if from_id == survivor_id {
            return Err(EventRefusal::MergeWithItself {
                customer: from.to_owned(),
            }
            .into());
        }
        let event = self.host_event(
            tenant,
            merge_event_id(&from_id),
            "customer_merge",
            survivor_id,
            json!({"from": from_id.as_str()}),
            origin,
        );
        let ingested = receive(self.writer.submit(event)?).await?;
        if ingested.replayed && ingested.event.customer != survivor {
            return Err(EventRefusal::CustomerMerged {
                customer: from.to_owned(),
                into: ingested.event.customer,
            }
            .into());
        }
        Ok(ingested)
    }

    /// The id and record of a customer the tenant has (an alias counts), or `404 not_found`.
    async fn existing_customer(
        &self,
        tenant: &TenantRecord,
        customer: &str,
    ) -> Result<(CustomerId, CustomerRecord), ServiceError> {
        let id = CustomerId::parse(customer).map_err(|error| {
            ServiceError::not_found(format!("no customer {customer:?}: a customer id {error}"))
        })?;
        let store = self.store.clone();
        let (tenant_id, lookup) = (tenant.id.to_string(), customer.to_owned());
        let record = tokio::task::spawn_blocking(move || store.customer(&tenant_id, &lookup))
            .await
            .map_err(|error| {
                ServiceError::internal(format!("reading a customer failed: {error}"))
            })??
            .ok_or_else(|| ServiceError::not_found(format!("no customer {customer:?}")))?;
        Ok((id, record))
    }

    /// An event the host writes for a request (an erasure, a merge), received now.
    fn host_event(
        &self,
        tenant: &TenantRecord,
        id: EventId,
        action: &str,
        customer: CustomerId,
        data: Value,
        origin: &Origin,
    ) -> NewEvent {
        let now = self.clock.now();
        NewEvent {
            tenant: tenant.id.clone(),
            id,
            action: action.to_owned(),
            label: None,
            customer,
            timestamp: now,
            source: origin.source.clone(),
            ip_address: None,
            user_agent: None,
            data: RawJson::from_value(&data),
            received_at: now,
            contact_card: Vec::new(),
            due: None,
            interaction: Default::default(),
        }
    }

    /// Hands a checked event to the writer and waits until it is committed (or refused).
    pub async fn ingest(&self, event: NewEvent) -> Result<Ingested, ServiceError> {
        if event.action == "reward_redeem" {
            return self.redeem_reward(event).await;
        }
        receive(self.writer.submit(event)?).await
    }

    /// Queues many events in their order (the failures of checking are passed through) and
    /// waits for every answer.
    pub async fn ingest_many(
        &self,
        events: Vec<Result<NewEvent, ServiceError>>,
    ) -> Vec<Result<Ingested, ServiceError>> {
        let queued = self.queue(events, Pace::RefuseWhenFull).await;
        self.answers(queued).await
    }

    /// Queues events in their order, each as soon as the writer takes it: with
    /// [`Pace::LeaveRoom`] only while a quarter of the queue stays free for requests (a
    /// bulk import yields to live traffic), with [`Pace::RefuseWhenFull`] at once, an event
    /// the full queue refuses failing with `overloaded`. Wait for the answers with
    /// [`Ingest::answers`].
    pub async fn queue(
        &self,
        events: Vec<Result<NewEvent, ServiceError>>,
        pace: Pace,
    ) -> Vec<Queued> {
        let reserve = self.writer.capacity() / 4;
        let mut queued = Vec::with_capacity(events.len());
        for event in events {
            let event = match event {
                Ok(event) => event,
                Err(error) => {
                    queued.push(Queued(QueuedAs::Refused(error)));
                    continue;
                }
            };
            // Redemptions of rewards go one at a time, after the rest (see `redeem_reward`).
            if event.action == "reward_redeem" {
                queued.push(Queued(QueuedAs::Redemption(Box::new(event))));
                continue;
            }
            if pace == Pace::LeaveRoom {
                // A writer shutting down has no queue left; submitting then says so.
                while self.writer.room() <= reserve && self.writer.capacity() > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            queued.push(Queued(match self.writer.submit(event) {
                Ok(answer) => QueuedAs::Waiting(answer),
                Err(error) => QueuedAs::Refused(error.into()),
            }));
        }
        queued
    }

    /// The answers of events queued by [`Ingest::queue`], in their order.
    pub async fn answers(&self, queued: Vec<Queued>) -> Vec<Result<Ingested, ServiceError>> {
        let mut answers = Vec::with_capacity(queued.len());
        let mut redemptions = Vec::new();
        for (index, Queued(queued)) in queued.into_iter().enumerate() {
            answers.push(match queued {
                QueuedAs::Waiting(answer) => receive(answer).await,
                QueuedAs::Refused(error) => Err(error),
                QueuedAs::Redemption(event) => {
                    redemptions.push((index, event));
                    // Filled in below.
                    Err(ServiceError::internal("a redemption was left unanswered"))
                }
            });
        }
        for (index, event) in redemptions {
            answers[index] = self.redeem_reward(*event).await;
        }
        answers
    }
}

/// How [`Ingest::queue`] treats a busy writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Queue at once; an event the full queue refuses fails with `overloaded`.
    RefuseWhenFull,
    /// Wait while less than a quarter of the queue is free.
    LeaveRoom,
}

/// An event [`Ingest::queue`] handled: its answer to wait for, or why it was not queued.
#[derive(Debug)]
pub struct Queued(QueuedAs);

#[derive(Debug)]
enum QueuedAs {
    Waiting(tokio::sync::oneshot::Receiver<Result<Ingested, IngestError>>),
    Refused(ServiceError),
    Redemption(Box<NewEvent>),
}

impl Ingest {
    /// Redeems a reward: the redemption's event gets the reward as the catalogue has it now
    /// (cost, perk, stock, limit), whatever the sender put in it, and is written through the
    /// writer. Redemptions of one tenant's rewards run one at a time, each checking the
    /// stock against the redemptions committed before it; the store counts and checks the
    /// stock again in the append, so a reward is never oversold.
    async fn redeem_reward(&self, mut event: NewEvent) -> Result<Ingested, ServiceError> {
        let lock = {
            let mut locks = self
                .reward_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            locks.entry(event.tenant.to_string()).or_default().clone()
        };
        let _one_at_a_time = lock.lock().await;
        let asked = event.data.to_value();
        let id = asked
            .get("reward")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let store = self.store.clone();
        let tenant = event.tenant.to_string();
        let (lookup, event_id) = (id.clone(), event.id.to_string());
        let (found, stored_before) = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::storage::StoreError>((
                store.reward(&tenant, &lookup)?,
                store.event(&tenant, &event_id)?.is_some(),
            ))
        })
        .await
        .map_err(|error| ServiceError::internal(format!("reading a reward failed: {error}")))??;
        // A retried redemption (its id stored already) is answered as the first was, whatever
        // the stock is now.
        if stored_before {
            return receive(self.writer.submit(event)?).await;
        }
        let Some((reward, redeemed)) = found else {
            return Err(ServiceError::new(
                ErrorKind::NotFound,
                "reward_not_found",
                format!("there is no reward {id:?}"),
            ));
        };
        let at = event.timestamp;
        let active = reward.enabled
            && reward.active_from.is_none_or(|from| from <= at)
            && reward.active_until.is_none_or(|until| at <= until);
        if !active {
            return Err(ServiceError::new(
                ErrorKind::Unprocessable,
                "reward_inactive",
                format!("reward {id:?} cannot be redeemed at {at}"),
            ));
        }
        if let Some(stock) = reward.stock
            && redeemed >= stock
        {
            return Err(crate::domain::EventRefusal::RewardOutOfStock { reward: id, stock }.into());
        }
        event.data = RawJson::from_value(&serde_json::json!({
            "reward": reward.id,
            "name": reward.name,
            "cost": reward.cost,
            "perk": reward.perk,
            "stock": reward.stock,
            "limit_per_customer": reward.limit_per_customer,
        }));
        receive(self.writer.submit(event)?).await
    }

    /// Queues the host's own `events`, waiting for room in the queue when it is full rather
    /// than refusing (the host is not a client to push back on), and waits for every
    /// answer, in no particular order.
    pub(super) async fn ingest_many_waiting(
        &self,
        events: Vec<NewEvent>,
    ) -> Vec<Result<Ingested, ServiceError>> {
        let mut answers = Vec::with_capacity(events.len());
        let mut waiting = std::collections::VecDeque::new();
        for mut event in events {
            loop {
                match self.writer.try_submit(event) {
                    Ok(answer) => {
                        waiting.push_back(answer);
                        break;
                    }
                    Err((SubmitError::Full, back)) => {
                        event = back;
                        match waiting.pop_front() {
                            Some(answer) => answers.push(receive(answer).await),
                            // The queue is full of others' events: give them a moment.
                            None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                        }
                    }
                    Err((SubmitError::Closed, _)) => {
                        answers.push(Err(SubmitError::Closed.into()));
                        break;
                    }
                }
            }
        }
        for answer in waiting {
            answers.push(receive(answer).await);
        }
        answers
    }
}

async fn receive(
    answer: tokio::sync::oneshot::Receiver<Result<Ingested, IngestError>>,
) -> Result<Ingested, ServiceError> {
    match answer.await {
        Ok(result) => Ok(result?),
        // The writer dropped the reply: it panicked on this batch (and logged why).
        Err(_) => Err(ServiceError::internal(
            "the writer stopped before answering",
        )),
    }
}
