//! What the host does, in domain terms, for the API (and `tally serve --demo`) to call, in
//! six parts over one [`Store`]:
//!
//! - [`Tenants`]: tenants and their keys, and whose a key is;
//! - [`Catalog`]: each tenant's event types and plugins, with the caches that keep checking
//!   and evaluating an event off the store;
//! - [`Ingest`]: checking posted events, the group-commit writer, and simulation;
//! - [`Queries`]: events, customers, histories, ledgers and the outbox;
//! - [`Webhooks`]: each tenant's webhook endpoints and the delivery of its outbox to them;
//! - [`Imports`]: bulk imports, files of events read in the background through the writer.
//!
//! Segment messages are read as posted events by [`translate`].
//!
//! Methods that touch storage or compile wasm block: the API calls them off the async
//! runtime. Two answer from memory and never block, so that posting an event needs no
//! blocking hop: [`Tenants::known_principal`] (keys seen before, kept by their hash) and
//! [`Ingest::check_now`] (checking an event once its tenant's types are cached).
//! [`Ingest::ingest`] is the one async method: it queues a checked event for the writer and
//! waits until its batch has committed.
//!
//! Nothing here knows HTTP: request bodies are read in `api`, and a [`ServiceError`] has a
//! kind, not a status. Nothing here knows the backend: any [`Store`] will do.

mod cache;
mod catalog;
mod clock;
mod error;
mod events;
mod imports;
mod ingest;
mod queries;
mod segment;
mod tenants;
mod webhooks;

use std::sync::Arc;

pub use self::catalog::{Catalog, NewReward, PluginPatch, RewardPatch, RewardView, Uploaded};
pub use self::clock::{Clock, ClockError, DuePass, run_clock, system_now};
pub use self::error::{ErrorKind, ServiceError};
pub use self::events::{
    MAX_CUSTOMER_LEN, MAX_EVENT_ID_LEN, MAX_LABEL_LEN, Origin, generate_id, kind_of,
};
pub use self::imports::{Imports, Upload, run_imports};
pub use self::ingest::{Checked, Ingest, Pace, Queued, Simulation};
pub use self::queries::{CustomerFilter, LedgerLine, Queries};
pub use self::segment::{Translated, snake_case, translate};
pub use self::tenants::{NewTenant, Principal, TenantPatch, Tenants};
pub use self::webhooks::{
    DEFAULT_OUTBOX_RETENTION_DAYS, DEFAULT_RETRY_SCHEDULE, ENDPOINT_DISABLED, NewWebhook,
    WebhookPatch, WebhookSettings, Webhooks, is_private, run_webhooks, sign,
};
use crate::config::Config;
use crate::pipeline::writer::Writer;
pub use crate::pipeline::writer::{IngestError, Ingested};
use crate::runtime::Runtime;
use crate::storage::Store;

/// A host just opened, and the admin key it generated (to print once) if it made one.
#[derive(Debug)]
pub struct Opened {
    /// The service.
    pub service: Service,
    /// The admin key generated on this first start; `None` when one was configured or stored.
    pub generated_admin_key: Option<String>,
}

/// The host.
#[derive(Debug)]
pub struct Service {
    /// Tenants and keys.
    pub tenants: Tenants,
    /// Event types and plugins.
    pub catalog: Arc<Catalog>,
    /// Events in.
    pub ingest: Ingest,
    /// Reads.
    pub queries: Queries,
    /// Webhook endpoints and their delivery.
    pub webhooks: Arc<Webhooks>,
    /// Bulk import jobs.
    pub imports: Imports,
    config: Config,
}

impl Service {
    /// Starts the host over `store`: the plugin runtime (its compiled-artifact cache in the
    /// data directory), the writer, and the admin key. Any [`Store`] will do; the binary
    /// opens the embedded one.
    pub fn open(store: Arc<dyn Store>, config: Config) -> Result<Opened, ServiceError> {
        let runtime = Runtime::with_cache_dir(config.limits.clone(), config.artifact_dir())?;
        let clock = if config.test_clock {
            Clock::test(system_now())
        } else {
            Clock::system()
        };
        let catalog = Arc::new(Catalog::new(store.clone(), runtime, clock.clone()));
        let writer = Writer::start(
            store.clone(),
            catalog.rules(),
            config.queue_capacity,
            config.max_batch,
            config.evaluation_threads,
        )
        .map_err(|error| ServiceError::internal(format!("cannot start the writer: {error}")))?;
        let (tenants, generated_admin_key) =
            Tenants::open(store.clone(), config.admin_key.as_deref(), clock.clone())?;
        let webhooks = Arc::new(Webhooks::new(store.clone(), config.webhooks.clone())?);
        let imports = Imports::new(store.clone(), config.import_dir(), config.max_import_bytes)?;
        Ok(Opened {
            service: Service {
                tenants,
                webhooks,
                imports,
                ingest: Ingest::new(store.clone(), catalog.clone(), writer, clock),
                queries: Queries::new(store),
                catalog,
                config,
            },
            generated_admin_key,
        })
    }

    /// How the host was set up.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops taking events and waits until everything queued is committed and answered.
    pub fn shutdown(&self) {
        self.ingest.shutdown();
    }
}
