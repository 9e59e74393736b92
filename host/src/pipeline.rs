//! Runs a tenant's plugins for one event, in priority order, and merges their decisions.
//!
//! Each plugin sees the customer as the plugins before it left them: the points, tier and
//! perks of earlier decisions are applied (with [`Customer::apply`], the one rule for how a
//! decision changes a customer) before the next plugin runs. A plugin that fails changes
//! nothing; its error is kept in its result and the next plugin runs.

use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use tally_sdk::{ABI_VERSION, Customer, Decision, Event, Input, PluginInfo};

use crate::runtime::{EvalError, LogLine, Plugin};

/// One plugin to run for an event, with what the host keeps for it.
#[derive(Debug, Clone)]
pub struct PluginCall<'a> {
    /// The plugin's name within its tenant.
    pub name: &'a str,
    /// The version being run.
    pub version: u32,
    /// The loaded module.
    pub plugin: &'a Plugin,
    /// The tenant's configuration for it, `None` when unset.
    pub config: Option<&'a Value>,
    /// Its state for this customer, `None` when it has none.
    pub state: Option<&'a Value>,
}

/// What one plugin did.
#[derive(Debug, Clone)]
pub struct PluginResult {
    /// The plugin's name.
    pub name: String,
    /// The version that ran.
    pub version: u32,
    /// Its decision, or why it failed.
    pub outcome: Result<Decision, EvalError>,
    /// What it logged.
    pub logs: Vec<LogLine>,
    /// Instructions it used, when fuel is metered.
    pub fuel_used: Option<u64>,
}

/// The plugins' combined effect on one event.
#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    /// Every successful decision merged: all points entries, perks and triggers in plugin
    /// order, and the last tier set. `state` is always `None` here: states are per plugin,
    /// in [`PipelineOutcome::results`].
    pub decision: Decision,
    /// The customer after every successful decision.
    pub customer: Customer,
    /// One result per plugin, in the order they ran.
    pub results: Vec<PluginResult>,
}

impl PipelineOutcome {
    /// The plugins that failed, with their errors.
    pub fn failures(&self) -> impl Iterator<Item = (&str, &EvalError)> {
        self.results.iter().filter_map(|result| {
            result
                .outcome
                .as_ref()
                .err()
                .map(|error| (result.name.as_str(), error))
        })
    }
}

/// Runs `plugins` in the order given for `event`, starting from `customer`.
pub fn run_plugins(
    tenant: &str,
    event: &Event,
    customer: Customer,
    plugins: &[PluginCall<'_>],
) -> PipelineOutcome {
    let mut customer = customer;
    let mut merged = Decision::new();
    let mut results = Vec::with_capacity(plugins.len());
    for call in plugins {
        let input = Input {
            abi: ABI_VERSION,
            tenant: tenant.to_owned(),
            plugin: PluginInfo {
                name: call.name.to_owned(),
                version: call.version,
                config: raw(call.config),
            },
            event: event.clone(),
            customer: customer.clone(),
            state: raw(call.state),
            seed: seed(tenant, call.name, &event.id),
        };
        let evaluation = call.plugin.evaluate(&input);
        if let Ok(decision) = &evaluation.result {
            customer.apply(decision);
            merge(&mut merged, decision);
        }
        results.push(PluginResult {
            name: call.name.to_owned(),
            version: call.version,
            outcome: evaluation.result,
            logs: evaluation.logs,
            fuel_used: evaluation.fuel_used,
        });
    }
    PipelineOutcome {
        decision: merged,
        customer,
        results,
    }
}

fn merge(merged: &mut Decision, decision: &Decision) {
    merged.points.extend(decision.points.iter().cloned());
    merged.perks.extend(decision.perks.iter().cloned());
    merged.triggers.extend(decision.triggers.iter().cloned());
    if decision.tier.is_some() {
        merged.tier.clone_from(&decision.tier);
    }
}

fn raw(value: Option<&Value>) -> Option<Box<RawValue>> {
    // A `Value` always serializes; `None` for JSON null keeps "no config" and "null" alike.
    value
        .filter(|value| !value.is_null())
        .and_then(|value| serde_json::value::to_raw_value(value).ok())
}

/// The seed a plugin gets for an event: the same tenant, plugin and event id always give
/// the same seed, so a replay draws the same numbers. 16 hex digits.
pub fn seed(tenant: &str, plugin: &str, event_id: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [tenant, plugin, event_id] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    hex::encode(&hasher.finalize()[..8])
}

pub mod writer;
