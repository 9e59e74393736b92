//! How a host is set up: where it listens, where it keeps its data, the admin key, and the
//! limits of its queue, bodies and plugins. `tally serve` fills it from flags and the
//! environment; tests build one around a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::runtime::Limits;
use crate::storage::redb::DEFAULT_CACHE_BYTES;

/// The address `tally serve` listens on unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// The data directory `tally serve` uses unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "./tally-data";

/// The largest import file by default, 10 GiB: millions of rows, well inside a disk that
/// holds the events they become.
pub const DEFAULT_MAX_IMPORT_BYTES: u64 = 10 << 30;

/// Everything a host needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the HTTP API listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The directory holding the redb file and the compiled-plugin cache.
    pub data_dir: PathBuf,
    /// The admin key from `TALLY_ADMIN_KEY`; `None` keeps the stored one, or generates one
    /// on the first start.
    pub admin_key: Option<String>,
    /// Limits of every plugin evaluation.
    pub limits: Limits,
    /// Events that may wait for the writer; one more is answered 503 `overloaded`.
    pub queue_capacity: usize,
    /// The most events the writer puts in one transaction.
    pub max_batch: usize,
    /// The largest JSON, form or CSV request body.
    pub max_body_bytes: usize,
    /// The largest plugin upload.
    pub max_wasm_bytes: usize,
    /// The most events one `POST /v1/events/batch` or CSV import may carry.
    pub max_batch_events: usize,
    /// The most memory redb's page cache may hold.
    pub cache_bytes: usize,
    /// Threads that evaluate a batch's customers in parallel; one evaluates them in turn on
    /// the writer's own thread. See [`default_evaluation_threads`].
    pub evaluation_threads: usize,
    /// Whether the host runs on a test clock that `POST /v1/admin/clock` moves (`tally serve
    /// --test-clock`), rather than the system's.
    pub test_clock: bool,
    /// How webhooks are delivered.
    pub webhooks: crate::service::WebhookSettings,
    /// The largest file `POST /v1/imports` takes.
    pub max_import_bytes: u64,
}

/// One per core. On two cores one thread and two measure alike on the ingest bench (within
/// its noise, docs/performance.md), and one would halve how fast a tenant with costly plugins
/// can be evaluated, so the default keeps every core.
pub fn default_evaluation_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Config {
    /// The defaults, keeping data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Config {
        let limits = Limits::default();
        Config {
            // A constant that parses; the fallback only guards against a typo in it.
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir: data_dir.into(),
            admin_key: None,
            max_wasm_bytes: limits.max_module_bytes,
            limits,
            queue_capacity: 4096,
            max_batch: 256,
            max_body_bytes: 1 << 20,
            max_batch_events: 1000,
            cache_bytes: DEFAULT_CACHE_BYTES,
            evaluation_threads: default_evaluation_threads(),
            test_clock: false,
            webhooks: crate::service::WebhookSettings::default(),
            max_import_bytes: DEFAULT_MAX_IMPORT_BYTES,
        }
    }

    /// The redb file inside the data directory.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("tally.redb")
    }

    /// Where compiled plugin artifacts are cached, so a restart does not recompile.
    pub fn artifact_dir(&self) -> PathBuf {
        self.data_dir.join("artifacts")
    }

    /// Where files of bulk imports wait for their job to read them.
    pub fn import_dir(&self) -> PathBuf {
        self.data_dir.join("imports")
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}
