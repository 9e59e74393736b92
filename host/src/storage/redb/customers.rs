//! Listing a tenant's customers and finding them by email
//! ([`Store::customers`](crate::storage::Store::customers),
//! [`Store::customers_by_email`](crate::storage::Store::customers_by_email)).

use std::ops::Bound;

use ::redb::{Database, ReadableDatabase};

use super::read::{get_customer, next_customer};
use super::tables::{CUSTOMER_DATA, CUSTOMER_INDEX};
use crate::storage::{CustomerRecord, Page, StoreError};

/// The most customers one page looks at: a filter that matches few customers answers a
/// short page (with a cursor) rather than holding a read open over the whole tenant.
pub(super) const SCAN_PER_PAGE: usize = 10_000;

/// Up to `limit` of `tenant`'s customers after `after`, in id order, that `keep` keeps.
pub(super) fn customers(
    db: &Database,
    tenant: &str,
    after: Option<&str>,
    limit: usize,
    keep: &dyn Fn(&CustomerRecord) -> bool,
) -> Result<Page<CustomerRecord>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(CUSTOMER_DATA)?;
    let mut page = Page {
        items: Vec::new(),
        next_cursor: None,
    };
    let mut last = after.map(str::to_owned);
    for _ in 0..SCAN_PER_PAGE {
        if page.items.len() == limit {
            page.next_cursor = last;
            return Ok(page);
        }
        let Some(next) = next_customer(&table, tenant, last.as_deref())? else {
            return Ok(page);
        };
        if let Some(record) = get_customer::<CustomerRecord>(&table, tenant, &next)?
            && keep(&record)
        {
            page.items.push(record);
        }
        last = Some(next);
    }
    // The scan's budget ran out: the next page goes on from here.
    page.next_cursor = last;
    Ok(page)
}

/// The customers of `tenant` whose email is `email` (compared trimmed and lowercased).
pub(super) fn customers_by_email(
    db: &Database,
    tenant: &str,
    email: &str,
) -> Result<Vec<CustomerRecord>, StoreError> {
    let email = email.trim().to_lowercase();
    let txn = db.begin_read()?;
    let index = txn.open_table(CUSTOMER_INDEX)?;
    let data = txn.open_table(CUSTOMER_DATA)?;
    let mut found = Vec::new();
    let lower = Bound::Included((tenant, "email", email.as_str(), ""));
    for row in index.range::<(&str, &str, &str, &str)>((lower, Bound::Unbounded))? {
        let (key, _) = row?;
        let (owner, field, value, customer) = key.value();
        if owner != tenant || field != "email" || value != email {
            break;
        }
        if let Some(record) = get_customer(&data, tenant, customer)? {
            found.push(record);
        }
    }
    Ok(found)
}
