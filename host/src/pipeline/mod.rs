//! Runs a tenant's plugins for one event, in priority order, and hands what they decided to
//! the domain's rules.
//!
//! The host's own rules for the event come first ([`Account::open`]: expiring, releasing).
//! Then each plugin sees the customer as the plugins before it left them: each successful
//! decision is applied with [`Account::apply_decision`] before the next plugin runs, and a
//! decision the account's rules refuse counts as that plugin's failure. A plugin that fails
//! changes nothing; its error is kept in its result and the next plugin runs. Then
//! [`domain::apply_event`] says what the event changes.
//!
//! [`evaluate_event`] is that whole path, and the one the writer, `simulate` and `tally eval`
//! take. The writer runs it on many customers at once (`writer`).

mod input;
pub mod writer;

use tally_sdk::Decision;

pub use self::input::seed;
use self::input::{InputRef, PluginInfoRef};
use crate::domain::records::{
    AppendEvent, CustomerRecord, OnError, PluginErrorRecord, PluginRecord, RawJson,
};
use crate::domain::{
    self, Account, EventRefusal, NewEvent, PluginOutcome, Policy, Refusal, Rejection,
};
use crate::runtime::{EvalError, LogLine, Plugin};
use crate::storage::StoreError;

/// A plugin of a tenant as the host runs it: its settings, its active version loaded (or why
/// it could not be), and its config written as JSON once rather than for every evaluation.
#[derive(Debug, Clone)]
pub struct ActivePlugin {
    /// Its settings.
    pub record: PluginRecord,
    /// Its active version, loaded; or why it could not be.
    pub plugin: Result<Plugin, String>,
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

    /// The call that runs it with `state`.
    pub fn call<'a>(&'a self, state: Option<&'a RawJson>) -> PluginCall<'a> {
        PluginCall {
            name: &self.record.name,
            version: self.record.active_version,
            plugin: self.plugin.as_ref().map_err(String::as_str),
            config: self.config.as_ref(),
            state,
            on_error: self.record.on_error,
        }
    }
}

/// A tenant's plugins and the settings the account's rules read, as the host runs them.
#[derive(Debug, Clone, Default)]
pub struct TenantRules {
    /// Every plugin, by priority then name, with its active version loaded.
    pub plugins: Vec<ActivePlugin>,
    /// The tenant's settings for the account's rules.
    pub policy: Policy,
}

/// Where the writer gets a tenant's rules from.
pub trait RuleSource: Send + Sync {
    /// The plugins and policy of `tenant`.
    fn rules(&self, tenant: &str) -> Result<TenantRules, StoreError>;
}

/// One plugin to run for an event, with what the host keeps for it.
#[derive(Debug, Clone)]
pub struct PluginCall<'a> {
    /// The plugin's name within its tenant.
    pub name: &'a str,
    /// The version being run.
    pub version: u32,
    /// The loaded module, or why it could not be loaded (the plugin then counts as failed).
    pub plugin: Result<&'a Plugin, &'a str>,
    /// The tenant's configuration for it as JSON text, `None` when unset.
    pub config: Option<&'a RawJson>,
    /// Its state for this customer as JSON text, `None` when it has none.
    pub state: Option<&'a RawJson>,
    /// What its failure does to the event.
    pub on_error: OnError,
}

/// Why a plugin has no decision for an event.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginFailure {
    /// The sandbox stopped it, or it failed on purpose.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// Its module could not be loaded.
    #[error("the plugin could not be loaded: {0}")]
    NotLoaded(String),
    /// The account's rules refused its decision.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

impl PluginFailure {
    /// The stable code it is recorded with.
    pub fn code(&self) -> &'static str {
        match self {
            PluginFailure::Eval(error) => error.code(),
            PluginFailure::NotLoaded(_) => "host_error",
            PluginFailure::Refused(refusal) => refusal.code(),
        }
    }

    fn record(&self) -> PluginErrorRecord {
        PluginErrorRecord {
            code: self.code().to_owned(),
            message: self.to_string(),
        }
    }
}

/// What one plugin did.
#[derive(Debug, Clone)]
pub struct PluginResult {
    /// The plugin's name.
    pub name: String,
    /// The version that ran.
    pub version: u32,
    /// What its failure does to the event.
    pub on_error: OnError,
    /// Its decision, or why it has none.
    pub outcome: Result<Decision, PluginFailure>,
    /// What it logged.
    pub logs: Vec<LogLine>,
    /// Instructions it used, when fuel is metered.
    pub fuel_used: Option<u64>,
}

impl PluginResult {
    fn into_outcome(self) -> PluginOutcome {
        PluginOutcome {
            result: self.outcome.map_err(|failure| failure.record()),
            name: self.name,
            version: self.version,
            on_error: self.on_error,
        }
    }
}

/// The plugins' run on one event: what each did, and the account as the host's rules and
/// their successful decisions left it.
#[derive(Debug, Clone)]
pub struct PluginRuns {
    /// One result per plugin, in the order they ran.
    pub results: Vec<PluginResult>,
    /// The account after every successful decision (`account.customer` is what a next
    /// plugin would see).
    pub account: Account,
}

