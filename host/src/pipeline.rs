//! Runs a tenant's plugins for one event, in priority order, and merges their decisions.
//!
//! Each plugin sees the customer as the plugins before it left them: the points, tier and
//! perks of earlier decisions are applied (with [`Customer::apply`], the one rule for how a
//! decision changes a customer) before the next plugin runs. A plugin that fails changes
//! nothing; its error is kept in its result and the next plugin runs.

use serde::Serialize;
use sha2::{Digest, Sha256};
#[cfg(doc)]
use tally_sdk::Input;
use tally_sdk::{ABI_VERSION, Customer, Decision, Event, RawJson};

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
    /// The tenant's configuration for it as JSON text, `None` when unset.
    pub config: Option<&'a RawJson>,
    /// Its state for this customer as JSON text, `None` when it has none.
    pub state: Option<&'a RawJson>,
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
    run_plugins_showing_inputs(tenant, event, customer, plugins, |_, _| {})
}

/// [`run_plugins`], handing `show` each plugin's index in `plugins` and its input JSON,
/// exactly as the plugin gets it, before the plugin runs: what `tally eval --show-input`
/// prints.
pub fn run_plugins_showing_inputs(
    tenant: &str,
    event: &Event,
    customer: Customer,
    plugins: &[PluginCall<'_>],
    mut show: impl FnMut(usize, &[u8]),
) -> PipelineOutcome {
    let mut customer = customer;
    let mut merged = Decision::new();
    let mut results = Vec::with_capacity(plugins.len());
    for (index, call) in plugins.iter().enumerate() {
        let plugin = PluginInfoRef::new(call.name, call.version, call.config);
        let input = InputRef::new(tenant, plugin, event, &customer, call.state);
        let evaluation = match serde_json::to_vec(&input) {
            Ok(json) => {
                show(index, &json);
                call.plugin.evaluate_json(&json)
            }
            // `evaluate` reports why the input could not be written.
            Err(_) => call.plugin.evaluate(&input),
        };
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

/// [`Input`] as the host writes it: the same fields under the same names, borrowed, so that
/// running three plugins does not copy the event and the customer three times. The test
/// below holds the two to the same JSON.
#[derive(Serialize)]
struct InputRef<'a> {
    abi: i32,
    tenant: &'a str,
    plugin: PluginInfoRef<'a>,
    event: EventRef<'a>,
    customer: &'a Customer,
    /// [`tally_sdk::wire::STATE_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    state_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a RawJson>,
    seed: String,
}

impl<'a> InputRef<'a> {
    fn new(
        tenant: &'a str,
        plugin: PluginInfoRef<'a>,
        event: &'a Event,
        customer: &'a Customer,
        state: Option<&'a RawJson>,
    ) -> InputRef<'a> {
        let state = given(state);
        InputRef {
            abi: ABI_VERSION,
            tenant,
            seed: seed(tenant, plugin.name, &event.id),
            plugin,
            event: EventRef::of(event),
            customer,
            state_bytes: state.and_then(text_length),
            state,
        }
    }
}

/// A config or state as the input carries it: `None` for none and for `null` alike, since
/// the SDK reads both as no value.
fn given(text: Option<&RawJson>) -> Option<&RawJson> {
    text.filter(|raw| raw.get() != "null")
}

/// The length the SDK's reader takes a JSON text by, without scanning it: given for objects
/// and arrays, the only kinds it takes that way. Measured in fuel on the ingest bench's
/// checkout, `points` with 30 remembered transactions in its state: 143,717 -> 134,484.
fn text_length(text: &RawJson) -> Option<usize> {
    let text = text.get();
    matches!(text.as_bytes().first(), Some(b'{' | b'[')).then_some(text.len())
}

/// [`Event`], borrowed, with the length of its data's text before the data
/// ([`tally_sdk::wire::EVENT_DATA_BYTES`]), so that the SDK's reader takes the data (1 KB of a
/// typical checkout, which most plugins never read) without scanning it. Measured in fuel,
/// the three reference plugins' chain on the ingest bench's 1 KB checkout: 134,733 -> 106,869.
#[derive(Serialize)]
struct EventRef<'a> {
    id: &'a str,
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    customer: &'a str,
    timestamp: tally_sdk::Timestamp,
    source: &'a str,
    data_bytes: usize,
    data: &'a RawJson,
}

impl<'a> EventRef<'a> {
    fn of(event: &'a Event) -> EventRef<'a> {
        EventRef {
            id: &event.id,
            action: &event.action,
            label: event.label.as_deref(),
            customer: &event.customer,
            timestamp: event.timestamp,
            source: &event.source,
            data_bytes: event.data.get().len(),
            data: &event.data,
        }
    }
}

/// [`tally_sdk::PluginInfo`], borrowed.
#[derive(Serialize)]
struct PluginInfoRef<'a> {
    name: &'a str,
    version: u32,
    /// [`tally_sdk::wire::CONFIG_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    config_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a RawJson>,
}

impl<'a> PluginInfoRef<'a> {
    fn new(name: &'a str, version: u32, config: Option<&'a RawJson>) -> PluginInfoRef<'a> {
        let config = given(config);
        PluginInfoRef {
            name,
            version,
            config_bytes: config.and_then(text_length),
            config,
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use serde_json::json;
    use tally_sdk::{Input, PluginInfo};

    use super::*;

    #[test]
    fn the_borrowed_input_writes_the_same_json_as_the_sdk_input() {
        let event = Event::new(
            "e1",
            "checkout",
            "ada",
            "2026-11-23T10:00:00Z".parse().unwrap(),
            &json!({"total": "12.50", "items": [{"sku": "A"}]}),
        )
        .unwrap();
        let customer = Customer {
            id: "ada".to_owned(),
            tier: Some("gold".to_owned()),
            ..Customer::default()
        };
        let config = RawJson::from_value(&json!({"rate": 2}));
        let state = RawJson::from_value(&json!({"seen": [1, 2]}));
        for (config, state) in [(Some(&config), Some(&state)), (None, None)] {
            let owned = Input {
                abi: ABI_VERSION,
                tenant: "acme".to_owned(),
                plugin: PluginInfo {
                    name: "points".to_owned(),
                    version: 3,
                    config: config.cloned(),
                },
                event: event.clone(),
                customer: customer.clone(),
                state: state.cloned(),
                seed: seed("acme", "points", "e1"),
            };
            let plugin = PluginInfoRef::new("points", 3, config);
            let borrowed = InputRef::new("acme", plugin, &event, &customer, state);
            let mut written = serde_json::to_string(&borrowed).unwrap();
            // Each length is written just before its text; without them, the JSON is the SDK's.
            let lengths = [
                (tally_sdk::wire::EVENT_DATA_BYTES, "data", Some(&event.data)),
                (tally_sdk::wire::CONFIG_BYTES, "config", config),
                (tally_sdk::wire::STATE_BYTES, "state", state),
            ];
            for (name, member, text) in lengths {
                let Some(text) = text else {
                    assert!(!written.contains(name), "{written}");
                    continue;
                };
                let length_member = format!(r#""{name}":{},"{member}":"#, text.get().len());
                assert!(written.contains(&length_member), "{written}");
                written = written.replacen(&length_member, &format!(r#""{member}":"#), 1);
            }
            assert_eq!(written, serde_json::to_string(&owned).unwrap());
        }
    }
}
