//! Group commit: the one writer of events, in two threads.
//!
//! Request handlers validate an event, then hand it to the writer through a bounded queue
//! with a oneshot for the answer. Redb writes and wasm evaluation block, so the writer runs
//! on OS threads of its own:
//!
//! - the **evaluator** takes the first waiting event and everything else waiting (up to a
//!   maximum batch) and
//!   1. reads, in arrival order and from one store snapshot: each id is checked for a replay
//!      (stored before, or earlier in the batch), and each customer's new events become a
//!      *chain* that starts from the customer and plugin states as the batches before left
//!      them;
//!   2. evaluates: each chain's events run through the tenant's plugins one after another,
//!      each on the customer the previous one left; chains of different customers share
//!      nothing, so they run in parallel on a pool of one thread per core, kept for the
//!      host's life;
//!   3. hands the batch to the committer and goes on with the next;
//! - the **committer** takes every evaluated batch waiting, appends their events in arrival
//!   order (each with its ledger entries, customer, plugin states and triggers, through
//!   [`BatchTxn::append`], which checks each against what is stored) in one
//!   [`Store::write_batch`], commits durably, and only then answers their requests.
//!
//! So a success means the event is on disk, and while one commit waits for the disk the next
//! batch is already being evaluated. A failed commit answers every event in it with an error,
//! and nothing of it was stored.
//!
//! Between the two threads, the *overlay* holds what the batches handed over will write
//! (customers, plugin states, event ids): the evaluator reads it before the store, so each
//! batch is evaluated on everything before it. Event ids leave it once their batch is
//! finished; customers and states stay, as a bounded cache of what is stored (this writer is
//! the only one that changes them), except a customer the store refused an event of, whom
//! the committer names before it answers, and the evaluator drops.
//! A failed commit bumps a generation number; the evaluator then forgets the overlay, and the
//! committer refuses every batch that was evaluated on top of the failure (its clients may
//! retry) rather than store it on state that is not on disk.
//!
//! One evaluator, one committer, and one chain per customer within a batch are what give
//! "events of one customer in arrival order, no lost updates" without locks: no two
//! evaluations of a customer overlap, and each starts from the one before.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tally_sdk::{Customer, Event, Timestamp};
use tokio::sync::{mpsc, oneshot};

use super::{PluginCall, PluginResult, run_plugins};
use crate::runtime::{EvalError, Plugin};
use crate::schema::ContactCardValue;
use crate::storage::{
    AppendEvent, Appended, BatchRead, BatchTxn, CustomerRecord, EventOutcome, NewLedgerEntry,
    NewTrigger, OnError, PluginErrorRecord, PluginRecord, PluginRun, PluginStatus, RawJson, Store,
    StoreError, StoredEvent,
};

/// A validated event on its way to the writer.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The tenant it belongs to.
    pub tenant: String,
    /// Its id, given or generated.
    pub id: String,
    /// Its action, which has a type or is allowed untyped.
    pub action: String,
    /// The sender's name for the action.
    pub label: Option<String>,
    /// The customer's id.
    pub customer: String,
    /// When it happened.
    pub timestamp: Timestamp,
    /// Where it came from: `api`, `import`, `demo`.
    pub source: String,
    /// The sender's address.
    pub ip_address: Option<String>,
    /// The sender's user agent.
    pub user_agent: Option<String>,
    /// The action's attributes, checked against its type.
    pub data: RawJson,
    /// When the host received it, RFC 3339.
    pub received_at: String,
    /// The contact-card fields of its type present in `data`.
    pub contact_card: Vec<ContactCardValue>,
}

/// What the writer made of an event.
#[derive(Debug, Clone)]
pub struct Ingested {
    /// The event as stored (the first one, for a replay).
    pub event: StoredEvent,
    /// The customer after the event (now, for a replay).
    pub customer: CustomerRecord,
    /// True when the id was already stored and nothing new happened.
    pub replayed: bool,
}

/// Why an event was not stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    /// A plugin with `on_error = reject` failed on it.
    #[error("plugin {plugin} (version {version}) rejected the event: {message}")]
    PluginRejected {
        /// The plugin.
        plugin: String,
        /// Its version.
        version: u32,
        /// The plugin error's code (`plugin_error`, `trap`, `out_of_fuel`, ...).
        code: String,
        /// The plugin error's message.
        message: String,
    },
    /// The batch could not be committed; nothing of it was stored, and retrying may work.
    #[error("the event could not be stored: {0}")]
    Storage(StoreError),
    /// A bug: the store refused what the pipeline built, or the writer failed.
    #[error("{0}")]
    Internal(String),
}

/// Why the writer did not take an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue is full: the caller should answer 503 and have the client retry.
    #[error("the event queue is full")]
    Full,
    /// The writer is shutting down.
    #[error("the host is shutting down")]
    Closed,
}

/// A plugin of a tenant as the writer runs it.
#[derive(Debug, Clone)]
pub struct ActivePlugin {
    /// Its settings.
    pub record: PluginRecord,
    /// Its active version, loaded; or why it could not be.
    pub plugin: Result<Plugin, String>,
    /// `record.config` as JSON text, written once rather than for every evaluation.
    config: Option<RawJson>,
}

impl ActivePlugin {
    /// A plugin with its settings and its loaded module (or why it could not be loaded).
    pub fn new(record: PluginRecord, plugin: Result<Plugin, String>) -> ActivePlugin {
        let config = (!record.config.is_null()).then(|| RawJson::from_value(&record.config));
        ActivePlugin {
            record,
            plugin,
            config,
        }
    }

    /// Whether it runs for events of `action`.
    pub fn runs_for(&self, action: &str) -> bool {
        self.record.enabled
            && self
                .record
                .actions
                .as_ref()
                .is_none_or(|actions| actions.iter().any(|a| a == action))
    }
}

