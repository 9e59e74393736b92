//! The committer: takes every evaluated batch waiting, appends their events in one write
//! transaction, commits it durably, and only then answers their requests.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use super::evaluator::{EvaluatedBatch, Evaluation, Plan};
use super::progress::Progress;
use super::{IngestError, Ingested, Job, NewEvent};
use crate::domain::EventId;
use crate::domain::records::{AppendEvent, Appended};
use crate::domain::{CustomerId, EventRefusal, TenantId, new_account};
use crate::storage::{BatchTxn, Store, StoreError};

/// Takes evaluated batches in order and writes every batch waiting in one durable
/// transaction: while one commit waits for the disk the evaluator gets ahead, and the next
/// commit takes all it did, so the commit's fixed cost is shared by more events the busier
/// the host is.
pub(super) fn run(
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
    let mut writing = take_writable(progress.now().generation, group);
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
            let timings = answer_committed(writing, answers);
            tracing::debug!(
                count,
                batches = timings.batches,
                reads = ?timings.reads,
                evaluation = ?timings.evaluation,
                writes = ?written,
                commit = ?started.elapsed().saturating_sub(written),
                "batch committed"
            );
            true
        }
        Err(error) => {
            tracing::error!(%error, count, "a batch of events could not be committed");
            for batch in writing {
                refuse_all(batch.jobs, &error);
            }
            false
        }
    }
}

/// The batches of a group that may be written: a batch built on one that failed to commit
/// (of an older `generation`) is refused whole, and so is one whose reads failed.
fn take_writable(generation: u64, group: Vec<EvaluatedBatch>) -> Vec<EvaluatedBatch> {
    let mut writing = Vec::with_capacity(group.len());
    for mut batch in group {
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
                refuse_all(batch.jobs, &error);
            }
            None => writing.push(batch),
        }
    }
    writing
}

/// Where the committed batches' time went before the committer, for the debug log.
struct GroupTimings {
    batches: usize,
    reads: Duration,
    evaluation: Duration,
}

/// Answers every event of committed batches.
fn answer_committed(writing: Vec<EvaluatedBatch>, answers: Vec<Vec<Pending>>) -> GroupTimings {
    let mut timings = GroupTimings {
        batches: writing.len(),
        reads: Duration::ZERO,
        evaluation: Duration::ZERO,
    };
    for (batch, answers) in writing.into_iter().zip(answers) {
        timings.reads += batch.timings.reads;
        timings.evaluation += batch.timings.evaluation;
        for (job, answer) in batch.jobs.into_iter().zip(answers) {
            let reply = match answer {
                Pending::Stored(ingested) => Ok(*ingested),
                Pending::Refused(error) => Err(error),
                Pending::Replay => Err(unanswered(&job.event.id)),
            };
            // The client may have gone away; the event is stored all the same.
            let _ = job.reply.send(reply);
        }
    }
    timings
}

/// Answers every event of `jobs` with `error`: nothing of them was stored.
fn refuse_all(jobs: Vec<Job>, error: &StoreError) {
    for job in jobs {
        let _ = job.reply.send(Err(IngestError::Storage(error.clone())));
    }
}

/// The answer an event gets once its batch has committed.
enum Pending {
    // Boxed: an answer is moved around once per event, and most of a batch is stored.
    Stored(Box<Ingested>),
    Refused(IngestError),
    /// A replay, answered once every new event of its batch is appended.
    Replay,
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
    refused: &mut Vec<(TenantId, CustomerId)>,
) -> Result<Vec<Pending>, StoreError> {
    let mut answers: Vec<Pending> = Vec::with_capacity(jobs.len());
    for ((job, plan), evaluation) in jobs.iter().zip(plans).zip(evaluated.iter_mut()) {
        let answer = match (plan, evaluation.take()) {
            (Plan::New, Some(Ok(append))) => {
                // An event sent for an alias landed on its survivor; a merge changes a second
                // customer: those are the customers to forget if it is refused.
                let changed = (append.event.customer != job.event.customer.as_str()
                    || append.merged.is_some())
                .then(|| changed_customers(&append));
                let answer = append_event(txn, &job.event, append)?;
                // A refused event was built on a state that is not stored; an erasure
                // changed the customer's plugin states behind the overlay's back: either way
                // the overlay forgets the customer and reads them again.
                let erased = job.event.action == "customer_erase";
                if erased || matches!(answer, Pending::Refused(_)) {
                    let tenant = &job.event.tenant;
                    match changed {
                        Some(changed) => refused.extend(
                            changed
                                .into_iter()
                                .map(|customer| (tenant.clone(), customer)),
                        ),
                        None => refused.push((tenant.clone(), job.event.customer.clone())),
                    }
                }
                answer
            }
            (Plan::New, Some(Err(refused))) => Pending::Refused(refused),
            (Plan::New, None) => Pending::Refused(IngestError::Internal(format!(
                "event {} was not evaluated",
                job.event.id
            ))),
            // Filled in below, once every new event of the batch is appended.
            (Plan::Stored(_) | Plan::SameAs { .. }, _) => Pending::Replay,
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
                // The first event with an id is new or stored, never a replay of its own.
                Pending::Replay => Err(unanswered(&job.event.id)),
            },
        };
        answers[index] = match stored {
            Ok(event) => {
                let tenant = job.event.tenant.as_str();
                // A replay answers with the customer as they are now.
                let customer = txn
                    .customer(tenant, &event.customer)?
                    .unwrap_or_else(|| new_account(&job.event.customer, job.event.received_at));
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

/// The customers `append` changes: the one it landed on and the one a merge took in.
fn changed_customers(append: &AppendEvent) -> Vec<CustomerId> {
    let merged = append
        .merged
        .as_ref()
        .map(|away| &away.customer.customer.id);
    std::iter::once(&append.event.customer)
        .chain(merged)
        .filter_map(|id| CustomerId::parse(id).ok())
        .collect()
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
        // The reward's stock went while the event was evaluated: refused as the host's rule,
        // nothing written.
        Err(StoreError::OutOfStock { reward, stock }) => Ok(Pending::Refused(
            IngestError::Refused(EventRefusal::RewardOutOfStock { reward, stock }),
        )),
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

fn unanswered(id: &EventId) -> IngestError {
    IngestError::Internal(format!("event {id} was left unanswered by its batch"))
}
