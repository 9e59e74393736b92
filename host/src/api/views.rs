//! The JSON shapes the API answers with, built from the service's records in one place so
//! that a customer or an event looks the same on every route. An event is answered as its
//! [`StoredEvent`] serializes: its attributes (id, action, label, date, timestamp, customer,
//! points, source, ip_address, user_agent), its data and what the plugins made of it.

use serde::Serialize;
use serde_json::{Map, Value, json};
use tally_sdk::{Perk, PointEntry, Stats, Timestamp, Trigger};

use std::collections::BTreeMap;

use crate::domain::Policy;
use crate::domain::records::{CustomerSnapshot, OutboxTrigger, RawJson, SnapshotView, SummaryView};
use crate::domain::schedule::expiring;

use crate::schema::EventType;
use crate::service::{Ingested, LedgerLine, Simulation};
use crate::storage::{CustomerRecord, PluginStatus, StoredEvent};

/// A customer profile: points, tier, perks, attributes, stats and contact card.
///
/// Views borrow the records and serialize straight to the response body: the answer to
/// every posted event carries one, and building a `Value` tree first cost a fifth of a
/// request's time.
#[derive(Debug, Serialize)]
pub struct CustomerView<'a> {
    id: &'a str,
    points: PointsView,
    tier: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier_since: Option<Timestamp>,
    perks: &'a [Perk],
    member: bool,
    attributes: &'a Map<String, Value>,
    stats: &'a Stats,
    contact_card: &'a Map<String, Value>,
    event_count: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
    /// What the host's clock is to write for the customer next.
    scheduled: Vec<ScheduledView>,
    /// What each plugin shows (a tier's figures, ...), by plugin.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    plugins: &'a BTreeMap<String, RawJson>,
    /// What a marketer reads.
    summary: SummaryView,
    /// The customer this id was merged into: it is an alias of theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    merged_into: Option<&'a str>,
}

/// A trigger in the outbox, with the customer as its event left them.
#[derive(Debug, Serialize)]
pub struct TriggerView<'a> {
    pub(super) seq: u64,
    event_id: &'a str,
    customer: &'a str,
    plugin: &'a str,
    name: &'a str,
    data: &'a RawJson,
    /// `null` for a trigger stored before snapshots were kept.
    customer_snapshot: Option<SnapshotView<'a>>,
}

/// `trigger` as `GET /v1/triggers` shows it.
pub fn trigger(trigger: &OutboxTrigger) -> TriggerView<'_> {
    TriggerView {
        seq: trigger.seq,
        event_id: &trigger.event_id,
        customer: &trigger.customer,
        plugin: &trigger.plugin,
        name: &trigger.name,
        data: &trigger.data,
        customer_snapshot: trigger.snapshot.as_ref().map(CustomerSnapshot::view),
    }
}

/// A customer's points: spendable, pending, lifetime, and what expires next.
#[derive(Debug, Serialize)]
pub struct PointsView {
    balance: i64,
    lifetime: i64,
    pending: i64,
    expiring: Vec<ExpiringView>,
}

/// Points that expire together.
#[derive(Debug, Serialize)]
pub struct ExpiringView {
    amount: i64,
    at: Timestamp,
}

/// A moment the clock is to write an event for.
#[derive(Debug, Serialize)]
pub struct ScheduledView {
    action: &'static str,
    kind: &'static str,
    at: Timestamp,
}

/// How many expiry moments a profile lists.
const EXPIRING_SHOWN: usize = 5;

