//! The service core: what the host does, in domain terms, for the API (and `tally serve
//! --demo`) to call. It owns the store, the plugin runtime with its cache of loaded plugins,
//! the compiled event types and the group-commit writer.
//!
//! Methods that touch storage or compile wasm block: the API calls them off the async
//! runtime. Two answer from memory and never block, so that posting an event needs no
//! blocking hop: [`Service::known_principal`] (keys seen before, kept by their hash) and
//! [`Service::prepare_event_now`] (checking an event once its tenant's types are cached).
//! [`Service::ingest`] is the one async method: it queues a validated event for the writer
//! and waits until its batch has committed.
//!
//! Data flows one way: api -> service -> pipeline (writer) -> runtime + storage.

mod error;
mod events;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Deserialize;
use serde_json::Value;
use tally_sdk::{Customer, Decision};

pub use self::error::{ErrorKind, ServiceError};
pub use self::events::{
    MAX_CUSTOMER_LEN, MAX_EVENT_ID_LEN, MAX_LABEL_LEN, Origin, generate_id, kind_of, now,
};
use crate::auth;
use crate::config::Config;
use crate::domain::{TenantId, new_account};
use crate::pipeline::writer::{IngestError, Ingested, NewEvent, Writer};
use crate::pipeline::{
    ActivePlugin, PluginFailure, RuleSource, TenantRules, evaluate_event_reporting,
};
use crate::runtime::{LogLine, Plugin, Runtime};
use crate::schema::{EventType, EventTypes, SchemaCache, builtin, is_valid_id, parse_document};
use crate::storage::{
    CustomerRecord, EventQuery, EventTypeRecord, LedgerEntry, OnError, Page, PluginRecord, RawJson,
    Store, StoreError, StoredEvent, TenantRecord,
};

/// Who a request's key belongs to.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The admin key: manages tenants.
    Admin,
    /// A tenant's key: sees and changes only that tenant's data.
    Tenant(TenantRecord),
}

/// A host just opened, and the admin key it generated (to print once) if it made one.
#[derive(Debug)]
pub struct Opened {
    /// The service.
    pub service: Service,
    /// The admin key generated on this first start; `None` when one was configured or stored.
    pub generated_admin_key: Option<String>,
}

/// What `POST /v1/tenants` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// The tenant's id: 1-64 letters, digits, `_`, `.` or `-`, starting with a letter.
    pub id: String,
    /// A display name; the id when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// Whether events of actions without a type are accepted.
    #[serde(default)]
    pub allow_untyped_events: bool,
    /// Whether a decision may take a customer's balance below zero.
    #[serde(default)]
    pub allow_negative_balance: bool,
}

/// What `PATCH /v1/tenant` changes; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// A new display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Turns untyped custom events on or off.
    #[serde(default)]
    pub allow_untyped_events: Option<bool>,
    /// Lets decisions take balances below zero, or stops them.
    #[serde(default)]
    pub allow_negative_balance: Option<bool>,
}

/// What `PATCH /v1/plugins/{name}` changes; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginPatch {
    /// The configuration the plugin reads; `null` clears it.
    #[serde(default, deserialize_with = "present")]
    pub config: Option<Value>,
    /// The actions it runs for; `null` means every action.
    #[serde(default, deserialize_with = "present_actions")]
    pub actions: Option<Option<Vec<String>>>,
    /// Plugins run in ascending priority, ties by name.
    #[serde(default)]
    pub priority: Option<i32>,
    /// Whether it runs at all.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The version that runs: an earlier one rolls back.
    #[serde(default, alias = "version")]
    pub active_version: Option<u32>,
    /// What its failure does to the event: `skip` or `reject`.
    #[serde(default)]
    pub on_error: Option<OnError>,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

fn present_actions<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Vec<String>>>, D::Error> {
    Option::<Vec<String>>::deserialize(deserializer).map(Some)
}

/// The result of uploading a module.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The plugin after the upload.
    pub plugin: PluginRecord,
    /// False when the module is the active version already, and nothing changed.
    pub created: bool,
}

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

/// A ledger entry with the event that caused it.
#[derive(Debug, Clone)]
pub struct LedgerLine {
    /// The entry.
    pub entry: LedgerEntry,
    /// Its event (absent only in a damaged store).
    pub event: Option<StoredEvent>,
}

