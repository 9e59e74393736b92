//! The paged listings: a customer's history (by event time, filtered), a customer's ledger,
//! a tenant's outbox.

use std::ops::Bound;

use ::redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, WriteTransaction};

use super::codec::{LedgerRow, decode, decode_history, encode};
use super::cursor;
use super::read::get_event;
use super::tables::{
    AUDIT, CUSTOMER_DATA, CustomerKey, DUE, EVENTS, OUTBOX, SEQ_OUTBOX, SEQUENCES, history_key,
    ledger_key, ledger_seq,
};
use crate::domain::{Due, DueKind};
use crate::storage::{
    AuditEntry, DueWork, EventQuery, LedgerEntry, OutboxTrigger, Page, StoreError, StoredEvent,
};
use tally_sdk::Timestamp;

/// A position in a customer's history: (unix seconds, seq). Seqs start at 1, so (t, 0) sits
/// just before every event at second t.
type Position = (i64, u64);

/// A page of a customer's events, as [`Store::customer_events`](crate::storage::Store::customer_events).
pub(super) fn customer_events(
    db: &Database,
    tenant: &str,
    customer: &str,
    query: &EventQuery,
) -> Result<Page<StoredEvent>, StoreError> {
    let mut page = Page {
        items: Vec::new(),
        next_cursor: None,
    };
    if query.limit == 0 {
        return Ok(page);
    }
    let (lower, upper) = history_bounds(query)?;
    let key = |at: Position| history_key(tenant, customer, at);
    let bounds = (map_bound(lower, key), map_bound(upper, key));
    let txn = db.begin_read()?;
    let rows = txn.open_table(CUSTOMER_DATA)?;
    let events = txn.open_table(EVENTS)?;
    let mut range = rows.range::<CustomerKey<'_>>(bounds)?;
    let mut last = None;
    loop {
        let row = if query.newest_first {
            range.next_back()
        } else {
            range.next()
        };
        let Some(row) = row else { break };
        let (key, value) = row?;
        let (_, _, _, seconds, seq, _) = key.value();
        let (action, id) = decode_history(value.value()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "the history of customer {customer} of tenant {tenant} has an unreadable row \
                 for seq {seq} ({} bytes)",
                value.value().len()
            ))
        })?;
        if let Some(actions) = &query.actions
            && !actions.iter().any(|wanted| wanted == action)
        {
            continue;
        }
        let event = listed_event(&events, tenant, customer, id, seq)?;
        let wanted =
            |filter: &Option<String>, value: &Option<String>| filter.is_none() || filter == value;
        if !wanted(&query.channel, &event.channel) || !wanted(&query.campaign, &event.campaign) {
            continue;
        }
        if page.items.len() == query.limit {
            // One more match exists, so there is a next page; it starts after the last item
            // of this one.
            page.next_cursor = last.map(cursor::encode_event);
            break;
        }
        page.items.push(event);
        last = Some((seconds, seq));
    }
    Ok(page)
}

/// The positions `query` asks for: its time window, narrowed by its cursor to what comes
/// after the cursor in the direction it reads.
fn history_bounds(query: &EventQuery) -> Result<(Bound<Position>, Bound<Position>), StoreError> {
    let mut lower = Bound::Included((query.from.map_or(i64::MIN, |t| t.unix_seconds()), 0));
    let mut upper = match query.to {
        Some(to) => Bound::Excluded((to.unix_seconds(), 0)),
        None => Bound::Included((i64::MAX, u64::MAX)),
    };
    if let Some(cursor) = &query.cursor {
        let at = cursor::decode_event(cursor)?;
        if query.newest_first {
            if upper_allows(&upper, at) {
                upper = Bound::Excluded(at);
            }
        } else if lower_allows(&lower, at) {
            lower = Bound::Excluded(at);
        }
    }
    Ok((lower, upper))
}

/// The event a customer's history row lists; corrupt when it does not exist.
fn listed_event(
    events: &ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    tenant: &str,
    customer: &str,
    id: &str,
    seq: u64,
) -> Result<StoredEvent, StoreError> {
    get_event(events, tenant, id)?.ok_or_else(|| {
        StoreError::Corrupt(format!(
            "the history of customer {customer} of tenant {tenant} lists event {id} (seq \
             {seq}), which does not exist"
        ))
    })
}

