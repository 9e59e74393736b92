//! The tables of the one storage format, and the keys of `customer_data`.

use ::redb::{TableDefinition, WriteTransaction};

use crate::storage::StoreError;

pub(super) const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
pub(super) const TENANTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tenants");
pub(super) const TENANT_KEYS: TableDefinition<'_, &[u8; 32], &str> =
    TableDefinition::new("tenant_keys");
pub(super) const TENANT_KEY_HASH: TableDefinition<'_, &str, &[u8; 32]> =
    TableDefinition::new("tenant_key_hash");
pub(super) const EVENT_TYPES: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("event_types");
pub(super) const PLUGINS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("plugins");
pub(super) const PLUGIN_WASM: TableDefinition<'_, (&str, &str, u32), &[u8]> =
    TableDefinition::new("plugin_wasm");
/// Everything of a customer that an event changes, in one key range: history, record,
/// plugin states, ledger (see [`CustomerKey`]).
pub(super) const CUSTOMER_DATA: TableDefinition<'_, CustomerKey<'_>, &[u8]> =
    TableDefinition::new("customer_data");
pub(super) const SEQUENCES: TableDefinition<'_, (&str, &str), u64> =
    TableDefinition::new("sequences");
pub(super) const EVENTS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("events");
pub(super) const OUTBOX: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("outbox");
/// Customers by a field that finds them, for lookups: (tenant, field, normalised value,
/// customer) → nothing. Today the field is `email` (lowercased); several customers may share
/// one. Kept in step with the customer record by the append that changes it.
pub(super) const CUSTOMER_INDEX: TableDefinition<'_, (&str, &str, &str, &str), ()> =
    TableDefinition::new("customer_index");
/// Each tenant's audit log: (tenant, seq) → [`AuditEntry`](crate::storage::AuditEntry) JSON.
pub(super) const AUDIT: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("audit");
/// Each tenant's reward catalogue: (tenant, reward) → [`RewardRecord`](crate::storage::RewardRecord) JSON.
pub(super) const REWARDS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("rewards");
/// How many of each reward were redeemed: (tenant, reward) → count. Moved by the append
/// that redeems one, which refuses it when the stock is gone.
pub(super) const REWARD_COUNTS: TableDefinition<'_, (&str, &str), u64> =
    TableDefinition::new("reward_counts");
/// Each tenant's webhook endpoints, by (tenant, id).
pub(super) const WEBHOOKS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("webhooks");
/// Each endpoint's delivery log, by (tenant, endpoint, attempt).
pub(super) const WEBHOOK_ATTEMPTS: TableDefinition<'_, (&str, &str, u64), &[u8]> =
    TableDefinition::new("webhook_attempts");
/// Each tenant's bulk import jobs, by (tenant, id).
pub(super) const IMPORTS: TableDefinition<'_, (&str, &str), &[u8]> =
    TableDefinition::new("imports");
/// Each import's report of refused rows, by (tenant, import, row).
pub(super) const IMPORT_ERRORS: TableDefinition<'_, (&str, &str, u64), &[u8]> =
    TableDefinition::new("import_errors");
/// What the clock is to write, by tenant and time: (tenant, due unix seconds, customer, kind)
/// → the internal event's data as JSON. Kept in step with each customer record's `due` by
/// the append that changes it, so the clock reads what is due with one range per tenant
/// and never scans customers.
pub(super) const DUE: TableDefinition<'_, (&str, i64, &str, &str), &[u8]> =
    TableDefinition::new("due");

/// The row of `meta` that holds the storage format, a little-endian `u32`.
pub(super) const META_FORMAT: &str = "format";
/// The row of `meta` that holds the admin key's hash, 32 bytes.
pub(super) const META_ADMIN_KEY_HASH: &str = "admin_key_hash";

