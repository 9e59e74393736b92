//! `tally eval`: runs plugins on one event locally, through the same runtime and pipeline
//! the host uses, and prints what they decided as JSON.
//!
//! ```text
//! tally eval --plugin points.wasm --plugin tiers.wasm --event checkout.json \
//!            [--customer customer.json] [--config points.json --config tiers.json] [--state s.json]
//! ```
//!
//! What is left out gets the default a real event would get: a new customer, no state, the
//! plugin's default config, and an id and a timestamp (now) for an event without them.
//! Exit status: 0 when every plugin decided, 1 when one failed (the JSON says why), 2 when
//! the arguments or files are wrong.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tally_host::domain::records::{CustomerRecord, OnError};
use tally_host::domain::{CustomerId, EventId, NewEvent, Policy, TenantId, new_account};
use tally_host::pipeline::{PluginCall, evaluate_event_reporting};
use tally_host::runtime::{Limits, Runtime};
use tally_host::service::system_now;
use tally_host::storage::RawJson;
use tally_sdk::{Customer, Decision, Timestamp};

/// Options of `tally eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// A plugin module; repeat to run several in order, as the host runs a tenant's plugins.
    #[arg(long = "plugin", value_name = "PLUGIN.wasm", required = true)]
    plugins: Vec<PathBuf>,
    /// The event as it would be posted: {"customer", "action", "data", "id"?, "timestamp"?,
    /// "label"?}; `-` reads it from standard input.
    #[arg(long, value_name = "EVENT.json")]
    event: PathBuf,
    /// The customer before the event: {"id", "points": {"balance", "lifetime"}, "tier", ...}.
    #[arg(long, value_name = "CUSTOMER.json")]
    customer: Option<PathBuf>,
    /// A plugin's config; repeat once per --plugin, in the same order.
    #[arg(long = "config", value_name = "CONFIG.json")]
    configs: Vec<PathBuf>,
    /// A plugin's state for the customer; repeat once per --plugin, in the same order.
    #[arg(long = "state", value_name = "STATE.json")]
    states: Vec<PathBuf>,
    /// The tenant the plugins see.
    #[arg(long, default_value = "local")]
    tenant: String,
    /// Instruction budget per plugin; 0 turns fuel metering off.
    #[arg(long, value_name = "N")]
    fuel: Option<u64>,
    /// Let decisions take the customer's balance below zero, as a tenant may allow.
    #[arg(long)]
    allow_negative_balance: bool,
    /// Also report each plugin's input: the JSON text exactly as the host writes it, as a
    /// string (`jq -r '.plugins[0].input'` prints it).
    #[arg(long)]
    show_input: bool,
}

/// The event as a client posts it to the host.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostedEvent {
    #[serde(default)]
    customer: Option<String>,
    action: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    timestamp: Option<Timestamp>,
    #[serde(default)]
    label: Option<String>,
}