/// The host.
pub struct Service {
    store: Arc<dyn Store>,
    plugins: Arc<PluginCache>,
    schemas: SchemaCache,
    writer: Writer,
    config: Config,
    /// The admin key's hash; it is set when the host opens and not changed while it runs.
    admin_key_hash: [u8; 32],
    /// Tenants by the hash of a key that authenticated, so that a request does not read the
    /// store to learn whose key it carries. Emptied whenever a tenant or a key changes; keys
    /// that match nobody are not kept, so bad keys cannot grow it.
    principals: StoreCache<[u8; 32], TenantRecord>,
    /// Each tenant's event-type documents, so that checking an event does not read them all
    /// from the store. Dropped for a tenant when one of its types changes.
    type_documents: StoreCache<TenantId, Arc<Vec<Value>>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("data_dir", &self.config.data_dir)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts the host over `store`: the plugin runtime (its compiled-artifact cache in the
    /// data directory), the writer, and the admin key. Any [`Store`] will do; the binary
    /// opens the embedded one.
    pub fn open(store: Arc<dyn Store>, config: Config) -> Result<Opened, ServiceError> {
        let runtime = Runtime::with_cache_dir(config.limits.clone(), config.artifact_dir())?;
        let plugins = Arc::new(PluginCache {
            store: store.clone(),
            runtime,
            loaded: RwLock::new(HashMap::new()),
        });
        let writer = Writer::start(
            store.clone(),
            plugins.clone(),
            config.queue_capacity,
            config.max_batch,
            config.evaluation_threads,
        )
        .map_err(|error| ServiceError::internal(format!("cannot start the writer: {error}")))?;
        let (admin_key_hash, generated_admin_key) =
            match (&config.admin_key, store.admin_key_hash()?) {
                (Some(key), stored) => {
                    let hash = auth::hash_key(key);
                    if stored != Some(hash) {
                        store.set_admin_key_hash(hash)?;
                    }
                    (hash, None)
                }
                (None, Some(stored)) => (stored, None),
                (None, None) => {
                    let key = auth::new_admin_key()
                        .map_err(|error| ServiceError::internal(error.to_string()))?;
                    let hash = auth::hash_key(&key);
                    store.set_admin_key_hash(hash)?;
                    (hash, Some(key))
                }
            };
        Ok(Opened {
            service: Service {
                store,
                plugins,
                schemas: SchemaCache::new(),
                writer,
                config,
                admin_key_hash,
                principals: StoreCache::default(),
                type_documents: StoreCache::default(),
            },
            generated_admin_key,
        })
    }

    /// How the host was set up.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops taking events and waits until everything queued is committed and answered.
    pub fn shutdown(&self) {
        self.writer.shutdown();
    }

    /// Whose key this is, when that is known without reading the store: the admin key, or
    /// a tenant key seen before. `None` means "ask [`Service::authenticate`]".
    pub fn known_principal(&self, key: &str) -> Option<Principal> {
        let hash = auth::hash_key(key);
        if auth::hashes_equal(&self.admin_key_hash, &hash) {
            return Some(Principal::Admin);
        }
        self.principals.get(&hash).map(Principal::Tenant)
    }

    /// Whose key this is; `None` for a key that is nobody's.
    pub fn authenticate(&self, key: &str) -> Result<Option<Principal>, ServiceError> {
        if let Some(known) = self.known_principal(key) {
            return Ok(Some(known));
        }
        let hash = auth::hash_key(key);
        let epoch = self.principals.epoch();
        let tenant = self.store.tenant_by_key_hash(hash)?;
        if let Some(tenant) = &tenant {
            self.principals.insert(epoch, hash, tenant.clone());
        }
        Ok(tenant.map(Principal::Tenant))
    }

    /// Forgets every key seen: a tenant or a key changed.
    fn forget_principals(&self) {
        self.principals.forget_all();
    }

    // Tenants.

    /// Creates a tenant; returns it with its API key, which is not stored and not shown again.
    pub fn create_tenant(&self, new: NewTenant) -> Result<(TenantRecord, String), ServiceError> {
        let id = TenantId::parse(new.id.as_str()).map_err(|error| {
            ServiceError::invalid_request(format!("tenant id {:?}: an id {error}", new.id))
                .with_details(serde_json::json!({ "field": "id" }))
        })?;
        let tenant = TenantRecord {
            name: new.name.unwrap_or_else(|| new.id.clone()),
            id,
            created_at: now().to_string(),
            allow_untyped_events: new.allow_untyped_events,
            allow_negative_balance: new.allow_negative_balance,
        };
        let key = new_tenant_key()?;
        self.store.create_tenant(&tenant, auth::hash_key(&key))?;
        tracing::info!(tenant = %tenant.id, "tenant created");
        Ok((tenant, key))
    }

    /// Every tenant.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, ServiceError> {
        Ok(self.store.tenants()?)
    }

