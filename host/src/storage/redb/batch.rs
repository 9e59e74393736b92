//! A batch of events in one write transaction ([`RedbBatch`]: each append checked against the
//! stored state, then written), and a read snapshot of what is committed ([`RedbSnapshot`]).

use std::collections::{HashMap, HashSet};

use crate::domain::{Due, points_after};
use ::redb::{ReadOnlyTable, ReadTransaction, ReadableTable, Table, WriteTransaction};
use serde::Deserialize;
use tally_sdk::Points;

use super::codec::{LedgerRow, decode_history, encode, encode_event_row, encode_history, len_u64};
use super::read::{get_customer, get_event, get_plugin_state, require_tenant};
use super::tables::{
    AUDIT, CUSTOMER_DATA, CUSTOMER_INDEX, CustomerKey, DUE, EVENTS, OUTBOX, REWARD_COUNTS,
    SEQ_AUDIT, SEQ_EVENT, SEQ_LEDGER, SEQ_OUTBOX, SEQUENCES, TENANTS, history_key, ledger_key,
    record_key, state_key,
};
use crate::domain::records::CustomerSnapshot;
use crate::storage::{
    AppendEvent, Appended, AuditEntry, BatchRead, BatchTxn, CustomerRecord, NewLedgerEntry,
    NewTrigger, OutboxTrigger, RawJson, StoreError, StoredEvent,
};
use sha2::Digest;

/// Runs `work` on one snapshot of what `txn` sees, with the tables a batch reads opened once.
pub(super) fn read(
    txn: &ReadTransaction,
    work: &mut dyn FnMut(&dyn BatchRead) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let snapshot = RedbSnapshot {
        events: txn.open_table(EVENTS)?,
        customer_data: txn.open_table(CUSTOMER_DATA)?,
    };
    work(&snapshot)
}

/// Runs `work` on a batch in `txn`. `Ok` means `txn` may commit: `work` succeeded, no append
/// failed halfway, and the sequences the batch moved are written back.
pub(super) fn write(
    txn: &WriteTransaction,
    work: &mut dyn FnMut(&mut dyn BatchTxn) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut batch = RedbBatch::open(txn)?;
    work(&mut batch)?;
    match batch.poisoned.take() {
        Some(error) => Err(error),
        None => batch.finish(),
    }
}

/// One group-commit write transaction, with its tables opened once for the whole batch.
struct RedbBatch<'txn> {
    tenants: Table<'txn, &'static str, &'static [u8]>,
    sequences: Table<'txn, (&'static str, &'static str), u64>,
    events: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    customer_data: Table<'txn, CustomerKey<'static>, &'static [u8]>,
    outbox: Table<'txn, (&'static str, u64), &'static [u8]>,
    due: Table<'txn, (&'static str, i64, &'static str, &'static str), &'static [u8]>,
    index: Table<'txn, (&'static str, &'static str, &'static str, &'static str), ()>,
    reward_counts: Table<'txn, (&'static str, &'static str), u64>,
    audit: Table<'txn, (&'static str, u64), &'static [u8]>,
    /// Set when a write failed halfway through an append: the transaction then holds part of
    /// an event, so it must not commit, whatever `work` does with the error.
    poisoned: Option<StoreError>,
    /// The sequences as this batch has moved them, written back once before the commit
    /// rather than read and written on every append.
    sequence_cache: HashMap<(String, &'static str), u64>,
    /// Tenants this batch has found to exist.
    known_tenants: HashSet<String>,
}

/// One read snapshot with the tables a batch reads opened once.
struct RedbSnapshot {
    events: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    customer_data: ReadOnlyTable<CustomerKey<'static>, &'static [u8]>,
}

/// The part of a stored [`CustomerRecord`] an append's checks compare with: decoding only
/// this skips the rest of the record (stats, attributes, contact card) without building it.
#[derive(Deserialize)]
struct StoredCounters {
    customer: StoredPoints,
    event_count: u64,
    #[serde(default)]
    due: Vec<Due>,
}

