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
