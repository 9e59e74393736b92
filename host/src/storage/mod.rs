//! Storage: the domain-level [`Store`] trait the pipeline and the API talk to, and its redb
//! backend.
//!
//! The trait speaks in loyalty terms (tenants, plugins, events, customers, ledgers), never in
//! tables, HTTP or wasm, so a second backend (PostgreSQL, for tenants who outgrow one machine)
//! can be added without touching the pipeline. Every key a backend writes starts with the
//! tenant.
//!
//! Admin operations each run in their own durable transaction. Events go through
//! [`Store::write_batch`]: one transaction for a whole batch of waiting events (group commit),
//! in which [`BatchTxn::append`] writes an event, its ledger entries, the customer's new state,
//! plugin state and outbound triggers. Nothing of a batch is visible or durable until the
//! batch commits, and when `write_batch` returns `Ok` it is on disk.
//!
//! What the store derives and what it checks, on append:
//! - it assigns the event's `seq`, and each ledger entry's `seq`, `balance_after`,
//!   `pending_after`, `lifetime_after`, `event_id` and `at` (the event's timestamp), replaying
//!   the amounts onto
//!   the customer's stored points with [`crate::domain::points_after`], the one rule for how
//!   points move;
//! - it checks what the pipeline computed against what it stored: the new customer's points
//!   must equal that replay, `event_count` must be the stored count plus one, and the event's
//!   `points` must be the sum of its ledger entries. A mismatch means the pipeline built the
//!   new state on something other than the stored state (a stale read inside a batch, for
//!   instance); it is refused with [`StoreError::Inconsistent`] rather than stored;
//! - it keeps the index of what the clock is to write ([`Store::due`]) in step with the
//!   customer record's `due`, in the same transaction.

pub mod redb;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use tally_sdk::Timestamp;

pub use self::redb::RedbStore;
pub use crate::domain::imports::{IMPORT_ERRORS_KEPT, ImportJob, ImportRowError};
pub use crate::domain::records::{
    AppendEvent, Appended, AuditEntry, CustomerRecord, EventOutcome, EventTypeRecord, LedgerEntry,
    NewLedgerEntry, NewTrigger, OnError, OutboxTrigger, PluginErrorRecord, PluginRecord, PluginRun,
    PluginStatus, PluginVersion, RawJson, RewardRecord, StoredEvent, TenantRecord,
};
pub use crate::domain::records::{DeliveryAttempt, DeliveryState, WebhookRecord, WebhookSecret};

/// A moment due for one customer of one tenant: what the clock turns into an internal event.
#[derive(Debug, Clone, PartialEq)]
pub struct DueWork {
    /// The tenant.
    pub tenant: String,
    /// The customer.
    pub customer: String,
    /// What is due, when.
    pub due: crate::domain::Due,
}

/// The page size a default [`EventQuery`] asks for.
pub const DEFAULT_PAGE_LIMIT: usize = 50;

/// Why a storage operation failed.
///
/// Cloneable, so that when a group commit fails every event waiting on it can be told why.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The thing being created already exists: a tenant id, an event id, an API key.
    #[error("{0}")]
    Conflict(String),
    /// The thing asked for or about does not exist: a tenant, a plugin.
    #[error("{0}")]
    NotFound(String),
    /// An append that redeems a reward whose stock is gone; nothing of it was written.
    #[error("reward {reward} is out of stock ({stock} redeemed)")]
    OutOfStock {
        /// The reward.
        reward: String,
        /// Its stock.
        stock: u64,
    },
    /// The caller's request is malformed: a cursor this store never issued, a plugin
    /// version that was never uploaded, a hash that does not match the bytes.
    #[error("{0}")]
    Invalid(String),
    /// An append whose derived fields disagree with the stored state; a bug in the caller,
    /// refused so that it cannot corrupt a customer.
    #[error("inconsistent append refused: {0}")]
    Inconsistent(String),
    /// A stored record that cannot be read back, or an index that points nowhere.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The data file is in a storage format this build does not read: an older or a newer
    /// one, or none at all in a file that holds tables. It is refused before anything is
    /// written to it, so the file is left as it was, for the build that wrote it.
    #[error("{}; this build reads format {expected}", describe_format(.path, *.found))]
    UnsupportedFormat {
        /// The data file.
        path: PathBuf,
        /// The format the file records; `None` when it holds tables but records none.
        found: Option<u32>,
        /// The one format this build reads and writes.
        expected: u32,
    },
    /// The backend failed: I/O, a full disk, a file another process holds, a commit error.
    #[error("storage backend failed: {0}")]
    Backend(#[source] Arc<dyn Error + Send + Sync>),
}

