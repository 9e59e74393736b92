//! The embedded [`Store`]: one redb file.
//!
//! # Tables
//!
//! Every key is a redb tuple whose first element is the tenant, so a tenant's data is
//! contiguous and redb compares keys element by element (numbers numerically, strings
//! bytewise) without any hand-made key encoding to get wrong. Two global tables are the
//! exception, because they are how a request finds its tenant: `meta` and `tenant_keys`.
//!
//! | table             | key                                      | value                      |
//! |-------------------|------------------------------------------|----------------------------|
//! | `meta`            | name (`format`, `admin_key_hash`)        | bytes                      |
//! | `tenants`         | tenant                                   | JSON [`TenantRecord`]      |
//! | `tenant_keys`     | API key hash (32 bytes)                  | tenant                     |
//! | `tenant_key_hash` | tenant                                   | API key hash (32 bytes)    |
//! | `event_types`     | (tenant, event type id)                  | JSON [`EventTypeRecord`]   |
//! | `plugins`         | (tenant, plugin)                         | JSON [`PluginRecord`]      |
//! | `plugin_wasm`     | (tenant, plugin, version)                | wasm module bytes          |
//! | `customer_data`   | (tenant, customer, part, ...), see below | by part                    |
//! | `sequences`       | (tenant, `event` / `ledger` / `outbox`)  | last number assigned       |
//! | `events`          | (tenant, event id)                       | LZ4'd JSON [`StoredEvent`] |
//! | `outbox`          | (tenant, seq)                            | JSON [`OutboxTrigger`]     |
//!
//! Events are stored once, under their id, which is what makes posting idempotent.
//!
//! `customer_data` holds everything of a customer that an event changes, in four parts of
//! one key range ([`CustomerKey`]): the history index (by event time, so a time window is one
//! range scan; it carries the action so that an action filter reads no event it then drops),
//! the [`CustomerRecord`], each plugin's state, and the ledger (numbered down). What one event
//! writes (a history row, usually the newest; the record; the states; the newest ledger
//! entries) is thus adjacent, often one leaf page and otherwise two (once a customer's rows
//! span several leaves, a split can fall between the states and the ledger). That matters
//! because under load a batch's commit is mostly writing, checksumming and freeing every
//! page the batch touched, and the customers of a batch are spread over the file: one dirty
//! leaf per event per table. Format 3 kept the history and the ledger in tables of their
//! own, three leaves an event; measured on the ingest bench, format 3 wrote 20.8 KiB an
//! event, format 4 16.2 (and a build that wrote no history or ledger at all 11.8). Formats 1
//! and 2 spread records and states over two more tables. Opening a file of an older format
//! migrates it, in the transaction that opens it, and then compacts the file.
//!
//! # Encoding
//!
//! Records are JSON. They carry `serde_json::Value` (event data, plugin config and state,
//! schemas), which only a self-describing format round-trips; JSON keeps records readable
//! with any redb dump and lets fields be added with `#[serde(default)]`. The cost, a few
//! hundred bytes and microseconds per event, is small beside the fsync each batch pays.
//! The two kinds of row every event adds to a customer's key range are the exception: history
//! rows and ledger entries are small binary layouts ([`encode_history`], [`LedgerRow`]),
//! because their size decides how many leaves a customer spans and so how many pages each
//! commit writes (format 5's binary ledger: ~1.5 KiB less written an event). Event rows are
//! JSON compressed with LZ4 ([`encode_event_row`]): an event is written once and read by id,
//! and its rows are most of the bytes a commit writes (format 6: ~2.4 KiB less written an
//! event); any redb dump still reads them with one LZ4 call. Keys, which decide order, are
//! native redb types. `meta.format` records the layout version so that a
//! later layout can refuse or migrate an older file instead of misreading it.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use ::redb::{
    Builder, Database, Key, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, Table,
    TableDefinition, WriteTransaction,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tally_sdk::{Customer, Decision, PointKind, Points, Timestamp};

use super::{
    AppendEvent, Appended, BatchRead, BatchTxn, CustomerRecord, EventQuery, EventTypeRecord,
    LedgerEntry, OnError, OutboxTrigger, Page, PluginRecord, PluginVersion, RawJson, Store,
    StoreError, StoredEvent, TenantRecord,
};

/// The layout version this build writes and reads. 2: `plugin_state` keyed by customer
/// before plugin. 3: customer records and plugin states in one table, `customer_rows`.
/// 4: that table, `customer_events` and `ledger` in one, `customer_data`. 5: ledger rows in
/// a binary layout ([`LedgerRow`]) instead of JSON. 6: events compressed ([`encode_event_row`]).
const FORMAT_VERSION: u32 = 6;

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const TENANTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tenants");
const TENANT_KEYS: TableDefinition<'_, &[u8; 32], &str> = TableDefinition::new("tenant_keys");
const TENANT_KEY_HASH: TableDefinition<'_, &str, &[u8; 32]> =
    TableDefinition::new("tenant_key_hash");
const EVENT_TYPES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("event_types");
const PLUGINS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("plugins");
const PLUGIN_WASM: TableDefinition<'_, (&str, &str, u32), &[u8]> =
    TableDefinition::new("plugin_wasm");
/// Everything of a customer that an event changes, in one key range: history, record,
/// plugin states, ledger (see [`CustomerKey`]).
const CUSTOMER_DATA: TableDefinition<'_, CustomerKey<'_>, &[u8]> =
    TableDefinition::new("customer_data");
const SEQUENCES: TableDefinition<'_, (&str, &str), u64> = TableDefinition::new("sequences");
const EVENTS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("events");
const OUTBOX: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("outbox");

const META_FORMAT: &str = "format";
const META_ADMIN_KEY_HASH: &str = "admin_key_hash";

const SEQ_EVENT: &str = "event";
const SEQ_LEDGER: &str = "ledger";
const SEQ_OUTBOX: &str = "outbox";

/// A key of `customer_data`: (tenant, customer, part, time, number, plugin). The parts are
/// ordered so that what one event writes sits together, at the newest end of the history and
/// the newest end of the ledger with the record and the states between them:
///
/// | part | rows, in key order | time | number | plugin |
/// |---|---|---|---|---|
/// | [`PART_HISTORY`] | one per event, oldest first | unix seconds | event seq | `""` |
/// | [`PART_RECORD`] | the [`CustomerRecord`] | 0 | 0 | `""` |
/// | [`PART_STATE`] | one per plugin with a state | 0 | 0 | the plugin |
/// | [`PART_LEDGER`] | one per entry, newest first | 0 | `u64::MAX - seq` | `""` |
type CustomerKey<'a> = (&'a str, &'a str, u8, i64, u64, &'a str);
/// The customer's events by event time; the value is (action, event id), see
/// [`encode_history`].
const PART_HISTORY: u8 = 0;
const PART_RECORD: u8 = 1;
const PART_STATE: u8 = 2;
/// Ledger entries, numbered down so that the newest is next to the states.
const PART_LEDGER: u8 = 3;

fn history_key<'a>(
    tenant: &'a str,
    customer: &'a str,
    (seconds, seq): (i64, u64),
) -> CustomerKey<'a> {
    (tenant, customer, PART_HISTORY, seconds, seq, "")
}

fn record_key<'a>(tenant: &'a str, customer: &'a str) -> CustomerKey<'a> {
    (tenant, customer, PART_RECORD, 0, 0, "")
}

fn state_key<'a>(tenant: &'a str, customer: &'a str, plugin: &'a str) -> CustomerKey<'a> {
    (tenant, customer, PART_STATE, 0, 0, plugin)
}

