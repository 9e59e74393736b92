//! Reads: events, customers, their histories and ledgers, and the outbox.

use std::collections::HashMap;
use std::sync::Arc;

use super::error::ServiceError;
use crate::domain::records::{CustomerRecord, LedgerEntry, OutboxTrigger, StoredEvent};
use crate::storage::{EventQuery, Page, Store};

/// A ledger entry with the event that caused it.
#[derive(Debug, Clone)]
pub struct LedgerLine {
    /// The entry.
    pub entry: LedgerEntry,
    /// Its event (absent only in a damaged store).
    pub event: Option<StoredEvent>,
}

/// Reads.
pub struct Queries {
    store: Arc<dyn Store>,
}

impl std::fmt::Debug for Queries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queries").finish_non_exhaustive()
    }
}

impl Queries {
    pub(super) fn new(store: Arc<dyn Store>) -> Queries {
        Queries { store }
    }

    /// The event `id`.
    pub fn event(&self, tenant: &str, id: &str) -> Result<StoredEvent, ServiceError> {
        self.store
            .event(tenant, id)?
            .ok_or_else(|| ServiceError::not_found(format!("no event {id:?}")))
    }

    /// The customer `id`.
    pub fn customer(&self, tenant: &str, id: &str) -> Result<CustomerRecord, ServiceError> {
        self.store
            .customer(tenant, id)?
            .ok_or_else(|| ServiceError::not_found(format!("no customer {id:?}")))
    }

    /// A page of `tenant`'s customers that `filter` keeps, after the customer `after`; by the
    /// email index when the filter names an email.
    pub fn customers(
        &self,
        tenant: &str,
        filter: &CustomerFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Page<CustomerRecord>, ServiceError> {
        let keep = |record: &CustomerRecord| filter.keeps(record);
        if let Some(email) = &filter.email {
            let mut items: Vec<CustomerRecord> = self
                .store
                .customers_by_email(tenant, email)?
                .into_iter()
                .filter(|record| keep(record))
                .filter(|record| after.is_none_or(|after| record.customer.id.as_str() > after))
                .collect();
            items.sort_by(|a, b| a.customer.id.cmp(&b.customer.id));
            let next_cursor = (items.len() > limit).then(|| items[limit - 1].customer.id.clone());
            items.truncate(limit);
            return Ok(Page { items, next_cursor });
        }
        Ok(self.store.customers(tenant, after, limit, &keep)?)
    }

    /// Up to `limit` entries of the tenant's audit log after `after`.
    pub fn audit(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<crate::storage::AuditEntry>, ServiceError> {
        Ok(self.store.audit(tenant, after, limit)?)
    }

    /// Up to `limit` of the tenant's events after event `after`, in id order, that `keep`
    /// keeps (a page looks at a bounded number; `next_cursor` goes on).
    pub fn events(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&StoredEvent) -> bool,
    ) -> Result<Page<StoredEvent>, ServiceError> {
        Ok(self.store.events(tenant, after, limit, keep)?)
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
    ) -> Result<Vec<OutboxTrigger>, ServiceError> {
        Ok(self.store.outbox(tenant, after, limit)?)
    }
}

/// Which customers a listing keeps: every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct CustomerFilter {
    /// The `email` attribute, compared trimmed and without case.
    pub email: Option<String>,
    /// The tier.
    pub tier: Option<String>,
    /// Members only, or non-members only.
    pub member: Option<bool>,
    /// Top-level attributes and the values they must have: a string attribute equal to the
    /// text, any other equal to the text read as JSON (`true`, `5`).
    pub attributes: Vec<(String, String)>,
}

impl CustomerFilter {
    /// Whether `record` meets every condition. An alias (a customer merged into another)
    /// is never listed: its person is the survivor.
    pub fn keeps(&self, record: &CustomerRecord) -> bool {
        if record.merged_into.is_some() {
            return false;
        }
        let customer = &record.customer;
        let email_matches = self.email.as_ref().is_none_or(|email| {
            customer
                .attributes
                .get("email")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|own| own.trim().eq_ignore_ascii_case(email.trim()))
        });
        let attribute_matches =
            |(name, wanted): &(String, String)| match customer.attributes.get(name) {
                Some(serde_json::Value::String(text)) => text == wanted,
                Some(other) => serde_json::from_str::<serde_json::Value>(wanted)
                    .is_ok_and(|wanted| wanted == *other),
                None => false,
            };
        email_matches
            && self
                .tier
                .as_ref()
                .is_none_or(|tier| customer.tier.as_ref() == Some(tier))
            && self.member.is_none_or(|member| customer.member == member)
            && self.attributes.iter().all(attribute_matches)
    }
}
