//! The wire types of plugin ABI v1, shared by the host and the SDK so the two cannot drift.
//!
//! The host writes an [`Input`] as JSON into guest memory; the plugin answers with an
//! [`Output`]: a [`Decision`] or `{"error": "why"}`. Unknown fields in the input are ignored
//! (the host may add some); unknown fields in a decision are refused (a typo such as
//! `"point"` must not silently award nothing).

use std::fmt;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::Error;
use crate::number::{Decimal, Money};
use crate::time::Timestamp;

/// The ABI version this SDK and host speak; a plugin's `tally_abi_version` export returns it.
pub const ABI_VERSION: i32 = 1;

/// Everything a plugin sees for one evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Input {
    /// The ABI version of this input, [`ABI_VERSION`].
    pub abi: i32,
    /// The tenant (brand) the event belongs to.
    pub tenant: String,
    /// Which plugin is running, at which version, with the tenant's configuration.
    pub plugin: PluginInfo,
    /// The event being evaluated.
    pub event: Event,
    /// The customer as the plugins before this one left them.
    pub customer: Customer,
    /// This plugin's private state for this customer, `null` when it has none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Box<RawValue>>,
    /// A seed derived from tenant, plugin and event id, as 16 hex digits: the same event
    /// always gets the same seed, so draws and coupon codes replay identically.
    #[serde(default)]
    pub seed: String,
}

impl Input {
    /// The plugin's configuration as `T`; a plugin with no configuration set reads `{}`, so
    /// `#[serde(default)]` fields take their defaults.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, Error> {
        let raw = match &self.plugin.config {
            Some(raw) if raw.get() != "null" => raw.get(),
            _ => "{}",
        };
        from_json_str(raw).map_err(|why| Error::new(format!("plugin config{why}")))
    }

    /// This plugin's state for this customer as `T`, or `T::default()` when it has none yet.
    pub fn state<T: DeserializeOwned + Default>(&self) -> Result<T, Error> {
        match &self.state {
            Some(raw) if raw.get() != "null" => {
                from_json_str(raw.get()).map_err(|why| Error::new(format!("plugin state{why}")))
            }
            _ => Ok(T::default()),
        }
    }

    /// A deterministic random number generator seeded for this tenant, plugin and event.
    pub fn rng(&self) -> crate::Rng {
        crate::Rng::from_seed_hex(&self.seed)
    }
}

/// Which plugin is running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginInfo {
    /// The plugin's name within its tenant.
    pub name: String,
    /// The uploaded version being run.
    pub version: u32,
    /// The tenant's configuration for the plugin, `null` when none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Box<RawValue>>,
}

/// One customer interaction.
///
/// `data` stays raw JSON until a rule asks for a field, so a rule that reads one number
/// does not pay for parsing the whole item list.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    /// Unique per tenant; posting the same id again is idempotent.
    pub id: String,
    /// What happened: `checkout`, `repair`, `swim`, ...
    pub action: String,
    /// A human-readable name of the action, when the sender gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The customer who did it.
    pub customer: String,
    /// When it happened, RFC 3339 UTC. Rules take time from here, never from a clock.
    pub timestamp: Timestamp,
    /// Where the event came from (`api`, `import`, `webhook`, ...).
    #[serde(default)]
    pub source: String,
    /// The action's own attributes.
    pub data: Box<RawValue>,
    #[serde(skip)]
    parsed: OnceLock<Result<Map<String, Value>, String>>,
}

impl Clone for Event {
    fn clone(&self) -> Event {
        Event {
            id: self.id.clone(),
            action: self.action.clone(),
            label: self.label.clone(),
            customer: self.customer.clone(),
            timestamp: self.timestamp,
            source: self.source.clone(),
            data: self.data.clone(),
            parsed: OnceLock::new(),
        }
    }
}

