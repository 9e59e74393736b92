//! What the evaluator has handed the committer and not yet seen committed, and a bounded
//! cache of what the store holds.

use std::collections::HashMap;

use super::Job;
use super::evaluator::{ChainEnd, Evaluation};
use crate::domain::records::{CustomerRecord, RawJson};
use crate::domain::{CustomerId, EventId, TenantId};
use crate::storage::{BatchRead, StoreError};

/// How many customers the overlay keeps once their batches are committed, as a cache of what
/// the store holds: their next event then reads neither the store nor JSON (on the ingest
/// bench, reading and decoding a customer and their states was ~5% of the host's CPU, and on
/// the evaluator thread, before the batch is shared out). Past this many, the committed
/// entries are dropped at once and read again as their customers come back: a bound on
/// memory, not an LRU, because a miss costs only a read. A record is about a kilobyte.
const MAX_CACHED_CUSTOMERS: usize = 10_000;
/// Or once the plugin states held pass this many bytes of JSON: a state may be up to
/// `Limits::max_state_bytes` (64 KiB by default), so the count alone does not bound them.
const MAX_CACHED_STATE_BYTES: usize = 64 << 20;

/// What the evaluator has handed the committer: the customers, plugin states and event ids
/// of those batches, by the last batch that wrote them. Reads look here before the store, so
/// a batch is evaluated on everything before it even while the previous batch is still
/// committing. Event ids are dropped once their batch is finished (the store then answers
/// for them); customers and states are kept after it, up to [`MAX_CACHED_CUSTOMERS`] and
/// [`MAX_CACHED_STATE_BYTES`], since only this writer changes them: what the overlay holds
/// is what the store holds, except for a customer the store refused an event of, whom the
/// committer names after that commit and before its answers, and who is then dropped.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    pub(super) customers: HashMap<(TenantId, CustomerId), (CustomerRecord, u64)>,
    pub(super) states: HashMap<(TenantId, String, CustomerId), (Option<RawJson>, u64)>,
    pub(super) ids: HashMap<(TenantId, EventId), u64>,
    /// The JSON bytes of the states held.
    pub(super) state_bytes: usize,
}

fn state_len(state: &Option<RawJson>) -> usize {
    state.as_ref().map_or(0, |state| state.get().len())
}

impl Overlay {
    /// Batches up to `finished` are in the store, except for the events of `refused`
    /// (tenant, customer) pairs: their ids are no longer pending, and those customers are
    /// dropped. The rest stays as a cache, unless it has outgrown its bound.
    pub(super) fn forget_up_to(&mut self, finished: u64, refused: &[(TenantId, CustomerId)]) {
        self.ids.retain(|_, batch| *batch > finished);
        if self.customers.len() > MAX_CACHED_CUSTOMERS || self.state_bytes > MAX_CACHED_STATE_BYTES
        {
            self.customers.retain(|_, (_, batch)| *batch > finished);
            self.states.retain(|_, (_, batch)| *batch > finished);
            self.count_state_bytes();
        }
        if !refused.is_empty() {
            for (tenant, customer) in refused {
                self.customers.remove(&(tenant.clone(), customer.clone()));
                self.states
                    .retain(|(t, _, c), _| !(t == tenant && c == customer));
            }
            self.count_state_bytes();
        }
    }

    /// Drops what one batch wrote (a batch that will not be written after all).
    pub(super) fn forget_batch(&mut self, number: u64) {
        self.customers.retain(|_, (_, batch)| *batch != number);
        self.states.retain(|_, (_, batch)| *batch != number);
        self.ids.retain(|_, batch| *batch != number);
        self.count_state_bytes();
    }

    pub(super) fn clear(&mut self) {
        self.customers.clear();
        self.states.clear();
        self.ids.clear();
        self.state_bytes = 0;
    }

    /// After dropping states wholesale, which is rare: recounted rather than tracked.
    fn count_state_bytes(&mut self) {
        self.state_bytes = self
            .states
            .values()
            .map(|(state, _)| state_len(state))
            .sum();
    }

