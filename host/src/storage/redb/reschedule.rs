//! Working out again what is due for every customer of a tenant, after the tenant changed
//! the settings that say so ([`Store::reschedule`](crate::storage::Store::reschedule)).

use ::redb::{ReadableTable, WriteTransaction};

use super::batch::move_due;
use super::codec::{decode, encode};
use super::read::{get_json, next_customer, no_tenant};
use super::tables::{CUSTOMER_DATA, DUE, TENANTS, record_key};
use crate::domain::schedule::schedule;
use crate::storage::{CustomerRecord, StoreError, TenantRecord};

/// Customers rescheduled in one write transaction: few enough that the writer, whose commits
/// wait for it, is held up for milliseconds, not seconds.
pub(super) const CUSTOMERS_PER_TRANSACTION: usize = 500;

/// What one transaction of a reschedule did.
pub(super) struct Step {
    /// The last customer looked at; `None` when there were none left.
    pub(super) last: Option<String>,
    /// Customers whose moments changed.
    pub(super) changed: usize,
}

/// Reschedules up to [`CUSTOMERS_PER_TRANSACTION`] customers of `tenant` after `after` (from
/// the first when `None`), with the tenant's settings as they are in this transaction, so
/// that a later change of settings always wins.
pub(super) fn step(
    txn: &WriteTransaction,
    tenant: &str,
    after: Option<&str>,
) -> Result<Step, StoreError> {
    let tenants = txn.open_table(TENANTS)?;
    let record: TenantRecord = get_json(&tenants, tenant, || format!("tenant {tenant}"))?
        .ok_or_else(|| no_tenant(tenant))?;
    let policy = record.policy();
    let mut data = txn.open_table(CUSTOMER_DATA)?;
    let mut due = txn.open_table(DUE)?;
    let mut last = after.map(str::to_owned);
    let mut changed = 0;
    for _ in 0..CUSTOMERS_PER_TRANSACTION {
        let Some(next) = next_customer(&data, tenant, last.as_deref())? else {
            break;
        };
        let key = record_key(tenant, &next);
        let bytes = data.get(key)?.map(|value| value.value().to_vec());
        last = Some(next.clone());
        let Some(bytes) = bytes else { continue };
        let mut customer: CustomerRecord =
            decode(&bytes, || format!("customer {next} of tenant {tenant}"))?;
        let moments = schedule(&customer, &policy);
        if moments == customer.due {
            continue;
        }
        move_due(&mut due, tenant, &next, &customer.due, &moments)?;
        customer.due = moments;
        let bytes = encode(&customer, || format!("customer {next} of tenant {tenant}"))?;
        data.insert(record_key(tenant, &next), bytes.as_slice())?;
        changed += 1;
    }
    let last = last.filter(|customer| Some(customer.as_str()) != after);
    Ok(Step { last, changed })
}
