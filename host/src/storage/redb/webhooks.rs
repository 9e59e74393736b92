//! Each tenant's webhook endpoints, with where their delivery stands, and each endpoint's
//! delivery log (its latest attempts).

use ::redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::codec::{decode, encode};
use super::read::require_tenant;
use super::tables::{TENANTS, WEBHOOK_ATTEMPTS, WEBHOOKS};
use crate::storage::{DeliveryAttempt, StoreError, WebhookRecord};

/// How many attempts an endpoint's log keeps: the latest, older ones make room.
pub(crate) const ATTEMPTS_KEPT: u64 = 1_000;

/// Adds an endpoint, as [`Store::create_webhook`](crate::storage::Store::create_webhook).
pub(super) fn create(
    txn: &WriteTransaction,
    tenant: &str,
    webhook: &WebhookRecord,
) -> Result<(), StoreError> {
    require_tenant(&txn.open_table(TENANTS)?, tenant)?;
    let mut table = txn.open_table(WEBHOOKS)?;
    if table.get((tenant, webhook.id.as_str()))?.is_some() {
        return Err(StoreError::Conflict(format!(
            "tenant {tenant} has a webhook endpoint {} already",
            webhook.id
        )));
    }
    let bytes = encode(webhook, || {
        format!("webhook {} of tenant {tenant}", webhook.id)
    })?;
    table.insert((tenant, webhook.id.as_str()), bytes.as_slice())?;
    Ok(())
}

/// Changes an endpoint and logs attempts, as
/// [`Store::update_webhook`](crate::storage::Store::update_webhook).
pub(super) fn update(
    txn: &WriteTransaction,
    tenant: &str,
    id: &str,
    change: &mut dyn FnMut(&mut WebhookRecord),
    attempts: &[DeliveryAttempt],
) -> Result<WebhookRecord, StoreError> {
    let mut table = txn.open_table(WEBHOOKS)?;
    let mut webhook: WebhookRecord = match table.get((tenant, id))? {
        Some(bytes) => decode(bytes.value(), || format!("webhook {id} of tenant {tenant}"))?,
        None => {
            return Err(StoreError::NotFound(format!(
                "tenant {tenant} has no webhook endpoint {id}"
            )));
        }
    };
    change(&mut webhook);
    let bytes = encode(&webhook, || format!("webhook {id} of tenant {tenant}"))?;
    table.insert((tenant, id), bytes.as_slice())?;
    if !attempts.is_empty() {
        let mut log = txn.open_table(WEBHOOK_ATTEMPTS)?;
        let mut last = log
            .range((tenant, id, 0)..=(tenant, id, u64::MAX))?
            .next_back()
            .transpose()?
            .map_or(0, |(key, _)| key.value().2);
        for attempt in attempts {
            last = last.saturating_add(1);
            let seq = last;
            let attempt = DeliveryAttempt {
                seq,
                ..attempt.clone()
            };
            let bytes = encode(&attempt, || {
                format!("attempt {seq} of webhook {id} of tenant {tenant}")
            })?;
            log.insert((tenant, id, seq), bytes.as_slice())?;
            if let Some(gone) = seq.checked_sub(ATTEMPTS_KEPT) {
                log.remove((tenant, id, gone))?;
            }
        }
    }
    Ok(webhook)
}

/// An endpoint and its log removed; false when there was none.
pub(super) fn delete(txn: &WriteTransaction, tenant: &str, id: &str) -> Result<bool, StoreError> {
    let existed = txn.open_table(WEBHOOKS)?.remove((tenant, id))?.is_some();
    let mut log = txn.open_table(WEBHOOK_ATTEMPTS)?;
    log.retain_in((tenant, id, 0)..=(tenant, id, u64::MAX), |_, _| false)?;
    Ok(existed)
}

/// One endpoint.
pub(super) fn get(
    db: &Database,
    tenant: &str,
    id: &str,
) -> Result<Option<WebhookRecord>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(WEBHOOKS)?;
    table
        .get((tenant, id))?
        .map(|bytes| decode(bytes.value(), || format!("webhook {id} of tenant {tenant}")))
        .transpose()
}

/// The endpoints of `tenant`, or of every tenant, by tenant and id.
pub(super) fn all(
    db: &Database,
    tenant: Option<&str>,
) -> Result<Vec<(String, WebhookRecord)>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(WEBHOOKS)?;
    let rows = match tenant {
        Some(tenant) => table.range::<(&str, &str)>((tenant, "")..)?,
        None => table.range::<(&str, &str)>(..)?,
    };
    let mut webhooks = Vec::new();
    for row in rows {
        let (key, value) = row?;
        let (owner, id) = key.value();
        if tenant.is_some_and(|tenant| tenant != owner) {
            break;
        }
        let webhook = decode(value.value(), || format!("webhook {id} of tenant {owner}"))?;
        webhooks.push((owner.to_owned(), webhook));
    }
    Ok(webhooks)
}

/// Up to `limit` attempts of an endpoint before attempt `before`, newest first.
pub(super) fn attempts(
    db: &Database,
    tenant: &str,
    id: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<Vec<DeliveryAttempt>, StoreError> {
    let txn = db.begin_read()?;
    let log = txn.open_table(WEBHOOK_ATTEMPTS)?;
    let end = before.map_or(u64::MAX, |before| before.saturating_sub(1));
    let mut attempts = Vec::new();
    for row in log
        .range((tenant, id, 0)..=(tenant, id, end))?
        .rev()
        .take(limit)
    {
        let (key, value) = row?;
        let seq = key.value().2;
        attempts.push(decode(value.value(), || {
            format!("attempt {seq} of webhook {id} of tenant {tenant}")
        })?);
    }
    Ok(attempts)
}
