//! What the host itself keeps of a customer from their events, whatever the plugins decide:
//! the statistics plugins see, the profile fields an opt-in carries, and the contact card.

use serde_json::{Map, Value, json};
use tally_sdk::{Decimal, PointKind, Stats, Timestamp};

use super::NewEvent;
use super::account::Account;
use super::records::{NewLedgerEntry, RawJson, StoredEvent, Summary};

/// A field of an event type marked `showInContactCard`, with the value one event carried.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContactCardValue {
    /// The property name in the event data.
    pub property: String,
    /// Its display name.
    pub display_name: String,
    /// The value the event carried.
    pub value: Value,
}

/// Counts `event` in the statistics: one more of its action, and, for `activity` (an event
/// from outside), the first and last event time widened to include it (events may arrive out
/// of time order: imports are backdated).
pub fn record_stats(stats: &mut Stats, action: &str, at: Timestamp, activity: bool) {
    match stats.events.get_mut(action) {
        Some(count) => *count = count.saturating_add(1),
        None => {
            stats.events.insert(action.to_owned(), 1);
        }
    }
    if !activity {
        return;
    }
    if stats.first_event_at.is_none_or(|first| at < first) {
        stats.first_event_at = Some(at);
    }
    if stats.last_event_at.is_none_or(|last| at > last) {
        stats.last_event_at = Some(at);
    }
}

/// Counts `event` and the ledger entries it made in the customer's summary.
pub fn record_summary(summary: &mut Summary, event: &NewEvent, ledger: &[NewLedgerEntry]) {
    if let Some(value) = event
        .interaction
        .as_ref()
        .and_then(|interaction| interaction.engagement_value)
        && let Ok(sum) = summary.engagement_value.checked_add(value)
    {
        summary.engagement_value = sum;
    }
    if event.action == "checkout" {
        summary.last_purchase_at = summary.last_purchase_at.max(Some(event.timestamp));
        #[derive(serde::Deserialize)]
        struct Total {
            #[serde(default)]
            total: Option<Decimal>,
        }
        let total = serde_json::from_str::<Total>(event.data.get())
            .ok()
            .and_then(|data| data.total);
        if let Some(total) = total
            && let Ok(sum) = summary.total_spend.checked_add(total)
        {
            summary.total_spend = sum;
        }
    }
    for new in ledger {
        let amount = new.entry.amount.saturating_abs();
        let sum = match new.entry.kind() {
            PointKind::Spend => &mut summary.points_spent,
            PointKind::Expire => &mut summary.points_expired,
            PointKind::Reverse => &mut summary.points_reversed,
            PointKind::Earn | PointKind::Release | PointKind::Merge => continue,
        };
        *sum = sum.saturating_add(amount);
    }
}

/// The profile fields an `opt_in` carries (Antavo's opt-in events and CSV imports bring the
/// customer's email and name), and the opt-in flag itself.
pub fn record_attributes(attributes: &mut Map<String, Value>, event: &NewEvent) {
    const PROFILE_FIELDS: [&str; 6] = [
        "email",
        "first_name",
        "last_name",
        "phone",
        "language",
        "birthday",
    ];
    match event.action.as_str() {
        "opt_in" => {
            let data = event.data.to_value();
            for field in PROFILE_FIELDS {
                if let Some(value) = data.get(field).filter(|v| !v.is_null()) {
                    attributes.insert(field.to_owned(), value.clone());
                }
            }
            attributes.insert("opted_in".to_owned(), Value::Bool(true));
            attributes.insert("opted_in_at".to_owned(), json!(event.timestamp));
        }
        "opt_out" => {
            attributes.insert("opted_in".to_owned(), Value::Bool(false));
            attributes.insert("opted_out_at".to_owned(), json!(event.timestamp));
        }
        _ => {}
    }
}

/// The contact card keeps the latest value of every `showInContactCard` field, keyed
/// `action.property` (several interaction types have a `date`), with the event it came from.
/// An event older than the value already shown does not replace it.
pub fn record_contact_card(card: &mut Map<String, Value>, event: &NewEvent) {
    for field in &event.contact_card {
        let key = format!("{}.{}", event.action, field.property);
        let newer = card
            .get(&key)
            .and_then(|shown| shown.get("at"))
            .and_then(Value::as_str)
            .and_then(|at| at.parse::<Timestamp>().ok())
            .is_none_or(|shown_at| event.timestamp >= shown_at);
        if newer {
            card.insert(
                key,
                json!({
                    "action": event.action,
                    "property": field.property,
                    "display_name": field.display_name,
                    "value": field.value,
                    "event_id": event.id,
                    "at": event.timestamp,
                }),
            );
        }
    }
}

impl Account {
    /// Makes the customer a member or ends it, before the plugins run (a welcome bonus on
    /// `opt_in` is earned as a member): `LoyaltyOptIn` / `LoyaltyOptOut` when it changes.
    pub(super) fn set_member(&mut self, member: bool, at: Timestamp) {
        if self.customer.member == member {
            return;
        }
        self.customer.member = member;
        let name = if member {
            "LoyaltyOptIn"
        } else {
            "LoyaltyOptOut"
        };
        self.host_trigger(name, &json!({"member": member, "at": at}));
    }