/// The names of a tenant's sequences in `sequences`.
pub(super) const SEQ_EVENT: &str = "event";
pub(super) const SEQ_LEDGER: &str = "ledger";
pub(super) const SEQ_OUTBOX: &str = "outbox";
pub(super) const SEQ_AUDIT: &str = "audit";

/// Creates every table the store uses (those that exist are left as they are), so that a
/// read never meets a missing table.
pub(super) fn create_all(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(META)?;
    txn.open_table(TENANTS)?;
    txn.open_table(TENANT_KEYS)?;
    txn.open_table(TENANT_KEY_HASH)?;
    txn.open_table(EVENT_TYPES)?;
    txn.open_table(PLUGINS)?;
    txn.open_table(PLUGIN_WASM)?;
    txn.open_table(CUSTOMER_DATA)?;
    txn.open_table(SEQUENCES)?;
    txn.open_table(EVENTS)?;
    txn.open_table(OUTBOX)?;
    txn.open_table(DUE)?;
    txn.open_table(CUSTOMER_INDEX)?;
    txn.open_table(REWARDS)?;
    txn.open_table(REWARD_COUNTS)?;
    txn.open_table(AUDIT)?;
    txn.open_table(WEBHOOKS)?;
    txn.open_table(WEBHOOK_ATTEMPTS)?;
    txn.open_table(IMPORTS)?;
    txn.open_table(IMPORT_ERRORS)?;
    Ok(())
}

/// A key of `customer_data`: (tenant, customer, part, time, number, plugin). The parts are
/// ordered so that what one event writes sits together, at the newest end of the history and
/// the newest end of the ledger with the record and the states between them:
///
/// | part | rows, in key order | time | number | plugin |
/// |---|---|---|---|---|
/// | [`PART_HISTORY`] | one per event, oldest first | unix seconds | event seq | `""` |
/// | [`PART_RECORD`] | the [`CustomerRecord`](crate::storage::CustomerRecord) | 0 | 0 | `""` |
/// | [`PART_STATE`] | one per plugin with a state | 0 | 0 | the plugin |
/// | [`PART_LEDGER`] | one per entry, newest first | 0 | `u64::MAX - seq` | `""` |
pub(super) type CustomerKey<'a> = (&'a str, &'a str, u8, i64, u64, &'a str);

/// The customer's events by event time; the value is (action, event id), see
/// [`encode_history`](super::codec::encode_history).
pub(super) const PART_HISTORY: u8 = 0;
/// The customer's record, JSON.
pub(super) const PART_RECORD: u8 = 1;
/// Each plugin's state for the customer, JSON as the plugin wrote it.
pub(super) const PART_STATE: u8 = 2;
/// Ledger entries, numbered down so that the newest is next to the states; the value is a
/// [`LedgerRow`](super::codec::LedgerRow).
pub(super) const PART_LEDGER: u8 = 3;

/// The history row of the event at `seconds` with sequence number `seq`.
pub(super) fn history_key<'a>(
    tenant: &'a str,
    customer: &'a str,
    (seconds, seq): (i64, u64),
) -> CustomerKey<'a> {
    (tenant, customer, PART_HISTORY, seconds, seq, "")
}

pub(super) fn record_key<'a>(tenant: &'a str, customer: &'a str) -> CustomerKey<'a> {
    (tenant, customer, PART_RECORD, 0, 0, "")
}

pub(super) fn state_key<'a>(
    tenant: &'a str,
    customer: &'a str,
    plugin: &'a str,
) -> CustomerKey<'a> {
    (tenant, customer, PART_STATE, 0, 0, plugin)
}

/// The ledger row of entry `seq`.
pub(super) fn ledger_key<'a>(tenant: &'a str, customer: &'a str, seq: u64) -> CustomerKey<'a> {
    (tenant, customer, PART_LEDGER, 0, u64::MAX - seq, "")
}

/// The entry seq of a ledger row's key number.
pub(super) fn ledger_seq(number: u64) -> u64 {
    u64::MAX - number
}