/// Where the writer gets a tenant's plugins from, in the order they run.
pub trait PluginSource: Send + Sync {
    /// Every plugin of `tenant`, by priority then name, with its active version loaded.
    fn active_plugins(&self, tenant: &str) -> Result<Vec<ActivePlugin>, StoreError>;
}

type Reply = oneshot::Sender<Result<Ingested, IngestError>>;

struct Job {
    event: NewEvent,
    reply: Reply,
}

/// The handle to the writer: submit events, and shut it down.
#[derive(Debug)]
pub struct Writer {
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("event", &self.event.id)
            .finish()
    }
}

impl Writer {
    /// Starts the writer's two threads with a queue of `capacity` events and batches of at
    /// most `max_batch`, evaluating on `evaluation_threads` threads (one: the evaluator's own).
    pub fn start(
        store: Arc<dyn Store>,
        plugins: Arc<dyn PluginSource>,
        capacity: usize,
        max_batch: usize,
        evaluation_threads: usize,
    ) -> std::io::Result<Writer> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        // Evaluated batches wait here while a commit runs, and the next commit takes them all.
        // Bounded, so that events taken off the queue cannot pile up without limit.
        let (evaluated_sender, evaluated_receiver) =
            std::sync::mpsc::sync_channel(MAX_BATCHES_WAITING);
        let progress = Arc::new(Progress::default());
        let pool = evaluation_pool(evaluation_threads)?;
        let evaluator = {
            let (store, progress) = (store.clone(), progress.clone());
            std::thread::Builder::new()
                .name("tally-evaluator".to_owned())
                .spawn(move || {
                    let sources = Sources {
                        store: store.as_ref(),
                        plugins: plugins.as_ref(),
                        pool: &pool,
                        progress: &progress,
                    };
                    run_evaluator(receiver, &sources, max_batch.max(1), &evaluated_sender);
                })?
        };
        let committer = std::thread::Builder::new()
            .name("tally-writer".to_owned())
            .spawn(move || run_committer(&evaluated_receiver, store.as_ref(), &progress))?;
        Ok(Writer {
            sender: Mutex::new(Some(sender)),
            threads: Mutex::new(vec![evaluator, committer]),
        })
    }

    /// Queues `event`; the receiver gets the answer once its batch has committed.
    pub fn submit(
        &self,
        event: NewEvent,
    ) -> Result<oneshot::Receiver<Result<Ingested, IngestError>>, SubmitError> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(SubmitError::Closed)?;
        let (reply, answer) = oneshot::channel();
        sender
            .try_send(Job { event, reply })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => SubmitError::Full,
                mpsc::error::TrySendError::Closed(_) => SubmitError::Closed,
            })?;
        Ok(answer)
    }

    /// Stops taking events, lets the writer commit and answer everything queued, and waits
    /// for it to finish. Call it after the server stopped accepting requests.
    pub fn shutdown(&self) {
        // Dropping the last sender ends the evaluator's loop once the queue is empty, which
        // ends the committer's once it has committed what the evaluator handed it.
        drop(
            self.sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let threads =
            std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner));
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a writer thread panicked");
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How many evaluated batches may wait for the committer.
const MAX_BATCHES_WAITING: usize = 16;

/// How far the committer has got, shared by the writer's two threads.
///
/// Batches are numbered from 1 in the order the evaluator hands them over, and the committer
/// takes them in that order. `generation` grows each time a batch fails to commit: every
/// batch evaluated before the evaluator learned of it was built on state that is not on
/// disk, and the committer refuses it.
#[derive(Debug, Default)]
struct Progress {
    state: Mutex<ProgressShared>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct ProgressShared {
    now: ProgressState,
    /// (tenant, customer) of events the store refused in committed batches, not yet taken by
    /// the evaluator: what the overlay holds of those customers was never stored. Published
    /// after the commit and before the batch's answers, so an event posted after one of
    /// them is evaluated on what is stored.
    refused: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ProgressState {
    /// The last batch the committer finished, committed or failed.
    finished: u64,
    generation: u64,
}

impl Progress {
    fn now(&self) -> ProgressState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .now
    }

    fn finished(&self, batch: u64, failed: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.now.finished = batch;
        if failed {
            state.now.generation += 1;
        }
        self.changed.notify_all();
    }

    /// The store refused events of these (tenant, customer) in a batch that committed.
    fn refused(&self, customers: Vec<(String, String)>) {
        if !customers.is_empty() {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.refused.extend(customers);
        }
    }

    /// Where the committer is, and the refusals it has published since the last call.
    fn catch_up(&self) -> (ProgressState, Vec<(String, String)>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.now, std::mem::take(&mut state.refused))
    }