impl Event {
    /// An event with the given fields; `data` must be a JSON object.
    pub fn new(
        id: impl Into<String>,
        action: impl Into<String>,
        customer: impl Into<String>,
        timestamp: Timestamp,
        data: &Value,
    ) -> Result<Event, Error> {
        let data = serde_json::value::to_raw_value(data)
            .map_err(|why| Error::new(format!("event data: {why}")))?;
        Ok(Event {
            id: id.into(),
            action: action.into(),
            label: None,
            customer: customer.into(),
            timestamp,
            source: "api".to_owned(),
            data,
            parsed: OnceLock::new(),
        })
    }

    /// The whole of `data` as `T`, with errors that name the field path
    /// (`data.items[0].price: ...`). Use [`Money`] and [`Decimal`] fields for numbers that
    /// may arrive as strings.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, Error> {
        from_json_str(self.data.get()).map_err(|why| Error::new(format!("event data{why}")))
    }

    /// One field of `data`, `None` when absent or `null`.
    pub fn field(&self, name: &str) -> Result<Option<&Value>, Error> {
        let parsed = self.parsed.get_or_init(|| {
            serde_json::from_str::<Map<String, Value>>(self.data.get())
                .map_err(|why| format!("event data is not a JSON object: {why}"))
        });
        match parsed {
            Ok(map) => Ok(map.get(name).filter(|value| !value.is_null())),
            Err(why) => Err(Error::new(why.clone())),
        }
    }

    fn required(&self, name: &str) -> Result<&Value, Error> {
        self.field(name)?
            .ok_or_else(|| Error::new(format!("event data.{name} is missing")))
    }

    /// A number field that may be written as a number or a numeric string.
    pub fn decimal(&self, name: &str) -> Result<Decimal, Error> {
        value_as_decimal(name, self.required(name)?)
    }

    /// Like [`Event::decimal`], `None` when the field is absent.
    pub fn decimal_opt(&self, name: &str) -> Result<Option<Decimal>, Error> {
        self.field(name)?
            .map(|value| value_as_decimal(name, value))
            .transpose()
    }

    /// A money field in minor units (two decimals), written as a number or a string.
    pub fn money(&self, name: &str) -> Result<Money, Error> {
        Money::from_decimal(self.decimal(name)?)
            .map_err(|why| Error::new(format!("event data.{name}: {why}")))
    }

    /// A whole-number field (a quantity), written as a number or a string.
    pub fn integer(&self, name: &str) -> Result<i64, Error> {
        self.decimal(name)?
            .to_integer()
            .map_err(|why| Error::new(format!("event data.{name}: {why}")))
    }

    /// A string field.
    pub fn str(&self, name: &str) -> Result<&str, Error> {
        let value = self.required(name)?;
        value
            .as_str()
            .ok_or_else(|| wrong_type(name, "a string", value))
    }

    /// Like [`Event::str`], `None` when the field is absent.
    pub fn str_opt(&self, name: &str) -> Result<Option<&str>, Error> {
        match self.field(name)? {
            None => Ok(None),
            Some(value) => value
                .as_str()
                .map(Some)
                .ok_or_else(|| wrong_type(name, "a string", value)),
        }
    }

    /// A boolean field; `"true"` and `"false"` strings are read too, as some systems send them.
    pub fn bool_opt(&self, name: &str) -> Result<Option<bool>, Error> {
        match self.field(name)? {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(Value::String(text)) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(Value::String(text)) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(value) => Err(wrong_type(name, "true or false", value)),
        }
    }
}

fn value_as_decimal(name: &str, value: &Value) -> Result<Decimal, Error> {
    let parsed = match value {
        Value::Number(number) => match (number.as_i64(), number.as_u64(), number.as_f64()) {
            (Some(integer), _, _) => Ok(Decimal::from_int(integer)),
            (None, Some(unsigned), _) => unsigned.to_string().parse(),
            (None, None, Some(float)) => Decimal::from_f64(float),
            _ => return Err(wrong_type(name, "a number", value)),
        },
        Value::String(text) => text.parse(),
        _ => return Err(wrong_type(name, "a number or a numeric string", value)),
    };
    parsed.map_err(|why| Error::new(format!("event data.{name}: {why}")))
}

