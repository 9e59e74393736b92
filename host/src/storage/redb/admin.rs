//! The admin records: tenants and their API keys, the admin key, event types, plugins. Each
//! operation runs in a transaction of its own, which the store opens and commits.

use ::redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tally_sdk::Timestamp;

use super::codec::{decode, encode};
use super::read::{get_json, no_tenant, require_tenant, tenant_records};
use super::tables::{
    EVENT_TYPES, META, META_ADMIN_KEY_HASH, PLUGIN_WASM, PLUGINS, TENANT_KEY_HASH, TENANT_KEYS,
    TENANTS,
};
use crate::storage::{
    EventTypeRecord, OnError, PluginRecord, PluginVersion, StoreError, TenantRecord,
};

pub(super) fn create_tenant(
    txn: &WriteTransaction,
    tenant: &TenantRecord,
    api_key_hash: [u8; 32],
) -> Result<(), StoreError> {
    let mut tenants = txn.open_table(TENANTS)?;
    let mut keys = txn.open_table(TENANT_KEYS)?;
    let mut key_hashes = txn.open_table(TENANT_KEY_HASH)?;
    if tenants.get(tenant.id.as_str())?.is_some() {
        return Err(StoreError::Conflict(format!(
            "tenant {} already exists",
            tenant.id
        )));
    }
    if let Some(holder) = keys.get(&api_key_hash)? {
        return Err(key_taken(holder.value()));
    }
    let bytes = encode(tenant, || format!("tenant {}", tenant.id))?;
    tenants.insert(tenant.id.as_str(), bytes.as_slice())?;
    keys.insert(&api_key_hash, tenant.id.as_str())?;
    key_hashes.insert(tenant.id.as_str(), &api_key_hash)?;
    Ok(())
}

pub(super) fn tenant(txn: &ReadTransaction, id: &str) -> Result<Option<TenantRecord>, StoreError> {
    let tenants = txn.open_table(TENANTS)?;
    get_json(&tenants, id, || format!("tenant {id}"))
}

pub(super) fn tenants(txn: &ReadTransaction) -> Result<Vec<TenantRecord>, StoreError> {
    let tenants = txn.open_table(TENANTS)?;
    let mut records = Vec::new();
    for row in tenants.iter()? {
        let (key, value) = row?;
        records.push(decode(value.value(), || format!("tenant {}", key.value()))?);
    }
    Ok(records)
}

pub(super) fn tenant_by_key_hash(
    txn: &ReadTransaction,
    api_key_hash: [u8; 32],
) -> Result<Option<TenantRecord>, StoreError> {
    let keys = txn.open_table(TENANT_KEYS)?;
    let Some(holder) = keys.get(&api_key_hash)? else {
        return Ok(None);
    };
    let id = holder.value();
    match tenant(txn, id)? {
        Some(tenant) => Ok(Some(tenant)),
        None => Err(StoreError::Corrupt(format!(
            "an API key belongs to tenant {id}, which does not exist"
        ))),
    }
}

pub(super) fn update_tenant(
    txn: &WriteTransaction,
    tenant: &TenantRecord,
) -> Result<(), StoreError> {
    let mut tenants = txn.open_table(TENANTS)?;
    if tenants.get(tenant.id.as_str())?.is_none() {
        return Err(no_tenant(&tenant.id));
    }
    let bytes = encode(tenant, || format!("tenant {}", tenant.id))?;
    tenants.insert(tenant.id.as_str(), bytes.as_slice())?;
    Ok(())
}

pub(super) fn set_tenant_key_hash(
    txn: &WriteTransaction,
    tenant: &str,
    api_key_hash: [u8; 32],
) -> Result<(), StoreError> {
    let tenants = txn.open_table(TENANTS)?;
    let mut keys = txn.open_table(TENANT_KEYS)?;
    let mut key_hashes = txn.open_table(TENANT_KEY_HASH)?;
    if tenants.get(tenant)?.is_none() {
        return Err(no_tenant(tenant));
    }
    if let Some(holder) = keys.get(&api_key_hash)?
        && holder.value() != tenant
    {
        return Err(key_taken(holder.value()));
    }
    let old = key_hashes.get(tenant)?.map(|hash| *hash.value());
    if let Some(old) = old {
        keys.remove(&old)?;
    }
    keys.insert(&api_key_hash, tenant)?;
    key_hashes.insert(tenant, &api_key_hash)?;
    Ok(())
}

fn key_taken(holder: &str) -> StoreError {
    StoreError::Conflict(format!(
        "that API key is already the key of tenant {holder}"
    ))
}

pub(super) fn admin_key_hash(txn: &ReadTransaction) -> Result<Option<[u8; 32]>, StoreError> {
    let meta = txn.open_table(META)?;
    let Some(bytes) = meta.get(META_ADMIN_KEY_HASH)? else {
        return Ok(None);
    };
    let hash = <[u8; 32]>::try_from(bytes.value()).map_err(|_| {
        StoreError::Corrupt(format!(
            "meta.admin_key_hash is {} bytes long, not 32",
            bytes.value().len()
        ))
    })?;
    Ok(Some(hash))
}

pub(super) fn set_admin_key_hash(txn: &WriteTransaction, hash: [u8; 32]) -> Result<(), StoreError> {
    txn.open_table(META)?
        .insert(META_ADMIN_KEY_HASH, hash.as_slice())?;
    Ok(())
}