    /// Blocks until `batch` is finished; then as [`Progress::catch_up`].
    fn wait_for(&self, batch: u64) -> (ProgressState, Vec<(String, String)>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.now.finished < batch {
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        (state.now, std::mem::take(&mut state.refused))
    }
}

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
struct Overlay {
    customers: HashMap<(String, String), (CustomerRecord, u64)>,
    states: HashMap<(String, String, String), (Option<RawJson>, u64)>,
    ids: HashMap<(String, String), u64>,
    /// The JSON bytes of the states held.
    state_bytes: usize,
}

fn state_len(state: &Option<RawJson>) -> usize {
    state.as_ref().map_or(0, |state| state.get().len())
}

impl Overlay {
    /// Batches up to `finished` are in the store, except for the events of `refused`
    /// (tenant, customer) pairs: their ids are no longer pending, and those customers are
    /// dropped. The rest stays as a cache, unless it has outgrown its bound.
    fn forget_up_to(&mut self, finished: u64, refused: &[(String, String)]) {
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
    fn forget_batch(&mut self, number: u64) {
        self.customers.retain(|_, (_, batch)| *batch != number);
        self.states.retain(|_, (_, batch)| *batch != number);
        self.ids.retain(|_, batch| *batch != number);
        self.count_state_bytes();
    }

    fn clear(&mut self) {
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
    fn record(
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
            let id = customer.customer.id.clone();
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
struct Reader<'a> {
    snapshot: &'a dyn BatchRead,
    overlay: &'a Overlay,
}

impl Reader<'_> {
    fn customer(&self, tenant: &str, id: &str) -> Result<Option<CustomerRecord>, StoreError> {
        match self
            .overlay
            .customers
            .get(&(tenant.to_owned(), id.to_owned()))
        {
            Some((customer, _)) => Ok(Some(customer.clone())),
            None => self.snapshot.customer(tenant, id),
        }
    }

    fn plugin_state(
        &self,
        tenant: &str,
        plugin: &str,
        customer: &str,
    ) -> Result<Option<RawJson>, StoreError> {
        let key = (tenant.to_owned(), plugin.to_owned(), customer.to_owned());
        match self.overlay.states.get(&key) {
            Some((state, _)) => Ok(state.clone()),
            None => self.snapshot.plugin_state(tenant, plugin, customer),
        }
    }
}

/// A batch on its way from the evaluator to the committer.
struct EvaluatedBatch {
    number: u64,
    /// The generation the evaluator built it on.
    generation: u64,
    jobs: Vec<Job>,
    /// Why the whole batch failed before it was evaluated (a read failed).
    failed: Option<StoreError>,
    plans: Vec<Plan>,
    evaluated: Vec<Option<Evaluation>>,
    timings: Timings,
}

/// Takes batches off the queue, reads what they start from and evaluates them, and hands
/// them to the committer in order.
fn run_evaluator(
    mut receiver: mpsc::Receiver<Job>,
    sources: &Sources<'_>,
    max_batch: usize,
    committer: &std::sync::mpsc::SyncSender<EvaluatedBatch>,
) {
    let progress = sources.progress;
    let mut overlay = Overlay::default();
    let mut generation = progress.now().generation;
    let mut number = 0;
    // `blocking_recv` answers `None` once every sender is dropped and the queue is empty.
    while let Some(first) = receiver.blocking_recv() {
        let mut jobs = Vec::with_capacity(max_batch);
        jobs.push(first);
        while jobs.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        number += 1;
        let (now, refused) = progress.catch_up();
        if now.generation == generation {
            overlay.forget_up_to(now.finished, &refused);
        } else {
            // A batch failed to commit: what the overlay holds may never reach the store.
            overlay.clear();
            generation = now.generation;
        }
        let count = jobs.len();
        // A bug in one batch must not stop the writer: its requests get an error (their reply
        // senders are dropped) and the next batch runs.
        let evaluated = catch_unwind(AssertUnwindSafe(|| {
            evaluate_batch(sources, &mut overlay, number, generation, jobs)
        }));
        match evaluated {
            Ok(batch) => {
                if committer.send(batch).is_err() {
                    tracing::error!("the committer has stopped; the writer stops");
                    return;
                }
            }
            Err(_) => {
                tracing::error!(
                    count,
                    "the writer panicked on a batch; its events were not stored"
                );
                // Whatever of the batch the overlay took in is not going to be written.
                overlay.forget_batch(number);
                // The committer still gets the number, so that batch numbers stay contiguous.
                let empty = EvaluatedBatch {
                    number,
                    generation,
                    jobs: Vec::new(),
                    failed: None,
                    plans: Vec::new(),
                    evaluated: Vec::new(),
                    timings: Timings::default(),
                };
                if committer.send(empty).is_err() {
                    return;
                }
            }
        }
    }
    tracing::debug!("the evaluator has handed over everything queued and stops");
}

/// What the evaluator works with: where it reads, the plugins it runs, the threads it runs
/// them on, and the committer's progress.
struct Sources<'a> {
    store: &'a dyn Store,
    plugins: &'a dyn PluginSource,
    pool: &'a rayon::ThreadPool,
    progress: &'a Progress,
}

/// Reads and evaluates one batch, and records what it will write in the overlay.
fn evaluate_batch(
    sources: &Sources<'_>,
    overlay: &mut Overlay,
    number: u64,
    generation: u64,
    jobs: Vec<Job>,
) -> EvaluatedBatch {
    let Sources {
        store,
        plugins,
        pool,
        progress,
    } = *sources;
    let started = Instant::now();
    // Plugins are looked up (and compiled, on a cold cache) per batch: settings changed from
    // here on apply to the next batch.
    let mut by_tenant: HashMap<String, Result<Vec<ActivePlugin>, StoreError>> = HashMap::new();
    for job in &jobs {
        if !by_tenant.contains_key(&job.event.tenant) {
            let tenant = job.event.tenant.clone();
            let loaded = plugins.active_plugins(&tenant);
            by_tenant.insert(tenant, loaded);
        }
    }
    // An id in a batch the committer has not finished: wait for it, so that the store says
    // whether it was stored. Rare: the same event posted twice at the same moment.
    let pending = jobs
        .iter()
        .filter_map(|job| {
            overlay
                .ids
                .get(&(job.event.tenant.clone(), job.event.id.clone()))
                .copied()
        })
        .max();
    if let Some(batch) = pending {
        let (now, refused) = progress.wait_for(batch);
        if now.generation == generation {
            overlay.forget_up_to(now.finished, &refused);
        }
        // Otherwise the committer refuses this batch: it was begun on state that failed.
    }
    let mut timings = Timings::default();
    let mut planned = None;
    let read = store.read_batch(&mut |snapshot| {
        let reader = Reader { snapshot, overlay };
        planned = Some(plan_batch(&reader, &jobs, &by_tenant)?);
        Ok(())
    });
    let (plans, chains) = match read.and_then(|()| {
        planned
            .take()
            .ok_or_else(|| StoreError::backend("the batch's reads did not run"))
    }) {
        Ok(planned) => planned,
        Err(error) => {
            return EvaluatedBatch {
                number,
                generation,
                jobs,
                failed: Some(error),
                plans: Vec::new(),
                evaluated: Vec::new(),
                timings,
            };
        }
    };
    timings.reads = started.elapsed();
    let evaluating = Instant::now();
    let (evaluated, ends) = evaluate_chains(pool, chains, &jobs);
    timings.evaluation = evaluating.elapsed();
    overlay.record(number, &jobs, &evaluated, ends);
    EvaluatedBatch {
        number,
        generation,
        jobs,
        failed: None,
        plans,
        evaluated,
        timings,
    }
}

/// Takes evaluated batches in order and writes every batch waiting in one durable
/// transaction: while one commit waits for the disk the evaluator gets ahead, and the next
/// commit takes all it did, so the commit's fixed cost is shared by more events the busier
/// the host is.
fn run_committer(
    batches: &std::sync::mpsc::Receiver<EvaluatedBatch>,
    store: &dyn Store,
    progress: &Progress,
) {
    while let Ok(first) = batches.recv() {
        let mut group = vec![first];
        while let Ok(next) = batches.try_recv() {
            group.push(next);
        }
        let last = group.last().map_or(0, |batch| batch.number);
        let outcome = catch_unwind(AssertUnwindSafe(|| commit_group(store, progress, group)));
        let failed = match outcome {
            Ok(committed) => !committed,
            Err(_) => {
                tracing::error!(batch = last, "the writer panicked while committing");
                true
            }
        };
        progress.finished(last, failed);
    }
    tracing::debug!("the committer has committed everything handed over and stops");
}

/// Writes a group of batches in one transaction and answers their events; `false` when
/// the commit failed and nothing of it was stored.
fn commit_group(store: &dyn Store, progress: &Progress, group: Vec<EvaluatedBatch>) -> bool {
    let generation = progress.now().generation;
    let mut writing = Vec::with_capacity(group.len());
    for mut batch in group {
        // A batch built on one that failed to commit is refused whole; so is one whose reads
        // failed.
        let refused = batch.failed.take().or_else(|| {
            (batch.generation != generation).then(|| {
                StoreError::backend(
                    "an earlier batch of events could not be committed, and these were \
                     evaluated after it",
                )
            })
        });
        match refused {
            Some(error) => {
                tracing::error!(%error, count = batch.jobs.len(), "a batch of events was not stored");
                for job in batch.jobs {
                    let _ = job.reply.send(Err(IngestError::Storage(error.clone())));
                }
            }
            None => writing.push(batch),
        }
    }
    if writing.is_empty() {
        return true;
    }
    let started = Instant::now();
    let mut answers: Vec<Vec<Pending>> = Vec::with_capacity(writing.len());
    let mut refused = Vec::new();
    let mut written = Duration::ZERO;
    let committed = store.write_batch(&mut |txn| {
        answers.clear();
        refused.clear();
        for batch in &mut writing {
            answers.push(write_batch(
                txn,
                &batch.jobs,
                &batch.plans,
                &mut batch.evaluated,
                &mut refused,
            )?);
        }
        written = started.elapsed();
        Ok(())
    });
    let count: usize = writing.iter().map(|batch| batch.jobs.len()).sum();
    match committed {
        Ok(()) => {
            // Before any answer: a client that posts again once answered must find those
            // customers read from the store.
            progress.refused(std::mem::take(&mut refused));
            let batches = writing.len();
            let (mut reads, mut evaluation) = (Duration::ZERO, Duration::ZERO);
            for (batch, answers) in writing.into_iter().zip(answers) {
                reads += batch.timings.reads;
                evaluation += batch.timings.evaluation;
                for (job, answer) in batch.jobs.into_iter().zip(answers) {
                    let reply = match answer {
                        Pending::Stored(ingested) => Ok(*ingested),
                        Pending::Refused(error) => Err(error),
                    };
                    // The client may have gone away; the event is stored all the same.
                    let _ = job.reply.send(reply);
                }
            }
            tracing::debug!(
                count,
                batches,
                ?reads,
                ?evaluation,
                writes = ?written,
                commit = ?started.elapsed().saturating_sub(written),
                "batch committed"
            );
            true
        }
        Err(error) => {
            tracing::error!(%error, count, "a batch of events could not be committed");
            for batch in writing {
                for job in batch.jobs {
                    let _ = job.reply.send(Err(IngestError::Storage(error.clone())));
                }
            }
            false
        }
    }
}

/// The answer an event gets once its batch has committed.
enum Pending {
    // Boxed: an answer is moved around once per event, and most of a batch is stored.
    Stored(Box<Ingested>),
    Refused(IngestError),
}

/// Where a batch's time went before the committer, for the debug log.
#[derive(Debug, Default)]
struct Timings {
    reads: Duration,
    evaluation: Duration,
}

/// What the writer does with each event of a batch, decided before any is evaluated.
enum Plan {
    /// A new event: evaluated in the chain of its customer.
    New,
    /// Its id was stored before this batch: answered with the stored event.
    Stored(Box<StoredEvent>),
    /// Its id is that of the earlier event `first` of this batch: answered as `first` is.
    SameAs { first: usize },
}

/// The new events of one customer in a batch, in arrival order, with what they start from.
/// Each event is evaluated on the customer and plugin states the previous one left; chains
/// of different customers share nothing, so they are evaluated in parallel.
struct Chain<'a> {
    tenant: &'a str,
    plugins: &'a [ActivePlugin],
    /// The customer as the batches before left them.
    customer: CustomerRecord,
    /// Every subscribed plugin's state for the customer as the batches before left it.
    states: HashMap<&'a str, Option<RawJson>>,
    /// Indexes into the batch.
    events: Vec<usize>,
}

/// A new event after evaluation: what to append, or why it is refused.
type Evaluation = Result<AppendEvent, IngestError>;

/// Reads, in arrival order, what a batch starts from: replays (stored before, or earlier in
/// the batch), and for each customer the state its chain of new events starts from.
fn plan_batch<'a>(
    reader: &Reader<'_>,
    jobs: &'a [Job],
    by_tenant: &'a HashMap<String, Result<Vec<ActivePlugin>, StoreError>>,
) -> Result<(Vec<Plan>, Vec<Chain<'a>>), StoreError> {
    let mut plans = Vec::with_capacity(jobs.len());
    let mut chains: Vec<Chain<'a>> = Vec::new();
    let mut chain_of: HashMap<(&str, &str), usize> = HashMap::new();
    let mut first_with_id: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        let new = &job.event;
        let (tenant, id) = (new.tenant.as_str(), new.id.as_str());
        if let Some(&first) = first_with_id.get(&(tenant, id)) {
            plans.push(Plan::SameAs { first });
            continue;
        }
        first_with_id.insert((tenant, id), index);
        if let Some(stored) = reader.snapshot.event(tenant, id)? {
            plans.push(Plan::Stored(Box::new(stored)));
            continue;
        }
        let plugins = match by_tenant.get(tenant) {
            Some(Ok(list)) => list.as_slice(),
            Some(Err(error)) => return Err(error.clone()),
            None => &[],
        };
        let chain = match chain_of.get(&(tenant, new.customer.as_str())) {
            Some(&chain) => chain,
            None => {
                let customer = reader
                    .customer(tenant, &new.customer)?
                    .unwrap_or_else(|| empty_customer(&new.customer, &new.received_at));
                chains.push(Chain {
                    tenant,
                    plugins,
                    customer,
                    states: HashMap::new(),
                    events: Vec::new(),
                });
                chain_of.insert((tenant, new.customer.as_str()), chains.len() - 1);
                chains.len() - 1
            }
        };
        let chain = &mut chains[chain];
        for active in plugins.iter().filter(|p| p.runs_for(&new.action)) {
            let name = active.record.name.as_str();
            if !chain.states.contains_key(name) {
                let state = reader.plugin_state(tenant, name, &new.customer)?;
                chain.states.insert(name, state);
            }
        }
        chain.events.push(index);
        plans.push(Plan::New);
    }
    Ok((plans, chains))
}