/// A page of a customer's ledger, oldest entry first, as
/// [`Store::ledger`](crate::storage::Store::ledger).
pub(super) fn ledger(
    db: &Database,
    tenant: &str,
    customer: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<Page<LedgerEntry>, StoreError> {
    let mut page = Page {
        items: Vec::new(),
        next_cursor: None,
    };
    if limit == 0 {
        return Ok(page);
    }
    let after = cursor.map(cursor::decode_ledger).transpose()?;
    // Entries are numbered down, so the oldest first is the range backwards, and "after seq"
    // is the range's upper end.
    let oldest = match after {
        Some(seq) => Bound::Excluded(ledger_key(tenant, customer, seq)),
        None => Bound::Included(ledger_key(tenant, customer, 0)),
    };
    let newest = Bound::Included(ledger_key(tenant, customer, u64::MAX));
    let txn = db.begin_read()?;
    let table = txn.open_table(CUSTOMER_DATA)?;
    for row in table.range::<CustomerKey<'_>>((newest, oldest))?.rev() {
        let (key, value) = row?;
        let (_, _, _, _, number, _) = key.value();
        let seq = ledger_seq(number);
        if page.items.len() == limit {
            page.next_cursor = page.items.last().map(|e| cursor::encode_ledger(e.seq));
            break;
        }
        let row = LedgerRow::decode(value.value()).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "ledger entry {seq} of customer {customer} of tenant {tenant} does not decode \
                 ({} bytes)",
                value.value().len()
            ))
        })?;
        page.items.push(row.into_entry(seq));
    }
    Ok(page)
}

/// Up to `limit` of a tenant's outbound triggers after `after_seq`, as
/// [`Store::outbox`](crate::storage::Store::outbox).
pub(super) fn outbox(
    db: &Database,
    tenant: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<OutboxTrigger>, StoreError> {
    let mut triggers = Vec::new();
    let txn = db.begin_read()?;
    let table = txn.open_table(OUTBOX)?;
    let bounds = (
        Bound::Excluded((tenant, after_seq)),
        Bound::Included((tenant, u64::MAX)),
    );
    for row in table.range::<(&str, u64)>(bounds)?.take(limit) {
        let (key, value) = row?;
        let (_, seq) = key.value();
        triggers.push(decode(value.value(), || {
            format!("outbox trigger {seq} of tenant {tenant}")
        })?);
    }
    Ok(triggers)
}

/// A trigger of the host's own, not of an event, at the end of the tenant's outbox, as
/// [`Store::add_trigger`](crate::storage::Store::add_trigger).
pub(super) fn add_trigger(
    txn: &WriteTransaction,
    tenant: &str,
    trigger: &OutboxTrigger,
) -> Result<u64, StoreError> {
    let mut sequences = txn.open_table(SEQUENCES)?;
    let last = sequences
        .get((tenant, SEQ_OUTBOX))?
        .map_or(0, |last| last.value());
    let seq = last.checked_add(1).ok_or_else(|| {
        StoreError::Invalid(format!("the outbox sequence of tenant {tenant} is full"))
    })?;
    sequences.insert((tenant, SEQ_OUTBOX), seq)?;
    let trigger = OutboxTrigger {
        seq,
        ..trigger.clone()
    };
    let bytes = encode(&trigger, || {
        format!("outbox trigger {seq} of tenant {tenant}")
    })?;
    txn.open_table(OUTBOX)?
        .insert((tenant, seq), bytes.as_slice())?;
    Ok(seq)
}

/// Whether the oldest trigger of a tenant is one [`prune_outbox`] would remove: read first,
/// so that a tenant with nothing to prune costs no write transaction.
pub(super) fn anything_to_prune(
    db: &Database,
    tenant: &str,
    up_to: u64,
    before: Timestamp,
) -> Result<bool, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(OUTBOX)?;
    let Some(row) = table.range((tenant, 0)..=(tenant, up_to))?.next() else {
        return Ok(false);
    };
    let (key, value) = row?;
    let seq = key.value().1;
    let trigger: OutboxTrigger = decode(value.value(), || {
        format!("outbox trigger {seq} of tenant {tenant}")
    })?;
    Ok(trigger.created_at.is_none_or(|at| at < before))
}