fn ledger_key<'a>(tenant: &'a str, customer: &'a str, seq: u64) -> CustomerKey<'a> {
    (tenant, customer, PART_LEDGER, 0, u64::MAX - seq, "")
}

/// A history row's value: the action's length (4 bytes, little-endian), the action, the event
/// id. The action is there so that an action filter reads no event it then drops.
fn encode_history(action: &str, id: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + action.len() + id.len());
    bytes.extend_from_slice(&len_u32(action.len()).to_le_bytes());
    bytes.extend_from_slice(action.as_bytes());
    bytes.extend_from_slice(id.as_bytes());
    bytes
}

/// (action, event id) of a history row; `None` when the bytes are not one.
fn decode_history(bytes: &[u8]) -> Option<(&str, &str)> {
    let (length, rest) = bytes.split_first_chunk::<4>()?;
    let length = usize::try_from(u32::from_le_bytes(*length)).ok()?;
    let (action, id) = (rest.get(..length)?, rest.get(length..)?);
    Some((
        std::str::from_utf8(action).ok()?,
        std::str::from_utf8(id).ok()?,
    ))
}

/// An event row's value: [`EVENT_ROW_LZ4`], the length of the event's JSON (4 bytes,
/// little-endian), the JSON compressed in LZ4's block format.
///
/// Compressed because the events table is most of the bytes a commit writes: a checkout as
/// the ingest bench posts it is ~1,800 bytes of JSON (its attributes ~200, the data as
/// posted ~1,000, the outcome ~550) and ~800 compressed, for ~2 µs. Events are appended in id order
/// more or less, so their rows fill leaves one after another and halving a row halves the
/// event leaves a batch writes. Measured on the ingest bench, six interleaved pairs (30,000
/// events, 128 connections): 5,915 against 5,516 events/s without (+7.2%, faster in 6 of 6),
/// host CPU 261.8 against 276.8 µs an event, 11.6-11.7 KiB written to disk an event against
/// 14.0-14.1. zstd (level 1) makes ~600 bytes but costs ~18 µs an event, more than the
/// pages it saves.
fn encode_event_row(json: &[u8]) -> Result<Vec<u8>, StoreError> {
    let length = u32::try_from(json.len()).map_err(|_| {
        StoreError::Invalid(format!(
            "an event of {} bytes is larger than the {} a row can hold",
            json.len(),
            u32::MAX
        ))
    })?;
    let mut bytes = vec![0; 5 + lz4_flex::block::get_maximum_output_size(json.len())];
    bytes[0] = EVENT_ROW_LZ4;
    bytes[1..5].copy_from_slice(&length.to_le_bytes());
    let compressed = lz4_flex::block::compress_into(json, &mut bytes[5..]).map_err(|why| {
        StoreError::Invalid(format!(
            "an event of {} bytes does not compress: {why}",
            json.len()
        ))
    })?;
    bytes.truncate(5 + compressed);
    Ok(bytes)
}

/// The event JSON of an event row; `None` when the bytes are not one.
fn decode_event_row(bytes: &[u8]) -> Option<Vec<u8>> {
    let (&[version], rest) = bytes.split_first_chunk::<1>()?;
    if version != EVENT_ROW_LZ4 {
        return None;
    }
    let (length, compressed) = rest.split_first_chunk::<4>()?;
    let length = usize::try_from(u32::from_le_bytes(*length)).ok()?;
    // LZ4 turns no byte into more than 255, so a longer length is a damaged row; refusing it
    // keeps a damaged length from allocating up to 4 GiB.
    if length > compressed.len().saturating_mul(255) {
        return None;
    }
    let mut json = vec![0; length];
    let written = lz4_flex::block::decompress_into(compressed, &mut json).ok()?;
    (written == length).then_some(json)
}

/// The first byte of an event row: a later layout takes the next number, and a JSON row
/// (formats 1 to 5) starts with `{`, so neither is mistaken for this one.
const EVENT_ROW_LZ4: u8 = 1;

/// A ledger row's value, what a [`LedgerEntry`] holds but its seq (the key has it).
///
/// Binary rather than JSON because the ledger is most of what a customer's key range grows
/// by: an entry was ~200 bytes of JSON (field names, the seq, RFC 3339 times) and is ~50
/// here, so a customer's rows span fewer leaves and a commit writes fewer pages. Measured on
/// the ingest bench, six interleaved pairs each (30,000 events, 128 connections): against
/// JSON, a first version of this layout with fixed-width numbers ran 7,888 against 7,518
/// events/s (+4.9%, host CPU 191.7 against 203.2 µs an event) and wrote 14.5-14.7 KiB an
/// event against 15.5-15.8; LEB128 numbers then wrote 14.2-14.5 at the same speed (8,242
/// against 8,078, noise). A throwaway build that stored 8 bytes an entry bounds what is left:
/// 14.0-14.3 KiB.
///
/// Layout: the layout's version byte ([`LEDGER_ROW_V1`]), the kind (0 earn, 1 reverse, 2
/// spend), whether it expires (0 or 1); the amount, balance after, lifetime after, the
/// event's time and, when it expires, the expiry (unix seconds), each signed LEB128; the
/// event id and the plugin, each after its length in bytes (unsigned LEB128); the reason, to
/// the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LedgerRow<'a> {
    event_id: &'a str,
    plugin: &'a str,
    amount: i64,
    kind: PointKind,
    reason: &'a str,
    expires_at: Option<Timestamp>,
    balance_after: i64,
    lifetime_after: i64,
    at: Timestamp,
}

/// The first byte of a [`LedgerRow`]: a later layout takes the next number, and a JSON row
/// (format 4) starts with `{`, so neither is mistaken for this one.
const LEDGER_ROW_V1: u8 = 1;

impl<'a> LedgerRow<'a> {
    fn encode(&self) -> Vec<u8> {
        let strings = self.event_id.len() + self.plugin.len() + self.reason.len();
        let mut bytes = Vec::with_capacity(3 + 5 * 10 + 2 * 10 + strings);
        bytes.push(LEDGER_ROW_V1);
        bytes.push(match self.kind {
            PointKind::Earn => 0,
            PointKind::Reverse => 1,
            PointKind::Spend => 2,
        });
        bytes.push(u8::from(self.expires_at.is_some()));
        let numbers = [
            self.amount,
            self.balance_after,
            self.lifetime_after,
            self.at.unix_seconds(),
        ];
        let expiry = self.expires_at.map(Timestamp::unix_seconds);
        for number in numbers.into_iter().chain(expiry) {
            // Cannot fail: any i64 fits in 64 bits.
            if let Some((encoded, length)) = leb128fmt::encode_s64(number) {
                bytes.extend_from_slice(&encoded[..length]);
            }
        }
        for text in [self.event_id, self.plugin] {
            // Cannot fail: any usize fits in 64 bits.
            if let Some((encoded, length)) = leb128fmt::encode_u64(len_u64(text.len())) {
                bytes.extend_from_slice(&encoded[..length]);
            }
            bytes.extend_from_slice(text.as_bytes());
        }
        bytes.extend_from_slice(self.reason.as_bytes());
        bytes
    }

