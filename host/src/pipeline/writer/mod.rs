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
//! The writer knows no loyalty rule: each event goes through [`super::evaluate_event`], the
//! path `simulate` and `tally eval` take too, which leaves the rules to the domain.
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

//!
//! The parts, one file each: `progress` (how far the committer has got, shared by the two
//! threads), `overlay` (what handed-over batches will write), `evaluator` (batches off the
//! queue, planned and evaluated), `committer` (group commit and the answers).

mod committer;
mod evaluator;
mod overlay;
mod progress;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use self::progress::Progress;
use super::{NotApplied, RuleSource};
use crate::domain::EventRefusal;
pub use crate::domain::NewEvent;
use crate::domain::records::{CustomerRecord, StoredEvent};
use crate::storage::{Store, StoreError};

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
    /// The host's own rules refuse it (a perk redeemed twice, ...); nothing was stored.
    #[error(transparent)]
    Refused(EventRefusal),
    /// The batch could not be committed; nothing of it was stored, and retrying may work.
    #[error("the event could not be stored: {0}")]
    Storage(StoreError),
    /// A bug: the store refused what the pipeline built, or the writer failed.
    #[error("{0}")]
    Internal(String),
}

impl From<NotApplied> for IngestError {
    fn from(not_applied: NotApplied) -> IngestError {
        match not_applied {
            NotApplied::Rejected(rejection) => IngestError::PluginRejected {
                plugin: rejection.plugin,
                version: rejection.version,
                code: rejection.error.code,
                message: rejection.error.message,
            },
            NotApplied::Refused(refusal) => IngestError::Refused(refusal),
            NotApplied::Unreadable(error) => IngestError::Internal(error.to_string()),
        }
    }
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
        rules: Arc<dyn RuleSource>,
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
        let pool = evaluator::pool(evaluation_threads)?;
        let evaluator = {
            let (store, progress) = (store.clone(), progress.clone());
            std::thread::Builder::new()
                .name("tally-evaluator".to_owned())
                .spawn(move || {
                    let sources = evaluator::Sources {
                        store: store.as_ref(),
                        rules: rules.as_ref(),
                        pool: &pool,
                        progress: &progress,
                    };
                    evaluator::run(receiver, &sources, max_batch.max(1), &evaluated_sender);
                })?
        };
        let committer = std::thread::Builder::new()
            .name("tally-writer".to_owned())
            .spawn(move || committer::run(&evaluated_receiver, store.as_ref(), &progress))?;
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
        self.try_submit(event).map_err(|(error, _)| error)
    }

    /// [`Writer::submit`], handing the event back when it is not queued, to try again.
    #[allow(
        clippy::result_large_err,
        reason = "the event is handed back, not boxed, to be queued again as it is"
    )]
    pub fn try_submit(
        &self,
        event: NewEvent,
    ) -> Result<oneshot::Receiver<Result<Ingested, IngestError>>, (SubmitError, NewEvent)> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(sender) = sender else {
            return Err((SubmitError::Closed, event));
        };
        let (reply, answer) = oneshot::channel();
        sender
            .try_send(Job { event, reply })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(job) => (SubmitError::Full, job.event),
                mpsc::error::TrySendError::Closed(job) => (SubmitError::Closed, job.event),
            })?;
        Ok(answer)
    }

    /// How many events the queue holds at most; 0 once the writer is shutting down.
    pub fn capacity(&self) -> usize {
        self.queue_figure(mpsc::Sender::max_capacity)
    }

    /// How many more events the queue takes now; 0 once the writer is shutting down.
    pub fn room(&self) -> usize {
        self.queue_figure(mpsc::Sender::capacity)
    }

    fn queue_figure(&self, figure: impl FnOnce(&mpsc::Sender<Job>) -> usize) -> usize {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, figure)
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
