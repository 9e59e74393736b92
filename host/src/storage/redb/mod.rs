//! The embedded [`Store`]: one redb file, in storage format 7 (`format::FORMAT_VERSION`).
//!
//! A build reads and writes one format, recorded in `meta.format`. Opening a file of any
//! other format, or a file with tables but no format, is refused with
//! [`StoreError::UnsupportedFormat`] before anything is written to it; a new file gets this
//! build's format. There is no migration: no other format ever shipped.
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
//! # `customer_data`
//!
//! Everything of a customer that an event changes is one key range of one table, in four
//! parts, in this order (`tables::CustomerKey` has the key of each):
//!
//! 1. the history index, one row per event keyed by (event time, seq), so that a time window
//!    is one range scan; its value carries the action as well as the event id, so that an
//!    action filter reads no event it then drops;
//! 2. the [`CustomerRecord`];
//! 3. each plugin's state;
//! 4. the ledger, numbered down, so that the newest entry is next to the states.
//!
//! What one event writes (a history row, usually the newest; the record; the states; the
//! newest ledger entries) is thus adjacent: often one leaf page, otherwise two (once a
//! customer's rows span several leaves, a split can fall between the states and the ledger).
//! This is the layout's reason: under load a batch's commit is mostly writing, checksumming
//! and freeing the pages the batch dirtied, and the customers of a batch are spread over the
//! file, so each table an event writes a customer's rows to would cost a dirty leaf of its
//! own per event.
//!
//! # Encoding
//!
//! Records are JSON. They carry `serde_json::Value` (plugin config, schemas) and JSON text
//! (event data, plugin state), which only a self-describing format round-trips; JSON keeps
//! records readable with any redb dump and lets fields be added with `#[serde(default)]`.
//! Its cost, a few hundred bytes and microseconds per event, is small beside the fsync each
//! batch pays. The three kinds of row every event adds are the exception, because their size
//! sets how many pages a commit dirties:
//!
//! - history rows and ledger entries are small binary layouts (`codec::encode_history`,
//!   `codec::LedgerRow`), as they decide how many leaves a customer's key range spans;
//! - event rows are JSON compressed with LZ4 (`codec::encode_event_row`): an event is
//!   written once and read by id, and its row is most of the bytes a commit writes.
//!
//! Event rows and ledger rows start with a byte naming their layout, so that bytes of any
//! other are refused as corrupt rather than misread. Keys, which decide order, are native
//! redb types.

mod admin;
mod batch;
mod codec;
mod cursor;
mod customers;
mod format;
mod imports;
mod pages;
mod read;
mod reschedule;
mod rewards;
mod tables;
mod webhooks;

use std::path::Path;
use std::sync::Arc;

use ::redb::{Builder, Database, ReadTransaction, ReadableDatabase, WriteTransaction};
use tally_sdk::Timestamp;

use self::format::Contents;
use self::read::{get_customer, get_event, get_plugin_state};
use self::tables::{CUSTOMER_DATA, EVENTS};
use super::{
    AuditEntry, BatchRead, BatchTxn, CustomerRecord, DeliveryAttempt, DueWork, EventQuery,
    EventTypeRecord, ImportJob, ImportRowError, LedgerEntry, OutboxTrigger, Page, PluginRecord,
    RawJson, RewardRecord, Store, StoreError, StoredEvent, TenantRecord, WebhookRecord,
};

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
    ///
    /// A file of another storage format is refused with [`StoreError::UnsupportedFormat`] and
    /// left as it was (unless it was left by a crash: redb repairs such a file when it opens
    /// it, before its format can be read).
    pub fn open_with_cache(
        path: impl AsRef<Path>,
        cache_bytes: usize,
    ) -> Result<RedbStore, StoreError> {
        let path = path.as_ref();
        format::refuse_other(path, cache_bytes)?;
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|why| StoreError::backend(format!("cannot open {}: {why}", path.display())))?;
        let store = RedbStore { db };
        store.write(|txn| {
            let contents = format::check_in(path, txn)?;
            // Every table is created up front, so that a read never meets a missing one.
            tables::create_all(txn)?;
            if contents == Contents::New {
                format::record(txn)?;
            }
            Ok(())
        })?;
        Ok(store)
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

/// Single-record reads on the store: each its own read transaction.
impl BatchRead for RedbStore {
    fn event(&self, tenant: &str, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        get_event(&self.read()?.open_table(EVENTS)?, tenant, id)
    }

