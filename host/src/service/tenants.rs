//! Tenants and their keys: creating, listing and changing tenants, and knowing whose a key is.

use std::sync::Arc;

use super::cache::StoreCache;
use super::clock::Clock;
use super::error::ServiceError;
use crate::auth;
use crate::domain::TenantId;
use crate::domain::records::{DEFAULT_FUTURE_TOLERANCE_SECONDS, TenantRecord};
use crate::domain::{PointsExpiry, Schedule};
use crate::storage::Store;

/// Who a request's key belongs to.
#[derive(Debug, Clone)]
pub enum Principal {
    /// The admin key: manages tenants.
    Admin,
    /// A tenant's key: sees and changes only that tenant's data.
    Tenant(TenantRecord),
}

/// A tenant to create.
#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    /// The tenant's id: 1-64 letters, digits, `_`, `.` or `-`, starting with a letter.
    pub id: String,
    /// A display name; the id when absent.
    pub name: Option<String>,
    /// Whether events of actions without a type are accepted.
    pub allow_untyped_events: bool,
    /// Whether a decision may take a customer's balance below zero.
    pub allow_negative_balance: bool,
}

/// What to change of a tenant; `None` leaves a setting as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    /// A new display name.
    pub name: Option<String>,
    /// Turns untyped custom events on or off.
    pub allow_untyped_events: Option<bool>,
    /// Lets decisions take balances below zero, or stops them.
    pub allow_negative_balance: Option<bool>,
    /// A new expiry policy for points earned from now on.
    pub points_expiry: Option<PointsExpiry>,
    /// New daily moments (the whole setting, replaced).
    pub schedule: Option<Schedule>,
    /// A new tolerance for timestamps in the future, in seconds.
    pub future_tolerance_seconds: Option<u32>,
    /// Requires membership to earn, or stops requiring it.
    pub membership_required: Option<bool>,
    /// A new customer schema (a JSON Schema for attributes); `Some(None)` removes it.
    pub customer_schema: Option<Option<serde_json::Value>>,
    /// A new reading of Segment events (the whole mapping, replaced).
    pub segment: Option<crate::domain::records::SegmentMapping>,
}

/// Tenants and keys.
pub struct Tenants {
    store: Arc<dyn Store>,
    /// The admin key's hash; it is set when the host opens and not changed while it runs.
    admin_key_hash: [u8; 32],
    /// Tenants by the hash of a key that authenticated, so that a request does not read the
    /// store to learn whose key it carries. Emptied whenever a tenant or a key changes; keys
    /// that match nobody are not kept, so bad keys cannot grow it.
    principals: StoreCache<[u8; 32], TenantRecord>,
    clock: Clock,
}

impl std::fmt::Debug for Tenants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenants").finish_non_exhaustive()
    }
}

impl Tenants {
    /// Tenants over `store`, with the admin key settled: `configured` when given (its hash
    /// stored), else the stored one, else a new one, returned to be shown once.
    pub(super) fn open(
        store: Arc<dyn Store>,
        configured: Option<&str>,
        clock: Clock,
    ) -> Result<(Tenants, Option<String>), ServiceError> {
        let (admin_key_hash, generated) = match (configured, store.admin_key_hash()?) {
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
        let tenants = Tenants {
            store,
            admin_key_hash,
            principals: StoreCache::default(),
            clock,
        };
        Ok((tenants, generated))
    }

    /// Whose key this is, when that is known without reading the store: the admin key, or
    /// a tenant key seen before. `None` means "ask [`Tenants::authenticate`]".
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

    /// Creates a tenant; returns it with its API key, which is not stored and not shown again.
    pub fn create_tenant(&self, new: NewTenant) -> Result<(TenantRecord, String), ServiceError> {
        let id = TenantId::parse(new.id.as_str()).map_err(|error| {
            ServiceError::invalid_request(format!("tenant id {:?}: an id {error}", new.id))
                .with_details(serde_json::json!({ "field": "id" }))
        })?;
        let tenant = TenantRecord {
            name: new.name.unwrap_or_else(|| new.id.clone()),
            id,
            created_at: self.clock.now(),
            allow_untyped_events: new.allow_untyped_events,
            allow_negative_balance: new.allow_negative_balance,
            points_expiry: PointsExpiry::default(),
            schedule: Schedule::default(),
            future_tolerance_seconds: DEFAULT_FUTURE_TOLERANCE_SECONDS,
            membership_required: false,
            segment: Default::default(),
            customer_schema: None,
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

    /// Changes a tenant's settings. A new expiry policy or schedule is applied to every
    /// customer's schedule by a walk over the tenant's customers in the background (the one
    /// walk over customers; the clock never makes one).
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
        let policy_before = record.policy();
        if let Some(expiry) = patch.points_expiry {
            record.points_expiry = expiry;
        }
        if let Some(schedule) = patch.schedule {
            record.schedule = schedule;
        }
        if let Some(tolerance) = patch.future_tolerance_seconds {
            record.future_tolerance_seconds = tolerance;
        }
        if let Some(required) = patch.membership_required {
            record.membership_required = required;
        }
        if let Some(segment) = patch.segment {
            record.segment = segment;
        }
        if let Some(schema) = patch.customer_schema {
            // Compiled once here so that a schema that cannot be used is refused now, with
            // the path in it, not at the first profile written.
            if let Some(schema) = &schema {
                crate::schema::parse_document(&super::catalog::customer_schema_document(
                    schema, true,
                ))?;
            }
            record.customer_schema = schema;
        }
        self.store.update_tenant(&record)?;
        self.forget_principals();
        if record.policy() != policy_before {
            self.reschedule_in_background(&record.id);
        }
        Ok(record)
    }

    /// Works out again what is due for every customer of `tenant` on a thread of its own: a
    /// tenant that turns birthdays on expects them for the customers it has, not only for
    /// those with an event from now on. Each step reads the settings as stored, so the last
    /// change wins whatever order two walks end in.
    fn reschedule_in_background(&self, tenant: &TenantId) {
        let store = self.store.clone();
        let tenant = tenant.to_string();
        let spawned = std::thread::Builder::new()
            .name("tally-reschedule".to_owned())
            .spawn(move || match store.reschedule(&tenant) {
                Ok(changed) => {
                    tracing::info!(%tenant, changed, "customers rescheduled after the tenant's settings changed");
                }
                Err(error) => {
                    tracing::error!(%tenant, %error, "rescheduling customers failed; each is rescheduled by its next event");
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start rescheduling customers; each is rescheduled by its next event");
        }
    }

    /// Gives a tenant a new API key; the old one stops working at once.
    pub fn rotate_tenant_key(&self, tenant: &str) -> Result<String, ServiceError> {
        let key = new_tenant_key()?;
        self.store
            .set_tenant_key_hash(tenant, auth::hash_key(&key))?;
        self.forget_principals();
        Ok(key)
    }
}

fn new_tenant_key() -> Result<String, ServiceError> {
    auth::new_tenant_key().map_err(|error| ServiceError::internal(error.to_string()))
}