    /// The row in `bytes`; `None` when they are not one.
    fn decode(bytes: &'a [u8]) -> Option<LedgerRow<'a>> {
        let (&[version, kind, expires], _) = bytes.split_first_chunk::<3>()?;
        if version != LEDGER_ROW_V1 {
            return None;
        }
        let mut position = 3;
        let number =
            |position: &mut usize| leb128fmt::decode_sint_slice::<i64, 64>(bytes, position).ok();
        let (amount, balance_after) = (number(&mut position)?, number(&mut position)?);
        let (lifetime_after, seconds) = (number(&mut position)?, number(&mut position)?);
        let expires_at = match expires {
            0 => None,
            1 => Some(Timestamp::from_unix_seconds(number(&mut position)?)),
            _ => return None,
        };
        let text = |position: &mut usize| -> Option<&'a str> {
            let length = leb128fmt::decode_uint_slice::<u64, 64>(bytes, position).ok()?;
            let end = position.checked_add(usize::try_from(length).ok()?)?;
            let text = std::str::from_utf8(bytes.get(*position..end)?).ok()?;
            *position = end;
            Some(text)
        };
        let (event_id, plugin) = (text(&mut position)?, text(&mut position)?);
        Some(LedgerRow {
            event_id,
            plugin,
            amount,
            kind: match kind {
                0 => PointKind::Earn,
                1 => PointKind::Reverse,
                2 => PointKind::Spend,
                _ => return None,
            },
            reason: std::str::from_utf8(bytes.get(position..)?).ok()?,
            expires_at,
            balance_after,
            lifetime_after,
            at: Timestamp::from_unix_seconds(seconds),
        })
    }

    /// The row of a format-4 entry, whose times are RFC 3339 text; `None` when a time is not.
    fn of_entry(entry: &'a LedgerEntry) -> Option<LedgerRow<'a>> {
        Some(LedgerRow {
            event_id: &entry.event_id,
            plugin: &entry.plugin,
            amount: entry.amount,
            kind: entry.kind,
            reason: &entry.reason,
            expires_at: match &entry.expires_at {
                Some(text) => Some(text.parse().ok()?),
                None => None,
            },
            balance_after: entry.balance_after,
            lifetime_after: entry.lifetime_after,
            at: entry.at.parse().ok()?,
        })
    }

    fn into_entry(self, seq: u64) -> LedgerEntry {
        LedgerEntry {
            seq,
            event_id: self.event_id.to_owned(),
            plugin: self.plugin.to_owned(),
            amount: self.amount,
            kind: self.kind,
            reason: self.reason.to_owned(),
            expires_at: self.expires_at.map(|at| at.to_string()),
            balance_after: self.balance_after,
            lifetime_after: self.lifetime_after,
            at: self.at.to_string(),
        }
    }
}

/// The [`Store`] on one redb file.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
}

/// redb's own default for its page cache, kept as the store's default.
pub const DEFAULT_CACHE_BYTES: usize = 1 << 30;

impl RedbStore {
    /// Opens the store at `path` with the default page cache, creating the file when there is
    /// none.
    pub fn open(path: impl AsRef<Path>) -> Result<RedbStore, StoreError> {
        RedbStore::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store at `path` with a page cache of at most `cache_bytes`, creating the file
    /// when there is none.
    pub fn open_with_cache(
        path: impl AsRef<Path>,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        let path = path.as_ref();
        let mut db = Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|why| StoreError::backend(format!("cannot open {}: {why}", path.display())))?;
        let txn = db.begin_write()?;
        let mut migrated = false;
        {
            // Creating every table up front means a read never meets a missing table.
            let mut meta = txn.open_table(META)?;
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
            let found = match meta.get(META_FORMAT)? {
                None => None,
                Some(bytes) => Some(read_u32(bytes.value()).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "meta.format is {} bytes long, not 4",
                        bytes.value().len()
                    ))
                })?),
            };
            match found {
                None => {
                    meta.insert(META_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
                }
                Some(FORMAT_VERSION) => {}
                Some(old @ (1..=5)) => {
                    if old == 1 {
                        migration::rekey_plugin_state(&txn)?;
                    }
                    if old <= 2 {
                        migration::merge_customer_rows(&txn)?;
                    }
                    if old <= 3 {
                        migration::merge_customer_data(&txn)?;
                    }
                    if old <= 4 {
                        migration::compact_ledger(&txn)?;
                    }
                    migration::compress_events(&txn)?;
                    meta.insert(META_FORMAT, FORMAT_VERSION.to_le_bytes().as_slice())?;
                    migrated = true;
                    tracing::info!(
                        path = %path.display(),
                        "storage format {old} migrated to {FORMAT_VERSION}"
                    );
                }
                Some(other) => {
                    return Err(StoreError::backend(format!(
                        "{} has storage format {other}; this build reads format {FORMAT_VERSION}",
                        path.display()
                    )));
                }
            }
        }
        txn.commit()?;
        if migrated {
            // A migration rewrites rows in one transaction, so none of the pages it frees can
            // be reused before it commits: the file ends up about twice the size of its data
            // (measured: 301,000 events of format 5, 1.1 GB, grew to 2.3 GB in a 4 s migration).
            // Compacting gives that back, once (10 s more there, to 1.06 GB). It only moves
            // committed pages, so a failure costs space, not data.
            let before = file_len(path);
            match db.compact() {
                Ok(_) => tracing::info!(
                    path = %path.display(),
                    bytes_before = before,
                    bytes_after = file_len(path),
                    "compacted the store after migrating it"
                ),
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    %error,
                    "could not compact the store after migrating it; it keeps its free space"
                ),
            }
        }
        Ok(RedbStore { db })
    }

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// Runs `work` in its own write transaction and commits it. redb's default durability,
    /// `Immediate`, is kept: `Ok` means fsync'd.
    fn write<T>(
        &self,
        work: impl FnOnce(&WriteTransaction) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_write()?;
        match work(&txn) {
            Ok(value) => {
                txn.commit()?;
                Ok(value)
            }
            Err(error) => {
                abort(txn);
                Err(error)
            }
        }
    }
}

/// The file's length for a log line, 0 when it cannot be read.
fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// Single-record reads on the store: each its own read transaction.
impl BatchRead for RedbStore {
    fn event(&self, tenant: &str, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let txn = self.read()?;
        get_event(&txn.open_table(EVENTS)?, tenant, id)
    }

    fn customer(&self, tenant: &str, id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        let txn = self.read()?;
        get_customer(&txn.open_table(CUSTOMER_DATA)?, tenant, id)
    }

    fn plugin_state(
        &self,
        tenant: &str,
        plugin: &str,
        customer: &str,
    ) -> Result<Option<RawJson>, StoreError> {
        let txn = self.read()?;
        get_plugin_state(&txn.open_table(CUSTOMER_DATA)?, tenant, plugin, customer)
    }
}