/// Appends a batch's new events in arrival order, then works out the answers that need the
/// batch's final state (replays). `Err` aborts the whole batch (a storage failure); an event
/// refused on its own gets [`Pending::Refused`], and when the store refused it, its
/// (tenant, customer) goes to `refused`.
fn write_batch(
    txn: &mut dyn BatchTxn,
    jobs: &[Job],
    plans: &[Plan],
    evaluated: &mut [Option<Evaluation>],
    refused: &mut Vec<(String, String)>,
) -> Result<Vec<Pending>, StoreError> {
    let mut answers: Vec<Pending> = Vec::with_capacity(jobs.len());
    for ((job, plan), evaluation) in jobs.iter().zip(plans).zip(evaluated.iter_mut()) {
        let answer = match (plan, evaluation.take()) {
            (Plan::New, Some(Ok(append))) => {
                let answer = append_event(txn, &job.event, append)?;
                if let Pending::Refused(_) = answer {
                    refused.push((job.event.tenant.clone(), job.event.customer.clone()));
                }
                answer
            }
            (Plan::New, Some(Err(refused))) => Pending::Refused(refused),
            (Plan::New, None) => Pending::Refused(IngestError::Internal(format!(
                "event {} was not evaluated",
                job.event.id
            ))),
            // Filled in below, once every new event of the batch is appended.
            (Plan::Stored(_) | Plan::SameAs { .. }, _) => {
                Pending::Refused(IngestError::Internal(String::new()))
            }
        };
        answers.push(answer);
    }
    for (index, (job, plan)) in jobs.iter().zip(plans).enumerate() {
        let stored = match plan {
            Plan::New => continue,
            Plan::Stored(event) => Ok(event.as_ref().clone()),
            Plan::SameAs { first } => match &answers[*first] {
                Pending::Stored(first) => Ok(first.event.clone()),
                Pending::Refused(error) => Err(error.clone()),
            },
        };
        answers[index] = match stored {
            Ok(event) => {
                let tenant = job.event.tenant.as_str();
                // A replay answers with the customer as they are now.
                let customer = txn
                    .customer(tenant, &event.customer)?
                    .unwrap_or_else(|| empty_customer(&event.customer, &job.event.received_at));
                Pending::Stored(Box::new(Ingested {
                    event,
                    customer,
                    replayed: true,
                }))
            }
            Err(error) => Pending::Refused(error),
        };
    }
    Ok(answers)
}