    fn customer(&self, tenant: &str, id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        get_customer(&self.read()?.open_table(CUSTOMER_DATA)?, tenant, id)
    }

    fn plugin_state(
        &self,
        tenant: &str,
        plugin: &str,
        customer: &str,
    ) -> Result<Option<RawJson>, StoreError> {
        let table = self.read()?.open_table(CUSTOMER_DATA)?;
        get_plugin_state(&table, tenant, plugin, customer)
    }
}

impl Store for RedbStore {
    fn create_tenant(
        &self,
        tenant: &TenantRecord,
        api_key_hash: [u8; 32],
    ) -> Result<(), StoreError> {
        self.write(|txn| admin::create_tenant(txn, tenant, api_key_hash))
    }

    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        admin::tenant(&self.read()?, id)
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        admin::tenants(&self.read()?)
    }

    fn tenant_by_key_hash(
        &self,
        api_key_hash: [u8; 32],
    ) -> Result<Option<TenantRecord>, StoreError> {
        admin::tenant_by_key_hash(&self.read()?, api_key_hash)
    }

    fn update_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError> {
        self.write(|txn| admin::update_tenant(txn, tenant))
    }

    fn set_tenant_key_hash(&self, tenant: &str, api_key_hash: [u8; 32]) -> Result<(), StoreError> {
        self.write(|txn| admin::set_tenant_key_hash(txn, tenant, api_key_hash))
    }

    fn admin_key_hash(&self) -> Result<Option<[u8; 32]>, StoreError> {
        admin::admin_key_hash(&self.read()?)
    }

    fn set_admin_key_hash(&self, hash: [u8; 32]) -> Result<(), StoreError> {
        self.write(|txn| admin::set_admin_key_hash(txn, hash))
    }

    fn put_event_type(&self, tenant: &str, event_type: &EventTypeRecord) -> Result<(), StoreError> {
        self.write(|txn| admin::put_event_type(txn, tenant, event_type))
    }

    fn event_type(&self, tenant: &str, id: &str) -> Result<Option<EventTypeRecord>, StoreError> {
        admin::event_type(&self.read()?, tenant, id)
    }

    fn event_types(&self, tenant: &str) -> Result<Vec<EventTypeRecord>, StoreError> {
        admin::event_types(&self.read()?, tenant)
    }

    fn add_plugin_version(
        &self,
        tenant: &str,
        name: &str,
        wasm: &[u8],
        sha256: &str,
        uploaded_at: Timestamp,
    ) -> Result<PluginRecord, StoreError> {
        let sha256 = admin::verify_sha256(tenant, name, wasm, sha256)?;
        self.write(|txn| admin::add_plugin_version(txn, tenant, name, wasm, &sha256, uploaded_at))
    }

    fn update_plugin(&self, tenant: &str, plugin: &PluginRecord) -> Result<(), StoreError> {
        self.write(|txn| admin::update_plugin(txn, tenant, plugin))
    }

    fn plugin(&self, tenant: &str, name: &str) -> Result<Option<PluginRecord>, StoreError> {
        admin::plugin(&self.read()?, tenant, name)
    }

    fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        admin::plugins(&self.read()?, tenant)
    }

    fn plugin_wasm(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        admin::plugin_wasm(&self.read()?, tenant, name, version)
    }

    fn customer_events(
        &self,
        tenant: &str,
        customer: &str,
        query: &EventQuery,
    ) -> Result<Page<StoredEvent>, StoreError> {
        pages::customer_events(&self.db, tenant, customer, query)
    }

    fn ledger(
        &self,
        tenant: &str,
        customer: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<LedgerEntry>, StoreError> {
        pages::ledger(&self.db, tenant, customer, limit, cursor)
    }

    fn outbox(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<OutboxTrigger>, StoreError> {
        pages::outbox(&self.db, tenant, after_seq, limit)
    }

    fn due(
        &self,
        tenant: &str,
        until: Timestamp,
        limit: usize,
    ) -> Result<Vec<DueWork>, StoreError> {
        pages::due(&self.db, tenant, until, limit)
    }

    fn customers(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&CustomerRecord) -> bool,
    ) -> Result<Page<CustomerRecord>, StoreError> {
        customers::customers(&self.db, tenant, after, limit, keep)
    }

    fn customers_by_email(
        &self,
        tenant: &str,
        email: &str,
    ) -> Result<Vec<CustomerRecord>, StoreError> {
        customers::customers_by_email(&self.db, tenant, email)
    }

    fn audit(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        pages::audit(&self.db, tenant, after_seq, limit)
    }

    fn put_reward(
        &self,
        tenant: &str,
        reward: &RewardRecord,
        create: bool,
    ) -> Result<(), StoreError> {
        self.write(|txn| rewards::put(txn, tenant, reward, create))
    }

    fn reward(&self, tenant: &str, id: &str) -> Result<Option<(RewardRecord, u64)>, StoreError> {
        rewards::get(&self.db, tenant, id)
    }

    fn rewards(&self, tenant: &str) -> Result<Vec<(RewardRecord, u64)>, StoreError> {
        rewards::all(&self.db, tenant)
    }

    fn events(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&StoredEvent) -> bool,
    ) -> Result<Page<StoredEvent>, StoreError> {
        read::events(&self.db, tenant, after, limit, keep)
    }

    fn last_outbox_seq(&self, tenant: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let sequences = txn.open_table(tables::SEQUENCES)?;
        Ok(sequences
            .get((tenant, tables::SEQ_OUTBOX))?
            .map_or(0, |last| last.value()))
    }

    fn create_webhook(&self, tenant: &str, webhook: &WebhookRecord) -> Result<(), StoreError> {
        self.write(|txn| webhooks::create(txn, tenant, webhook))
    }

    fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        change: &mut dyn FnMut(&mut WebhookRecord),
        attempts: &[DeliveryAttempt],
    ) -> Result<WebhookRecord, StoreError> {
        self.write(|txn| webhooks::update(txn, tenant, id, change, attempts))
    }

    fn webhook(&self, tenant: &str, id: &str) -> Result<Option<WebhookRecord>, StoreError> {
        webhooks::get(&self.db, tenant, id)
    }

    fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<(String, WebhookRecord)>, StoreError> {
        webhooks::all(&self.db, tenant)
    }

    fn delete_webhook(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        self.write(|txn| webhooks::delete(txn, tenant, id))
    }

    fn webhook_attempts(
        &self,
        tenant: &str,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        webhooks::attempts(&self.db, tenant, id, before, limit)
    }

    fn add_trigger(&self, tenant: &str, trigger: &OutboxTrigger) -> Result<u64, StoreError> {
        self.write(|txn| pages::add_trigger(txn, tenant, trigger))
    }

    fn prune_outbox(
        &self,
        tenant: &str,
        up_to: u64,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError> {
        if !pages::anything_to_prune(&self.db, tenant, up_to, before)? {
            return Ok(0);
        }
        self.write(|txn| pages::prune_outbox(txn, tenant, up_to, before, limit))
    }

    fn create_import(&self, tenant: &str, job: &ImportJob) -> Result<(), StoreError> {
        self.write(|txn| imports::create(txn, tenant, job))
    }

    fn update_import(
        &self,
        tenant: &str,
        id: &str,
        change: &mut dyn FnMut(&mut ImportJob),
        errors: &[ImportRowError],
    ) -> Result<ImportJob, StoreError> {
        self.write(|txn| imports::update(txn, tenant, id, change, errors))
    }

    fn import(&self, tenant: &str, id: &str) -> Result<Option<ImportJob>, StoreError> {
        imports::get(&self.db, tenant, id)
    }

    fn imports(&self, tenant: Option<&str>) -> Result<Vec<(String, ImportJob)>, StoreError> {
        imports::all(&self.db, tenant)
    }

    fn import_errors(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ImportRowError>, StoreError> {
        imports::errors(&self.db, tenant, id, after, limit)
    }

    fn reschedule(&self, tenant: &str) -> Result<usize, StoreError> {
        let mut after: Option<String> = None;
        let mut changed = 0;
        loop {
            let step = self.write(|txn| reschedule::step(txn, tenant, after.as_deref()))?;
            changed += step.changed;
            match step.last {
                Some(last) => after = Some(last),
                None => return Ok(changed),
            }
        }
    }

    fn read_batch(
        &self,
        work: &mut dyn FnMut(&dyn BatchRead) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        batch::read(&self.read()?, work)
    }

    fn write_batch(
        &self,
        work: &mut dyn FnMut(&mut dyn BatchTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // One commit, so one fsync, for the whole batch: this is where group commit pays off.
        self.write(|txn| batch::write(txn, work))
    }
}

fn abort(txn: WriteTransaction) {
    // Dropping the transaction would abort it too; aborting explicitly lets us log a failure.
    if let Err(why) = txn.abort() {
        tracing::warn!("aborting a storage write transaction failed: {why}");
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