#[derive(Deserialize)]
struct StoredPoints {
    points: Points,
    #[serde(default)]
    attributes: StoredEmail,
}

#[derive(Deserialize, Default)]
struct StoredEmail {
    #[serde(default)]
    email: Option<serde_json::Value>,
}

/// The customer's email as the index keeps it: trimmed and lowercased; `None` for none.
pub(crate) fn email_key(email: Option<&serde_json::Value>) -> Option<String> {
    let email = email?.as_str()?.trim();
    (!email.is_empty()).then(|| email.to_lowercase())
}

/// One customer an append changes: the event's, or the one a merge takes in.
struct Side<'a> {
    customer: &'a str,
    record: &'a CustomerRecord,
    ledger: &'a [NewLedgerEntry],
}

impl<'a> Side<'a> {
    fn of_event(append: &'a AppendEvent) -> Side<'a> {
        Side {
            customer: &append.event.customer,
            record: &append.customer,
            ledger: &append.ledger,
        }
    }

    fn merged(append: &'a AppendEvent) -> Option<Side<'a>> {
        append.merged.as_deref().map(|away| Side {
            customer: &away.customer.customer.id,
            record: &away.customer,
            ledger: &away.ledger,
        })
    }
}

/// What an append's checks worked out for one customer, for its writes.
struct Checked {
    /// Balance, pending and lifetime after each ledger entry.
    points_after: Vec<Points>,
    /// What the clock was to write for the customer before this event.
    due_before: Vec<Due>,
    /// The customer's email before this event, as the index keeps it.
    email_before: Option<String>,
}

impl BatchTxn for RedbBatch<'_> {
    fn append(&mut self, append: AppendEvent) -> Result<Appended, StoreError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        let checked = self.check(&append)?;
        let merged = match Side::merged(&append) {
            Some(side) if side.customer == append.event.customer => {
                return Err(StoreError::Inconsistent(format!(
                    "event {} of tenant {} merges customer {} into itself",
                    append.event.id, append.tenant, side.customer
                )));
            }
            Some(side) => Some(self.check_side(&append, &side)?),
            None => None,
        };
        if !self.known_tenants.contains(&append.tenant) {
            self.known_tenants.insert(append.tenant.clone());
        }
        self.write(append, checked, merged).inspect_err(|error| {
            self.poisoned = Some(error.clone());
        })
    }
}

