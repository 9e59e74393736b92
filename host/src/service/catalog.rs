//! The catalog of what a tenant runs events through: its event types and its plugins, with
//! the caches that keep checking and evaluating an event off the store.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::cache::{StoreCache, read_lock, write_lock};
use super::clock::Clock;
use super::error::ServiceError;
use crate::domain::records::{
    EventTypeRecord, OnError, PluginRecord, RewardPerk, RewardRecord, TenantRecord,
};
use crate::domain::{NewEvent, PluginName, TenantId};
use crate::pipeline::{ActivePlugin, RuleSource, TenantRules};
use crate::runtime::{Plugin, Runtime};
use crate::schema::{EventType, EventTypes, SchemaCache, builtin, is_valid_id, parse_document};
use crate::storage::{Store, StoreError};
use tally_sdk::Timestamp;

/// What to change of a plugin's settings; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct PluginPatch {
    /// The configuration the plugin reads; `Some(Value::Null)` clears it.
    pub config: Option<Value>,
    /// The actions it runs for; `Some(None)` means every action.
    pub actions: Option<Option<Vec<String>>>,
    /// Plugins run in ascending priority, ties by name.
    pub priority: Option<i32>,
    /// Whether it runs at all.
    pub enabled: Option<bool>,
    /// The version that runs: an earlier one rolls back.
    pub active_version: Option<u32>,
    /// What its failure does to the event: `skip` or `reject`.
    pub on_error: Option<OnError>,
}

/// The result of uploading a module.
#[derive(Debug, Clone)]
pub struct Uploaded {
    /// The plugin after the upload.
    pub plugin: PluginRecord,
    /// False when the module is the active version already, and nothing changed.
    pub created: bool,
}

/// Event types and plugins.
pub struct Catalog {
    store: Arc<dyn Store>,
    plugins: Arc<PluginCache>,
    schemas: SchemaCache,
    /// Each tenant's event-type documents, so that checking an event does not read them all
    /// from the store. Dropped for a tenant when one of its types changes.
    type_documents: StoreCache<TenantId, Arc<Vec<Value>>>,
    clock: Clock,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("plugins", &self.plugins)
            .finish_non_exhaustive()
    }
}

/// A reward to add to a tenant's catalogue.
#[derive(Debug, Clone)]
pub struct NewReward {
    /// Its id: a name (letters, digits, `_`, `.`, `-`).
    pub id: String,
    /// What customers see.
    pub name: String,
    /// Points it costs, 0 or more.
    pub cost: i64,
    /// The perk it issues.
    pub perk: RewardPerk,
    /// How many may be redeemed in all.
    pub stock: Option<u64>,
    /// How many times one customer may redeem it.
    pub limit_per_customer: Option<u32>,
    /// Redeemable from.
    pub active_from: Option<Timestamp>,
    /// Redeemable until.
    pub active_until: Option<Timestamp>,
}

/// What to change of a reward; `None` leaves it. `Some(None)` clears an optional field.
#[derive(Debug, Clone, Default)]
pub struct RewardPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new cost.
    pub cost: Option<i64>,
    /// A new perk.
    pub perk: Option<RewardPerk>,
    /// A new stock (redemptions so far count against it).
    pub stock: Option<Option<u64>>,
    /// A new limit per customer.
    pub limit_per_customer: Option<Option<u32>>,
    /// A new start.
    pub active_from: Option<Option<Timestamp>>,
    /// A new end.
    pub active_until: Option<Option<Timestamp>>,
    /// Takes it out of the catalogue (or back).
    pub enabled: Option<bool>,
}

/// A reward as answered: the record and how many were redeemed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RewardView {
    /// The reward.
    #[serde(flatten)]
    pub reward: RewardRecord,
    /// Redemptions so far.
    pub redeemed: u64,
}

/// The reserved id the tenant's customer schema is compiled under.
const CUSTOMER_SCHEMA_ID: &str = "customer_profile";

/// The interaction-schema document the customer schema `schema` is checked as: whole for a
/// profile written whole, without its top-level `required` for one merged in part.
pub(super) fn customer_schema_document(schema: &Value, whole: bool) -> Value {
    let mut schema = schema.clone();
    if !whole && let Some(fields) = schema.as_object_mut() {
        fields.remove("required");
    }
    let id = if whole {
        CUSTOMER_SCHEMA_ID.to_owned()
    } else {
        format!("{CUSTOMER_SCHEMA_ID}_patch")
    };
    serde_json::json!({"id": id, "jsonSchema": schema})
}

impl Catalog {
    /// Adds a reward to `tenant`'s catalogue.
    pub fn create_reward(
        &self,
        tenant: &TenantId,
        new: NewReward,
    ) -> Result<RewardView, ServiceError> {
        PluginName::parse(new.id.as_str()).map_err(|error| {
            ServiceError::invalid_request(format!("reward id {:?}: an id {error}", new.id))
                .with_details(serde_json::json!({"field": "id"}))
        })?;
        let reward = RewardRecord {
            id: new.id,
            name: new.name,
            cost: new.cost,
            perk: new.perk,
            stock: new.stock,
            limit_per_customer: new.limit_per_customer,
            active_from: new.active_from,
            active_until: new.active_until,
            enabled: true,
            created_at: self.clock.now(),
        };
        check_reward(&reward)?;
        self.store.put_reward(tenant, &reward, true)?;
        Ok(RewardView {
            reward,
            redeemed: 0,
        })
    }

