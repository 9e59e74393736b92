//! The input JSON a plugin gets, written straight from the host's borrowed values.

use serde::Serialize;
use sha2::{Digest, Sha256};
#[cfg(doc)]
use tally_sdk::Input;
use tally_sdk::{ABI_VERSION, Customer, Event, RawJson};

/// [`Input`] as the host writes it: the same fields under the same names, borrowed, so that
/// running three plugins does not copy the event and the customer three times. The test
/// below holds the two to the same JSON.
#[derive(Serialize)]
pub(super) struct InputRef<'a> {
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
    pub(super) fn new(
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
/// and arrays, the only kinds it takes that way. Scanning costs fuel in the guest for every
/// byte, and a state or config is read on every evaluation.
fn text_length(text: &RawJson) -> Option<usize> {
    let text = text.get();
    matches!(text.as_bytes().first(), Some(b'{' | b'[')).then_some(text.len())
}

/// [`Event`], borrowed, with the length of its data's text before the data
/// ([`tally_sdk::wire::EVENT_DATA_BYTES`]), so that the SDK's reader takes the data (1 KB of a
/// typical checkout, which most plugins never read) without scanning it: the guest's scan is
/// paid in fuel by every plugin on every event.
#[derive(Serialize)]
struct EventRef<'a> {
    id: &'a str,
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    label: Option<&'a str>,
    customer: &'a str,
    timestamp: tally_sdk::Timestamp,
    source: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign: Option<&'a str>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    goals: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    engagement_value: Option<tally_sdk::Decimal>,
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
            channel: event.channel.as_deref(),
            campaign: event.campaign.as_deref(),
            goals: &event.goals,
            engagement_value: event.engagement_value,
            data_bytes: event.data.get().len(),
            data: &event.data,
        }
    }
}

/// [`tally_sdk::PluginInfo`], borrowed.
#[derive(Serialize)]
pub(super) struct PluginInfoRef<'a> {
    name: &'a str,
    version: u32,
    /// [`tally_sdk::wire::CONFIG_BYTES`].
    #[serde(skip_serializing_if = "Option::is_none")]
    config_bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config: Option<&'a RawJson>,
}

impl<'a> PluginInfoRef<'a> {
    pub(super) fn new(
        name: &'a str,
        version: u32,
        config: Option<&'a RawJson>,
    ) -> PluginInfoRef<'a> {
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