impl<'txn> RedbBatch<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<RedbBatch<'txn>, StoreError> {
        Ok(RedbBatch {
            tenants: txn.open_table(TENANTS)?,
            sequences: txn.open_table(SEQUENCES)?,
            events: txn.open_table(EVENTS)?,
            customer_data: txn.open_table(CUSTOMER_DATA)?,
            outbox: txn.open_table(OUTBOX)?,
            due: txn.open_table(DUE)?,
            index: txn.open_table(CUSTOMER_INDEX)?,
            reward_counts: txn.open_table(REWARD_COUNTS)?,
            audit: txn.open_table(AUDIT)?,
            poisoned: None,
            sequence_cache: HashMap::new(),
            known_tenants: HashSet::new(),
        })
    }

    /// Writes back the sequences this batch moved; called once, before the commit.
    fn finish(&mut self) -> Result<(), StoreError> {
        for ((tenant, kind), last) in std::mem::take(&mut self.sequence_cache) {
            self.sequences.insert((tenant.as_str(), kind), last)?;
        }
        Ok(())
    }

    /// Every check of an append but its merged side's; reads only.
    fn check(&self, append: &AppendEvent) -> Result<Checked, StoreError> {
        self.check_event(append)?;
        let checked = self.check_side(append, &Side::of_event(append))?;
        check_net(append)?;
        if let Some(claim) = &append.reward
            && let Some(stock) = claim.stock
        {
            let redeemed = self
                .reward_counts
                .get((append.tenant.as_str(), claim.reward.as_str()))?
                .map_or(0, |count| count.value());
            if redeemed >= stock {
                return Err(StoreError::OutOfStock {
                    reward: claim.reward.clone(),
                    stock,
                });
            }
        }
        Ok(checked)
    }

    /// One customer's new record against the stored one: one event more, points moved by
    /// its ledger entries.
    fn check_side(&self, append: &AppendEvent, side: &Side<'_>) -> Result<Checked, StoreError> {
        let tenant = append.tenant.as_str();
        let previous: Option<StoredCounters> =
            get_customer(&self.customer_data, tenant, side.customer)?;
        let (count_before, points_before, due_before, email_before) =
            previous.map_or((0, Points::default(), Vec::new(), None), |p| {
                let email = email_key(p.customer.attributes.email.as_ref());
                (p.event_count, p.customer.points, p.due, email)
            });
        check_count(append, side, count_before)?;
        let points_after = points_after(points_before, side.ledger);
        check_points(append, side, points_before, &points_after)?;
        Ok(Checked {
            points_after,
            due_before,
            email_before,
        })
    }

    /// The tenant exists, the event id is new, and the new customer state is the event's
    /// customer's.
    fn check_event(&self, append: &AppendEvent) -> Result<(), StoreError> {
        let tenant = append.tenant.as_str();
        let event = &append.event;
        if !self.known_tenants.contains(tenant) {
            require_tenant(&self.tenants, tenant)?;
        }
        if let Some(existing) = get_event(&self.events, tenant, &event.id)? {
            return Err(StoreError::Conflict(format!(
                "event {} of tenant {tenant} already exists (seq {})",
                event.id, existing.seq
            )));
        }
        if append.customer.customer.id != event.customer {
            return Err(StoreError::Inconsistent(format!(
                "event {} of tenant {tenant} is for customer {}, but the new customer state is \
                 for customer {}",
                event.id, event.customer, append.customer.customer.id
            )));
        }
        Ok(())
    }

    /// Every write of an append, after its checks passed.
    fn write(
        &mut self,
        append: AppendEvent,
        checked: Checked,
        merged: Option<Checked>,
    ) -> Result<Appended, StoreError> {
        let AppendEvent {
            tenant,
            mut event,
            customer,
            ledger,
            plugin_states,
            triggers,
            reward,
            erase,
            merged: away,
            snapshot,
        } = append;
        let tenant = tenant.as_str();
        if let Some(claim) = &reward {
            let key = (tenant, claim.reward.as_str());
            let redeemed = self
                .reward_counts
                .get(key)?
                .map_or(0, |count| count.value());
            self.reward_counts.insert(key, redeemed.saturating_add(1))?;
        }
        event.seq = self.reserve(tenant, SEQ_EVENT, 1)?;
        self.write_event(tenant, &event)?;
        let side = Side {
            customer: &event.customer,
            record: &customer,
            ledger: &ledger,
        };
        self.write_side(tenant, &event, &side, checked)?;
        // The merged customer's history shows the merge too, and their ledger the points
        // leaving.
        if let (Some(away), Some(checked)) = (away, merged) {
            let side = Side {
                customer: &away.customer.customer.id,
                record: &away.customer,
                ledger: &away.ledger,
            };
            self.write_history(tenant, side.customer, &event)?;
            self.write_side(tenant, &event, &side, checked)?;
        }
        self.write_states(tenant, &event.customer, plugin_states)?;
        self.write_triggers(tenant, &event, triggers, snapshot)?;
        if erase {
            self.erase(tenant, &event)?;
        }
        Ok(Appended { event, customer })
    }

    /// One customer's record, their rows in the clock's and the email index, and their
    /// ledger entries.
    fn write_side(
        &mut self,
        tenant: &str,
        event: &StoredEvent,
        side: &Side<'_>,
        checked: Checked,
    ) -> Result<(), StoreError> {
        let customer = side.customer;
        let bytes = encode(side.record, || {
            format!("customer {customer} of tenant {tenant}")
        })?;
        self.customer_data
            .insert(record_key(tenant, customer), bytes.as_slice())?;
        self.write_due(tenant, customer, &checked.due_before, &side.record.due)?;
        let email_after = email_key(side.record.customer.attributes.get("email"));
        if email_after != checked.email_before {
            if let Some(old) = &checked.email_before {
                self.index
                    .remove((tenant, "email", old.as_str(), customer))?;
            }
            if let Some(new) = &email_after {
                self.index
                    .insert((tenant, "email", new.as_str(), customer), ())?;
            }
        }
        self.write_ledger(tenant, customer, event, side.ledger, checked.points_after)
    }

    /// The event's row, and its row in the customer's history.
    fn write_event(&mut self, tenant: &str, event: &StoredEvent) -> Result<(), StoreError> {
        let json = encode(event, || format!("event {} of tenant {tenant}", event.id))?;
        self.events.insert(
            (tenant, event.id.as_str()),
            encode_event_row(&json)?.as_slice(),
        )?;
        self.write_history(tenant, &event.customer, event)
    }

    /// `event`'s row in `customer`'s history.
    fn write_history(
        &mut self,
        tenant: &str,
        customer: &str,
        event: &StoredEvent,
    ) -> Result<(), StoreError> {
        let at = (event.timestamp.unix_seconds(), event.seq);
        self.customer_data.insert(
            history_key(tenant, customer, at),
            encode_history(&event.action, &event.id).as_slice(),
        )?;
        Ok(())
    }

    /// The clock's index moved from what was due for the customer to what is due now.
    fn write_due(
        &mut self,
        tenant: &str,
        customer: &str,
        before: &[Due],
        after: &[Due],
    ) -> Result<(), StoreError> {
        move_due(&mut self.due, tenant, customer, before, after)
    }

    /// The event's ledger entries for `customer`, each with the points after it.
    fn write_ledger(
        &mut self,
        tenant: &str,
        customer: &str,
        event: &StoredEvent,
        ledger: &[NewLedgerEntry],
        points_after: Vec<Points>,
    ) -> Result<(), StoreError> {
        let first = self.reserve(tenant, SEQ_LEDGER, len_u64(ledger.len()))?;
        for ((seq, new), after) in (first..).zip(ledger).zip(points_after) {
            let row = LedgerRow {
                event_id: &event.id,
                plugin: &new.plugin,
                amount: new.entry.amount,
                kind: new.entry.kind(),
                reason: &new.entry.reason,
                expires_at: new.entry.expires_at,
                held: new.held,
                balance_after: after.balance,
                pending_after: after.pending,
                lifetime_after: after.lifetime,
                at: event.timestamp,
            };
            self.customer_data
                .insert(ledger_key(tenant, customer, seq), row.encode().as_slice())?;
        }
        Ok(())
    }

    /// Takes the personal data out of every stored event of the customer of `erasing` (what
    /// [`crate::domain::erase_event`] forgets; what the plugins decided stays: amounts,
    /// actions, times), deletes every plugin state of theirs, and writes the erasure in the
    /// tenant's audit log.
    fn erase(&mut self, tenant: &str, erasing: &StoredEvent) -> Result<(), StoreError> {
        let customer = erasing.customer.as_str();
        let history: Vec<String> = self
            .customer_data
            .range(
                history_key(tenant, customer, (i64::MIN, 0))
                    ..=history_key(tenant, customer, (i64::MAX, u64::MAX)),
            )?
            .map(|row| {
                let (_, value) = row?;
                let (_, id) = decode_history(value.value()).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "a history row of customer {customer} of tenant {tenant}"
                    ))
                })?;
                Ok(id.to_owned())
            })
            .collect::<Result<_, StoreError>>()?;
        let mut scrubbed = 0_u64;
        for id in &history {
            let Some(mut event) = get_event(&self.events, tenant, id)? else {
                continue;
            };
            crate::domain::erase_event(&mut event);
            let json = encode(&event, || format!("event {id} of tenant {tenant}"))?;
            self.events
                .insert((tenant, id.as_str()), encode_event_row(&json)?.as_slice())?;
            scrubbed += 1;
        }
        let states: Vec<String> = self
            .customer_data
            .range(state_key(tenant, customer, "")..=state_key(tenant, customer, "\u{10FFFF}"))?
            .map(|row| Ok(row?.0.value().5.to_owned()))
            .collect::<Result<_, StoreError>>()?;
        for plugin in &states {
            self.customer_data
                .remove(state_key(tenant, customer, plugin))?;
        }
        let seq = self.reserve(tenant, SEQ_AUDIT, 1)?;
        let digest = sha2::Sha256::digest(customer.as_bytes());
        let entry = AuditEntry {
            seq,
            action: "customer_erased".to_owned(),
            subject: digest.iter().map(|byte| format!("{byte:02x}")).collect(),
            at: erasing.received_at,
            detail: serde_json::json!({"events_scrubbed": scrubbed, "plugin_states_deleted": states.len()}),
        };
        let bytes = encode(&entry, || format!("audit entry {seq} of tenant {tenant}"))?;
        self.audit.insert((tenant, seq), bytes.as_slice())?;
        Ok(())
    }

    /// Plugin states set (`Some`) or deleted (`None`).
    fn write_states(
        &mut self,
        tenant: &str,
        customer: &str,
        states: Vec<(String, Option<RawJson>)>,
    ) -> Result<(), StoreError> {
        for (plugin, state) in states {
            let key = state_key(tenant, customer, plugin.as_str());
            match state {
                Some(state) => {
                    self.customer_data.insert(key, state.get().as_bytes())?;
                }
                None => {
                    self.customer_data.remove(key)?;
                }
            }
        }
        Ok(())
    }

    /// The event's triggers, at the end of the tenant's outbox.
    fn write_triggers(
        &mut self,
        tenant: &str,
        event: &StoredEvent,
        triggers: Vec<NewTrigger>,
        snapshot: Option<CustomerSnapshot>,
    ) -> Result<(), StoreError> {
        let first = self.reserve(tenant, SEQ_OUTBOX, len_u64(triggers.len()))?;
        for (seq, new) in (first..).zip(triggers) {
            let trigger = OutboxTrigger {
                seq,
                event_id: event.id.clone(),
                customer: event.customer.clone(),
                plugin: new.plugin,
                name: new.trigger.name,
                data: new.trigger.data,
                snapshot: snapshot.clone(),
                created_at: Some(event.received_at),
            };
            let bytes = encode(&trigger, || {
                format!("outbox trigger {seq} of tenant {tenant}")
            })?;
            self.outbox.insert((tenant, seq), bytes.as_slice())?;
        }
        Ok(())
    }

    /// Reserves `count` numbers of a tenant's sequence `kind`; returns the first.
    fn reserve(&mut self, tenant: &str, kind: &'static str, count: u64) -> Result<u64, StoreError> {
        let key = (tenant.to_owned(), kind);
        let last = match self.sequence_cache.get(&key) {
            Some(&last) => last,
            None => self.sequences.get((tenant, kind))?.map_or(0, |v| v.value()),
        };
        let first = last.checked_add(1);
        let new_last = last.checked_add(count);
        let (Some(first), Some(new_last)) = (first, new_last) else {
            return Err(StoreError::Invalid(format!(
                "the {kind} sequence of tenant {tenant} is at {last} and cannot grow by {count}"
            )));
        };
        if count > 0 {
            self.sequence_cache.insert(key, new_last);
        }
        Ok(first)
    }
}