/// Where a chain left its customer: the customer and every plugin state the chain read, as
/// its events left them, for the overlay. `customer` is `None` when none of its events was
/// stored.
struct ChainEnd {
    tenant: String,
    customer: Option<CustomerRecord>,
    states: Vec<(String, Option<RawJson>)>,
}

/// The threads chains are evaluated on, named like the evaluator, started once. With one, a
/// batch is evaluated on the evaluator thread itself.
fn evaluation_pool(threads: usize) -> std::io::Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|_| "tally-evaluator".to_owned())
        .build()
        .map_err(std::io::Error::other)
}

/// Evaluates every chain, on the pool's threads when there are enough events to share;
/// answers by batch index (`None` for events that are not new), and where each chain ended.
fn evaluate_chains(
    pool: &rayon::ThreadPool,
    chains: Vec<Chain<'_>>,
    jobs: &[Job],
) -> (Vec<Option<Evaluation>>, Vec<ChainEnd>) {
    use rayon::prelude::*;
    let mut evaluated: Vec<Option<Evaluation>> = Vec::new();
    evaluated.resize_with(jobs.len(), || None);
    let mut ends = Vec::with_capacity(chains.len());
    // A panic costs only its own chain: its events stay unevaluated (and are refused), and
    // the other chains of the batch go on.
    let guarded = |chain: Chain<'_>| {
        let customer = chain.customer.customer.id.clone();
        catch_unwind(AssertUnwindSafe(|| evaluate_chain(chain, jobs))).map_err(|_| {
            tracing::error!(%customer, "evaluating a customer's events panicked");
        })
    };
    let new_events: usize = chains.iter().map(|chain| chain.events.len()).sum();
    // Handing work to another thread costs more than a handful of events take.
    let done: Vec<_> = if pool.current_num_threads() <= 1 || new_events < MIN_EVENTS_TO_SPLIT {
        chains.into_iter().map(guarded).collect()
    } else {
        pool.install(|| {
            chains
                .into_par_iter()
                .with_max_len(1)
                .map(guarded)
                .collect()
        })
    };
    for (chain_done, end) in done.into_iter().flatten() {
        for (index, evaluation) in chain_done {
            evaluated[index] = Some(evaluation);
        }
        ends.push(end);
    }
    (evaluated, ends)
}

