//! An accepted event, and what applying it to a customer's account changes.

use tally_sdk::{Customer, Decision, Event, Timestamp, is_internal_action};

use super::account::Account;
use super::ids::{CustomerId, EventId, TenantId};
use super::merge::Absorbed;
use super::policy::Policy;
use super::profile::{
    ContactCardValue, record_attributes, record_contact_card, record_stats, record_summary,
};
use super::records::{
    AppendEvent, CustomerRecord, CustomerSnapshot, EventOutcome, NewTrigger, OnError,
    PluginErrorRecord, PluginRun, PluginStatus, RawJson, StoredEvent, Summary,
};
use super::schedule::{DueKind, schedule};

/// An event the host has accepted: its envelope and data checked, its type resolved. What the
/// writer evaluates and stores.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// Its id, given or generated.
    pub id: EventId,
    /// Its action, which has a type or is allowed untyped.
    pub action: String,
    /// The sender's name for the action.
    pub label: Option<String>,
    /// The customer it is about.
    pub customer: CustomerId,
    /// When it happened (business time: the only time plugins see).
    pub timestamp: Timestamp,
    /// Where it came from: `api`, `import`, `demo`.
    pub source: String,
    /// The sender's address.
    pub ip_address: Option<String>,
    /// The sender's user agent.
    pub user_agent: Option<String>,
    /// The action's attributes, checked against its type.
    pub data: RawJson,
    /// When the host received it.
    pub received_at: Timestamp,
    /// The contact-card fields of its type present in `data`.
    pub contact_card: Vec<ContactCardValue>,
    /// For an internal event, the moment of the customer's schedule it was written for.
    pub due: Option<DueKind>,
    /// Channel, campaign, goals and engagement value, when the sender gave any (boxed: most
    /// events carry none, and every queued event carries this field).
    pub interaction: Option<Box<Interaction>>,
}

/// Sitecore's interaction attributes, first-class on any event: the channel it came
/// through, the campaign it belongs to, the goals it reached, and what it is worth to the
/// brand's engagement.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interaction {
    /// `app`, `store`, `web`, ...
    pub channel: Option<String>,
    /// The campaign's name or id.
    pub campaign: Option<String>,
    /// Ids of the goals reached.
    pub goals: Vec<String>,
    /// The engagement value; summed on the profile.
    pub engagement_value: Option<tally_sdk::Decimal>,
}

impl NewEvent {
    /// The event as plugins see it. Fails only for data that is not a JSON object, which the
    /// checks at the edge never let through.
    pub fn wire(&self) -> Result<Event, tally_sdk::Error> {
        let mut event = Event::from_raw(
            self.id.as_str(),
            self.action.as_str(),
            self.customer.as_str(),
            self.timestamp,
            self.data.clone(),
        )?;
        event.label.clone_from(&self.label);
        event.source.clone_from(&self.source);
        if let Some(interaction) = &self.interaction {
            event.channel.clone_from(&interaction.channel);
            event.campaign.clone_from(&interaction.campaign);
            event.goals.clone_from(&interaction.goals);
            event.engagement_value = interaction.engagement_value;
        }
        Ok(event)
    }
}

/// An account the host has not seen before: no points, no tier, no events.
pub fn new_account(id: &CustomerId, now: Timestamp) -> CustomerRecord {
    CustomerRecord {
        customer: Customer {
            id: id.to_string(),
            ..Customer::default()
        },
        created_at: now,
        updated_at: now,
        event_count: 0,
        contact_card: serde_json::Map::new(),
        lots: Vec::new(),
        tier_since: None,
        done: std::collections::BTreeMap::new(),
        due: Vec::new(),
        plugin_profiles: std::collections::BTreeMap::new(),
        summary: Summary::default(),
        rewards: std::collections::BTreeMap::new(),
        merged_into: None,
        aliases: Vec::new(),
    }
}