    /// Records what an evaluated batch will write: the ids of its new events, and where each
    /// chain left its customer.
    pub(super) fn record(
        &mut self,
        batch: u64,
        jobs: &[Job],
        evaluated: &[Option<Evaluation>],
        ends: Vec<ChainEnd>,
    ) {
        for (job, evaluation) in jobs.iter().zip(evaluated) {
            if let Some(Ok(_)) = evaluation {
                self.ids
                    .insert((job.event.tenant.clone(), job.event.id.clone()), batch);
            }
        }
        for end in ends {
            let Some(customer) = end.customer else {
                continue;
            };
            if let Some((id, merged)) = end.merged {
                self.customers
                    .insert((end.tenant.clone(), id), (merged, batch));
            }
            let id = end.customer_id;
            for (plugin, state) in end.states {
                self.state_bytes += state_len(&state);
                let key = (end.tenant.clone(), plugin, id.clone());
                if let Some((replaced, _)) = self.states.insert(key, (state, batch)) {
                    self.state_bytes = self.state_bytes.saturating_sub(state_len(&replaced));
                }
            }
            self.customers.insert((end.tenant, id), (customer, batch));
        }
    }
}

/// The evaluator's reads: the overlay first, then what the store has committed.
pub(super) struct Reader<'a> {
    pub(super) snapshot: &'a dyn BatchRead,
    pub(super) overlay: &'a Overlay,
}

impl Reader<'_> {
    pub(super) fn customer(
        &self,
        tenant: &TenantId,
        id: &CustomerId,
    ) -> Result<Option<CustomerRecord>, StoreError> {
        match self.overlay.customers.get(&(tenant.clone(), id.clone())) {
            Some((customer, _)) => Ok(Some(customer.clone())),
            None => self.snapshot.customer(tenant.as_str(), id.as_str()),
        }
    }

    pub(super) fn plugin_state(
        &self,
        tenant: &TenantId,
        plugin: &str,
        customer: &CustomerId,
    ) -> Result<Option<RawJson>, StoreError> {
        let key = (tenant.clone(), plugin.to_owned(), customer.clone());
        match self.overlay.states.get(&key) {
            Some((state, _)) => Ok(state.clone()),
            None => self
                .snapshot
                .plugin_state(tenant.as_str(), plugin, customer.as_str()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::new_account;

    fn acme() -> TenantId {
        TenantId::parse("acme").unwrap()
    }

    fn chain_end(customer: &str, state: &str) -> ChainEnd {
        let customer_id = CustomerId::parse(customer).unwrap();
        ChainEnd {
            tenant: acme(),
            customer: Some(new_account(
                &customer_id,
                "2026-12-04T00:00:00Z".parse().unwrap(),
            )),
            customer_id,
            merged: None,
            states: vec![(
                "points".to_owned(),
                Some(RawJson::from_value(&json!(state))),
            )],
        }
    }

    fn cached(overlay: &Overlay, customer: &str) -> bool {
        overlay
            .customers
            .contains_key(&(acme(), CustomerId::parse(customer).unwrap()))
    }

    #[test]
    fn the_overlay_keeps_committed_customers_up_to_its_bound_obeyed() {
        let mut overlay = Overlay::default();
        overlay.record(
            1,
            &[],
            &[],
            vec![chain_end("ada", "a"), chain_end("bob", "b")],
        );
        overlay.forget_up_to(1, &[]);
        assert!(cached(&overlay, "ada") && cached(&overlay, "bob"));
        assert_eq!(overlay.state_bytes, 6, "two states of three bytes");
        // A refused customer is dropped, with their states.
        overlay.forget_up_to(1, &[(acme(), CustomerId::parse("bob").unwrap())]);
        assert!(cached(&overlay, "ada") && !cached(&overlay, "bob"));
        assert_eq!(overlay.states.len(), 1);
        assert_eq!(overlay.state_bytes, 3);
    }

    #[test]
    fn the_overlay_keeps_committed_customers_up_to_its_bound_violated() {
        let mut overlay = Overlay::default();
        let many: Vec<ChainEnd> = (0..=MAX_CACHED_CUSTOMERS)
            .map(|n| chain_end(&format!("c{n}"), "s"))
            .collect();
        overlay.record(1, &[], &[], many);
        overlay.record(2, &[], &[], vec![chain_end("pending", "p")]);
        overlay.forget_up_to(1, &[]);
        // Past the bound the committed entries go; what batch 2 will write stays.
        assert_eq!(overlay.customers.len(), 1);
        assert!(cached(&overlay, "pending"));
        assert_eq!(overlay.state_bytes, 3);

        let big = "x".repeat(MAX_CACHED_STATE_BYTES);
        overlay.record(3, &[], &[], vec![chain_end("big", &big)]);
        overlay.forget_up_to(3, &[]);
        assert!(overlay.customers.is_empty() && overlay.state_bytes == 0);
    }
}
