//! Reads of single records, shared by the store's own transactions, a write batch and a read
//! snapshot: each takes the table it reads, whatever transaction opened it.

use std::borrow::Borrow;
use std::ops::Bound;

use ::redb::{Key, ReadableTable};
use serde::de::DeserializeOwned;

use super::codec::{decode, decode_event_row};
use super::format::FORMAT_VERSION;
use super::tables::{CustomerKey, record_key, state_key};
use crate::storage::{RawJson, StoreError, StoredEvent};

/// The JSON record under `key`, decoded; `what` names it in an error.
pub(super) fn get_json<'k, K: Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl Borrow<K::SelfType<'k>>,
    what: impl FnOnce() -> String,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(bytes) => decode(bytes.value(), what).map(Some),
        None => Ok(None),
    }
}

/// The event `id` of `tenant`, from `events`.
pub(super) fn get_event(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    id: &str,
) -> Result<Option<StoredEvent>, StoreError> {
    let Some(row) = table.get((tenant, id))? else {
        return Ok(None);
    };
    let what = || format!("event {id} of tenant {tenant}");
    let json = decode_event_row(row.value()).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "{} is not an event row of format {FORMAT_VERSION} ({} bytes)",
            what(),
            row.value().len()
        ))
    })?;
    decode(&json, what).map(Some)
}

/// Up to `limit` of `tenant`'s events after the id `after`, in id order, that `keep` keeps;
/// a page looks at a bounded number of events and then hands back where it stopped.
pub(super) fn events(
    db: &::redb::Database,
    tenant: &str,
    after: Option<&str>,
    limit: usize,
    keep: &dyn Fn(&StoredEvent) -> bool,
) -> Result<crate::storage::Page<StoredEvent>, StoreError> {
    use ::redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let table = txn.open_table(super::tables::EVENTS)?;
    let lower = match after {
        Some(after) => Bound::Excluded((tenant, after)),
        None => Bound::Included((tenant, "")),
    };
    let mut page = crate::storage::Page {
        items: Vec::new(),
        next_cursor: None,
    };
    let mut last: Option<String> = None;
    for (looked, row) in table
        .range::<(&str, &str)>((lower, Bound::Unbounded))?
        .enumerate()
    {
        let (key, value) = row?;
        let (owner, id) = key.value();
        if owner != tenant {
            return Ok(page);
        }
        if page.items.len() == limit || looked == super::customers::SCAN_PER_PAGE {
            page.next_cursor = last;
            return Ok(page);
        }
        let what = || format!("event {id} of tenant {tenant}");
        let json = decode_event_row(value.value())
            .ok_or_else(|| StoreError::Corrupt(format!("{} is not an event row", what())))?;
        let event: StoredEvent = decode(&json, what)?;
        if keep(&event) {
            page.items.push(event);
        }
        last = Some(id.to_owned());
    }
    Ok(page)
}

/// The customer record of (tenant, id), decoded as `T`: the whole
/// [`CustomerRecord`](crate::storage::CustomerRecord), or only the part a check needs.
pub(super) fn get_customer<T: DeserializeOwned>(
    table: &impl ReadableTable<CustomerKey<'static>, &'static [u8]>,
    tenant: &str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    get_json(table, record_key(tenant, id), || {
        format!("customer {id} of tenant {tenant}")
    })
}

/// `plugin`'s state for `customer` of `tenant`.
pub(super) fn get_plugin_state(
    table: &impl ReadableTable<CustomerKey<'static>, &'static [u8]>,
    tenant: &str,
    plugin: &str,
    customer: &str,
) -> Result<Option<RawJson>, StoreError> {
    get_json(table, state_key(tenant, customer, plugin), || {
        format!("state of plugin {plugin} for customer {customer} of tenant {tenant}")
    })
}

/// [`StoreError::NotFound`] unless `tenant` exists.
pub(super) fn require_tenant(
    tenants: &impl ReadableTable<&'static str, &'static [u8]>,
    tenant: &str,
) -> Result<(), StoreError> {
    match tenants.get(tenant)? {
        Some(_) => Ok(()),
        None => Err(no_tenant(tenant)),
    }
}

pub(super) fn no_tenant(tenant: &str) -> StoreError {
    StoreError::NotFound(format!("tenant {tenant} does not exist"))
}

/// Every record of `tenant` in a table keyed by (tenant, name), by name.
pub(super) fn tenant_records<T: DeserializeOwned>(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    let mut records = Vec::new();
    // Keys of one tenant are contiguous and start at (tenant, ""); the first key of another
    // tenant ends them.
    for row in table.range((tenant, "")..)? {
        let (key, value) = row?;
        let (owner, name) = key.value();
        if owner != tenant {
            break;
        }
        records.push(decode(value.value(), || {
            format!("{what} {name} of tenant {tenant}")
        })?);
    }
    Ok(records)
}

/// The first customer of `tenant` after `after` (from the first when `None`), in id order:
/// one seek past every row of the last customer, whatever their history holds.
pub(super) fn next_customer(
    table: &impl ReadableTable<CustomerKey<'static>, &'static [u8]>,
    tenant: &str,
    after: Option<&str>,
) -> Result<Option<String>, StoreError> {
    let lower = match after {
        None => Bound::Included((tenant, "", 0, i64::MIN, 0, "")),
        Some(customer) => Bound::Excluded((tenant, customer, u8::MAX, i64::MAX, u64::MAX, "")),
    };
    let Some(row) = table
        .range::<(&str, &str, u8, i64, u64, &str)>((lower, Bound::Unbounded))?
        .next()
    else {
        return Ok(None);
    };
    let (key, _) = row?;
    let (owner, customer, ..) = key.value();
    Ok((owner == tenant).then(|| customer.to_owned()))
}
