//! How far the committer has got, shared by the writer's two threads.

use std::sync::{Condvar, Mutex, PoisonError};

use crate::domain::{CustomerId, TenantId};

/// How far the committer has got.
///
/// Batches are numbered from 1 in the order the evaluator hands them over, and the committer
/// takes them in that order. `generation` grows each time a batch fails to commit: every
/// batch evaluated before the evaluator learned of it was built on state that is not on
/// disk, and the committer refuses it.
#[derive(Debug, Default)]
pub(super) struct Progress {
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
    refused: Vec<(TenantId, CustomerId)>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct ProgressState {
    /// The last batch the committer finished, committed or failed.
    pub(super) finished: u64,
    pub(super) generation: u64,
}

impl Progress {
    pub(super) fn now(&self) -> ProgressState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .now
    }

    pub(super) fn finished(&self, batch: u64, failed: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.now.finished = batch;
        if failed {
            state.now.generation += 1;
        }
        self.changed.notify_all();
    }

    /// The store refused events of these (tenant, customer) in a batch that committed.
    pub(super) fn refused(&self, customers: Vec<(TenantId, CustomerId)>) {
        if !customers.is_empty() {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.refused.extend(customers);
        }
    }

    /// Where the committer is, and the refusals it has published since the last call.
    pub(super) fn catch_up(&self) -> (ProgressState, Vec<(TenantId, CustomerId)>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.now, std::mem::take(&mut state.refused))
    }

    /// Blocks until `batch` is finished; then as [`Progress::catch_up`].
    pub(super) fn wait_for(&self, batch: u64) -> (ProgressState, Vec<(TenantId, CustomerId)>) {
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