    /// The tenant `id`.
    pub fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, ServiceError> {
        Ok(self.store.tenant(id)?)
    }

    /// Changes a tenant's name or untyped-events setting.
    pub fn update_tenant(
        &self,
        tenant: &str,
        patch: TenantPatch,
    ) -> Result<TenantRecord, ServiceError> {
        let mut record = self
            .store
            .tenant(tenant)?
            .ok_or_else(|| ServiceError::not_found(format!("no tenant {tenant}")))?;
        if let Some(name) = patch.name {
            record.name = name;
        }
        if let Some(allow) = patch.allow_negative_balance {
            record.allow_negative_balance = allow;
        }
        if let Some(allow) = patch.allow_untyped_events {
            record.allow_untyped_events = allow;
        }
        self.store.update_tenant(&record)?;
        self.forget_principals();
        Ok(record)
    }

    /// Gives a tenant a new API key; the old one stops working at once.
    pub fn rotate_tenant_key(&self, tenant: &str) -> Result<String, ServiceError> {
        let key = new_tenant_key()?;
        self.store
            .set_tenant_key_hash(tenant, auth::hash_key(&key))?;
        self.forget_principals();
        Ok(key)
    }

    // Event types.

    /// Registers (or replaces) an event type from its document; `true` when it is new.
    pub fn put_event_type(
        &self,
        tenant: &str,
        document: Value,
    ) -> Result<(Arc<EventType>, bool), ServiceError> {
        let parsed = parse_document(&document)?;
        let created = self.store.event_type(tenant, parsed.id())?.is_none();
        let record = EventTypeRecord {
            id: parsed.id().to_owned(),
            display_name: parsed
                .display_name()
                .unwrap_or_else(|| parsed.id())
                .to_owned(),
            document,
            created_at: now().to_string(),
        };
        self.store.put_event_type(tenant, &record)?;
        self.type_documents.forget(tenant);
        let compiled = self.schemas.get_or_compile(tenant, &record.document)?;
        Ok((compiled, created))
    }

    /// Every event type of a tenant: the built-ins, then its own.
    pub fn event_types(&self, tenant: &TenantRecord) -> Result<Vec<Arc<EventType>>, ServiceError> {
        Ok(self.types_of(tenant)?.list()?)
    }

    /// The event type `id`: built-in or the tenant's.
    pub fn event_type(&self, tenant: &str, id: &str) -> Result<Arc<EventType>, ServiceError> {
        if let Some(builtin) = builtin(id) {
            return Ok(builtin.clone());
        }
        let record = self
            .store
            .event_type(tenant, id)?
            .ok_or_else(|| ServiceError::not_found(format!("no event type {id:?}")))?;
        Ok(self.schemas.get_or_compile(tenant, &record.document)?)
    }

    fn cached_types(&self, tenant: &TenantRecord) -> Option<EventTypes> {
        let documents = self.type_documents.get(&tenant.id)?;
        Some(EventTypes::new(
            &self.schemas,
            tenant.id.clone(),
            documents,
            tenant.allow_untyped_events,
        ))
    }

    fn types_of(&self, tenant: &TenantRecord) -> Result<EventTypes, ServiceError> {
        let cached = self.type_documents.get(&tenant.id);
        let documents = match cached {
            Some(documents) => documents,
            None => {
                let epoch = self.type_documents.epoch();
                let documents: Arc<Vec<Value>> = Arc::new(
                    self.store
                        .event_types(&tenant.id)?
                        .into_iter()
                        .map(|record| record.document)
                        .collect(),
                );
                self.type_documents
                    .insert(epoch, tenant.id.clone(), documents.clone());
                documents
            }
        };
        Ok(EventTypes::new(
            &self.schemas,
            tenant.id.clone(),
            documents,
            tenant.allow_untyped_events,
        ))
    }

