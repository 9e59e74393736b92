//! The evaluator: takes batches off the queue, reads what they start from in one snapshot,
//! evaluates one chain per customer in parallel, and hands each batch to the committer.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::overlay::{Overlay, Reader};
use super::progress::Progress;
use super::{IngestError, Job};
use crate::domain::records::{AppendEvent, CustomerRecord, RawJson, StoredEvent};
use crate::domain::{CustomerId, NewEvent, TenantId, new_account};
use crate::pipeline::{PluginCall, RuleSource, TenantRules, evaluate_merging};
use crate::storage::{Store, StoreError};

/// A batch on its way from the evaluator to the committer.
pub(super) struct EvaluatedBatch {
    pub(super) number: u64,
    /// The generation the evaluator built it on.
    pub(super) generation: u64,
    pub(super) jobs: Vec<Job>,
    /// Why the whole batch failed before it was evaluated (a read failed).
    pub(super) failed: Option<StoreError>,
    pub(super) plans: Vec<Plan>,
    pub(super) evaluated: Vec<Option<Evaluation>>,
    pub(super) timings: Timings,
}

/// Takes batches off the queue, reads what they start from and evaluates them, and hands
/// them to the committer in order.
pub(super) fn run(
    mut receiver: mpsc::Receiver<Job>,
    sources: &Sources<'_>,
    max_batch: usize,
    committer: &std::sync::mpsc::SyncSender<EvaluatedBatch>,
) {
    let progress = sources.progress;
    let mut overlay = Overlay::default();
    let mut generation = progress.now().generation;
    let mut number = 0;
    // An event taken off the queue that is to be a batch of its own, next.
    let mut alone_next: Option<Job> = None;
    // `blocking_recv` answers `None` once every sender is dropped and the queue is empty.
    while let Some(first) = alone_next.take().or_else(|| receiver.blocking_recv()) {
        let mut jobs = Vec::with_capacity(max_batch);
        let alone = runs_alone(&first);
        jobs.push(first);
        while !alone && jobs.len() < max_batch {
            match receiver.try_recv() {
                Ok(job) if runs_alone(&job) => {
                    alone_next = Some(job);
                    break;
                }
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

/// Whether `job` is a batch of its own, evaluated on everything before it with everything
/// after it evaluated on it: a merge changes two customers, whose chains could not run side
/// by side, and an erasure of an alias names that id itself where the batch's other events
/// for it land on the survivor.
fn runs_alone(job: &Job) -> bool {
    matches!(
        job.event.action.as_str(),
        "customer_merge" | "customer_erase"
    )
}

fn is_merge(job: &Job) -> bool {
    job.event.action == "customer_merge"
}

/// What the evaluator works with: where it reads, the plugins it runs, the threads it runs
/// them on, and the committer's progress.
pub(super) struct Sources<'a> {
    pub(super) store: &'a dyn Store,
    pub(super) rules: &'a dyn RuleSource,
    pub(super) pool: &'a rayon::ThreadPool,
    pub(super) progress: &'a Progress,
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
        rules,
        pool,
        progress,
    } = *sources;
    let started = Instant::now();
    let by_tenant = rules_of(rules, &jobs);
    wait_for_pending_ids(overlay, progress, generation, &jobs);
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

/// The rules of every tenant with an event in the batch. Looked up (and compiled, on a cold
/// cache) per batch: settings changed from here on apply to the next batch.
fn rules_of(
    rules: &dyn RuleSource,
    jobs: &[Job],
) -> HashMap<TenantId, Result<TenantRules, StoreError>> {
    let mut by_tenant = HashMap::new();
    for job in jobs {
        if !by_tenant.contains_key(&job.event.tenant) {
            let tenant = job.event.tenant.clone();
            let loaded = rules.rules(tenant.as_str());
            by_tenant.insert(tenant, loaded);
        }
    }
    by_tenant
}

/// When an id of the batch is in a batch the committer has not finished, waits for that
/// batch, so that the store says whether the id was stored. Rare: the same event posted twice
/// at the same moment.
fn wait_for_pending_ids(overlay: &mut Overlay, progress: &Progress, generation: u64, jobs: &[Job]) {
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
}

/// Where a batch's time went before the committer, for the debug log.
#[derive(Debug, Default)]
pub(super) struct Timings {
    pub(super) reads: Duration,
    pub(super) evaluation: Duration,
}

/// What the writer does with each event of a batch, decided before any is evaluated.
pub(super) enum Plan {
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
    tenant: &'a TenantId,
    rules: &'a TenantRules,
    /// The customer its events land on: theirs, or the one their customer was merged into.
    customer_id: CustomerId,
    /// The customer as the batches before left them.
    customer: CustomerRecord,
    /// For a merge (a chain of its own): the customer it takes in, as the batches before
    /// left them (`None` when there is none).
    merging: Option<(CustomerId, Option<CustomerRecord>)>,
    /// Every subscribed plugin's state for the customer as the batches before left it.
    states: HashMap<&'a str, Option<RawJson>>,
    /// Indexes into the batch.
    events: Vec<usize>,
}

/// A new event after evaluation: what to append, or why it is refused.
pub(super) type Evaluation = Result<AppendEvent, IngestError>;

/// Reads, in arrival order, what a batch starts from: replays (stored before, or earlier in
/// the batch), and for each customer the state its chain of new events starts from.
fn plan_batch<'a>(
    reader: &Reader<'_>,
    jobs: &'a [Job],
    by_tenant: &'a HashMap<TenantId, Result<TenantRules, StoreError>>,
) -> Result<(Vec<Plan>, Vec<Chain<'a>>), StoreError> {
    let mut plans = Vec::with_capacity(jobs.len());
    let mut chains: Vec<Chain<'a>> = Vec::new();
    let mut chain_of: HashMap<(&TenantId, &CustomerId), usize> = HashMap::new();
    // Chains of customers the batch reached only through an alias (rare).
    let mut chain_of_survivor: HashMap<(&TenantId, CustomerId), usize> = HashMap::new();
    let mut first_with_id: HashMap<(&TenantId, &str), usize> = HashMap::new();
    for (index, job) in jobs.iter().enumerate() {
        let new = &job.event;
        let tenant = &new.tenant;
        if let Some(&first) = first_with_id.get(&(tenant, new.id.as_str())) {
            plans.push(Plan::SameAs { first });
            continue;
        }
        first_with_id.insert((tenant, new.id.as_str()), index);
        if let Some(stored) = reader.snapshot.event(tenant.as_str(), new.id.as_str())? {
            plans.push(Plan::Stored(Box::new(stored)));
            continue;
        }
        let rules = match by_tenant.get(tenant) {
            Some(Ok(rules)) => rules,
            Some(Err(error)) => return Err(error.clone()),
            None => NO_RULES,
        };
        let chain = match chain_of.get(&(tenant, &new.customer)) {
            Some(&chain) => chain,
            None => {
                let (customer_id, customer) = land_on(reader, new)?;
                let redirected = customer_id != new.customer;
                // The chain of a survivor reached before through an alias, or directly.
                let existing = (!chain_of_survivor.is_empty())
                    .then(|| chain_of_survivor.get(&(tenant, customer_id.clone())))
                    .flatten()
                    .or_else(|| {
                        redirected
                            .then(|| chain_of.get(&(tenant, &customer_id)))
                            .flatten()
                    })
                    .copied();
                let chain = match existing {
                    Some(chain) => chain,
                    None => {
                        let customer =
                            customer.unwrap_or_else(|| new_account(&customer_id, new.received_at));
                        let merging = match is_merge(job) {
                            true => Some(merging_of(reader, new)?),
                            false => None,
                        };
                        chains.push(Chain {
                            tenant,
                            rules,
                            customer_id: customer_id.clone(),
                            customer,
                            merging,
                            states: HashMap::new(),
                            events: Vec::new(),
                        });
                        chains.len() - 1
                    }
                };
                if redirected {
                    chain_of_survivor.insert((tenant, customer_id), chain);
                }
                chain_of.insert((tenant, &new.customer), chain);
                chain
            }
        };
        let chain = &mut chains[chain];
        for active in rules.plugins.iter().filter(|p| p.runs_for(&new.action)) {
            let name = active.record.name.as_str();
            if !chain.states.contains_key(name) {
                let state = reader.plugin_state(tenant, name, &chain.customer_id)?;
                chain.states.insert(name, state);
            }
        }
        chain.events.push(index);
        plans.push(Plan::New);
    }
    Ok((plans, chains))
}

/// The customer `new` lands on, with their record as the batches before left them: its own
/// customer, or, when that id was merged into another, the customer it is an alias of. An
/// erasure is the exception: it forgets the id it names, alias or not.
fn land_on(
    reader: &Reader<'_>,
    new: &NewEvent,
) -> Result<(CustomerId, Option<CustomerRecord>), StoreError> {
    let mut id = new.customer.clone();
    let mut record = reader.customer(&new.tenant, &id)?;
    if new.action == "customer_erase" {
        return Ok((id, record));
    }
    // Merged customers form chains of aliases ending in one that was not merged; a merge
    // never takes in a customer merged before, so there is no cycle, and the bound only
    // guards against a damaged store.
    for _ in 0..MAX_ALIAS_HOPS {
        let Some(into) = record
            .as_ref()
            .and_then(|record| record.merged_into.as_deref())
        else {
            break;
        };
        let Ok(into) = CustomerId::parse(into) else {
            break;
        };
        record = reader.customer(&new.tenant, &into)?;
        id = into;
    }
    Ok((id, record))
}

/// More aliases than any store the host wrote can chain.
const MAX_ALIAS_HOPS: usize = 64;

/// The customer a `customer_merge` takes in (`data.from`), as the batches before left them.
fn merging_of(
    reader: &Reader<'_>,
    new: &NewEvent,
) -> Result<(CustomerId, Option<CustomerRecord>), StoreError> {
    #[derive(serde::Deserialize)]
    struct From {
        from: String,
    }
    let from = serde_json::from_str::<From>(new.data.get())
        .ok()
        .and_then(|data| CustomerId::parse(&data.from).ok());
    match from {
        Some(from) => {
            let record = reader.customer(&new.tenant, &from)?;
            Ok((from, record))
        }
        // The domain refuses a merge that names no customer.
        None => Ok((new.customer.clone(), None)),
    }
}

/// The rules of a tenant the store could not name (gone since its event was accepted): no
/// plugins, the default policy. The store refuses the append if the tenant is truly gone.
const NO_RULES: &TenantRules = &TenantRules {
    plugins: Vec::new(),
    policy: crate::domain::Policy::DEFAULT,
};

/// Where a chain left its customer: the customer and every plugin state the chain read, as
/// its events left them, for the overlay. `customer` is `None` when none of its events was
/// stored.
pub(super) struct ChainEnd {
    pub(super) tenant: TenantId,
    pub(super) customer_id: CustomerId,
    pub(super) customer: Option<CustomerRecord>,
    pub(super) states: Vec<(String, Option<RawJson>)>,
    /// The customer a merge took in, as it left them.
    pub(super) merged: Option<(CustomerId, CustomerRecord)>,
}

/// The threads chains are evaluated on, named like the evaluator, started once. With one, a
/// batch is evaluated on the evaluator thread itself.
pub(super) fn pool(threads: usize) -> std::io::Result<rayon::ThreadPool> {
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
        rules,
        customer_id,
        mut customer,
        merging,
        mut states,
        events,
    } = chain;
    let mut stored_any = false;
    let mut merged = None;
    let mut done = Vec::with_capacity(events.len());
    for index in events {
        let sent = &jobs[index].event;
        // An event sent for an alias is the survivor's.
        let redirected;
        let new = if sent.customer == customer_id {
            sent
        } else {
            redirected = NewEvent {
                customer: customer_id.clone(),
                ..sent.clone()
            };
            &redirected
        };
        let calls: Vec<PluginCall<'_>> = rules
            .plugins
            .iter()
            .filter(|active| active.runs_for(&new.action))
            .map(|active| {
                let state = states
                    .get(active.record.name.as_str())
                    .and_then(Option::as_ref);
                active.call(state)
            })
            .collect();
        let taken_in = merging.as_ref().and_then(|(_, record)| record.as_ref());
        let evaluation = evaluate_merging(rules.policy, new, &customer, taken_in, &calls)
            .map_err(IngestError::from);
        if let Ok(append) = &evaluation {
            stored_any = true;
            if let (Some(away), Some((id, _))) = (&append.merged, &merging) {
                merged = Some((id.clone(), away.customer.clone()));
            }
            customer.clone_from(&append.customer);
            // An erasure deletes every plugin state of the customer in the store: the chain
            // and the overlay forget theirs too, so no later event reads one back.
            if append.erase {
                states.values_mut().for_each(|state| *state = None);
            }
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
        tenant: tenant.clone(),
        customer_id,
        merged,
        states: states
            .into_iter()
            .map(|(name, state)| (name.to_owned(), state))
            .collect(),
        customer: stored_any.then_some(customer),
    };
    (done, end)
}