pub(super) fn put_event_type(
    txn: &WriteTransaction,
    tenant: &str,
    event_type: &EventTypeRecord,
) -> Result<(), StoreError> {
    require_tenant(&txn.open_table(TENANTS)?, tenant)?;
    let what = || format!("event type {} of tenant {tenant}", event_type.id);
    let bytes = encode(event_type, what)?;
    txn.open_table(EVENT_TYPES)?
        .insert((tenant, event_type.id.as_str()), bytes.as_slice())?;
    Ok(())
}

pub(super) fn event_type(
    txn: &ReadTransaction,
    tenant: &str,
    id: &str,
) -> Result<Option<EventTypeRecord>, StoreError> {
    let table = txn.open_table(EVENT_TYPES)?;
    get_json(&table, (tenant, id), || {
        format!("event type {id} of tenant {tenant}")
    })
}

pub(super) fn event_types(
    txn: &ReadTransaction,
    tenant: &str,
) -> Result<Vec<EventTypeRecord>, StoreError> {
    let table = txn.open_table(EVENT_TYPES)?;
    tenant_records(&table, tenant, "event type")
}

/// The SHA-256 of `wasm` in lowercase hex, when `sha256` names it (in either case).
pub(super) fn verify_sha256(
    tenant: &str,
    name: &str,
    wasm: &[u8],
    sha256: &str,
) -> Result<String, StoreError> {
    let actual = hex::encode(Sha256::digest(wasm));
    if actual.eq_ignore_ascii_case(sha256) {
        return Ok(actual);
    }
    Err(StoreError::Invalid(format!(
        "plugin {name} of tenant {tenant}: sha256 {sha256} was given for a {}-byte module \
         whose sha256 is {actual}",
        wasm.len()
    )))
}

/// Stores `wasm` as the next version of plugin `name` and makes it active; `sha256` is its
/// verified hash, from [`verify_sha256`].
pub(super) fn add_plugin_version(
    txn: &WriteTransaction,
    tenant: &str,
    name: &str,
    wasm: &[u8],
    sha256: &str,
    uploaded_at: Timestamp,
) -> Result<PluginRecord, StoreError> {
    require_tenant(&txn.open_table(TENANTS)?, tenant)?;
    let mut plugins = txn.open_table(PLUGINS)?;
    let what = || format!("plugin {name} of tenant {tenant}");
    let mut record = get_json(&plugins, (tenant, name), what)?.unwrap_or_else(|| PluginRecord {
        name: name.to_owned(),
        versions: Vec::new(),
        active_version: 0,
        config: Value::Null,
        actions: None,
        priority: 0,
        enabled: true,
        on_error: OnError::Skip,
    });
    let last = record.versions.iter().map(|v| v.version).max().unwrap_or(0);
    let version = last.checked_add(1).ok_or_else(|| {
        StoreError::Invalid(format!(
            "plugin {name} of tenant {tenant} already has version {last}, the last there can be"
        ))
    })?;
    record.versions.push(PluginVersion {
        version,
        sha256: sha256.to_owned(),
        size: u64::try_from(wasm.len()).unwrap_or(u64::MAX),
        uploaded_at,
    });
    record.active_version = version;
    let bytes = encode(&record, what)?;
    plugins.insert((tenant, name), bytes.as_slice())?;
    txn.open_table(PLUGIN_WASM)?
        .insert((tenant, name, version), wasm)?;
    Ok(record)
}

pub(super) fn update_plugin(
    txn: &WriteTransaction,
    tenant: &str,
    plugin: &PluginRecord,
) -> Result<(), StoreError> {
    let name = plugin.name.as_str();
    let mut plugins = txn.open_table(PLUGINS)?;
    let what = || format!("plugin {name} of tenant {tenant}");
    let Some(stored) = get_json::<_, PluginRecord>(&plugins, (tenant, name), what)? else {
        return Err(StoreError::NotFound(format!(
            "tenant {tenant} has no plugin {name}"
        )));
    };
    if plugin.versions != stored.versions {
        return Err(StoreError::Invalid(format!(
            "plugin {name} of tenant {tenant}: versions are added by uploading, not by an \
             update ({} stored, {} given)",
            stored.versions.len(),
            plugin.versions.len()
        )));
    }
    if plugin.active().is_none() {
        return Err(StoreError::Invalid(format!(
            "plugin {name} of tenant {tenant} has no version {}; it has versions 1 to {}",
            plugin.active_version,
            stored.versions.len()
        )));
    }
    let bytes = encode(plugin, what)?;
    plugins.insert((tenant, name), bytes.as_slice())?;
    Ok(())
}

pub(super) fn plugin(
    txn: &ReadTransaction,
    tenant: &str,
    name: &str,
) -> Result<Option<PluginRecord>, StoreError> {
    let table = txn.open_table(PLUGINS)?;
    get_json(&table, (tenant, name), || {
        format!("plugin {name} of tenant {tenant}")
    })
}

/// Every plugin of `tenant`, in the order they run: by priority, then by name.
pub(super) fn plugins(
    txn: &ReadTransaction,
    tenant: &str,
) -> Result<Vec<PluginRecord>, StoreError> {
    let table = txn.open_table(PLUGINS)?;
    let mut records: Vec<PluginRecord> = tenant_records(&table, tenant, "plugin")?;
    records.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
    Ok(records)
}

pub(super) fn plugin_wasm(
    txn: &ReadTransaction,
    tenant: &str,
    name: &str,
    version: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    let table = txn.open_table(PLUGIN_WASM)?;
    Ok(table
        .get((tenant, name, version))?
        .map(|bytes| bytes.value().to_vec()))
}
