//! The host's clock, and the pass that turns what is due into internal events.
//!
//! Every "now" of the host reads one [`Clock`]: when an event was received, how far in the
//! future a timestamp may be, what is due. A host started with `tally serve --test-clock`
//! has a clock that stands still until `POST /v1/admin/clock` moves it forward, so tests
//! drive a year of a program in seconds, through the same paths as the real clock.
//!
//! [`Ingest::write_due`] is the clock's work: for each tenant it reads what is due from the
//! store's index (one range a tenant, never a scan of customers), writes an internal event
//! for each moment through the writer (durable, ordered with the customer's other events),
//! and reads again until nothing due is left, since an event may make another moment due
//! (points released today that expired last week). Each event's id is made of (kind,
//! customer, due time), so a moment written before a crash is a replay after it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tally_sdk::Timestamp;

use super::Service;
use super::error::ServiceError;
use super::ingest::Ingest;
use crate::domain::schedule::internal_event;
use crate::domain::{CustomerId, TenantId};

/// The moments one read of the index takes for one tenant: enough to fill several of the
/// writer's batches, few enough that a pass holds little in memory.
const DUE_CHUNK: usize = 4096;

/// The host's clock: the system's, or a test clock moved by hand.
#[derive(Debug, Clone)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    Test(Mutex<Timestamp>),
}

/// Why a test clock was not moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// Only a test clock can be moved.
    #[error("this host runs on the system clock; start it with --test-clock to move its clock")]
    NotATestClock,
    /// A clock never goes back: what was due before would be due again.
    #[error("the clock is at {now} and cannot go back to {asked}")]
    Backwards {
        /// The clock's time.
        now: Timestamp,
        /// The time asked for.
        asked: Timestamp,
    },
}

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Source::System))
    }

    /// A clock that stands at `start` until moved.
    pub fn test(start: Timestamp) -> Clock {
        Clock(Arc::new(Source::Test(Mutex::new(start))))
    }

    /// Now, to the second.
    pub fn now(&self) -> Timestamp {
        match self.0.as_ref() {
            Source::System => system_now(),
            Source::Test(now) => *now.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Whether it is a test clock.
    pub fn is_test(&self) -> bool {
        matches!(self.0.as_ref(), Source::Test(_))
    }

    /// Moves a test clock to `now`, which may not be before where it is.
    pub fn advance_to(&self, now: Timestamp) -> Result<(), ClockError> {
        let Source::Test(clock) = self.0.as_ref() else {
            return Err(ClockError::NotATestClock);
        };
        let mut current = clock.lock().unwrap_or_else(PoisonError::into_inner);
        if now < *current {
            return Err(ClockError::Backwards {
                now: *current,
                asked: now,
            });
        }
        *current = now;
        Ok(())
    }
}

/// The system clock, to the second.
pub fn system_now() -> Timestamp {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    Timestamp::from_unix_seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

/// How often the clock looks for what is due: moments are to the second, and a look with
/// nothing due is one read a tenant.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The clock's loop: every [`TICK`], writes what is due. Runs until its task is aborted (the
/// host stopping), and survives failures (logged; what failed stays due).
pub async fn run_clock(service: Arc<Service>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let now = service.ingest.clock.now();
        match service.ingest.write_due(now).await {
            Ok(pass) if pass.written + pass.failed > 0 => {
                tracing::info!(
                    written = pass.written,
                    replayed = pass.replayed,
                    failed = pass.failed,
                    "the clock wrote what was due"
                );
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(error = %error.message, "the clock could not read what is due")
            }
        }
    }
}

/// What one pass of the clock wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DuePass {
    /// Internal events committed.
    pub written: usize,
    /// Moments that were written before (a replay): nothing applied twice.
    pub replayed: usize,
    /// Moments whose event failed (a storage error); they stay due for the next pass.
    pub failed: usize,
}

impl Ingest {
    /// Writes an internal event for every moment due by `until`, for every tenant, and
    /// returns once each is committed. Passes run one at a time.
    pub async fn write_due(&self, until: Timestamp) -> Result<DuePass, ServiceError> {
        let _one_pass = self.due_pass.lock().await;
        let store = self.store.clone();
        let tenants = tokio::task::spawn_blocking(move || store.tenants())
            .await
            .map_err(|error| {
                ServiceError::internal(format!("reading tenants failed: {error}"))
            })??;
        let mut pass = DuePass::default();
        for tenant in tenants {
            self.write_due_of(&tenant.id, until, &mut pass).await?;
        }
        Ok(pass)
    }

    async fn write_due_of(
        &self,
        tenant: &TenantId,
        until: Timestamp,
        pass: &mut DuePass,
    ) -> Result<(), ServiceError> {
        // Moments tried in this pass: one that failed stays in the index, and must not be
        // tried again and again before the next pass.
        let mut tried = HashSet::new();
        loop {
            let store = self.store.clone();
            let id = tenant.to_string();
            let due = tokio::task::spawn_blocking(move || store.due(&id, until, DUE_CHUNK))
                .await
                .map_err(|error| {
                    ServiceError::internal(format!("reading what is due failed: {error}"))
                })??;
            let now = self.clock.now();
            let mut events = Vec::new();
            for work in due {
                if !tried.insert((work.customer.clone(), work.due.kind, work.due.at)) {
                    continue;
                }
                // Customer ids in the index were checked when their first event came in.
                let Ok(customer) = CustomerId::parse(work.customer.as_str()) else {
                    tracing::error!(tenant = %tenant, customer = %work.customer, "a due moment names an invalid customer id");
                    pass.failed += 1;
                    continue;
                };
                events.push(internal_event(tenant, &customer, &work.due, now));
            }
            if events.is_empty() {
                return Ok(());
            }
            for answer in self.ingest_many_waiting(events).await {
                match answer {
                    Ok(ingested) if ingested.replayed => pass.replayed += 1,
                    Ok(_) => pass.written += 1,
                    Err(error) => {
                        tracing::warn!(tenant = %tenant, error = %error.message, "an internal event could not be written; it stays due");
                        pass.failed += 1;
                    }
                }
            }
        }
    }
}