/// The profile of `record`, under its tenant's `policy` (which says when lots without a date
/// of their own expire).
pub fn customer<'a>(record: &'a CustomerRecord, policy: &Policy) -> CustomerView<'a> {
    let customer = &record.customer;
    let points = customer.points;
    let expiring = expiring(
        &record.lots,
        policy,
        customer.stats.last_event_at,
        EXPIRING_SHOWN,
    );
    CustomerView {
        id: &customer.id,
        points: PointsView {
            balance: points.balance,
            lifetime: points.lifetime,
            pending: points.pending,
            expiring: expiring
                .into_iter()
                .map(|(amount, at)| ExpiringView { amount, at })
                .collect(),
        },
        tier: &customer.tier,
        tier_since: customer.tier.as_ref().and(record.tier_since),
        scheduled: record
            .due
            .iter()
            .map(|due| ScheduledView {
                action: due.kind.action(),
                kind: due.kind.as_str(),
                at: due.at,
            })
            .collect(),
        plugins: &record.plugin_profiles,
        summary: CustomerSnapshot::of(record).summary_view(),
        perks: &customer.perks,
        member: customer.member,
        attributes: &customer.attributes,
        stats: &customer.stats,
        contact_card: &record.contact_card,
        event_count: record.event_count,
        created_at: record.created_at,
        updated_at: record.updated_at,
        merged_into: record.merged_into.as_deref(),
    }
}

/// A plugin's failure on an event.
#[derive(Debug, Serialize)]
pub struct PluginErrorView<'a> {
    plugin: &'a str,
    version: u32,
    code: &'a str,
    message: &'a str,
}

/// The per-plugin failures of an event.
pub fn plugin_errors(event: &StoredEvent) -> Vec<PluginErrorView<'_>> {
    event
        .outcome
        .plugins
        .iter()
        .filter(|run| run.status == PluginStatus::Error)
        .filter_map(|run| {
            let error = run.error.as_ref()?;
            Some(PluginErrorView {
                plugin: &run.name,
                version: run.version,
                code: &error.code,
                message: &error.message,
            })
        })
        .collect()
}

/// The answer to posting an event: the stored event, what it produced, and the customer.
#[derive(Debug, Serialize)]
pub struct IngestedView<'a> {
    event: &'a StoredEvent,
    replayed: bool,
    points: i64,
    entries: &'a [PointEntry],
    perks: &'a [Perk],
    tier: &'a Option<String>,
    triggers: &'a [Trigger],
    errors: Vec<PluginErrorView<'a>>,
    customer: CustomerView<'a>,
}

/// The answer to posting an event.
pub fn ingested<'a>(ingested: &'a Ingested, policy: &Policy) -> IngestedView<'a> {
    let stored = &ingested.event;
    let outcome = &stored.outcome;
    IngestedView {
        event: stored,
        replayed: ingested.replayed,
        points: stored.points,
        entries: &outcome.points,
        perks: &outcome.perks,
        tier: &outcome.tier,
        triggers: &outcome.triggers,
        errors: plugin_errors(stored),
        customer: customer(&ingested.customer, policy),
    }
}

/// An event type: its id, names, contact-card fields and the document as posted.
pub fn event_type(event_type: &EventType) -> Value {
    json!({
        "id": event_type.id(),
        "display_name": event_type.display_name(),
        "builtin": event_type.is_builtin(),
        "contact_card": event_type.contact_card(),
        "document": event_type.document(),
    })
}

/// A ledger line with the event that caused it.
pub fn ledger_line(line: &LedgerLine) -> Value {
    let mut entry = serde_json::to_value(&line.entry).unwrap_or_else(|_| json!({}));
    if let (Value::Object(fields), Some(event)) = (&mut entry, &line.event) {
        fields.insert(
            "event".to_owned(),
            json!({
                "id": event.id,
                "action": event.action,
                "label": event.label,
                "timestamp": event.timestamp,
                "points": event.points,
            }),
        );
    }
    entry
}

/// A simulation's result.
pub fn simulation(simulation: &Simulation) -> Value {
    let (decision, error) = match &simulation.outcome {
        Ok(decision) => (json!(decision), Value::Null),
        Err(error) => (
            Value::Null,
            json!({"code": error.code(), "message": error.to_string()}),
        ),
    };
    json!({
        "plugin": simulation.plugin,
        "version": simulation.version,
        "event": {
            "id": simulation.event.id,
            "action": simulation.event.action,
            "customer": simulation.event.customer,
            "timestamp": simulation.event.timestamp,
            "data": simulation.event.data,
        },
        "decision": decision,
        "error": error,
        "logs": simulation.logs,
        "fuel_used": simulation.fuel_used,
        "state_before": simulation.state_before,
        "customer_before": simulation.customer_before,
        "customer_after": simulation.customer_after,
        "stored": false,
    })
}