/// Removes a tenant's oldest triggers, as
/// [`Store::prune_outbox`](crate::storage::Store::prune_outbox).
pub(super) fn prune_outbox(
    txn: &WriteTransaction,
    tenant: &str,
    up_to: u64,
    before: Timestamp,
    limit: usize,
) -> Result<usize, StoreError> {
    let mut table = txn.open_table(OUTBOX)?;
    let mut gone = Vec::new();
    for row in table.range((tenant, 0)..=(tenant, up_to))?.take(limit) {
        let (key, value) = row?;
        let seq = key.value().1;
        let trigger: OutboxTrigger = decode(value.value(), || {
            format!("outbox trigger {seq} of tenant {tenant}")
        })?;
        // The outbox is in order of receipt, so the first one young enough ends the run.
        if trigger.created_at.is_some_and(|at| at >= before) {
            break;
        }
        gone.push(seq);
    }
    for seq in &gone {
        table.remove((tenant, *seq))?;
    }
    Ok(gone.len())
}

/// Up to `limit` of a tenant's audit entries after `after_seq`, as
/// [`Store::audit`](crate::storage::Store::audit).
pub(super) fn audit(
    db: &Database,
    tenant: &str,
    after_seq: u64,
    limit: usize,
) -> Result<Vec<AuditEntry>, StoreError> {
    let txn = db.begin_read()?;
    let table = txn.open_table(AUDIT)?;
    let bounds = (
        Bound::Excluded((tenant, after_seq)),
        Bound::Included((tenant, u64::MAX)),
    );
    let mut entries = Vec::new();
    for row in table.range::<(&str, u64)>(bounds)?.take(limit) {
        let (key, value) = row?;
        let (_, seq) = key.value();
        entries.push(decode(value.value(), || {
            format!("audit entry {seq} of tenant {tenant}")
        })?);
    }
    Ok(entries)
}

/// Up to `limit` moments of `tenant` due by `until`, as [`Store::due`](crate::storage::Store::due).
pub(super) fn due(
    db: &Database,
    tenant: &str,
    until: Timestamp,
    limit: usize,
) -> Result<Vec<DueWork>, StoreError> {
    let mut due = Vec::new();
    let txn = db.begin_read()?;
    let table = txn.open_table(DUE)?;
    let bounds = (
        Bound::Included((tenant, i64::MIN, "", "")),
        Bound::Excluded((tenant, until.unix_seconds().saturating_add(1), "", "")),
    );
    for row in table.range::<(&str, i64, &str, &str)>(bounds)?.take(limit) {
        let (key, value) = row?;
        let (_, seconds, customer, kind) = key.value();
        let describe = || format!("due {kind} of customer {customer} of tenant {tenant}");
        let kind = DueKind::from_name(kind)
            .ok_or_else(|| StoreError::Corrupt(format!("{} has an unknown kind", describe())))?;
        due.push(DueWork {
            tenant: tenant.to_owned(),
            customer: customer.to_owned(),
            due: Due {
                kind,
                at: Timestamp::from_unix_seconds(seconds),
                data: decode(value.value(), describe)?,
            },
        });
    }
    Ok(due)
}

fn map_bound<T, U>(bound: Bound<T>, f: impl FnOnce(T) -> U) -> Bound<U> {
    match bound {
        Bound::Included(value) => Bound::Included(f(value)),
        Bound::Excluded(value) => Bound::Excluded(f(value)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Whether excluding `at` from below narrows `lower`.
fn lower_allows(lower: &Bound<Position>, at: Position) -> bool {
    match lower {
        Bound::Included(low) => at >= *low,
        Bound::Excluded(low) => at > *low,
        Bound::Unbounded => true,
    }
}

/// Whether excluding `at` from above narrows `upper`.
fn upper_allows(upper: &Bound<Position>, at: Position) -> bool {
    match upper {
        Bound::Included(high) => at <= *high,
        Bound::Excluded(high) => at < *high,
        Bound::Unbounded => true,
    }
}
