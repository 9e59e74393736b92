//! `tally serve`: runs the host, the HTTP API with its embedded redb store, until Ctrl-C or
//! SIGTERM; then it stops accepting, finishes the requests in flight and commits every event
//! it accepted before it exits.
//!
//! Standard output carries what a person needs (the address, a generated admin key once, the
//! demo's results); logs go to standard error, filtered by `RUST_LOG`.

mod demo;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use std::time::Duration;
use tally_host::api;
use tally_host::config::{Config, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_MAX_IMPORT_BYTES};
use tally_host::service::{DEFAULT_OUTBOX_RETENTION_DAYS, Opened, Service, ServiceError};
use tally_host::storage::redb::DEFAULT_CACHE_BYTES;
use tally_host::storage::{RedbStore, Store};

use tracing_subscriber::EnvFilter;

/// Options of `tally serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, env = "TALLY_LISTEN", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory holding the database and compiled plugins.
    #[arg(long, env = "TALLY_DATA", default_value = DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// Also set up a demo tenant with the reference plugins, post sample events and print
    /// what each customer earned and what to try next.
    #[arg(long)]
    demo: bool,
    /// Events that may wait for the writer; one more is answered 503 with Retry-After.
    #[arg(long, env = "TALLY_QUEUE_CAPACITY", default_value_t = 4096)]
    queue_capacity: usize,
    /// The most events evaluated as one batch.
    #[arg(long, env = "TALLY_MAX_BATCH", default_value_t = 256)]
    max_batch: usize,
    /// Threads serving HTTP; by default one fewer than the machine has cores (at least one).
    #[arg(long, env = "TALLY_HTTP_THREADS")]
    http_threads: Option<usize>,
    /// Threads evaluating plugins in parallel; by default one per core.
    #[arg(long, env = "TALLY_EVALUATION_THREADS")]
    evaluation_threads: Option<usize>,
    /// The most memory, in MiB, the store's page cache may hold.
    #[arg(long, env = "TALLY_CACHE_MB", default_value_t = DEFAULT_CACHE_BYTES >> 20)]
    cache_mb: usize,
    /// Run on a test clock that stands still until `POST /v1/admin/clock` moves it (for
    /// tests that drive time; never in production).
    #[arg(long)]
    test_clock: bool,
    /// Let tenants register webhook endpoints on private, loopback and link-local addresses
    /// (refused by default, so a tenant cannot reach the host's own network).
    #[arg(long, env = "TALLY_ALLOW_PRIVATE_WEBHOOKS")]
    allow_private_webhooks: bool,
    /// Seconds to wait before each retry of a failed webhook delivery, comma-separated
    /// (default 5,300,1800,7200,18000,36000,36000: about a day); after the last, the trigger
    /// is dead-lettered. Tests shorten it.
    #[arg(long, env = "TALLY_WEBHOOK_RETRY_SCHEDULE", value_delimiter = ',')]
    webhook_retry_schedule: Option<Vec<f64>>,
    /// Milliseconds one webhook delivery attempt may take, connecting included; past it the
    /// attempt failed and is retried.
    #[arg(long, env = "TALLY_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    webhook_timeout_ms: u64,
    /// Hours a trigger stays in the outbox (for `GET /v1/triggers`) once every enabled
    /// webhook endpoint is past it; then it is removed. Fractions allowed.
    #[arg(long, env = "TALLY_OUTBOX_RETENTION_HOURS", default_value_t = (DEFAULT_OUTBOX_RETENTION_DAYS * 24) as f64)]
    outbox_retention_hours: f64,
    /// How the log on standard error is written: `text` for a person (coloured only at a
    /// terminal) or `json`, one object a line with the request's id, for a log collector.
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// The largest file `POST /v1/imports` takes, in MiB.
    #[arg(long, env = "TALLY_MAX_IMPORT_MB", default_value_t = DEFAULT_MAX_IMPORT_BYTES >> 20)]
    max_import_mb: u64,
}

/// The HTTP threads when none are asked for. Answering a request takes a fraction of what
/// evaluating and committing its event take, and those run on threads of their own (the
/// evaluator spreads over every core): one core's worth of HTTP threads fewer means less
/// switching between them. On 2 cores, one HTTP thread gives more events/s than two in
/// interleaved runs of `benches/ingest.rs` (docs/performance.md).
fn default_http_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, usize::from)
        .saturating_sub(1)
        .max(1)
}