impl StoreError {
    /// A backend failure described by `message` alone.
    pub fn backend(message: impl Into<String>) -> StoreError {
        StoreError::Backend(Arc::from(Box::<dyn Error + Send + Sync>::from(
            message.into(),
        )))
    }
}

/// The start of [`StoreError::UnsupportedFormat`]'s message: the file and what it records.
fn describe_format(path: &Path, found: Option<u32>) -> String {
    match found {
        Some(format) => format!("{} has storage format {format}", path.display()),
        None => format!("{} holds tables but no storage format", path.display()),
    }
}

/// One page of a listing, and where the next one starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    /// The items, in the order asked for.
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` when this page is the last.
    pub next_cursor: Option<String>,
}

/// Which of a customer's events to list, ordered by event timestamp, then by sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventQuery {
    /// Only these actions; `None` means every action.
    pub actions: Option<Vec<String>>,
    /// Only events that came through this channel.
    pub channel: Option<String>,
    /// Only events of this campaign.
    pub campaign: Option<String>,
    /// Only events at or after this moment.
    pub from: Option<Timestamp>,
    /// Only events before this moment.
    pub to: Option<Timestamp>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// At most this many events; 0 gives an empty page.
    pub limit: usize,
    /// The `next_cursor` of the previous page. A cursor is a position in the history, so it
    /// stays valid as events are added, and may be used with either direction.
    pub cursor: Option<String>,
}

impl Default for EventQuery {
    fn default() -> EventQuery {
        EventQuery {
            actions: None,
            channel: None,
            campaign: None,
            from: None,
            to: None,
            newest_first: false,
            limit: DEFAULT_PAGE_LIMIT,
            cursor: None,
        }
    }
}

/// The reads the pipeline makes for a batch of events, all from one snapshot: the one
/// [`Store::read_batch`] takes, or the write transaction of [`Store::write_batch`], whose
/// reads see every write made earlier in the same batch.
pub trait BatchRead {
    /// The event `id` of `tenant`.
    fn event(&self, tenant: &str, id: &str) -> Result<Option<StoredEvent>, StoreError>;

    /// The customer `id` of `tenant`.
    fn customer(&self, tenant: &str, id: &str) -> Result<Option<CustomerRecord>, StoreError>;

    /// `plugin`'s private state for `customer`.
    fn plugin_state(
        &self,
        tenant: &str,
        plugin: &str,
        customer: &str,
    ) -> Result<Option<RawJson>, StoreError>;
}

/// The view of one write transaction that [`Store::write_batch`] hands to its `work`.
pub trait BatchTxn: BatchRead {
    /// Appends an evaluated event and everything it changes; returns the event as stored,
    /// with its `seq`, and hands the customer back.
    ///
    /// Refuses a repeated event id with [`StoreError::Conflict`] and state that does not
    /// follow from the stored state with [`StoreError::Inconsistent`]. Every check runs before
    /// anything is written, so a refused append leaves the batch as it was and the batch may
    /// go on. Should a write itself fail, the whole batch is refused at commit.
    fn append(&mut self, append: AppendEvent) -> Result<Appended, StoreError>;
}

/// Everything Tally stores, in domain terms.
///
/// Lookups answer `Ok(None)` for what does not exist; updates of what does not exist answer
/// [`StoreError::NotFound`]. Every method but [`Store::write_batch`] is one transaction of its
/// own, durable when it returns `Ok`.
///
/// The reads of single records (an event, a customer, a plugin's state) are [`BatchRead`]'s:
/// on the store itself each is a transaction of its own and sees what was last committed.
pub trait Store: BatchRead + Send + Sync {
    /// Creates a tenant whose API key hashes to `api_key_hash`. [`StoreError::Conflict`] when
    /// the id or the key is taken.
    fn create_tenant(
        &self,
        tenant: &TenantRecord,
        api_key_hash: [u8; 32],
    ) -> Result<(), StoreError>;

    /// The tenant `id`.
    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError>;

    /// Every tenant, by id.
    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;

    /// The tenant whose API key hashes to `api_key_hash`.
    fn tenant_by_key_hash(
        &self,
        api_key_hash: [u8; 32],
    ) -> Result<Option<TenantRecord>, StoreError>;

    /// Replaces a tenant's record (its id cannot change).
    fn update_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError>;

    /// Replaces a tenant's API key hash; the old key stops working.
    fn set_tenant_key_hash(&self, tenant: &str, api_key_hash: [u8; 32]) -> Result<(), StoreError>;

    /// The hash of the admin key, `None` before one is set.
    fn admin_key_hash(&self) -> Result<Option<[u8; 32]>, StoreError>;

    /// Sets the hash of the admin key.
    fn set_admin_key_hash(&self, hash: [u8; 32]) -> Result<(), StoreError>;

    /// Creates or replaces an event type of `tenant`.
    fn put_event_type(&self, tenant: &str, event_type: &EventTypeRecord) -> Result<(), StoreError>;

    /// The event type `id` of `tenant`.
    fn event_type(&self, tenant: &str, id: &str) -> Result<Option<EventTypeRecord>, StoreError>;

    /// Every event type of `tenant`, by id.
    fn event_types(&self, tenant: &str) -> Result<Vec<EventTypeRecord>, StoreError>;

    /// Stores a new version of plugin `name` and makes it active. The first upload creates the
    /// plugin: enabled, subscribed to every action, priority 0, skipped on error. `sha256` is
    /// the module's SHA-256 in hex, checked against `wasm`.
    fn add_plugin_version(
        &self,
        tenant: &str,
        name: &str,
        wasm: &[u8],
        sha256: &str,
        uploaded_at: Timestamp,
    ) -> Result<PluginRecord, StoreError>;

    /// Replaces a plugin's settings (active version, config, actions, priority, enabled,
    /// on_error). Its versions cannot change here and the active version must be one of them.
    fn update_plugin(&self, tenant: &str, plugin: &PluginRecord) -> Result<(), StoreError>;

    /// The plugin `name` of `tenant`.
    fn plugin(&self, tenant: &str, name: &str) -> Result<Option<PluginRecord>, StoreError>;

    /// Every plugin of `tenant`, in the order they run: by priority, then by name.
    fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError>;

    /// The wasm module of `version` of plugin `name`.
    fn plugin_wasm(
        &self,
        tenant: &str,
        name: &str,
        version: u32,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// A page of a customer's events.
    fn customer_events(
        &self,
        tenant: &str,
        customer: &str,
        query: &EventQuery,
    ) -> Result<Page<StoredEvent>, StoreError>;

    /// A page of a customer's ledger, oldest entry first.
    fn ledger(
        &self,
        tenant: &str,
        customer: &str,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page<LedgerEntry>, StoreError>;

    /// Up to `limit` outbound triggers of `tenant` with a sequence number above `after_seq`,
    /// oldest first. Pass the last `seq` delivered to continue.
    fn outbox(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<OutboxTrigger>, StoreError>;

    /// Up to `limit` moments of `tenant`'s customers due at or before `until`, soonest first:
    /// what the clock writes next. Costs the moments read, whatever the number of customers.
    fn due(&self, tenant: &str, until: Timestamp, limit: usize)
    -> Result<Vec<DueWork>, StoreError>;

    /// Up to `limit` of `tenant`'s customers after the customer `after` (from the first when
    /// `None`), in id order, that `keep` keeps. A page looks at a bounded number of customers,
    /// so it may hold fewer than `limit` and still have a `next_cursor` (the last id looked
    /// at, to pass as `after`).
    fn customers(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&CustomerRecord) -> bool,
    ) -> Result<Page<CustomerRecord>, StoreError>;

    /// Up to `limit` of `tenant`'s events after the event `after` (from the first when
    /// `None`), in id order, that `keep` keeps. Like [`Store::customers`], a page looks at a
    /// bounded number of events, so it may hold fewer and still have a `next_cursor`.
    fn events(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        keep: &dyn Fn(&StoredEvent) -> bool,
    ) -> Result<Page<StoredEvent>, StoreError>;

    /// The customers of `tenant` whose `email` attribute is `email`, compared trimmed and
    /// without case, from an index the append keeps.
    fn customers_by_email(
        &self,
        tenant: &str,
        email: &str,
    ) -> Result<Vec<CustomerRecord>, StoreError>;

    /// Up to `limit` entries of `tenant`'s audit log after `after_seq`, oldest first.
    fn audit(
        &self,
        tenant: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError>;

    /// Adds `reward` to `tenant`'s catalogue (`create`, refused with `Conflict` when its id is
    /// taken) or replaces it (refused with `NotFound` when there is none).
    fn put_reward(
        &self,
        tenant: &str,
        reward: &RewardRecord,
        create: bool,
    ) -> Result<(), StoreError>;

    /// The reward `id` of `tenant`, with how many were redeemed.
    fn reward(&self, tenant: &str, id: &str) -> Result<Option<(RewardRecord, u64)>, StoreError>;

    /// `tenant`'s catalogue, by id, each with how many were redeemed.
    fn rewards(&self, tenant: &str) -> Result<Vec<(RewardRecord, u64)>, StoreError>;

    /// The outbox sequence number `tenant` used last; 0 before its first trigger.
    fn last_outbox_seq(&self, tenant: &str) -> Result<u64, StoreError>;

    /// Adds a webhook endpoint to `tenant`; `Conflict` when its id is taken.
    fn create_webhook(&self, tenant: &str, webhook: &WebhookRecord) -> Result<(), StoreError>;

    /// Changes endpoint `id` of `tenant` in one transaction (`change` gets it as stored, so
    /// the tenant's edits and the delivery's progress never overwrite each other), and adds
    /// `attempts` to its delivery log, which keeps the latest 1,000. Answers the endpoint as
    /// changed; `NotFound` when there is none.
    fn update_webhook(
        &self,
        tenant: &str,
        id: &str,
        change: &mut dyn FnMut(&mut WebhookRecord),
        attempts: &[DeliveryAttempt],
    ) -> Result<WebhookRecord, StoreError>;

    /// Endpoint `id` of `tenant`.
    fn webhook(&self, tenant: &str, id: &str) -> Result<Option<WebhookRecord>, StoreError>;

    /// The endpoints of `tenant`, or of every tenant (`None`), by tenant and id.
    fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<(String, WebhookRecord)>, StoreError>;

    /// Removes an endpoint and its log; false when there was none.
    fn delete_webhook(&self, tenant: &str, id: &str) -> Result<bool, StoreError>;

    /// Up to `limit` attempts of an endpoint before attempt number `before`, newest first.
    fn webhook_attempts(
        &self,
        tenant: &str,
        id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<DeliveryAttempt>, StoreError>;

    /// Adds a trigger of the host's own (not of an event: an endpoint turned off, ...) at the
    /// end of `tenant`'s outbox; its `seq` is assigned and answered.
    fn add_trigger(&self, tenant: &str, trigger: &OutboxTrigger) -> Result<u64, StoreError>;

    /// Removes up to `limit` of `tenant`'s triggers numbered at most `up_to` that entered the
    /// outbox before `before`, oldest first; answers how many went.
    fn prune_outbox(
        &self,
        tenant: &str,
        up_to: u64,
        before: Timestamp,
        limit: usize,
    ) -> Result<usize, StoreError>;

    /// Adds a bulk import job to `tenant`; `Conflict` when its id is taken.
    fn create_import(&self, tenant: &str, job: &ImportJob) -> Result<(), StoreError>;

    /// Changes import `id` of `tenant` in one transaction (`change` gets it as stored, so a
    /// cancel and the runner's progress never overwrite each other) and adds `errors` to its
    /// row report, which keeps the first [`IMPORT_ERRORS_KEPT`] rows refused (`change` is to
    /// count them in `progress.failed`). Answers the job as changed; `NotFound` when there is
    /// none.
    fn update_import(
        &self,
        tenant: &str,
        id: &str,
        change: &mut dyn FnMut(&mut ImportJob),
        errors: &[ImportRowError],
    ) -> Result<ImportJob, StoreError>;

    /// Import `id` of `tenant`.
    fn import(&self, tenant: &str, id: &str) -> Result<Option<ImportJob>, StoreError>;

    /// The imports of `tenant`, or of every tenant (`None`), by tenant and id.
    fn imports(&self, tenant: Option<&str>) -> Result<Vec<(String, ImportJob)>, StoreError>;

    /// Up to `limit` refused rows of an import after row number `after`, in row order.
    fn import_errors(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ImportRowError>, StoreError>;

    /// Works out again what is due for every customer of `tenant`, with the tenant's settings
    /// as stored (after they changed), keeping the clock's index in step; returns how many
    /// customers' moments changed. The one walk over a tenant's customers, run when its
    /// settings change, never by the clock; in short transactions, so events keep flowing.
    fn reschedule(&self, tenant: &str) -> Result<usize, StoreError>;

    /// Runs `work` on one snapshot of what is committed, with the tables it reads opened
    /// once: the pipeline reads a whole batch's replays, customers and plugin states this
    /// way rather than opening a transaction per read.
    fn read_batch(
        &self,
        work: &mut dyn FnMut(&dyn BatchRead) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// Runs `work` in one write transaction and commits it durably once, when `work` returns
    /// `Ok`. When `work` returns `Err`, nothing it wrote is kept and the error is returned.
    ///
    /// Write transactions run one at a time: `work` must not call this store's other writing
    /// methods, which would wait for the transaction `work` is in. Reads outside the batch see
    /// the last committed state until the batch commits.
    fn write_batch(
        &self,
        work: &mut dyn FnMut(&mut dyn BatchTxn) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
}