/// Below this many new events in a batch, they are evaluated on the evaluator thread alone.
const MIN_EVENTS_TO_SPLIT: usize = 8;

/// Evaluates a chain's events one after another, each on the customer and plugin states the
/// one before left. A refused event leaves them as they were.
fn evaluate_chain(chain: Chain<'_>, jobs: &[Job]) -> (Vec<(usize, Evaluation)>, ChainEnd) {
    let Chain {
        tenant,
        plugins,
        mut customer,
        mut states,
        events,
    } = chain;
    let mut stored_any = false;
    let mut done = Vec::with_capacity(events.len());
    for index in events {
        let new = &jobs[index].event;
        let subscribed: Vec<&ActivePlugin> =
            plugins.iter().filter(|p| p.runs_for(&new.action)).collect();
        let evaluation = {
            let inputs: Vec<Option<&RawJson>> = subscribed
                .iter()
                .map(|p| states.get(p.record.name.as_str()).and_then(Option::as_ref))
                .collect();
            evaluate_event(tenant, new, &customer, &subscribed, &inputs)
        };
        if let Ok(append) = &evaluation {
            stored_any = true;
            customer.clone_from(&append.customer);
            for (name, state) in &append.plugin_states {
                // Every state a plugin can return was read when the chain was planned.
                if let Some(kept) = states.get_mut(name.as_str()) {
                    kept.clone_from(state);
                }
            }
        }
        done.push((index, evaluation));
    }
    // Every state the chain read, changed or not: the overlay keeps them all as a cache.
    let end = ChainEnd {
        tenant: tenant.to_owned(),
        states: states
            .into_iter()
            .map(|(name, state)| (name.to_owned(), state))
            .collect(),
        customer: stored_any.then_some(customer),
    };
    (done, end)
}

/// Runs the subscribed plugins on one event and builds what to append, or refuses the event
/// when a plugin with `on_error = reject` failed.
fn evaluate_event(
    tenant: &str,
    new: &NewEvent,
    before: &CustomerRecord,
    subscribed: &[&ActivePlugin],
    states: &[Option<&RawJson>],
) -> Evaluation {
    let event = wire_event(new).map_err(IngestError::Internal)?;
    let results = evaluate(tenant, &event, &before.customer, subscribed, states);
    for (active, result) in subscribed.iter().zip(&results.results) {
        if let Err(error) = &result.outcome
            && active.record.on_error == OnError::Reject
        {
            return Err(IngestError::PluginRejected {
                plugin: result.name.clone(),
                version: result.version,
                code: error.code().to_owned(),
                message: error.to_string(),
            });
        }
    }
    Ok(build_append(new, before, results))
}

/// Appends one evaluated event. `Err` aborts the whole batch (a storage failure).
fn append_event(
    txn: &mut dyn BatchTxn,
    new: &NewEvent,
    append: AppendEvent,
) -> Result<Pending, StoreError> {
    match txn.append(append) {
        Ok(Appended { event, customer }) => Ok(Pending::Stored(Box::new(Ingested {
            event,
            customer,
            replayed: false,
        }))),
        // The store refused what the pipeline built (a bug): this event only, nothing written.
        // Later events of its customer in this batch were built on it and are refused too.
        Err(
            error
            @ (StoreError::Inconsistent(_) | StoreError::Conflict(_) | StoreError::Invalid(_)),
        ) => {
            tracing::error!(%error, event = %new.id, "the store refused an evaluated event");
            Ok(Pending::Refused(IngestError::Internal(error.to_string())))
        }
        Err(error) => Err(error),
    }
}

/// What the plugins made of one event, with the results of those that could not be loaded
/// placed where they would have run.
struct Evaluated {
    results: Vec<PluginResult>,
    customer: Customer,
}