impl Store for RedbStore {
    fn create_tenant(
        &self,
        tenant: &TenantRecord,
        api_key_hash: [u8; 32],
    ) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut tenants = txn.open_table(TENANTS)?;
            let mut keys = txn.open_table(TENANT_KEYS)?;
            let mut key_hashes = txn.open_table(TENANT_KEY_HASH)?;
            if tenants.get(tenant.id.as_str())?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "tenant {} already exists",
                    tenant.id
                )));
            }
            if let Some(holder) = keys.get(&api_key_hash)? {
                return Err(StoreError::Conflict(format!(
                    "that API key is already the key of tenant {}",
                    holder.value()
                )));
            }
            let bytes = encode(tenant, || format!("tenant {}", tenant.id))?;
            tenants.insert(tenant.id.as_str(), bytes.as_slice())?;
            keys.insert(&api_key_hash, tenant.id.as_str())?;
            key_hashes.insert(tenant.id.as_str(), &api_key_hash)?;
            Ok(())
        })
    }

    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let txn = self.read()?;
        let tenants = txn.open_table(TENANTS)?;
        get_json(&tenants, id, || format!("tenant {id}"))
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let txn = self.read()?;
        let tenants = txn.open_table(TENANTS)?;
        let mut records = Vec::new();
        for row in tenants.iter()? {
            let (key, value) = row?;
            records.push(decode(value.value(), || format!("tenant {}", key.value()))?);
        }
        Ok(records)
    }

    fn tenant_by_key_hash(
        &self,
        api_key_hash: [u8; 32],
    ) -> Result<Option<TenantRecord>, StoreError> {
        let txn = self.read()?;
        let keys = txn.open_table(TENANT_KEYS)?;
        let Some(holder) = keys.get(&api_key_hash)? else {
            return Ok(None);
        };
        let tenants = txn.open_table(TENANTS)?;
        let id = holder.value();
        match get_json(&tenants, id, || format!("tenant {id}"))? {
            Some(tenant) => Ok(Some(tenant)),
            None => Err(StoreError::Corrupt(format!(
                "an API key belongs to tenant {id}, which does not exist"
            ))),
        }
    }

    fn update_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError> {
        self.write(|txn| {
            let mut tenants = txn.open_table(TENANTS)?;
            if tenants.get(tenant.id.as_str())?.is_none() {
                return Err(no_tenant(&tenant.id));
            }
            let bytes = encode(tenant, || format!("tenant {}", tenant.id))?;
            tenants.insert(tenant.id.as_str(), bytes.as_slice())?;
            Ok(())
        })
    }

    fn set_tenant_key_hash(&self, tenant: &str, api_key_hash: [u8; 32]) -> Result<(), StoreError> {
        self.write(|txn| {
            let tenants = txn.open_table(TENANTS)?;
            let mut keys = txn.open_table(TENANT_KEYS)?;
            let mut key_hashes = txn.open_table(TENANT_KEY_HASH)?;
            if tenants.get(tenant)?.is_none() {
                return Err(no_tenant(tenant));
            }
            if let Some(holder) = keys.get(&api_key_hash)?
                && holder.value() != tenant
            {
                return Err(StoreError::Conflict(format!(
                    "that API key is already the key of tenant {}",
                    holder.value()
                )));
            }
            let old = key_hashes.get(tenant)?.map(|hash| *hash.value());
            if let Some(old) = old {
                keys.remove(&old)?;
            }
            keys.insert(&api_key_hash, tenant)?;
            key_hashes.insert(tenant, &api_key_hash)?;
            Ok(())
        })
    }

    fn admin_key_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META)?;
        let Some(bytes) = meta.get(META_ADMIN_KEY_HASH)? else {
            return Ok(None);
        };
        let hash = <[u8; 32]>::try_from(bytes.value()).map_err(|_| {
            StoreError::Corrupt(format!(
                "meta.admin_key_hash is {} bytes long, not 32",
                bytes.value().len()
            ))
        })?;
        Ok(Some(hash))
    }

    fn set_admin_key_hash(&self, hash: [u8; 32]) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(META)?
                .insert(META_ADMIN_KEY_HASH, hash.as_slice())?;
            Ok(())
        })
    }

    fn put_event_type(&self, tenant: &str, event_type: &EventTypeRecord) -> Result<(), StoreError> {
        self.write(|txn| {
            require_tenant(&txn.open_table(TENANTS)?, tenant)?;
            let what = || format!("event type {} of tenant {tenant}", event_type.id);
            let bytes = encode(event_type, what)?;
            txn.open_table(EVENT_TYPES)?
                .insert((tenant, event_type.id.as_str()), bytes.as_slice())?;
            Ok(())
        })
    }

    fn event_type(&self, tenant: &str, id: &str) -> Result<Option<EventTypeRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(EVENT_TYPES)?;
        get_json(&table, (tenant, id), || {
            format!("event type {id} of tenant {tenant}")
        })
    }

    fn event_types(&self, tenant: &str) -> Result<Vec<EventTypeRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(EVENT_TYPES)?;
        tenant_records(&table, tenant, "event type")
    }

    fn add_plugin_version(
        &self,
        tenant: &str,
        name: &str,
        wasm: &[u8],
        sha256: &str,
        uploaded_at: &str,
    ) -> Result<PluginRecord, StoreError> {
        let actual = hex::encode(Sha256::digest(wasm));
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(StoreError::Invalid(format!(
                "plugin {name} of tenant {tenant}: sha256 {sha256} was given for a \
                 {}-byte module whose sha256 is {actual}",
                wasm.len()
            )));
        }
        self.write(|txn| {
            require_tenant(&txn.open_table(TENANTS)?, tenant)?;
            let mut plugins = txn.open_table(PLUGINS)?;
            let what = || format!("plugin {name} of tenant {tenant}");
            let mut record = get_json(&plugins, (tenant, name), what)?.unwrap_or_else(|| {
                PluginRecord {
                    name: name.to_owned(),
                    versions: Vec::new(),
                    active_version: 0,
                    config: Value::Null,
                    actions: None,
                    priority: 0,
                    enabled: true,
                    on_error: OnError::Skip,
                }
            });
            let last = record.versions.iter().map(|v| v.version).max().unwrap_or(0);
            let version = last.checked_add(1).ok_or_else(|| {
                StoreError::Invalid(format!(
                    "plugin {name} of tenant {tenant} already has version {last}, the last there can be"
                ))
            })?;
            record.versions.push(PluginVersion {
                version,
                sha256: actual.clone(),
                size: u64::try_from(wasm.len()).unwrap_or(u64::MAX),
                uploaded_at: uploaded_at.to_owned(),
            });
            record.active_version = version;
            let bytes = encode(&record, what)?;
            plugins.insert((tenant, name), bytes.as_slice())?;
            txn.open_table(PLUGIN_WASM)?
                .insert((tenant, name, version), wasm)?;
            Ok(record)
        })
    }

    fn update_plugin(&self, tenant: &str, plugin: &PluginRecord) -> Result<(), StoreError> {
        let name = plugin.name.as_str();
        self.write(|txn| {
            let mut plugins = txn.open_table(PLUGINS)?;
            let what = || format!("plugin {name} of tenant {tenant}");
            let Some(stored) = get_json::<_, PluginRecord>(&plugins, (tenant, name), what)? else {
                return Err(StoreError::NotFound(format!(
                    "tenant {tenant} has no plugin {name}"
                )));
            };
            if plugin.versions != stored.versions {
                return Err(StoreError::Invalid(format!(
                    "plugin {name} of tenant {tenant}: versions are added by uploading, not \
                     by an update ({} stored, {} given)",
                    stored.versions.len(),
                    plugin.versions.len()
                )));
            }
            if plugin.active().is_none() {
                return Err(StoreError::Invalid(format!(
                    "plugin {name} of tenant {tenant} has no version {}; it has versions 1 to {}",
                    plugin.active_version,
                    stored.versions.len()
                )));
            }
            let bytes = encode(plugin, what)?;
            plugins.insert((tenant, name), bytes.as_slice())?;
            Ok(())
        })
    }

    fn plugin(&self, tenant: &str, name: &str) -> Result<Option<PluginRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(PLUGINS)?;
        get_json(&table, (tenant, name), || {
            format!("plugin {name} of tenant {tenant}")
        })
    }

    fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(PLUGINS)?;
        let mut records: Vec<PluginRecord> = tenant_records(&table, tenant, "plugin")?;
        records.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        Ok(records)
    }

    fn plugin_wasm(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.read()?;
        let table = txn.open_table(PLUGIN_WASM)?;
        Ok(table
            .get((tenant, name, version))?
            .map(|bytes| bytes.value().to_vec()))
    }

    fn customer_events(
        &self,
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
        // Positions are (unix seconds, seq); seq starts at 1, so (t, 0) sits just before
        // every event at second t.
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
        let key = |at: (i64, u64)| history_key(tenant, customer, at);
        let bounds = (map_bound(lower, key), map_bound(upper, key));

        let txn = self.read()?;
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
                    "the history of customer {customer} of tenant {tenant} has an unreadable \
                     row for seq {seq} ({} bytes)",
                    value.value().len()
                ))
            })?;
            if let Some(actions) = &query.actions
                && !actions.iter().any(|wanted| wanted == action)
            {
                continue;
            }
            if page.items.len() == query.limit {
                // One more match exists, so there is a next page; it starts after the last
                // item of this one.
                page.next_cursor = last.map(cursor::encode_event);
                break;
            }
            let event = get_event(&events, tenant, id)?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "the history of customer {customer} of tenant {tenant} lists event {id} \
                     (seq {seq}), which does not exist"
                ))
            })?;
            page.items.push(event);
            last = Some((seconds, seq));
        }
        Ok(page)
    }

    fn ledger(
        &self,
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
        // Entries are numbered down, so the oldest first is the range backwards, and "after
        // seq" is the range's upper end.
        let oldest = match after {
            Some(seq) => Bound::Excluded(ledger_key(tenant, customer, seq)),
            None => Bound::Included(ledger_key(tenant, customer, 0)),
        };
        let newest = Bound::Included(ledger_key(tenant, customer, u64::MAX));
        let txn = self.read()?;
        let table = txn.open_table(CUSTOMER_DATA)?;
        for row in table.range::<CustomerKey<'_>>((newest, oldest))?.rev() {
            let (key, value) = row?;
            let (_, _, _, _, number, _) = key.value();
            let seq = u64::MAX - number;
            if page.items.len() == limit {
                page.next_cursor = page.items.last().map(|e| cursor::encode_ledger(e.seq));
                break;
            }
            let row = LedgerRow::decode(value.value()).ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "ledger entry {seq} of customer {customer} of tenant {tenant} does not \
                     decode ({} bytes)",
                    value.value().len()
                ))
            })?;
            page.items.push(row.into_entry(seq));
        }
        Ok(page)
    }

    fn outbox(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<OutboxTrigger>, StoreError> {
        let mut triggers = Vec::new();
        let txn = self.read()?;
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

    fn read_batch(
        &self,
        work: &mut dyn FnMut(&dyn BatchRead) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.read()?;
        let snapshot = RedbSnapshot {
            events: txn.open_table(EVENTS)?,
            customer_data: txn.open_table(CUSTOMER_DATA)?,
        };
        work(&snapshot)
    }

    fn write_batch(
        &self,
        work: &mut dyn FnMut(&mut dyn BatchTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        let outcome = RedbBatch::open(&txn).and_then(|mut batch| {
            work(&mut batch)?;
            match batch.poisoned.take() {
                Some(error) => Err(error),
                None => batch.finish(),
            }
        });
        match outcome {
            Ok(()) => {
                // One fsync for the whole batch: this is where group commit pays off.
                txn.commit()?;
                Ok(())
            }
            Err(error) => {
                abort(txn);
                Err(error)
            }
        }
    }
}

/// One group-commit write transaction, with its tables opened once for the whole batch.
struct RedbBatch<'txn> {
    tenants: Table<'txn, &'static str, &'static [u8]>,
    sequences: Table<'txn, (&'static str, &'static str), u64>,
    events: Table<'txn, (&'static str, &'static str), &'static [u8]>,
    customer_data: Table<'txn, CustomerKey<'static>, &'static [u8]>,
    outbox: Table<'txn, (&'static str, u64), &'static [u8]>,
    /// Set when a write failed halfway through an append: the transaction then holds part of
    /// an event, so it must not commit, whatever `work` does with the error.
    poisoned: Option<StoreError>,
    /// The sequences as this batch has moved them, written back once before the commit
    /// rather than read and written on every append.
    sequence_cache: HashMap<(String, &'static str), u64>,
    /// Tenants this batch has found to exist.
    known_tenants: HashSet<String>,
}

/// The part of a stored [`CustomerRecord`] an append's checks compare with: decoding only
/// this skips the rest of the record (stats, attributes, contact card) without building it.
#[derive(Deserialize)]
struct StoredCounters {
    customer: StoredPoints,
    event_count: u64,
}

#[derive(Deserialize)]
struct StoredPoints {
    points: Points,
}

/// What an append's checks worked out, for its writes.
struct Checked {
    /// Balance and lifetime after each ledger entry.
    points_after: Vec<Points>,
}

impl<'txn> RedbBatch<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<RedbBatch<'txn>, StoreError> {
        Ok(RedbBatch {
            tenants: txn.open_table(TENANTS)?,
            sequences: txn.open_table(SEQUENCES)?,
            events: txn.open_table(EVENTS)?,
            customer_data: txn.open_table(CUSTOMER_DATA)?,
            outbox: txn.open_table(OUTBOX)?,
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

    /// Every check of an append; reads only.
    fn check(&self, append: &AppendEvent) -> Result<Checked, StoreError> {
        let tenant = append.tenant.as_str();
        let event = &append.event;
        let customer_id = event.customer.as_str();
        if !self.known_tenants.contains(tenant) {
            require_tenant(&self.tenants, tenant)?;
        }
        if let Some(existing) = get_event(&self.events, tenant, &event.id)? {
            return Err(StoreError::Conflict(format!(
                "event {} of tenant {tenant} already exists (seq {})",
                event.id, existing.seq
            )));
        }
        if append.customer.customer.id != customer_id {
            return Err(StoreError::Inconsistent(format!(
                "event {} of tenant {tenant} is for customer {customer_id}, but the new \
                 customer state is for customer {}",
                event.id, append.customer.customer.id
            )));
        }
        let previous: Option<StoredCounters> =
            get_customer(&self.customer_data, tenant, customer_id)?;
        let (count_before, points_before) = previous.map_or((0, Points::default()), |p| {
            (p.event_count, p.customer.points)
        });
        let count_expected = count_before.saturating_add(1);
        if append.customer.event_count != count_expected {
            return Err(StoreError::Inconsistent(format!(
                "customer {customer_id} of tenant {tenant} has {count_before} events stored, so \
                 after event {} the count must be {count_expected}, not {}",
                event.id, append.customer.event_count
            )));
        }
        let points_after = replay(points_before, append);
        let expected = points_after.last().copied().unwrap_or(points_before);
        let given = append.customer.customer.points;
        if given != expected {
            return Err(StoreError::Inconsistent(format!(
                "customer {customer_id} of tenant {tenant} has balance {} and lifetime {} \
                 stored; event {}'s {} ledger entries take them to balance {} and lifetime {}, \
                 but the new customer state says balance {} and lifetime {}",
                points_before.balance,
                points_before.lifetime,
                event.id,
                append.ledger.len(),
                expected.balance,
                expected.lifetime,
                given.balance,
                given.lifetime
            )));
        }
        let net = append
            .ledger
            .iter()
            .fold(0_i64, |sum, new| sum.saturating_add(new.entry.amount));
        if event.points != net {
            return Err(StoreError::Inconsistent(format!(
                "event {} of tenant {tenant} says it moved {} points, but its {} ledger entries \
                 sum to {net}",
                event.id,
                event.points,
                append.ledger.len()
            )));
        }
        Ok(Checked { points_after })
    }

    /// Every write of an append, after its checks passed.
    fn write(&mut self, append: AppendEvent, checked: Checked) -> Result<Appended, StoreError> {
        let AppendEvent {
            tenant,
            mut event,
            customer,
            ledger,
            plugin_states,
            triggers,
        } = append;
        let tenant = tenant.as_str();
        // Owned, because `event` is changed (its seq) while the id is in use.
        let customer_id = event.customer.clone();
        let customer_id = customer_id.as_str();

        event.seq = self.reserve(tenant, SEQ_EVENT, 1)?;
        let json = encode(&event, || format!("event {} of tenant {tenant}", event.id))?;
        let bytes = encode_event_row(&json)?;
        self.events
            .insert((tenant, event.id.as_str()), bytes.as_slice())?;
        self.customer_data.insert(
            history_key(
                tenant,
                customer_id,
                (event.timestamp.unix_seconds(), event.seq),
            ),
            encode_history(&event.action, &event.id).as_slice(),
        )?;
        let bytes = encode(&customer, || {
            format!("customer {customer_id} of tenant {tenant}")
        })?;
        self.customer_data
            .insert(record_key(tenant, customer_id), bytes.as_slice())?;

        let first = self.reserve(tenant, SEQ_LEDGER, len_u64(ledger.len()))?;
        for ((seq, new), after) in (first..).zip(&ledger).zip(checked.points_after) {
            let row = LedgerRow {
                event_id: &event.id,
                plugin: &new.plugin,
                amount: new.entry.amount,
                kind: new.entry.kind(),
                reason: &new.entry.reason,
                expires_at: new.entry.expires_at,
                balance_after: after.balance,
                lifetime_after: after.lifetime,
                at: event.timestamp,
            };
            self.customer_data.insert(
                ledger_key(tenant, customer_id, seq),
                row.encode().as_slice(),
            )?;
        }

        for (plugin, state) in plugin_states {
            let key = state_key(tenant, customer_id, plugin.as_str());
            match state {
                Some(state) => {
                    self.customer_data.insert(key, state.get().as_bytes())?;
                }
                None => {
                    self.customer_data.remove(key)?;
                }
            }
        }

        let first = self.reserve(tenant, SEQ_OUTBOX, len_u64(triggers.len()))?;
        for (seq, new) in (first..).zip(triggers) {
            let trigger = OutboxTrigger {
                seq,
                event_id: event.id.clone(),
                customer: customer_id.to_owned(),
                plugin: new.plugin,
                name: new.trigger.name,
                data: new.trigger.data,
            };
            let bytes = encode(&trigger, || {
                format!("outbox trigger {seq} of tenant {tenant}")
            })?;
            self.outbox.insert((tenant, seq), bytes.as_slice())?;
        }
        Ok(Appended { event, customer })
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

/// One read snapshot with the tables a batch reads opened once.
struct RedbSnapshot {
    events: ReadOnlyTable<(&'static str, &'static str), &'static [u8]>,
    customer_data: ReadOnlyTable<CustomerKey<'static>, &'static [u8]>,
}

impl BatchTxn for RedbBatch<'_> {
    fn append(&mut self, append: AppendEvent) -> Result<Appended, StoreError> {
        if let Some(error) = &self.poisoned {
            return Err(error.clone());
        }
        let checked = self.check(&append)?;
        if !self.known_tenants.contains(&append.tenant) {
            self.known_tenants.insert(append.tenant.clone());
        }
        self.write(append, checked).inspect_err(|error| {
            self.poisoned = Some(error.clone());
        })
    }
}

/// The points after each ledger entry of `append`, starting from `start`, moved by the same
/// rule the pipeline uses between plugins.
fn replay(start: Points, append: &AppendEvent) -> Vec<Points> {
    let mut customer = Customer {
        points: start,
        ..Customer::default()
    };
    append
        .ledger
        .iter()
        .map(|new| {
            customer.apply(&Decision {
                points: vec![new.entry.clone()],
                ..Decision::default()
            });
            customer.points
        })
        .collect()
}

fn get_event(
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

/// The customer record of (tenant, id), decoded as `T`: the whole [`CustomerRecord`], or
/// only the part a check needs.
fn get_customer<T: DeserializeOwned>(
    table: &impl ReadableTable<CustomerKey<'static>, &'static [u8]>,
    tenant: &str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    get_json(table, record_key(tenant, id), || {
        format!("customer {id} of tenant {tenant}")
    })
}

/// Moving an older file's rows to this layout, in the transaction that opens the file, so
/// that a crash leaves the file in its old format, as it was.
mod migration {
    use super::*;

    /// Format 2's customer records, (tenant, customer) -> JSON.
    const CUSTOMERS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new("customers");
    /// Format 1's and 2's plugin states: (tenant, plugin, customer) in format 1, (tenant,
    /// customer, plugin) in format 2.
    const PLUGIN_STATE: TableDefinition<'_, (&str, &str, &str), &[u8]> =
        TableDefinition::new("plugin_state");
    /// Format 3's customer records under (tenant, customer, [`CUSTOMER_RECORD`]) and plugin
    /// states under (tenant, customer, plugin).
    const CUSTOMER_ROWS: TableDefinition<'_, (&str, &str, &str), &[u8]> =
        TableDefinition::new("customer_rows");
    /// The third key part of a customer's record in format 3's `customer_rows`. Plugin names
    /// are never empty (the service refuses them), so no state can take its place.
    const CUSTOMER_RECORD: &str = "";
    /// Formats 1 to 3's history index: (tenant, customer, unix seconds, seq) -> (action, id).
    const CUSTOMER_EVENTS: TableDefinition<'_, (&str, &str, i64, u64), (&str, &str)> =
        TableDefinition::new("customer_events");
    /// Formats 1 to 3's ledger: (tenant, customer, seq) -> JSON entry.
    const LEDGER: TableDefinition<'_, (&str, &str, u64), &[u8]> = TableDefinition::new("ledger");

    /// Format 1 -> 2: `plugin_state` rows re-keyed from (tenant, plugin, customer) to
    /// (tenant, customer, plugin).
    pub(super) fn rekey_plugin_state(txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut table = txn.open_table(PLUGIN_STATE)?;
        let mut rows: Vec<((String, String, String), Vec<u8>)> = Vec::new();
        for row in table.iter()? {
            let (key, value) = row?;
            let (tenant, plugin, customer) = key.value();
            rows.push((
                (tenant.to_owned(), plugin.to_owned(), customer.to_owned()),
                value.value().to_vec(),
            ));
        }
        // Old and new keys share the table, so every old row goes before any new one is
        // written.
        for ((tenant, plugin, customer), _) in &rows {
            table.remove((tenant.as_str(), plugin.as_str(), customer.as_str()))?;
        }
        for ((tenant, plugin, customer), state) in &rows {
            table.insert(
                (tenant.as_str(), customer.as_str(), plugin.as_str()),
                state.as_slice(),
            )?;
        }
        Ok(())
    }

    /// Format 2 -> 3: the rows of `customers` and `plugin_state` moved into `customer_rows`,
    /// and the two tables deleted.
    pub(super) fn merge_customer_rows(txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut rows = txn.open_table(CUSTOMER_ROWS)?;
        {
            let customers = txn.open_table(CUSTOMERS)?;
            for row in customers.iter()? {
                let (key, value) = row?;
                let (tenant, customer) = key.value();
                rows.insert((tenant, customer, CUSTOMER_RECORD), value.value())?;
            }
            let states = txn.open_table(PLUGIN_STATE)?;
            for row in states.iter()? {
                let (key, value) = row?;
                let (tenant, customer, plugin) = key.value();
                if plugin == CUSTOMER_RECORD {
                    return Err(StoreError::Corrupt(format!(
                        "plugin_state holds a state of a plugin with no name, for customer \
                         {customer} of tenant {tenant}"
                    )));
                }
                rows.insert((tenant, customer, plugin), value.value())?;
            }
        }
        txn.delete_table(CUSTOMERS)?;
        txn.delete_table(PLUGIN_STATE)?;
        Ok(())
    }

    /// Format 3 -> 4: the rows of `customer_rows`, `customer_events` and `ledger` moved into
    /// `customer_data`, and the three tables deleted.
    pub(super) fn merge_customer_data(txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut data = txn.open_table(CUSTOMER_DATA)?;
        {
            let rows = txn.open_table(CUSTOMER_ROWS)?;
            for row in rows.iter()? {
                let (key, value) = row?;
                let (tenant, customer, name) = key.value();
                let key = if name == CUSTOMER_RECORD {
                    record_key(tenant, customer)
                } else {
                    state_key(tenant, customer, name)
                };
                data.insert(key, value.value())?;
            }
            let history = txn.open_table(CUSTOMER_EVENTS)?;
            for row in history.iter()? {
                let (key, value) = row?;
                let (tenant, customer, seconds, seq) = key.value();
                let (action, id) = value.value();
                data.insert(
                    history_key(tenant, customer, (seconds, seq)),
                    encode_history(action, id).as_slice(),
                )?;
            }
            let ledger = txn.open_table(LEDGER)?;
            for row in ledger.iter()? {
                let (key, value) = row?;
                let (tenant, customer, seq) = key.value();
                data.insert(ledger_key(tenant, customer, seq), value.value())?;
            }
        }
        txn.delete_table(CUSTOMER_ROWS)?;
        txn.delete_table(CUSTOMER_EVENTS)?;
        txn.delete_table(LEDGER)?;
        Ok(())
    }

    /// Format 4 -> 5: every ledger row of `customer_data` rewritten from JSON to a
    /// [`LedgerRow`].
    pub(super) fn compact_ledger(txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut data = txn.open_table(CUSTOMER_DATA)?;
        let mut rows: Vec<((String, String, u64), Vec<u8>)> = Vec::new();
        for row in data.iter()? {
            let (key, value) = row?;
            let (tenant, customer, part, _, number, _) = key.value();
            if part != PART_LEDGER {
                continue;
            }
            let seq = u64::MAX - number;
            let what = || format!("ledger entry {seq} of customer {customer} of tenant {tenant}");
            let entry: LedgerEntry = decode(value.value(), what)?;
            let row = LedgerRow::of_entry(&entry).ok_or_else(|| {
                StoreError::Corrupt(format!("{} has a time that is not RFC 3339", what()))
            })?;
            rows.push(((tenant.to_owned(), customer.to_owned(), seq), row.encode()));
        }
        for ((tenant, customer, seq), row) in &rows {
            data.insert(ledger_key(tenant, customer, *seq), row.as_slice())?;
        }
        Ok(())
    }

    /// How many event rows [`compress_events`] holds in memory at once: a file's events can
    /// be gigabytes, a chunk's are a few megabytes.
    const EVENTS_PER_CHUNK: usize = 4096;

    /// Formats 1 to 5 -> 6: every event row rewritten from JSON to [`encode_event_row`]'s
    /// layout. Rewriting a value keeps its key where it is, so the table is walked in key
    /// order a chunk at a time, each chunk starting after the last key rewritten.
    pub(super) fn compress_events(txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut events = txn.open_table(EVENTS)?;
        let mut after: Option<(String, String)> = None;
        loop {
            let lower = match &after {
                Some((tenant, id)) => Bound::Excluded((tenant.as_str(), id.as_str())),
                None => Bound::Unbounded,
            };
            let mut chunk: Vec<((String, String), Vec<u8>)> = Vec::new();
            for row in events
                .range::<(&str, &str)>((lower, Bound::Unbounded))?
                .take(EVENTS_PER_CHUNK)
            {
                let (key, value) = row?;
                let (tenant, id) = key.value();
                if value.value().first() != Some(&b'{') {
                    return Err(StoreError::Corrupt(format!(
                        "event {id} of tenant {tenant} is not the JSON of format 5 or older"
                    )));
                }
                chunk.push((
                    (tenant.to_owned(), id.to_owned()),
                    encode_event_row(value.value())?,
                ));
            }
            let Some((last, _)) = chunk.last() else {
                return Ok(());
            };
            let last = last.clone();
            for ((tenant, id), row) in &chunk {
                events.insert((tenant.as_str(), id.as_str()), row.as_slice())?;
            }
            after = Some(last);
        }
    }
}

fn get_plugin_state(
    table: &impl ReadableTable<CustomerKey<'static>, &'static [u8]>,
    tenant: &str,
    plugin: &str,
    customer: &str,
) -> Result<Option<RawJson>, StoreError> {
    get_json(table, state_key(tenant, customer, plugin), || {
        format!("state of plugin {plugin} for customer {customer} of tenant {tenant}")
    })
}

fn require_tenant(
    tenants: &impl ReadableTable<&'static str, &'static [u8]>,
    tenant: &str,
) -> Result<(), StoreError> {
    match tenants.get(tenant)? {
        Some(_) => Ok(()),
        None => Err(no_tenant(tenant)),
    }
}

fn no_tenant(tenant: &str) -> StoreError {
    StoreError::NotFound(format!("tenant {tenant} does not exist"))
}

/// The JSON record under `key`, decoded.
fn get_json<'k, K: Key + 'static, T: DeserializeOwned>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl Borrow<K::SelfType<'k>>,
    what: impl FnOnce() -> String,
) -> Result<Option<T>, StoreError> {
    match table.get(key)? {
        Some(bytes) => decode(bytes.value(), what).map(Some),
        None => Ok(None),
    }
}

/// Every record of `tenant` in a table keyed by (tenant, name), by name.
fn tenant_records<T: DeserializeOwned>(
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

fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes)
        .map_err(|why| StoreError::Corrupt(format!("{} does not decode: {why}", what())))
}

fn encode<T: Serialize>(value: &T, what: impl FnOnce() -> String) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value)
        .map_err(|why| StoreError::Invalid(format!("{} does not encode: {why}", what())))
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

fn abort(txn: WriteTransaction) {
    // Dropping the transaction would abort it too; aborting explicitly lets us log a failure.
    if let Err(why) = txn.abort() {
        tracing::warn!("aborting a storage write transaction failed: {why}");
    }
}

fn map_bound<T, U>(bound: Bound<T>, f: impl FnOnce(T) -> U) -> Bound<U> {
    match bound {
        Bound::Included(value) => Bound::Included(f(value)),
        Bound::Excluded(value) => Bound::Excluded(f(value)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Whether excluding `at` from below narrows `lower`.
fn lower_allows(lower: &Bound<(i64, u64)>, at: (i64, u64)) -> bool {
    match lower {
        Bound::Included(low) => at >= *low,
        Bound::Excluded(low) => at > *low,
        Bound::Unbounded => true,
    }
}

/// Whether excluding `at` from above narrows `upper`.
fn upper_allows(upper: &Bound<(i64, u64)>, at: (i64, u64)) -> bool {
    match upper {
        Bound::Included(high) => at <= *high,
        Bound::Excluded(high) => at < *high,
        Bound::Unbounded => true,
    }
}

/// Page cursors: positions in a listing, opaque to clients. A kind letter stops a ledger
/// cursor from being used on an event history and the other way round.
mod cursor {
    use super::StoreError;

    /// `e` + 16 hex digits of the timestamp (sign bit flipped, so the digits sort) + 16 of
    /// the seq.
    pub(super) fn encode_event((seconds, seq): (i64, u64)) -> String {
        format!("e{:016x}{seq:016x}", seconds.cast_unsigned() ^ (1 << 63))
    }

    pub(super) fn decode_event(cursor: &str) -> Result<(i64, u64), StoreError> {
        let fields = cursor
            .strip_prefix('e')
            .filter(|rest| rest.len() == 32)
            .and_then(|rest| Some((hex_u64(&rest[..16])?, hex_u64(&rest[16..])?)));
        match fields {
            Some((seconds, seq)) => Ok(((seconds ^ (1 << 63)).cast_signed(), seq)),
            None => Err(invalid(cursor, "an event history")),
        }
    }

    pub(super) fn encode_ledger(seq: u64) -> String {
        format!("l{seq:016x}")
    }

    pub(super) fn decode_ledger(cursor: &str) -> Result<u64, StoreError> {
        cursor
            .strip_prefix('l')
            .filter(|rest| rest.len() == 16)
            .and_then(hex_u64)
            .ok_or_else(|| invalid(cursor, "a ledger"))
    }

    fn hex_u64(digits: &str) -> Option<u64> {
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(digits, 16).ok()
    }

    fn invalid(cursor: &str, listing: &str) -> StoreError {
        StoreError::Invalid(format!(
            "cursor {cursor:?} is not a cursor of {listing}; pass back a next_cursor unchanged"
        ))
    }
}

/// redb's errors are all backend failures to the domain: the pipeline cannot fix them, only
/// report them and retry.
macro_rules! backend_errors {
    ($($error:ty),+) => {
        $(impl From<$error> for StoreError {
            fn from(error: $error) -> StoreError {
                StoreError::Backend(Arc::new(::redb::Error::from(error)))
            }
        })+
    };
}

backend_errors!(
    ::redb::Error,
    ::redb::DatabaseError,
    ::redb::TransactionError,
    ::redb::TableError,
    ::redb::StorageError,
    ::redb::CommitError
);

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_rows() -> [LedgerRow<'static>; 3] {
        [
            LedgerRow {
                event_id: "bench-1",
                plugin: "points",
                amount: 20,
                kind: PointKind::Earn,
                reason: "Purchase T-00000001",
                expires_at: Some(Timestamp::from_unix_seconds(1_800_000_000)),
                balance_after: 120,
                lifetime_after: 140,
                at: Timestamp::from_unix_seconds(1_764_000_000),
            },
            LedgerRow {
                event_id: "",
                plugin: "p",
                amount: i64::MIN,
                kind: PointKind::Reverse,
                reason: "",
                expires_at: None,
                balance_after: i64::MAX,
                lifetime_after: -1,
                at: Timestamp::from_unix_seconds(-86_400),
            },
            LedgerRow {
                event_id: "é-42",
                plugin: "tiers",
                amount: -5,
                kind: PointKind::Spend,
                reason: "Kaffe ☕ för två",
                expires_at: None,
                balance_after: 0,
                lifetime_after: 0,
                at: Timestamp::from_unix_seconds(0),
            },
        ]
    }

    #[test]
    fn ledger_rows_round_trip_obeyed() {
        for row in ledger_rows() {
            let bytes = row.encode();
            assert_eq!(LedgerRow::decode(&bytes), Some(row));
            let entry = row.into_entry(7);
            assert_eq!(LedgerRow::of_entry(&entry), Some(row), "{entry:?}");
        }
    }

    #[test]
    fn ledger_rows_cut_short_or_mislabelled_violated() {
        for row in ledger_rows() {
            let bytes = row.encode();
            // Every shorter prefix but those that end inside the reason (the tail) is refused.
            let reason_starts = bytes.len() - row.reason.len();
            for length in 0..reason_starts {
                assert_eq!(LedgerRow::decode(&bytes[..length]), None, "{length} bytes");
            }
            for (at, byte) in [(0, 2), (0, b'{'), (1, 3), (2, 2)] {
                let mut wrong = bytes.clone();
                wrong[at] = byte;
                assert_eq!(LedgerRow::decode(&wrong), None, "byte {at} = {byte}");
            }
        }
    }

    /// Event JSON of the sizes a row meets: none, a byte, a checkout, a large repetitive
    /// body, and bytes LZ4 cannot shrink (which it stores a little larger).
    fn event_jsons() -> Vec<Vec<u8>> {
        let checkout = serde_json::json!({
            "id": "bench-1", "action": "checkout", "customer": "c-17",
            "data": {"transaction_id": "T-1", "total": 120.5,
                     "items": [{"sku": "A-1", "quantity": 2, "price": 60.25}]},
        });
        let repetitive = format!("[{}]", vec!["{\"sku\":\"A-1\"}"; 20_000].join(","));
        let incompressible: Vec<u8> = (0..4096_u32)
            .map(|n| (n.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        vec![
            Vec::new(),
            b"{".to_vec(),
            serde_json::to_vec(&checkout).unwrap(),
            repetitive.into_bytes(),
            incompressible,
        ]
    }

    #[test]
    fn event_rows_round_trip_obeyed() {
        for json in event_jsons() {
            let row = encode_event_row(&json).unwrap();
            assert_eq!(row[0], EVENT_ROW_LZ4);
            assert_eq!(decode_event_row(&row).as_deref(), Some(json.as_slice()));
        }
        let repetitive = &event_jsons()[3];
        let row = encode_event_row(repetitive).unwrap();
        assert!(
            row.len() * 50 < repetitive.len(),
            "{} bytes compress to {}",
            repetitive.len(),
            row.len()
        );
    }

    #[test]
    fn event_rows_cut_short_damaged_or_json_violated() {
        for json in event_jsons() {
            let row = encode_event_row(&json).unwrap();
            // An LZ4 block ends with literals, so a row cut anywhere decodes to less than its
            // length says, or not at all.
            for length in 0..row.len() {
                assert_eq!(decode_event_row(&row[..length]), None, "{length} bytes");
            }
            let mut longer = row.clone();
            longer[1..5].copy_from_slice(&(len_u32(json.len()) + 1).to_le_bytes());
            assert_eq!(decode_event_row(&longer), None, "a length one too long");
            if !json.is_empty() {
                let mut shorter = row.clone();
                shorter[1..5].copy_from_slice(&(len_u32(json.len()) - 1).to_le_bytes());
                assert_eq!(decode_event_row(&shorter), None, "a length one too short");
            }
            let mut huge = row.clone();
            huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
            assert_eq!(decode_event_row(&huge), None, "a length of 4 GiB");
            let mut mislabelled = row.clone();
            mislabelled[0] = 2;
            assert_eq!(decode_event_row(&mislabelled), None, "version 2");
        }
        assert_eq!(decode_event_row(br#"{"id":"e1"}"#), None, "format 5's JSON");
    }

    #[test]
    fn event_cursors_round_trip_and_sort_like_positions() {
        let positions = [
            (i64::MIN, 0),
            (-1, 7),
            (0, 1),
            (1_700_000_000, 42),
            (i64::MAX, u64::MAX),
        ];
        for position in positions {
            assert_eq!(
                cursor::decode_event(&cursor::encode_event(position)).ok(),
                Some(position)
            );
        }
        let encoded: Vec<String> = positions.iter().map(|&p| cursor::encode_event(p)).collect();
        assert!(encoded.is_sorted(), "{encoded:?}");
    }

    #[test]
    fn foreign_cursors_are_refused() {
        let ledger = cursor::encode_ledger(5);
        assert_eq!(cursor::decode_ledger(&ledger).ok(), Some(5));
        for bad in [
            ledger.as_str(),
            "",
            "e",
            "eZZ",
            "e0000000000000000000000000000000g",
        ] {
            let error = cursor::decode_event(bad).err();
            assert!(
                matches!(error, Some(StoreError::Invalid(_))),
                "{bad:?}: {error:?}"
            );
        }
        assert!(cursor::decode_ledger(&cursor::encode_event((1, 1))).is_err());
    }
}