/// What one plugin made of an event, as the account's rules take it: its decision, or why it
/// failed (its own error, a sandbox limit, a refusal by [`Account::apply_decision`]).
#[derive(Debug, Clone)]
pub struct PluginOutcome {
    /// The plugin's name.
    pub name: String,
    /// The version that ran.
    pub version: u32,
    /// What its failure does to the event.
    pub on_error: OnError,
    /// Its decision, or its failure's code and message.
    pub result: Result<Decision, PluginErrorRecord>,
}

/// An event refused because a plugin set to `on_error = reject` failed on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin {plugin} (version {version}) rejected the event: {}", error.message)]
pub struct Rejection {
    /// The plugin.
    pub plugin: String,
    /// Its version.
    pub version: u32,
    /// Its failure.
    pub error: PluginErrorRecord,
}

/// Everything `event` changes, given the account before it, what each plugin made of it in
/// the order they ran, and the account as the host's rules and their successful decisions
/// left it (each applied with [`Account::apply_decision`] as the plugins ran, since each
/// plugin sees the one before it): the stored event with its outcome, the new account and
/// what the clock is to write for it next, the ledger entries, the plugin states and the
/// triggers. Refused whole when a plugin set to reject failed, unless the event is an
/// internal one: time passing cannot be refused (a refused expiry would stay due for ever),
/// so there the failure costs only the plugin's own decision, like `skip`.
pub fn apply_event(
    before: &CustomerRecord,
    event: &NewEvent,
    plugins: Vec<PluginOutcome>,
    account: Account,
    policy: &Policy,
) -> Result<AppendEvent, Rejection> {
    let internal = is_internal_action(&event.action);
    if !internal && let Some(rejection) = rejection(&plugins) {
        return Err(rejection);
    }
    let decided = Decided::from_outcomes(plugins);
    let points = account
        .ledger
        .iter()
        .fold(0_i64, |sum, new| sum.saturating_add(new.entry.amount));

    // Built from parts: `before.customer` is replaced by what the plugins left.
    let claim = account.claim.clone();
    let mut done = before.done.clone();
    if let Some(kind) = event.due {
        done.insert(kind, event.timestamp);
    }
    let mut record = CustomerRecord {
        customer: account.customer,
        created_at: before.created_at,
        updated_at: event.received_at,
        event_count: before.event_count.saturating_add(1),
        contact_card: before.contact_card.clone(),
        lots: account.lots,
        tier_since: account.tier_since,
        done,
        due: Vec::new(),
        plugin_profiles: before.plugin_profiles.clone(),
        summary: before.summary.clone(),
        rewards: account.rewards,
        merged_into: before.merged_into.clone(),
        aliases: before.aliases.clone(),
    };
    let merged = account.absorbed.map(|absorbed| {
        let Absorbed { mut away, summary } = *absorbed;
        record.summary.add(&summary);
        for (field, value) in std::mem::take(&mut away.customer.contact_card) {
            record.contact_card.entry(field).or_insert(value);
        }
        record.aliases.push(away.customer.customer.id.clone());
        record
            .aliases
            .extend(std::mem::take(&mut away.customer.aliases));
        away.customer.event_count = away.customer.event_count.saturating_add(1);
        away.customer.updated_at = event.received_at;
        Box::new(away)
    });
    record_summary(&mut record.summary, event, &account.ledger);
    for (plugin, profile) in decided.profiles {
        match profile {
            Some(profile) => record.plugin_profiles.insert(plugin, profile),
            None => record.plugin_profiles.remove(&plugin),
        };
    }
    // Time passing is not activity: an internal event counts, but moves neither the first
    // nor the last event time (inactivity and last-activity expiry read the last).
    record_stats(
        &mut record.customer.stats,
        &event.action,
        event.timestamp,
        !internal,
    );
    record_attributes(&mut record.customer.attributes, event);
    record_contact_card(&mut record.contact_card, event);
    let erase = event.action == "customer_erase";
    if erase {
        record.contact_card = serde_json::Map::new();
        record.plugin_profiles.clear();
    }
    record.due = schedule(&record, policy);

    // The host's own triggers come first, in the outbox and in the event's outcome alike.
    let mut outcome = decided.outcome;
    let mut triggers = account.triggers;
    if !triggers.is_empty() {
        let plugins = std::mem::take(&mut outcome.triggers);
        outcome.triggers = triggers.iter().map(|new| new.trigger.clone()).collect();
        outcome.triggers.extend(plugins);
    }
    triggers.extend(decided.triggers);
    let none = Interaction::default();
    let interaction = event.interaction.as_deref().unwrap_or(&none);
    let snapshot = (!triggers.is_empty()).then(|| CustomerSnapshot::of(&record));
    Ok(AppendEvent {
        tenant: event.tenant.to_string(),
        event: StoredEvent {
            seq: 0,
            id: event.id.to_string(),
            action: event.action.clone(),
            label: event.label.clone(),
            date: event.timestamp.date_string(),
            timestamp: event.timestamp,
            customer: event.customer.to_string(),
            points,
            source: event.source.clone(),
            ip_address: event.ip_address.clone(),
            user_agent: event.user_agent.clone(),
            data: event.data.clone(),
            received_at: event.received_at,
            channel: interaction.channel.clone(),
            campaign: interaction.campaign.clone(),
            goals: interaction.goals.clone(),
            engagement_value: interaction.engagement_value,
            outcome,
        },
        customer: record,
        ledger: account.ledger,
        plugin_states: decided.plugin_states,
        triggers,
        reward: claim,
        erase,
        merged,
        snapshot,
    })
}