/// Runs the subscribed plugins in order. A plugin whose module cannot be loaded counts as a
/// failed plugin (its `on_error` applies) rather than stopping the others.
fn evaluate(
    tenant: &str,
    event: &Event,
    customer: &Customer,
    subscribed: &[&ActivePlugin],
    states: &[Option<&RawJson>],
) -> Evaluated {
    let mut results = Vec::with_capacity(subscribed.len());
    let mut customer = customer.clone();
    // Consecutive loadable plugins run together through `run_plugins`, the one place that
    // chains decisions; an unloadable one is recorded between them.
    let mut start = 0;
    while start < subscribed.len() {
        let end = subscribed[start..]
            .iter()
            .position(|p| p.plugin.is_err())
            .map_or(subscribed.len(), |offset| start + offset);
        if end > start {
            let calls: Vec<PluginCall<'_>> = subscribed[start..end]
                .iter()
                .zip(&states[start..end])
                .filter_map(|(active, state)| {
                    let plugin = active.plugin.as_ref().ok()?;
                    Some(PluginCall {
                        name: &active.record.name,
                        version: active.record.active_version,
                        plugin,
                        config: active.config.as_ref(),
                        state: *state,
                    })
                })
                .collect();
            let outcome = run_plugins(tenant, event, customer, &calls);
            customer = outcome.customer;
            results.extend(outcome.results);
        }
        if let Some(broken) = subscribed.get(end) {
            let reason = broken.plugin.as_ref().err().cloned().unwrap_or_default();
            results.push(PluginResult {
                name: broken.record.name.clone(),
                version: broken.record.active_version,
                outcome: Err(EvalError::Host {
                    reason: format!("the plugin could not be loaded: {reason}"),
                }),
                logs: Vec::new(),
                fuel_used: None,
            });
        }
        start = end + 1;
    }
    Evaluated { results, customer }
}

/// The event as plugins see it.
pub fn wire_event(new: &NewEvent) -> Result<Event, String> {
    let mut event = Event::from_raw(
        new.id.clone(),
        new.action.clone(),
        new.customer.clone(),
        new.timestamp,
        new.data.clone(),
    )
    .map_err(|error| error.to_string())?;
    event.label.clone_from(&new.label);
    event.source.clone_from(&new.source);
    Ok(event)
}

/// A customer the host has not seen before.
pub fn empty_customer(id: &str, now: &str) -> CustomerRecord {
    CustomerRecord {
        customer: Customer {
            id: id.to_owned(),
            ..Customer::default()
        },
        created_at: now.to_owned(),
        updated_at: now.to_owned(),
        event_count: 0,
        contact_card: Map::new(),
    }
}

fn build_append(new: &NewEvent, before: &CustomerRecord, evaluated: Evaluated) -> AppendEvent {
    let mut outcome = EventOutcome::default();
    let mut ledger = Vec::new();
    let mut triggers = Vec::new();
    let mut plugin_states = Vec::new();
    // The results are consumed: each decision's entries and triggers are copied once, for the
    // ledger and the outbox, and moved into the event's outcome.
    for result in evaluated.results {
        let (status, error) = match result.outcome {
            Ok(decision) => {
                for entry in &decision.points {
                    ledger.push(NewLedgerEntry {
                        plugin: result.name.clone(),
                        entry: entry.clone(),
                    });
                }
                for trigger in &decision.triggers {
                    triggers.push(NewTrigger {
                        plugin: result.name.clone(),
                        trigger: trigger.clone(),
                    });
                }
                if let Some(state) = decision.state {
                    // `null` clears the state; anything else replaces it.
                    let kept = (!state.is_null()).then_some(state);
                    plugin_states.push((result.name.clone(), kept));
                }
                outcome.points.extend(decision.points);
                outcome.perks.extend(decision.perks);
                outcome.triggers.extend(decision.triggers);
                if decision.tier.is_some() {
                    outcome.tier = decision.tier;
                }
                (PluginStatus::Ok, None)
            }
            Err(error) => (
                PluginStatus::Error,
                Some(PluginErrorRecord {
                    code: error.code().to_owned(),
                    message: error.to_string(),
                }),
            ),
        };
        outcome.plugins.push(PluginRun {
            name: result.name,
            version: result.version,
            status,
            error,
        });
    }
    let points = ledger
        .iter()
        .fold(0_i64, |sum, new| sum.saturating_add(new.entry.amount));

    // The plugins' effect (points, tier, perks) as they chained it; then what the host keeps.
    // Built from parts: `before.customer` is replaced, so copying it would be wasted.
    let mut customer = CustomerRecord {
        customer: evaluated.customer,
        created_at: before.created_at.clone(),
        updated_at: new.received_at.clone(),
        event_count: before.event_count.saturating_add(1),
        contact_card: before.contact_card.clone(),
    };
    record_stats(&mut customer.customer.stats, new);
    record_attributes(&mut customer.customer.attributes, new);
    record_contact_card(&mut customer.contact_card, new);

    AppendEvent {
        tenant: new.tenant.clone(),
        event: StoredEvent {
            seq: 0,
            id: new.id.clone(),
            action: new.action.clone(),
            label: new.label.clone(),
            date: new.timestamp.date_string(),
            timestamp: new.timestamp,
            customer: new.customer.clone(),
            points,
            source: new.source.clone(),
            ip_address: new.ip_address.clone(),
            user_agent: new.user_agent.clone(),
            data: new.data.clone(),
            received_at: new.received_at.clone(),
            outcome,
        },
        customer,
        ledger,
        plugin_states,
        triggers,
    }
}

/// The counters plugins see in `customer.stats`: events per action, and the first and last
/// event time (business time, from the events).
fn record_stats(stats: &mut Map<String, Value>, new: &NewEvent) {
    let events = stats
        .entry("events")
        .or_insert_with(|| Value::Object(Map::new()));
    if !events.is_object() {
        *events = Value::Object(Map::new());
    }
    if let Value::Object(per_action) = events {
        let count = per_action
            .get(&new.action)
            .and_then(Value::as_u64)
            .unwrap_or(0);
        per_action.insert(new.action.clone(), json!(count.saturating_add(1)));
    }
    let at = new.timestamp;
    let read = |stats: &Map<String, Value>, key: &str| {
        stats
            .get(key)
            .and_then(Value::as_str)
            .and_then(|text| text.parse::<Timestamp>().ok())
    };
    if read(stats, "first_event_at").is_none_or(|first| at < first) {
        stats.insert("first_event_at".to_owned(), json!(at.to_string()));
    }
    if read(stats, "last_event_at").is_none_or(|last| at > last) {
        stats.insert("last_event_at".to_owned(), json!(at.to_string()));
    }
}