/// Moves a customer's rows in the clock's index from what was due (`before`) to what is due
/// now (`after`); a change that moves nothing writes nothing.
pub(super) fn move_due(
    table: &mut Table<'_, (&'static str, i64, &'static str, &'static str), &'static [u8]>,
    tenant: &str,
    customer: &str,
    before: &[Due],
    after: &[Due],
) -> Result<(), StoreError> {
    for old in before {
        if !after
            .iter()
            .any(|new| new.kind == old.kind && new.at == old.at)
        {
            table.remove((tenant, old.at.unix_seconds(), customer, old.kind.as_str()))?;
        }
    }
    for new in after {
        if !before.contains(new) {
            let data = encode(&new.data, || {
                format!("due {} of customer {customer} of tenant {tenant}", new.kind)
            })?;
            table.insert(
                (tenant, new.at.unix_seconds(), customer, new.kind.as_str()),
                data.as_slice(),
            )?;
        }
    }
    Ok(())
}

/// The new customer state counts one event more than the stored one.
fn check_count(append: &AppendEvent, side: &Side<'_>, count_before: u64) -> Result<(), StoreError> {
    let count_expected = count_before.saturating_add(1);
    if side.record.event_count == count_expected {
        return Ok(());
    }
    Err(StoreError::Inconsistent(format!(
        "customer {} of tenant {} has {count_before} events stored, so after event {} the \
         count must be {count_expected}, not {}",
        side.customer, append.tenant, append.event.id, side.record.event_count
    )))
}