fn wrong_type(name: &str, expected: &str, found: &Value) -> Error {
    let kind = match found {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    Error::new(format!(
        "event data.{name}: expected {expected}, found {kind}"
    ))
}

/// Deserializes JSON, naming the path of the first offending field in the error.
fn from_json_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        if path == "." {
            format!(": {}", error.inner())
        } else {
            format!(".{path}: {}", error.inner())
        }
    })
}

/// A customer as the host knows them when a plugin runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// The tenant's id for the customer (an external master id).
    #[serde(default)]
    pub id: String,
    /// Points balance and lifetime points.
    #[serde(default)]
    pub points: Points,
    /// The customer's tier, `None` before any plugin set one.
    #[serde(default)]
    pub tier: Option<String>,
    /// Perks (coupons, rewards) the customer holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perks: Vec<Perk>,
    /// Profile attributes the tenant sent (name, email, birthday, ...).
    #[serde(default)]
    pub attributes: Map<String, Value>,
    /// Counters the host keeps: events per action, first and last event time.
    #[serde(default)]
    pub stats: Map<String, Value>,
}

/// A customer's points.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Points {
    /// What the customer can spend now.
    pub balance: i64,
    /// All points ever earned, less reversals; spending does not lower it. Tiers use it.
    pub lifetime: i64,
}

impl Customer {
    /// The customer after `decision`: the one rule for how a decision changes a customer,
    /// used by the host between plugins and when it stores the result.
    pub fn apply(&mut self, decision: &Decision) {
        for entry in &decision.points {
            self.points.balance = self.points.balance.saturating_add(entry.amount);
            if entry.kind() != PointKind::Spend {
                self.points.lifetime = self.points.lifetime.saturating_add(entry.amount);
            }
        }
        if let Some(tier) = &decision.tier {
            self.tier = Some(tier.clone());
        }
        self.perks.extend(decision.perks.iter().cloned());
    }
}

/// What a plugin decides for one event. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Points entries to append to the customer's ledger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<PointEntry>,
    /// Perks granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub perks: Vec<Perk>,
    /// The customer's new tier; `None` leaves it as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Outbound notifications such as `TierEarned` or `CouponAwarded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// The plugin's new private state for this customer: `None` keeps the old state,
    /// `Some(Value::Null)` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub state: Option<Value>,
}

/// Keeps an explicit `null` as `Some(Value::Null)` so that it can clear state.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

impl Decision {
    /// An empty decision: nothing changes.
    pub fn new() -> Decision {
        Decision::default()
    }

    /// Awards points (`amount` > 0), counted in lifetime points.
    pub fn earn(mut self, amount: i64, reason: impl Into<String>) -> Decision {
        self.points
            .push(PointEntry::new(amount, reason).with_kind(PointKind::Earn));
        self
    }

    /// Takes back points earned earlier (a return): lowers balance and lifetime points.
    /// `amount` is the positive number of points to take back.
    pub fn reverse(mut self, amount: i64, reason: impl Into<String>) -> Decision {
        self.points
            .push(PointEntry::new(-amount, reason).with_kind(PointKind::Reverse));
        self
    }

    /// Spends points (a redemption): lowers the balance only. `amount` is positive.
    pub fn spend(mut self, amount: i64, reason: impl Into<String>) -> Decision {
        self.points
            .push(PointEntry::new(-amount, reason).with_kind(PointKind::Spend));
        self
    }

    /// Appends a points entry as it is.
    pub fn points_entry(mut self, entry: PointEntry) -> Decision {
        self.points.push(entry);
        self
    }

    /// Grants a perk.
    pub fn perk(mut self, perk: Perk) -> Decision {
        self.perks.push(perk);
        self
    }

    /// Sets the customer's tier.
    pub fn tier(mut self, tier: impl Into<String>) -> Decision {
        self.tier = Some(tier.into());
        self
    }

    /// Sends an outbound trigger.
    pub fn trigger(mut self, name: impl Into<String>, data: Value) -> Decision {
        self.triggers.push(Trigger {
            name: name.into(),
            data,
        });
        self
    }

    /// Replaces this plugin's state for the customer.
    pub fn state<T: Serialize>(mut self, state: &T) -> Result<Decision, Error> {
        let value = serde_json::to_value(state)
            .map_err(|why| Error::new(format!("plugin state: {why}")))?;
        self.state = Some(value);
        Ok(self)
    }