/// The profile fields an `opt_in` carries (Antavo's opt-in events and CSV imports bring the
/// customer's email and name), and the opt-in flag itself.
fn record_attributes(attributes: &mut Map<String, Value>, new: &NewEvent) {
    const PROFILE_FIELDS: [&str; 5] = ["email", "first_name", "last_name", "phone", "language"];
    match new.action.as_str() {
        "opt_in" => {
            let data = new.data.to_value();
            for field in PROFILE_FIELDS {
                if let Some(value) = data.get(field).filter(|v| !v.is_null()) {
                    attributes.insert(field.to_owned(), value.clone());
                }
            }
            attributes.insert("opted_in".to_owned(), Value::Bool(true));
            attributes.insert("opted_in_at".to_owned(), json!(new.timestamp.to_string()));
        }
        "opt_out" => {
            attributes.insert("opted_in".to_owned(), Value::Bool(false));
            attributes.insert("opted_out_at".to_owned(), json!(new.timestamp.to_string()));
        }
        _ => {}
    }
}

/// The contact card keeps the latest value of every `showInContactCard` field, keyed
/// `action.property` (several interaction types have a `date`), with the event it came from.
/// An event older than the value already shown does not replace it.
fn record_contact_card(card: &mut Map<String, Value>, new: &NewEvent) {
    for field in &new.contact_card {
        let key = format!("{}.{}", new.action, field.property);
        let newer = card
            .get(&key)
            .and_then(|shown| shown.get("at"))
            .and_then(Value::as_str)
            .and_then(|at| at.parse::<Timestamp>().ok())
            .is_none_or(|shown_at| new.timestamp >= shown_at);
        if newer {
            card.insert(
                key,
                json!({
                    "action": new.action,
                    "property": field.property,
                    "display_name": field.display_name,
                    "value": field.value,
                    "event_id": new.id,
                    "at": new.timestamp.to_string(),
                }),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;

    fn event(action: &str, at: &str, data: Value) -> NewEvent {
        NewEvent {
            tenant: "acme".to_owned(),
            id: format!("{action}-{at}"),
            action: action.to_owned(),
            label: None,
            customer: "ada".to_owned(),
            timestamp: at.parse().unwrap(),
            source: "api".to_owned(),
            ip_address: None,
            user_agent: None,
            data: RawJson::from_value(&data),
            received_at: "2026-11-23T00:00:00Z".to_owned(),
            contact_card: Vec::new(),
        }
    }

    #[test]
    fn stats_count_actions_and_keep_the_first_and_last_event_time() {
        let mut stats = Map::new();
        for (action, at) in [
            ("checkout", "2026-11-02T00:00:00Z"),
            ("repair", "2026-11-01T00:00:00Z"),
            ("checkout", "2026-11-03T00:00:00Z"),
        ] {
            record_stats(&mut stats, &event(action, at, json!({})));
        }
        assert_eq!(
            Value::Object(stats),
            json!({
                "events": {"checkout": 2, "repair": 1},
                "first_event_at": "2026-11-01T00:00:00Z",
                "last_event_at": "2026-11-03T00:00:00Z",
            })
        );
    }

    #[test]
    fn contact_card_keeps_the_latest_value_per_action_and_property() {
        let mut card = Map::new();
        let field = |value: &str| ContactCardValue {
            property: "brand".to_owned(),
            display_name: "Brand".to_owned(),
            value: json!(value),
        };
        for (at, brand) in [
            ("2026-11-02T00:00:00Z", "new"),
            ("2026-11-01T00:00:00Z", "older, posted later"),
        ] {
            let mut repair = event("repair", at, json!({"brand": brand}));
            repair.contact_card = vec![field(brand)];
            record_contact_card(&mut card, &repair);
        }
        assert_eq!(card["repair.brand"]["value"], "new");
        assert_eq!(card["repair.brand"]["display_name"], "Brand");
        assert_eq!(card["repair.brand"]["at"], "2026-11-02T00:00:00Z");
    }

    #[test]
    fn opt_in_and_opt_out_set_profile_attributes() {
        let mut attributes = Map::new();
        let data = json!({"email": "ada@example.com", "first_name": "Ada", "channel": "web"});
        record_attributes(
            &mut attributes,
            &event("opt_in", "2026-11-01T00:00:00Z", data),
        );
        assert_eq!(attributes["email"], "ada@example.com");
        assert_eq!(attributes["opted_in"], true);
        assert!(!attributes.contains_key("channel"));
        record_attributes(
            &mut attributes,
            &event("opt_out", "2026-11-02T00:00:00Z", json!({})),
        );
        assert_eq!(attributes["opted_in"], false);
        assert_eq!(attributes["first_name"], "Ada");
    }

    fn chain_end(customer: &str, state: &str) -> ChainEnd {
        ChainEnd {
            tenant: "acme".to_owned(),
            customer: Some(empty_customer(customer, "2026-12-04T00:00:00Z")),
            states: vec![(
                "points".to_owned(),
                Some(RawJson::from_value(&json!(state))),
            )],
        }
    }

    fn cached(overlay: &Overlay, customer: &str) -> bool {
        overlay
            .customers
            .contains_key(&("acme".to_owned(), customer.to_owned()))
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
        overlay.forget_up_to(1, &[("acme".to_owned(), "bob".to_owned())]);
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
