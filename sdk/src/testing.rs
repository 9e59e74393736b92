//! Inputs for unit-testing a rule natively, without the host:
//!
//! ```
//! let input = tally_sdk::testing::input("repair", serde_json::json!({"isFreeRepair": true}))
//!     .customer_points(120, 900)
//!     .tier("silver")
//!     .build();
//! assert_eq!(input.customer.points.balance, 120);
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Customer, Decision, Event, Input, PluginInfo, RawJson, Timestamp};

/// The timestamp test events get unless one is set: 2026-11-23T10:00:00Z.
pub const DEFAULT_TIMESTAMP: i64 = 1_795_428_000;

/// The state `decision` writes, read back as `T`; panics (failing the test) when it writes
/// none or one that does not read as `T`.
pub fn state_of<T: DeserializeOwned>(decision: &Decision) -> T {
    let Some(state) = &decision.state else {
        panic!("the decision writes no state: {decision:?}");
    };
    state
        .parse()
        .unwrap_or_else(|error| panic!("the state {} does not read back: {error}", state.get()))
}

/// Starts an input for an event of `action` with `data` (a JSON object).
pub fn input(action: &str, data: Value) -> InputBuilder {
    InputBuilder {
        tenant: "test".to_owned(),
        plugin: "test".to_owned(),
        action: action.to_owned(),
        event_id: "event-1".to_owned(),
        timestamp: Timestamp::from_unix_seconds(DEFAULT_TIMESTAMP),
        data,
        customer: Customer {
            id: "customer-1".to_owned(),
            ..Customer::default()
        },
        config: Value::Null,
        state: None,
        seed: 0,
    }
}

/// Builds an [`Input`] for a test; every setter has a sensible default.
#[derive(Debug, Clone)]
pub struct InputBuilder {
    tenant: String,
    plugin: String,
    action: String,
    event_id: String,
    timestamp: Timestamp,
    data: Value,
    customer: Customer,
    config: Value,
    state: Option<RawJson>,
    seed: u64,
}

impl InputBuilder {
    /// The event's id.
    pub fn event_id(mut self, id: &str) -> Self {
        self.event_id = id.to_owned();
        self
    }

    /// The event's time, RFC 3339.
    ///
    /// # Panics
    /// When `timestamp` is not RFC 3339: this is for tests.
    #[allow(
        clippy::expect_used,
        reason = "a test helper: a bad literal should fail the test loudly"
    )]
    pub fn timestamp(mut self, timestamp: &str) -> Self {
        self.timestamp = timestamp.parse().expect("an RFC 3339 timestamp");
        self
    }

    /// The whole customer.
    pub fn customer(mut self, customer: Customer) -> Self {
        self.customer = customer;
        self
    }

    /// The customer's balance and lifetime points.
    pub fn customer_points(mut self, balance: i64, lifetime: i64) -> Self {
        self.customer.points.balance = balance;
        self.customer.points.lifetime = lifetime;
        self
    }

    /// The customer's tier.
    pub fn tier(mut self, tier: &str) -> Self {
        self.customer.tier = Some(tier.to_owned());
        self
    }

    /// The plugin's configuration.
    pub fn config(mut self, config: Value) -> Self {
        self.config = config;
        self
    }

    /// The plugin's state for the customer, as a previous evaluation left it: `state`
    /// written as the rule's [`Decision::state`] writes it, and kept as that text, as the
    /// host keeps it (not through a `Value`, which would sort an object's keys).
    ///
    /// # Panics
    /// When `state` does not serialize as JSON: this is for tests.
    #[allow(
        clippy::expect_used,
        reason = "a test helper: a state that cannot be written should fail the test loudly"
    )]
    pub fn state<T: Serialize + ?Sized>(mut self, state: &T) -> Self {
        self.state = Some(RawJson::to_json(state).expect("the state serializes as JSON"));
        self
    }

    /// The seed for [`Input::rng`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The input.
    ///
    /// # Panics
    /// When `data` is not serializable, which a `serde_json::Value` always is.
    #[allow(
        clippy::expect_used,
        reason = "a test helper; a Value always serializes"
    )]
    pub fn build(self) -> Input {
        let raw = |value: &Value| -> Option<RawJson> {
            (!value.is_null()).then(|| RawJson::from_value(value))
        };
        let event = Event::new(
            self.event_id,
            self.action,
            self.customer.id.clone(),
            self.timestamp,
            &self.data,
        )
        .expect("event data is a JSON value");
        Input {
            abi: crate::ABI_VERSION,
            tenant: self.tenant,
            plugin: PluginInfo {
                name: self.plugin,
                version: 1,
                config: raw(&self.config),
            },
            event,
            customer: self.customer,
            state: self.state.filter(|state| !state.is_null()),
            seed: format!("{:016x}", self.seed),
        }
    }
}