    /// The sum of all points entries.
    pub fn points_total(&self) -> i64 {
        self.points
            .iter()
            .map(|entry| entry.amount)
            .fold(0, i64::saturating_add)
    }

    /// Checks the rules every decision must keep; the host refuses a decision that breaks one
    /// and records it as the plugin's error. The message names the field and the numbers.
    pub fn check(&self) -> Result<(), DecisionViolation> {
        let violation = |message: String| Err(DecisionViolation(message));
        if self.points.len() > MAX_DECISION_ENTRIES {
            return violation(format!(
                "points has {} entries, more than the {MAX_DECISION_ENTRIES} allowed",
                self.points.len()
            ));
        }
        for (index, entry) in self.points.iter().enumerate() {
            if entry.amount == 0 {
                return violation(format!(
                    "points[{index}].amount is 0: an entry must move points"
                ));
            }
            if entry.amount.unsigned_abs() > MAX_POINTS_AMOUNT {
                return violation(format!(
                    "points[{index}].amount {} is beyond ±{MAX_POINTS_AMOUNT}",
                    entry.amount
                ));
            }
            match (entry.kind(), entry.amount > 0) {
                (PointKind::Earn, false) => {
                    return violation(format!(
                        "points[{index}] has kind earn but amount {} is negative",
                        entry.amount
                    ));
                }
                (PointKind::Reverse | PointKind::Spend, true) => {
                    return violation(format!(
                        "points[{index}] has kind {} but amount {} is positive",
                        entry.kind(),
                        entry.amount
                    ));
                }
                _ => {}
            }
            check_name(
                &format!("points[{index}].reason"),
                &entry.reason,
                MAX_NAME_LEN,
            )?;
        }
        if self.perks.len() > MAX_DECISION_ENTRIES {
            return violation(format!(
                "perks has {} entries, more than the {MAX_DECISION_ENTRIES} allowed",
                self.perks.len()
            ));
        }
        for (index, perk) in self.perks.iter().enumerate() {
            check_name(&format!("perks[{index}].kind"), &perk.kind, MAX_NAME_LEN)?;
            check_name(&format!("perks[{index}].id"), &perk.id, MAX_NAME_LEN)?;
        }
        if let Some(tier) = &self.tier {
            check_name("tier", tier, MAX_NAME_LEN)?;
        }
        if self.triggers.len() > MAX_DECISION_ENTRIES {
            return violation(format!(
                "triggers has {} entries, more than the {MAX_DECISION_ENTRIES} allowed",
                self.triggers.len()
            ));
        }
        for (index, trigger) in self.triggers.iter().enumerate() {
            check_name(
                &format!("triggers[{index}].name"),
                &trigger.name,
                MAX_NAME_LEN,
            )?;
        }
        Ok(())
    }
}

/// The most points one entry may move: far beyond any real award, far from overflow.
pub const MAX_POINTS_AMOUNT: u64 = 1_000_000_000_000;
/// The most entries of each kind (points, perks, triggers) in one decision.
pub const MAX_DECISION_ENTRIES: usize = 1000;
/// The longest reason, perk kind or id, tier or trigger name, in bytes.
pub const MAX_NAME_LEN: usize = 200;

fn check_name(field: &str, value: &str, max: usize) -> Result<(), DecisionViolation> {
    if value.trim().is_empty() {
        return Err(DecisionViolation(format!("{field} is empty")));
    }
    if value.len() > max {
        return Err(DecisionViolation(format!(
            "{field} is {} bytes long, more than the {max} allowed",
            value.len()
        )));
    }
    Ok(())
}

/// A decision that breaks a rule every decision must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionViolation(pub String);

impl fmt::Display for DecisionViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecisionViolation {}

/// One points ledger entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointEntry {
    /// Points moved: positive awards, negative takes.
    pub amount: i64,
    /// Why, as the customer's ledger shows it.
    pub reason: String,
    /// Earn, reverse or spend; when absent, earn for positive amounts and spend for negative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<PointKind>,
    /// When these points expire, if they do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