    // Plugins.

    /// Validates and compiles `wasm` and stores it as the new active version of `name`. The
    /// active version uploaded again changes nothing.
    pub fn upload_plugin(
        &self,
        tenant: &str,
        name: &str,
        wasm: &[u8],
    ) -> Result<Uploaded, ServiceError> {
        check_plugin_name(name)?;
        let plugin = self.plugins.runtime.load(wasm)?;
        if let Some(existing) = self.store.plugin(tenant, name)?
            && existing
                .active()
                .is_some_and(|v| v.sha256 == plugin.sha256())
        {
            return Ok(Uploaded {
                plugin: existing,
                created: false,
            });
        }
        let record = self.store.add_plugin_version(
            tenant,
            name,
            wasm,
            plugin.sha256(),
            &now().to_string(),
        )?;
        self.plugins
            .insert(tenant, name, record.active_version, plugin);
        tracing::info!(
            tenant,
            plugin = name,
            version = record.active_version,
            "plugin uploaded"
        );
        Ok(Uploaded {
            plugin: record,
            created: true,
        })
    }

    /// Changes a plugin's settings.
    pub fn update_plugin(
        &self,
        tenant: &str,
        name: &str,
        patch: PluginPatch,
    ) -> Result<PluginRecord, ServiceError> {
        let mut record = self.plugin(tenant, name)?;
        if let Some(config) = patch.config {
            record.config = config;
        }
        if let Some(actions) = patch.actions {
            if let Some(actions) = &actions
                && let Some(bad) = actions.iter().find(|action| !is_valid_id(action))
            {
                return Err(ServiceError::invalid_request(format!(
                    "actions: {bad:?} is not an action name (1-64 letters, digits, '_', '.' or '-', starting with a letter)"
                )));
            }
            record.actions = actions.map(|mut actions| {
                actions.sort();
                actions.dedup();
                actions
            });
        }
        if let Some(priority) = patch.priority {
            record.priority = priority;
        }
        if let Some(enabled) = patch.enabled {
            record.enabled = enabled;
        }
        if let Some(version) = patch.active_version {
            if !record.versions.iter().any(|v| v.version == version) {
                return Err(ServiceError::invalid_request(format!(
                    "plugin {name} has no version {version}; it has versions {}",
                    record
                        .versions
                        .iter()
                        .map(|v| v.version.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            record.active_version = version;
        }
        if let Some(on_error) = patch.on_error {
            record.on_error = on_error;
        }
        self.store.update_plugin(tenant, &record)?;
        Ok(record)
    }

    /// Every plugin of a tenant, in the order they run.
    pub fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, ServiceError> {
        Ok(self.store.plugins(tenant)?)
    }

    /// The plugin `name`.
    pub fn plugin(&self, tenant: &str, name: &str) -> Result<PluginRecord, ServiceError> {
        self.store
            .plugin(tenant, name)?
            .ok_or_else(|| ServiceError::not_found(format!("no plugin {name:?}")))
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
        let record = self.plugin(&tenant.id, name)?;
        let version = version.unwrap_or(record.active_version);
        if !record.versions.iter().any(|v| v.version == version) {
            return Err(ServiceError::not_found(format!(
                "plugin {name} has no version {version}"
            )));
        }
        let event = self.prepare_event(tenant, input, origin)?;
        let plugin = self
            .plugins
            .get(&tenant.id, name, version)
            .map_err(ServiceError::internal)?;
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
        let mut evaluation = evaluate_event_reporting(
            &tenant.id,
            tenant.policy(),
            &event,
            &account,
            &[call],
            |_, _| {},
        )
        .map_err(|error| ServiceError::internal(error.to_string()))?;
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

    // Events.

    /// Checks a posted event as [`Service::prepare_event`] does when that needs nothing from
    /// the store (the tenant's event types were read before, and are unchanged); otherwise
    /// gives the event back, to be checked off the async runtime.
    pub fn prepare_event_now(
        &self,
        tenant: &TenantRecord,
        input: Value,
        origin: &Origin,
    ) -> Result<Result<NewEvent, ServiceError>, Value> {
        match self.cached_types(tenant) {
            Some(types) => Ok(events::read_event(&tenant.id, &types, input, origin, now())),
            None => Err(input),
        }
    }

    /// Checks a posted event (envelope, action, data) for the writer.
    pub fn prepare_event(
        &self,
        tenant: &TenantRecord,
        input: Value,
        origin: &Origin,
    ) -> Result<NewEvent, ServiceError> {
        let types = self.types_of(tenant)?;
        events::read_event(&tenant.id, &types, input, origin, now())
    }

    /// Checks many events at once (a batch or an import), each on its own.
    pub fn prepare_events(
        &self,
        tenant: &TenantRecord,
        inputs: Vec<Value>,
        origin: &Origin,
    ) -> Result<Vec<Result<NewEvent, ServiceError>>, ServiceError> {
        let types = self.types_of(tenant)?;
        let received = now();
        Ok(inputs
            .into_iter()
            .map(|input| events::read_event(&tenant.id, &types, input, origin, received))
            .collect())
    }

    /// Hands a checked event to the writer and waits until it is committed (or refused).
    pub async fn ingest(&self, event: NewEvent) -> Result<Ingested, ServiceError> {
        receive(self.writer.submit(event)?).await
    }

    /// Queues many events in their order (the failures of checking are passed through) and
    /// waits for every answer.
    pub async fn ingest_many(
        &self,
        events: Vec<Result<NewEvent, ServiceError>>,
    ) -> Vec<Result<Ingested, ServiceError>> {
        // Every event is queued before any answer is awaited, so that they share batches.
        let waiting: Vec<Result<_, ServiceError>> = events
            .into_iter()
            .map(|event| Ok(self.writer.submit(event?)?))
            .collect();
        let mut answers = Vec::with_capacity(waiting.len());
        for answer in waiting {
            answers.push(match answer {
                Ok(answer) => receive(answer).await,
                Err(error) => Err(error),
            });
        }
        answers
    }

    /// The event `id`.
    pub fn event(&self, tenant: &str, id: &str) -> Result<StoredEvent, ServiceError> {
        self.store
            .event(tenant, id)?
            .ok_or_else(|| ServiceError::not_found(format!("no event {id:?}")))
    }

    // Customers.

    /// The customer `id`.
    pub fn customer(&self, tenant: &str, id: &str) -> Result<CustomerRecord, ServiceError> {
        self.store
            .customer(tenant, id)?
            .ok_or_else(|| ServiceError::not_found(format!("no customer {id:?}")))
    }

    /// A page of a customer's events.
    pub fn customer_events(
        &self,
        tenant: &str,
        id: &str,
        query: &EventQuery,
    ) -> Result<Page<StoredEvent>, ServiceError> {
        self.customer(tenant, id)?;
        Ok(self.store.customer_events(tenant, id, query)?)
    }

    /// A page of a customer's ledger, each entry with its event.
    pub fn ledger(
        &self,
        tenant: &str,
        id: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<LedgerLine>, ServiceError> {
        self.customer(tenant, id)?;
        let page = self.store.ledger(tenant, id, limit, cursor)?;
        let mut events: HashMap<String, Option<StoredEvent>> = HashMap::new();
        let mut items = Vec::with_capacity(page.items.len());
        for entry in page.items {
            if !events.contains_key(&entry.event_id) {
                let event = self.store.event(tenant, &entry.event_id)?;
                events.insert(entry.event_id.clone(), event);
            }
            let event = events.get(&entry.event_id).cloned().flatten();
            items.push(LedgerLine { entry, event });
        }
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// Up to `limit` outbound triggers (`TierEarned`, `CouponAwarded`, ...) of a tenant after
    /// outbox sequence number `after`, oldest first.
    pub fn triggers(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<crate::storage::OutboxTrigger>, ServiceError> {
        Ok(self.store.outbox(tenant, after, limit)?)
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

fn new_tenant_key() -> Result<String, ServiceError> {
    auth::new_tenant_key().map_err(|error| ServiceError::internal(error.to_string()))
}

fn check_plugin_name(name: &str) -> Result<(), ServiceError> {
    if is_valid_id(name) {
        Ok(())
    } else {
        Err(ServiceError::invalid_request(format!(
            "plugin name {name:?}: a name is 1-64 letters, digits, '_', '.' or '-', starting with a letter"
        )))
    }
}

/// Loaded plugins by (tenant, name, version), loaded from the store on first use so that a
/// restarted host finds every plugin again (compiled artifacts come from the runtime's disk
/// cache, so that is fast).
struct PluginCache {
    store: Arc<dyn Store>,
    runtime: Runtime,
    loaded: RwLock<HashMap<(String, String, u32), Plugin>>,
}

impl std::fmt::Debug for PluginCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginCache")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// A cache of what the store holds, filled on reads and emptied (in part or whole) by the
/// writes that change it.
///
/// A read that misses takes the cache's epoch, reads the store, and keeps what it read only if
/// no write has emptied the cache since: a write stores first and empties the cache after,
/// so a value read before the write can never be kept after it (a rotated key never works
/// again, a new event type is always seen).
#[derive(Debug)]
struct StoreCache<K, V> {
    entries: RwLock<(u64, HashMap<K, V>)>,
}

impl<K, V> Default for StoreCache<K, V> {
    fn default() -> Self {
        StoreCache {
            entries: RwLock::new((0, HashMap::new())),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> StoreCache<K, V> {
    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        read_lock(&self.entries).1.get(key).cloned()
    }

    /// Take it before reading the store, and give it to [`StoreCache::insert`].
    fn epoch(&self) -> u64 {
        read_lock(&self.entries).0
    }

    fn insert(&self, epoch: u64, key: K, value: V) {
        let mut entries = write_lock(&self.entries);
        if entries.0 == epoch {
            entries.1.insert(key, value);
        }
    }

    fn forget<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let mut entries = write_lock(&self.entries);
        entries.0 += 1;
        entries.1.remove(key);
    }

    fn forget_all(&self) {
        let mut entries = write_lock(&self.entries);
        entries.0 += 1;
        entries.1.clear();
    }
}

/// A cache's lock for reading. A panic while a cache was locked leaves nothing half-done
/// (entries are inserted or removed whole), so a poisoned lock is used as it is.
fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// A cache's lock for writing; see [`read_lock`].
fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

impl PluginCache {
    fn get(&self, tenant: &str, name: &str, version: u32) -> Result<Plugin, String> {
        let key = (tenant.to_owned(), name.to_owned(), version);
        if let Some(plugin) = read_lock(&self.loaded).get(&key) {
            return Ok(plugin.clone());
        }
        let wasm = self
            .store
            .plugin_wasm(tenant, name, version)
            .map_err(|error| error.to_string())?
            .ok_or_else(|| format!("version {version} of plugin {name} is not stored"))?;
        let plugin = self
            .runtime
            .load(&wasm)
            .map_err(|error| error.to_string())?;
        self.insert(tenant, name, version, plugin.clone());
        Ok(plugin)
    }

    fn insert(&self, tenant: &str, name: &str, version: u32, plugin: Plugin) {
        write_lock(&self.loaded).insert((tenant.to_owned(), name.to_owned(), version), plugin);
    }
}

impl RuleSource for PluginCache {
    fn rules(&self, tenant: &str) -> Result<TenantRules, StoreError> {
        let policy = self
            .store
            .tenant(tenant)?
            .map(|record| record.policy())
            .unwrap_or_default();
        let plugins = self
            .store
            .plugins(tenant)?
            .into_iter()
            .map(|record| {
                // A disabled plugin is not run, so it is not loaded either.
                let plugin = if record.enabled {
                    self.get(tenant, &record.name, record.active_version)
                } else {
                    Err("disabled".to_owned())
                };
                ActivePlugin::new(record, plugin)
            })
            .collect();
        Ok(TenantRules { plugins, policy })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_read_after_the_last_write_is_kept_obeyed() {
        let cache = StoreCache::<String, u32>::default();
        let epoch = cache.epoch();
        cache.insert(epoch, "acme".to_owned(), 1);
        assert_eq!(cache.get("acme"), Some(1));
        cache.forget("acme");
        assert_eq!(cache.get("acme"), None);
    }

    #[test]
    fn a_value_read_before_a_write_is_not_kept_violated() {
        let cache = StoreCache::<String, u32>::default();
        // A read misses and takes the epoch; a write lands while it reads the store.
        let epoch = cache.epoch();
        cache.forget_all();
        cache.insert(epoch, "acme".to_owned(), 1);
        assert_eq!(cache.get("acme"), None, "the stale value is dropped");
        // The next read is kept.
        let epoch = cache.epoch();
        cache.insert(epoch, "acme".to_owned(), 2);
        assert_eq!(cache.get("acme"), Some(2));
    }
}