    /// Changes a reward of `tenant`'s catalogue.
    pub fn update_reward(
        &self,
        tenant: &TenantId,
        id: &str,
        patch: RewardPatch,
    ) -> Result<RewardView, ServiceError> {
        let (mut reward, redeemed) = self
            .store
            .reward(tenant, id)?
            .ok_or_else(|| reward_not_found(id))?;
        if let Some(name) = patch.name {
            reward.name = name;
        }
        if let Some(cost) = patch.cost {
            reward.cost = cost;
        }
        if let Some(perk) = patch.perk {
            reward.perk = perk;
        }
        if let Some(stock) = patch.stock {
            reward.stock = stock;
        }
        if let Some(limit) = patch.limit_per_customer {
            reward.limit_per_customer = limit;
        }
        if let Some(from) = patch.active_from {
            reward.active_from = from;
        }
        if let Some(until) = patch.active_until {
            reward.active_until = until;
        }
        if let Some(enabled) = patch.enabled {
            reward.enabled = enabled;
        }
        check_reward(&reward)?;
        self.store.put_reward(tenant, &reward, false)?;
        Ok(RewardView { reward, redeemed })
    }

    /// One reward of `tenant`.
    pub fn reward(&self, tenant: &TenantId, id: &str) -> Result<RewardView, ServiceError> {
        let (reward, redeemed) = self
            .store
            .reward(tenant, id)?
            .ok_or_else(|| reward_not_found(id))?;
        Ok(RewardView { reward, redeemed })
    }

    /// `tenant`'s catalogue.
    pub fn rewards(&self, tenant: &TenantId) -> Result<Vec<RewardView>, ServiceError> {
        Ok(self
            .store
            .rewards(tenant)?
            .into_iter()
            .map(|(reward, redeemed)| RewardView { reward, redeemed })
            .collect())
    }

    /// Checks the attributes a `profile_update` writes against the tenant's customer schema:
    /// all of it for a profile written whole, the fields given for one merged in part (a
    /// `null`, which removes a field, is not checked).
    pub fn check_profile(
        &self,
        tenant: &TenantRecord,
        event: &NewEvent,
    ) -> Result<(), ServiceError> {
        if event.action != "profile_update" {
            return Ok(());
        }
        let Some(schema) = &tenant.customer_schema else {
            return Ok(());
        };
        let data = event.data.to_value();
        let whole = data
            .get("replace")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut attributes = data.get("attributes").cloned().unwrap_or(Value::Null);
        if !whole && let Some(fields) = attributes.as_object_mut() {
            fields.retain(|_, value| !value.is_null());
        }
        let document = customer_schema_document(schema, whole);
        let compiled = self.schemas.get_or_compile(&tenant.id, &document)?;
        Ok(compiled.check(&attributes)?)
    }

    pub(super) fn new(store: Arc<dyn Store>, runtime: Runtime, clock: Clock) -> Catalog {
        let plugins = Arc::new(PluginCache {
            store: store.clone(),
            runtime,
            loaded: RwLock::new(HashMap::new()),
        });
        Catalog {
            store,
            plugins,
            schemas: SchemaCache::new(),
            type_documents: StoreCache::default(),
            clock,
        }
    }

    /// Where the writer gets each tenant's rules.
    pub(super) fn rules(&self) -> Arc<dyn RuleSource> {
        self.plugins.clone()
    }

    /// Version `version` of plugin `name`, loaded.
    pub(super) fn loaded_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
    ) -> Result<Plugin, ServiceError> {
        self.plugins
            .get(tenant, name, version)
            .map_err(ServiceError::internal)
    }

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
            created_at: self.clock.now(),
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

    pub(super) fn cached_types(&self, tenant: &TenantRecord) -> Option<EventTypes> {
        let documents = self.type_documents.get(&tenant.id)?;
        Some(EventTypes::new(
            &self.schemas,
            tenant.id.clone(),
            documents,
            tenant.allow_untyped_events,
        ))
    }

    pub(super) fn types_of(&self, tenant: &TenantRecord) -> Result<EventTypes, ServiceError> {
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

    /// Validates and compiles `wasm` and stores it as the new active version of `name`. The
    /// active version uploaded again changes nothing.
    pub fn upload_plugin(
        &self,
        tenant: &str,
        name: &str,
        wasm: &[u8],
    ) -> Result<Uploaded, ServiceError> {
        let name = &*check_plugin_name(name)?;
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
        let record =
            self.store
                .add_plugin_version(tenant, name, wasm, plugin.sha256(), self.clock.now())?;
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
}

fn check_plugin_name(name: &str) -> Result<PluginName, ServiceError> {
    PluginName::parse(name).map_err(|error| {
        ServiceError::invalid_request(format!("plugin name {name:?}: a name {error}"))
    })
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

fn reward_not_found(id: &str) -> ServiceError {
    ServiceError::new(
        super::ErrorKind::NotFound,
        "reward_not_found",
        format!("there is no reward {id:?}"),
    )
}

/// The rules a reward keeps: a name, a cost of 0 or more, a perk kind, a window that is one.
fn check_reward(reward: &RewardRecord) -> Result<(), ServiceError> {
    let invalid = |field: &str, message: String| {
        Err(ServiceError::invalid_request(message)
            .with_details(serde_json::json!({"field": field})))
    };
    if reward.name.trim().is_empty() {
        return invalid("name", "a reward needs a name".to_owned());
    }
    if reward.cost < 0 {
        return invalid("cost", format!("cost {} is below 0", reward.cost));
    }
    if reward.perk.kind.trim().is_empty() {
        return invalid(
            "perk.kind",
            "the perk needs a kind (coupon, voucher, ...)".to_owned(),
        );
    }
    if let (Some(from), Some(until)) = (reward.active_from, reward.active_until)
        && until < from
    {
        return invalid(
            "active_until",
            format!("active_until {until} is before active_from {from}"),
        );
    }
    Ok(())
}