/// Runs `tally eval`.
pub fn run(args: EvalArgs) -> ExitCode {
    match evaluate(&args) {
        Ok((report, all_decided)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_else(|error| error.to_string())
            );
            if all_decided {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(message) => {
            eprintln!("tally eval: {message}");
            ExitCode::from(2)
        }
    }
}

fn evaluate(args: &EvalArgs) -> Result<(Value, bool), String> {
    if args.configs.len() > args.plugins.len() || args.states.len() > args.plugins.len() {
        return Err(format!(
            "{} --config and {} --state for {} --plugin: give at most one of each per plugin, in plugin order",
            args.configs.len(),
            args.states.len(),
            args.plugins.len()
        ));
    }
    let event_json = read_json(&args.event)?;
    let posted: PostedEvent = serde_json::from_value(event_json.clone())
        .map_err(|error| format!("{}: {error}", args.event.display()))?;
    let customer: Customer = match &args.customer {
        Some(path) => serde_json::from_value(read_json(path)?)
            .map_err(|error| format!("{}: {error}", path.display()))?,
        None => Customer::default(),
    };
    let customer_id =
        match (posted.customer.as_deref(), customer.id.as_str()) {
            (Some(id), _) if !id.is_empty() => id.to_owned(),
            (_, id) if !id.is_empty() => id.to_owned(),
            _ => return Err(
                "the event has no customer: set \"customer\" in the event or \"id\" in --customer"
                    .to_owned(),
            ),
        };
    let customer = Customer {
        id: customer_id.clone(),
        ..customer
    };
    let timestamp = posted.timestamp.unwrap_or_else(system_now);
    let id = posted
        .id
        .clone()
        .unwrap_or_else(|| generated_id(&event_json, timestamp));
    let data = posted.data.unwrap_or_else(|| json!({}));
    if !data.is_object() {
        return Err("the event's \"data\" must be a JSON object".to_owned());
    }
    let event = NewEvent {
        tenant: TenantId::parse(args.tenant.as_str())
            .map_err(|error| format!("--tenant {:?}: {error}", args.tenant))?,
        id: EventId::parse(id).map_err(|error| format!("the event's \"id\" {error}"))?,
        action: posted.action,
        label: posted.label,
        customer: CustomerId::parse(customer_id)
            .map_err(|error| format!("the customer's id {error}"))?,
        timestamp,
        source: "cli".to_owned(),
        ip_address: None,
        user_agent: None,
        data: RawJson::from_value(&data),
        received_at: system_now(),
        contact_card: Vec::new(),
        due: None,
        interaction: Default::default(),
    };
    // The account a posted event would start from: a new one, holding the given customer.
    let before = CustomerRecord {
        customer,
        ..new_account(&event.customer, event.received_at)
    };

    let limits = match args.fuel {
        Some(0) => Limits {
            fuel: None,
            ..Limits::default()
        },
        Some(fuel) => Limits {
            fuel: Some(fuel),
            ..Limits::default()
        },
        None => Limits::default(),
    };
    let runtime = Runtime::new(limits).map_err(|error| error.to_string())?;
    let mut loaded = Vec::with_capacity(args.plugins.len());
    for path in &args.plugins {
        let wasm = fs::read(path).map_err(|error| format!("{}: {error}", path.display()))?;
        let plugin = runtime
            .load(&wasm)
            .map_err(|error| format!("{}: {error}", path.display()))?;
        loaded.push((plugin_name(path), plugin));
    }
    // Kept as the files' text, as the host keeps what it stores: a state in the order its
    // plugin wrote it (a `Value` would sort the keys).
    let configs = read_all_as_text(&args.configs)?;
    let states = read_all_as_text(&args.states)?;
    let calls: Vec<PluginCall<'_>> = loaded
        .iter()
        .enumerate()
        .map(|(index, (name, plugin))| PluginCall {
            name,
            version: 1,
            plugin: Ok(plugin),
            config: configs.get(index),
            state: states.get(index),
            on_error: OnError::Skip,
        })
        .collect();

    let policy = Policy {
        allow_negative_balance: args.allow_negative_balance,
        ..Policy::DEFAULT
    };
    let mut inputs: Vec<Option<String>> = vec![None; calls.len()];
    let evaluation = evaluate_event_reporting(policy, &event, &before, &calls, |index, input| {
        if args.show_input {
            inputs[index] = Some(String::from_utf8_lossy(input).into_owned());
        }
    })
    .map_err(|error| error.to_string())?;
    // One result per plugin, in the order they ran: the same order as the inputs.
    let plugins: Vec<Value> = evaluation
        .runs
        .results
        .iter()
        .zip(inputs)
        .map(|(result, input)| {
            let mut report = json!({
                "name": result.name,
                "logs": result.logs,
                "fuel_used": result.fuel_used,
            });
            if let Some(input) = input {
                // The text as it is, in a string: the order of its members (each length just
                // before its text) is part of what it shows, and a JSON value would sort them.
                report["input"] = Value::String(input);
            }
            match &result.outcome {
                Ok(decision) => report["decision"] = json!(decision),
                Err(error) => {
                    report["error"] = json!({"code": error.code(), "message": error.to_string()})
                }
            }
            report
        })
        .collect();
    let all_decided = evaluation.runs.failures().next().is_none();
    // Every plugin runs with `on_error = skip` here, so the event is never rejected.
    let (decision, customer) = match evaluation.applied {
        Ok(append) => {
            let outcome = append.event.outcome;
            let decision = Decision {
                points: outcome.points,
                perks: outcome.perks,
                tier: outcome.tier,
                triggers: outcome.triggers,
                profile: None,
                state: None,
            };
            (decision, append.customer.customer)
        }
        Err(rejection) => return Err(rejection.to_string()),
    };
    let report = json!({
        "event": {
            "id": event.id,
            "action": event.action,
            "customer": event.customer,
            "timestamp": event.timestamp,
            "label": event.label,
        },
        "decision": decision,
        "customer": customer,
        "plugins": plugins,
    });
    Ok((report, all_decided))
}

fn read_text(path: &Path) -> Result<String, String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|error| format!("standard input: {error}"))?;
        Ok(text)
    } else {
        fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))
    }
}

fn not_json(path: &Path, error: serde_json::Error) -> String {
    format!("{}: not valid JSON: {error}", path.display())
}

fn read_json(path: &Path) -> Result<Value, String> {
    serde_json::from_str(&read_text(path)?).map_err(|error| not_json(path, error))
}

fn read_all_as_text(paths: &[PathBuf]) -> Result<Vec<RawJson>, String> {
    paths
        .iter()
        .map(|path| {
            let text = read_text(path)?;
            RawValue::from_string(text.trim().to_owned())
                .map(RawJson::from)
                .map_err(|error| not_json(path, error))
        })
        .collect()
}

fn plugin_name(path: &Path) -> String {
    path.file_stem()
        .map(|stem| stem.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".to_owned())
}

/// An id for an event sent without one: stable for the same event at the same second.
fn generated_id(event: &Value, timestamp: Timestamp) -> String {
    let mut hasher = Sha256::new();
    hasher.update(event.to_string());
    hasher.update(timestamp.unix_seconds().to_le_bytes());
    format!("evt_{}", hex::encode(&hasher.finalize()[..12]))
}