impl PluginRuns {
    /// The plugins that failed, with their failures.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &PluginFailure)> {
        self.results.iter().filter_map(|result| {
            result
                .outcome
                .as_ref()
                .err()
                .map(|failure| (result.name.as_str(), failure))
        })
    }
}

/// What an event's evaluation came to.
#[derive(Debug, Clone)]
pub struct EventEvaluation {
    /// Each plugin's run, decisions included.
    pub runs: PluginRuns,
    /// Everything the event changes, or why it is refused.
    pub applied: Result<AppendEvent, Rejection>,
}

/// Why an evaluated event is not to be stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotApplied {
    /// A plugin set to reject failed on it.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The host's own rules refuse it (a perk redeemed twice, ...), before any plugin runs.
    #[error(transparent)]
    Refused(#[from] EventRefusal),
    /// Its data cannot be given to plugins (not a JSON object: the checks where events enter
    /// the host refuse that, so this is a bug).
    #[error("the event cannot be given to plugins: {0}")]
    Unreadable(#[from] tally_sdk::Error),
}

/// Runs `calls` in order on `event` (of its tenant) for the account `before`, and applies what they decided
/// with the domain's rules: what the writer stores.
pub fn evaluate_event(
    policy: Policy,
    event: &NewEvent,
    before: &CustomerRecord,
    calls: &[PluginCall<'_>],
) -> Result<AppendEvent, NotApplied> {
    evaluate_merging(policy, event, before, None, calls)
}

/// [`evaluate_event`] with the customer a `customer_merge` takes in, as the writer read them
/// (`None` for any other event, or when there is no such customer).
pub fn evaluate_merging(
    policy: Policy,
    event: &NewEvent,
    before: &CustomerRecord,
    merging: Option<&CustomerRecord>,
    calls: &[PluginCall<'_>],
) -> Result<AppendEvent, NotApplied> {
    let runs = run_plugins(&policy, event, (before, merging), calls, |_, _| {})?;
    let outcomes = runs
        .results
        .into_iter()
        .map(PluginResult::into_outcome)
        .collect();
    Ok(domain::apply_event(
        before,
        event,
        outcomes,
        runs.account,
        &policy,
    )?)
}

/// [`evaluate_event`], also keeping each plugin's decision, logs and fuel, and handing `show`
/// each plugin's index and its input JSON, exactly as the plugin gets it, before it runs:
/// what `simulate` answers and `tally eval` prints. An event the host's own rules refuse runs
/// no plugin and is the error.
pub fn evaluate_event_reporting(
    policy: Policy,
    event: &NewEvent,
    before: &CustomerRecord,
    calls: &[PluginCall<'_>],
    show: impl FnMut(usize, &[u8]),
) -> Result<EventEvaluation, NotApplied> {
    let runs = run_plugins(&policy, event, (before, None), calls, show)?;
    let outcomes = runs
        .results
        .iter()
        .cloned()
        .map(PluginResult::into_outcome)
        .collect();
    let applied = domain::apply_event(before, event, outcomes, runs.account.clone(), &policy);
    Ok(EventEvaluation { runs, applied })
}

/// Opens the account with the host's own rules for the event, then runs the plugins in
/// order, each on the customer the previous ones left.
fn run_plugins(
    policy: &Policy,
    event: &NewEvent,
    (before, merging): (&CustomerRecord, Option<&CustomerRecord>),
    calls: &[PluginCall<'_>],
    mut show: impl FnMut(usize, &[u8]),
) -> Result<PluginRuns, NotApplied> {
    let wire = event.wire()?;
    let mut account = Account::open_merging(before, merging, event, policy)?;
    // An erasure runs no plugin: nothing may write a new state or perk about the person in
    // the event that forgets them.
    let calls = if event.action == "customer_erase" {
        &[]
    } else {
        calls
    };
    let mut results = Vec::with_capacity(calls.len());
    for (index, call) in calls.iter().enumerate() {
        let (outcome, logs, fuel_used) = match call.plugin {
            Ok(plugin) => {
                let info = PluginInfoRef::new(call.name, call.version, call.config);
                let input =
                    InputRef::new(&event.tenant, info, &wire, &account.customer, call.state);
                let evaluation = match serde_json::to_vec(&input) {
                    Ok(json) => {
                        show(index, &json);
                        plugin.evaluate_json(&json)
                    }
                    // `evaluate` reports why the input could not be written.
                    Err(_) => plugin.evaluate(&input),
                };
                let outcome = evaluation
                    .result
                    .map_err(PluginFailure::from)
                    .and_then(|decision| {
                        account.apply_decision(call.name, &decision, event, policy)?;
                        Ok(decision)
                    });
                (outcome, evaluation.logs, evaluation.fuel_used)
            }
            Err(reason) => (
                Err(PluginFailure::NotLoaded(reason.to_owned())),
                Vec::new(),
                None,
            ),
        };
        results.push(PluginResult {
            name: call.name.to_owned(),
            version: call.version,
            on_error: call.on_error,
            outcome,
            logs,
            fuel_used,
        });
    }
    Ok(PluginRuns { results, account })
}