    /// Writes the profile a `profile_update` carries: `data.attributes` merged into the
    /// customer's (JSON merge patch: `null` removes a field, objects merge), or, with
    /// `data.replace`, in place of them but for the host's own membership fields.
    pub(super) fn update_profile(&mut self, event: &NewEvent) {
        #[derive(serde::Deserialize)]
        struct Update {
            #[serde(default)]
            attributes: serde_json::Map<String, serde_json::Value>,
            #[serde(default)]
            replace: bool,
        }
        let Ok(update) = serde_json::from_str::<Update>(event.data.get()) else {
            return;
        };
        let attributes = &mut self.customer.attributes;
        if update.replace {
            attributes.retain(|field, _| HOST_ATTRIBUTES.contains(&field.as_str()));
        }
        merge_patch(attributes, update.attributes);
    }

    /// Forgets who the customer is: every attribute, and each perk's code and data (a code
    /// handed to one person identifies them). Points, lots, tier, membership and counts stay:
    /// they are the tenant's books, not the person.
    pub(super) fn erase(&mut self) {
        self.customer.attributes.clear();
        erase_perks(&mut self.customer.perks);
    }
}

/// A perk's code (`erased-N`) and data forgotten: a code handed to one person identifies
/// them. Kind, value, dates and status stay.
fn erase_perks(perks: &mut [tally_sdk::Perk]) {
    for (index, perk) in perks.iter_mut().enumerate() {
        perk.id = format!("erased-{}", index + 1);
        perk.data = Value::Null;
    }
}

/// What of a stored event an erasure forgets: its data, the sender's address, user agent and
/// label, the codes and data of the perks it granted and the data of the triggers it sent.
/// Its id, action, times, points and the plugins' runs stay.
pub fn erase_event(event: &mut StoredEvent) {
    event.data = RawJson::from_value(&json!({}));
    event.ip_address = None;
    event.user_agent = None;
    event.label = None;
    erase_perks(&mut event.outcome.perks);
    for trigger in &mut event.outcome.triggers {
        trigger.data = RawJson::from_value(&json!({}));
    }
}

/// The attributes the host keeps itself, which a profile written whole keeps.
pub const HOST_ATTRIBUTES: [&str; 3] = ["opted_in", "opted_in_at", "opted_out_at"];

/// RFC 7386 JSON merge patch of `patch` into `target`.
fn merge_patch(
    target: &mut serde_json::Map<String, serde_json::Value>,
    patch: serde_json::Map<String, serde_json::Value>,
) {
    for (field, value) in patch {
        match value {
            serde_json::Value::Null => {
                target.remove(&field);
            }
            serde_json::Value::Object(inner) => {
                let slot = target
                    .entry(field)
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                if !slot.is_object() {
                    *slot = serde_json::Value::Object(serde_json::Map::new());
                }
                if let serde_json::Value::Object(existing) = slot {
                    merge_patch(existing, inner);
                }
            }
            other => {
                target.insert(field, other);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;
    use crate::domain::testing::event;

    #[test]
    fn stats_count_actions_and_keep_the_first_and_last_event_time() {
        let mut stats = Stats::default();
        for (action, at) in [
            ("checkout", "2026-11-02T00:00:00Z"),
            ("repair", "2026-11-01T00:00:00Z"),
            ("checkout", "2026-11-03T00:00:00Z"),
        ] {
            record_stats(&mut stats, action, at.parse().unwrap(), true);
        }
        assert_eq!(
            serde_json::to_value(&stats).unwrap(),
            json!({
                "events": {"checkout": 2, "repair": 1},
                "first_event_at": "2026-11-01T00:00:00Z",
                "last_event_at": "2026-11-03T00:00:00Z",
            })
        );
        assert_eq!(stats.events("checkout"), 2);
        assert_eq!(stats.events("swim"), 0);
    }

    #[test]
    fn contact_card_keeps_the_latest_value_per_action_and_property() {
        let mut card = Map::new();
        let field = |value: &str| ContactCardValue {
            property: "brand".to_owned(),
            display_name: "Brand".to_owned(),
            value: json!(value),
        };
        for (at, brand) in [
            ("2026-11-02T00:00:00Z", "new"),
            ("2026-11-01T00:00:00Z", "older, posted later"),
        ] {
            let mut repair = event("repair", at, json!({"brand": brand}));
            repair.contact_card = vec![field(brand)];
            record_contact_card(&mut card, &repair);
        }
        assert_eq!(card["repair.brand"]["value"], "new");
        assert_eq!(card["repair.brand"]["display_name"], "Brand");
        assert_eq!(card["repair.brand"]["at"], "2026-11-02T00:00:00Z");
    }

    #[test]
    fn opt_in_and_opt_out_set_profile_attributes() {
        let mut attributes = Map::new();
        let data = json!({"email": "ada@example.com", "first_name": "Ada", "channel": "web"});
        record_attributes(
            &mut attributes,
            &event("opt_in", "2026-11-01T00:00:00Z", data),
        );
        assert_eq!(attributes["email"], "ada@example.com");
        assert_eq!(attributes["opted_in"], true);
        assert_eq!(attributes["opted_in_at"], "2026-11-01T00:00:00Z");
        assert!(!attributes.contains_key("channel"));
        record_attributes(
            &mut attributes,
            &event("opt_out", "2026-11-02T00:00:00Z", json!({})),
        );
        assert_eq!(attributes["opted_in"], false);
        assert_eq!(attributes["first_name"], "Ada");
    }
}