/// Runs the host until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    let http_threads = args
        .http_threads
        .filter(|&threads| threads > 0)
        .unwrap_or_else(default_http_threads);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(http_threads)
        .enable_all()
        .thread_name("tally-http")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tally serve: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("tally serve: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal: a log file or a collector gets plain text.
        .with_ansi(std::io::stderr().is_terminal());
    // A second initialisation (there is none in the binary) would only be refused.
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        // One JSON object a line, the request's span (method, path, request id) in it.
        LogFormat::Json => logs.json().with_current_span(true).try_init(),
    };
}

/// How the log is written.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Lines for a person.
    Text,
    /// One JSON object a line, for a log collector.
    Json,
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let mut config = Config::new(&args.data);
    config.listen = args.listen;
    config.queue_capacity = args.queue_capacity.max(1);
    config.max_batch = args.max_batch.max(1);
    config.cache_bytes = args.cache_mb.saturating_mul(1 << 20);
    config.test_clock = args.test_clock;
    config.webhooks.allow_private = args.allow_private_webhooks;
    if let Some(schedule) = &args.webhook_retry_schedule {
        config.webhooks.retry_schedule = schedule
            .iter()
            .map(|&seconds| Duration::try_from_secs_f64(seconds))
            .collect::<Result<_, _>>()
            .map_err(|error| format!("--webhook-retry-schedule: {error}"))?;
    }
    config.webhooks.timeout = Duration::from_millis(args.webhook_timeout_ms.max(1));
    config.webhooks.outbox_retention =
        Duration::try_from_secs_f64(args.outbox_retention_hours * 3600.0)
            .map_err(|error| format!("--outbox-retention-hours: {error}"))?;
    config.max_import_bytes = args.max_import_mb.saturating_mul(1 << 20);
    if let Some(threads) = args.evaluation_threads.filter(|&threads| threads > 0) {
        config.evaluation_threads = threads;
    }
    config.admin_key = std::env::var("TALLY_ADMIN_KEY")
        .ok()
        .filter(|key| !key.trim().is_empty());
    if config.admin_key.as_ref().is_some_and(|key| key.len() < 24) {
        tracing::warn!(
            "TALLY_ADMIN_KEY is shorter than 24 characters; anyone who guesses it manages every tenant"
        );
    }

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|error| format!("cannot listen on {}: {error}", config.listen))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("cannot read the listening address: {error}"))?;
    let data_dir = config.data_dir.clone();
    let opened = tokio::task::spawn_blocking(move || open_embedded(config))
        .await
        .map_err(|error| format!("opening the host failed: {error}"))?
        .map_err(|error| format!("cannot open {}: {}", data_dir.display(), error.message))?;
    let service = Arc::new(opened.service);

    let stop = shutdown_signal();
    println!(
        "tally listening on http://{address} (data in {})",
        data_dir.display()
    );
    if let Some(key) = &opened.generated_admin_key {
        println!();
        println!(
            "Admin key (shown once; only its hash is stored, set TALLY_ADMIN_KEY to choose your own):"
        );
        println!("  {key}");
        println!();
    }

    let server = tokio::spawn(api::serve(listener, service.clone(), stop));
    if args.demo
        && let Err(message) = demo::run(&service, address).await
    {
        eprintln!("tally serve --demo: {message}");
    }
    match server.await {
        Ok(Ok(())) => {
            println!("tally stopped; every accepted event is committed");
            Ok(())
        }
        Ok(Err(error)) => Err(format!("the server failed: {error}")),
        Err(error) => Err(format!("the server task failed: {error}")),
    }
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed here, before the future is
/// first polled: a signal that arrives as soon as the host says it listens (a supervisor or a
/// test stopping it at once) must stop it gracefully, not kill it with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        let install = |kind: SignalKind, name: &'static str| {
            signal(kind)
                .inspect_err(|error| tracing::error!(%error, "cannot listen for {name}"))
                .ok()
        };
        (
            install(SignalKind::interrupt(), "Ctrl-C"),
            install(SignalKind::terminate(), "SIGTERM"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (interrupt, terminate) = signals;
            tokio::select! {
                _ = received(interrupt) => {},
                _ = received(terminate) => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!(
            "shutting down: no new connections; finishing and committing what was accepted"
        );
    }
}

/// Waits for `signal`; forever when it could not be installed.
#[cfg(unix)]
async fn received(signal: Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(mut signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// The host over its embedded store: one redb file in the data directory (created if need be).
fn open_embedded(config: Config) -> Result<Opened, ServiceError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|error| {
        ServiceError::internal(format!(
            "cannot create the data directory {}: {error}",
            config.data_dir.display()
        ))
    })?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open_with_cache(
        config.database_path(),
        config.cache_bytes,
    )?);
    Service::open(store, config)
}