/// The first failure of a plugin set to reject, which refuses the event.
fn rejection(plugins: &[PluginOutcome]) -> Option<Rejection> {
    plugins
        .iter()
        .find_map(|plugin| match (&plugin.result, plugin.on_error) {
            (Err(error), OnError::Reject) => Some(Rejection {
                plugin: plugin.name.clone(),
                version: plugin.version,
                error: error.clone(),
            }),
            _ => None,
        })
}

/// The plugins' outcomes sorted into what each part of the store keeps.
struct Decided {
    outcome: EventOutcome,
    triggers: Vec<NewTrigger>,
    /// What each plugin shows on the profile now: `None` removes what it showed.
    profiles: Vec<(String, Option<RawJson>)>,
    plugin_states: Vec<(String, Option<RawJson>)>,
}

impl Decided {
    /// Consumes the outcomes: each decision's triggers are copied once, for the outbox, and
    /// moved into the event's outcome with its entries (the ledger has them from the
    /// account, placed in its lots).
    fn from_outcomes(plugins: Vec<PluginOutcome>) -> Decided {
        let mut decided = Decided {
            outcome: EventOutcome::default(),
            triggers: Vec::new(),
            profiles: Vec::new(),
            plugin_states: Vec::new(),
        };
        for plugin in plugins {
            let (status, error) = match plugin.result {
                Ok(decision) => {
                    decided.take(&plugin.name, decision);
                    (PluginStatus::Ok, None)
                }
                Err(error) => (PluginStatus::Error, Some(error)),
            };
            decided.outcome.plugins.push(PluginRun {
                name: plugin.name,
                version: plugin.version,
                status,
                error,
            });
        }
        decided
    }

    fn take(&mut self, plugin: &str, decision: Decision) {
        for trigger in &decision.triggers {
            self.triggers.push(NewTrigger {
                plugin: plugin.to_owned(),
                trigger: trigger.clone(),
            });
        }
        if let Some(profile) = decision.profile {
            let kept = (!profile.is_null()).then_some(profile);
            self.profiles.push((plugin.to_owned(), kept));
        }
        if let Some(state) = decision.state {
            // `null` clears the state; anything else replaces it.
            let kept = (!state.is_null()).then_some(state);
            self.plugin_states.push((plugin.to_owned(), kept));
        }
        self.outcome.points.extend(decision.points);
        self.outcome.perks.extend(decision.perks);
        self.outcome.triggers.extend(decision.triggers);
        if decision.tier.is_some() {
            self.outcome.tier = decision.tier;
        }
    }
}