impl PointEntry {
    /// An entry of `amount` points for `reason`.
    pub fn new(amount: i64, reason: impl Into<String>) -> PointEntry {
        PointEntry {
            amount,
            reason: reason.into(),
            kind: None,
            expires_at: None,
        }
    }

    /// The same entry with an explicit kind.
    pub fn with_kind(mut self, kind: PointKind) -> PointEntry {
        self.kind = Some(kind);
        self
    }

    /// The same entry, expiring at `at`.
    pub fn expiring(mut self, at: Timestamp) -> PointEntry {
        self.expires_at = Some(at);
        self
    }

    /// The entry's kind, defaulted from the sign of the amount.
    pub fn kind(&self) -> PointKind {
        self.kind.unwrap_or(if self.amount >= 0 {
            PointKind::Earn
        } else {
            PointKind::Spend
        })
    }
}

/// What a points entry does to lifetime points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// Points awarded; raises balance and lifetime points.
    Earn,
    /// Points taken back (a return, a rejected checkout); lowers balance and lifetime points.
    Reverse,
    /// Points spent on a reward; lowers the balance only.
    Spend,
}

impl fmt::Display for PointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PointKind::Earn => "earn",
            PointKind::Reverse => "reverse",
            PointKind::Spend => "spend",
        })
    }
}

/// A perk granted to a customer: a coupon, a reward, a free repair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Perk {
    /// What sort of perk (`coupon`, `reward`, ...).
    pub kind: String,
    /// Its id or code.
    pub id: String,
    /// Anything else about it.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

impl Perk {
    /// A perk of `kind` with `id` and no further data.
    pub fn new(kind: impl Into<String>, id: impl Into<String>) -> Perk {
        Perk {
            kind: kind.into(),
            id: id.into(),
            data: Value::Null,
        }
    }

    /// The same perk carrying `data`.
    pub fn with_data(mut self, data: Value) -> Perk {
        self.data = data;
        self
    }
}

/// An outbound notification, sent on by the host (by webhook, for instance).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Its name, e.g. `TierEarned`.
    pub name: String,
    /// What it carries.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

/// What a plugin answers: a decision, or an error it raised on purpose.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// The plugin's decision.
    Decision(Decision),
    /// `{"error": "why"}`: the plugin refused the event, with its reason.
    Error(String),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    points: Vec<PointEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    perks: Vec<Perk>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tier: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    triggers: Vec<Trigger>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    state: Option<Value>,
}