/// The new customer state's points are the stored ones moved by the event's ledger entries.
fn check_points(
    append: &AppendEvent,
    side: &Side<'_>,
    points_before: Points,
    points_after: &[Points],
) -> Result<(), StoreError> {
    let expected = points_after.last().copied().unwrap_or(points_before);
    let given = side.record.customer.points;
    if given == expected {
        return Ok(());
    }
    Err(StoreError::Inconsistent(format!(
        "customer {} of tenant {} has balance {}, pending {} and lifetime {} stored; event {}'s \
         {} ledger entries take them to balance {}, pending {} and lifetime {}, but the new \
         customer state says balance {}, pending {} and lifetime {}",
        side.customer,
        append.tenant,
        points_before.balance,
        points_before.pending,
        points_before.lifetime,
        append.event.id,
        side.ledger.len(),
        expected.balance,
        expected.pending,
        expected.lifetime,
        given.balance,
        given.pending,
        given.lifetime
    )))
}

/// The event's `points` are the sum of its ledger entries.
fn check_net(append: &AppendEvent) -> Result<(), StoreError> {
    let net = append
        .ledger
        .iter()
        .fold(0_i64, |sum, new| sum.saturating_add(new.entry.amount));
    if append.event.points == net {
        return Ok(());
    }
    Err(StoreError::Inconsistent(format!(
        "event {} of tenant {} says it moved {} points, but its {} ledger entries sum to {net}",
        append.event.id,
        append.tenant,
        append.event.points,
        append.ledger.len()
    )))
}

/// The batch reads of a type with `events` and `customer_data` tables: a write
/// batch reads its own writes, a snapshot what was committed, through the same lookups.
macro_rules! batch_read_from_tables {
    ($type:ty) => {
        impl BatchRead for $type {
            fn event(&self, tenant: &str, id: &str) -> Result<Option<StoredEvent>, StoreError> {
                get_event(&self.events, tenant, id)
            }

            fn customer(
                &self,
                tenant: &str,
                id: &str,
            ) -> Result<Option<CustomerRecord>, StoreError> {
                get_customer(&self.customer_data, tenant, id)
            }

            fn plugin_state(
                &self,
                tenant: &str,
                plugin: &str,
                customer: &str,
            ) -> Result<Option<RawJson>, StoreError> {
                get_plugin_state(&self.customer_data, tenant, plugin, customer)
            }
        }
    };
}

batch_read_from_tables!(RedbBatch<'_>);
batch_read_from_tables!(RedbSnapshot);