impl Serialize for Output {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Output::Decision(decision) => decision.serialize(serializer),
            Output::Error(message) => {
                let fields = OutputFields {
                    error: Some(message.clone()),
                    points: Vec::new(),
                    perks: Vec::new(),
                    tier: None,
                    triggers: Vec::new(),
                    state: None,
                };
                fields.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for Output {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Output, D::Error> {
        let fields = OutputFields::deserialize(deserializer)?;
        Ok(match fields.error {
            Some(message) => Output::Error(message),
            None => Output::Decision(Decision {
                points: fields.points,
                perks: fields.perks,
                tier: fields.tier,
                triggers: fields.triggers,
                state: fields.state,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decision_round_trips_and_keeps_null_state() {
        let decision = Decision::new()
            .earn(20, "checkout")
            .tier("gold")
            .state(&Value::Null)
            .expect("serializable");
        let text =
            serde_json::to_string(&Output::Decision(decision.clone())).expect("serializable");
        assert_eq!(
            text,
            r#"{"points":[{"amount":20,"reason":"checkout","kind":"earn"}],"tier":"gold","state":null}"#
        );
        let back: Output = serde_json::from_str(&text).expect("valid output");
        assert_eq!(back, Output::Decision(decision));
        let kept: Output = serde_json::from_str("{}").expect("valid output");
        assert_eq!(
            kept,
            Output::Decision(Decision::new()),
            "an absent state keeps the old one"
        );
    }

    #[test]
    fn error_output_is_a_plugin_error() {
        let output: Output =
            serde_json::from_str(r#"{"error":"no such store"}"#).expect("valid output");
        assert_eq!(output, Output::Error("no such store".into()));
        assert_eq!(
            serde_json::to_string(&output).expect("serializable"),
            r#"{"error":"no such store"}"#
        );
    }

    #[test]
    fn unknown_decision_fields_are_refused() {
        let refused = serde_json::from_str::<Output>(r#"{"point":[{"amount":1,"reason":"x"}]}"#);
        assert!(
            refused
                .expect_err("a typo is refused")
                .to_string()
                .contains("unknown field `point`")
        );
        assert!(
            serde_json::from_str::<Output>(r#"{"points":[{"amount":1.5,"reason":"x"}]}"#).is_err()
        );
    }

    #[test]
    fn decision_rules_obeyed() {
        let decision = Decision::new()
            .earn(10, "a")
            .reverse(5, "b")
            .spend(1, "c")
            .tier("gold")
            .trigger("TierEarned", json!({}));
        assert_eq!(decision.check(), Ok(()));
    }

    #[test]
    fn decision_rules_violated() {
        let cases = [
            (Decision::new().earn(0, "x"), "points[0].amount is 0"),
            (
                Decision::new().earn(-3, "x"),
                "points[0] has kind earn but amount -3 is negative",
            ),
            (Decision::new().earn(1, " "), "points[0].reason is empty"),
            (Decision::new().tier(""), "tier is empty"),
            (
                Decision::new().points_entry(PointEntry::new(2_000_000_000_000, "x")),
                "beyond",
            ),
            (
                Decision::new().trigger("", Value::Null),
                "triggers[0].name is empty",
            ),
        ];
        for (decision, expected) in cases {
            let violation = decision.check().expect_err("the rule is broken");
            assert!(
                violation.0.contains(expected),
                "{violation} should contain {expected}"
            );
        }
    }

    #[test]
    fn apply_moves_balance_and_lifetime_by_kind() {
        let mut customer = Customer::default();
        customer.apply(&Decision::new().earn(100, "buy").tier("silver"));
        customer.apply(&Decision::new().spend(30, "reward"));
        customer.apply(&Decision::new().reverse(20, "return"));
        assert_eq!(
            customer.points,
            Points {
                balance: 50,
                lifetime: 80
            }
        );
        assert_eq!(customer.tier.as_deref(), Some("silver"));
    }

    #[test]
    fn event_fields_read_numbers_written_as_strings() {
        let data =
            json!({"total": "200", "quantity": "2", "price": 19.99, "free": "true", "bad": "x"});
        let event = Event::new(
            "e1",
            "checkout",
            "c1",
            Timestamp::from_unix_seconds(0),
            &data,
        )
        .expect("valid");
        assert_eq!(event.money("total").expect("money").minor(), 20000);
        assert_eq!(event.integer("quantity").expect("integer"), 2);
        assert_eq!(event.money("price").expect("money").minor(), 1999);
        assert_eq!(event.bool_opt("free").expect("bool"), Some(true));
        assert_eq!(
            event.decimal("bad").expect_err("not a number").to_string(),
            r#"event data.bad: "x" is not a number"#
        );
        assert_eq!(
            event.decimal("nope").expect_err("missing").to_string(),
            "event data.nope is missing"
        );
        assert_eq!(event.decimal_opt("nope").expect("absent is fine"), None);
    }

    #[test]
    fn data_as_names_the_failing_path() {
        #[derive(Deserialize)]
        struct Item {
            #[allow(dead_code, reason = "read only to test the error path")]
            price: Money,
        }
        #[derive(Deserialize)]
        struct Checkout {
            #[allow(dead_code, reason = "read only to test the error path")]
            items: Vec<Item>,
        }
        let data = json!({"items": [{"price": "1"}, {"price": "oops"}]});
        let event = Event::new(
            "e1",
            "checkout",
            "c1",
            Timestamp::from_unix_seconds(0),
            &data,
        )
        .expect("valid");
        let error = event.data_as::<Checkout>().err().expect("a bad price");
        assert!(
            error.to_string().starts_with("event data.items[1].price: "),
            "{error}"
        );
    }
}
