//! Rewards for sustainable choices: Voyado Engage's circular-economy interactions.
//!
//! # Events
//!
//! Field names are those of Voyado's interaction schemas. Numbers may be written as strings
//! (`"12.50"`) and booleans as `"true"` / `"false"`, as form-fed systems send them.
//!
//! - `repair` `{registrationDate, productModel, brand, productId, storeName, storeId,
//!   isFreeRepair}`: `paid_repair_points`, or `free_repair_points` when `isFreeRepair` is
//!   true. A paid repair earns more because the customer chose to pay to keep a product
//!   rather than replace it. `isFreeRepair` absent counts as paid.
//! - `preownedProduct` `{date, productSku, size, condition, storeDropOff, reimbursement,
//!   storeName, storeId}`: `preowned_points`, plus `preowned_drop_off_bonus` when
//!   `storeDropOff` is true, plus `floor(reimbursement × preowned_points_per_currency)`.
//! - `recycled` `{date, dropOffPoint, quantity, type}`: `floor(quantity × points per item)`,
//!   the points per item looked up by `type` (a number such as `2`, or a string) in
//!   `recycled_points_per_item`, else `recycled_default_points_per_item`. `quantity` absent
//!   counts as 1.
//! - `wholeSalePurchase` `{date, productSku, pricePaid, source}`: a product bought from a
//!   reseller and registered by the customer earns `wholesale_registration_points` plus
//!   `floor(pricePaid × wholesale_points_per_currency)`.
//! - Any other action: nothing.
//!
//! Negative amounts and quantities, and a quantity of 0, are refused with an error naming
//! the field.
//!
//! Every `coupon_every`-th counted action (those in `coupon_actions`) also grants a perk
//! `{"kind": "coupon", "id": "<coupon_prefix><8 characters>"}` and sends a `CouponAwarded`
//! trigger `{code, action, circular_actions, ...coupon_data}`. The code comes from the
//! event's seed, so replaying history gives the same code.
//!
//! # Config
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `free_repair_points` | `10` | points for a free repair |
//! | `paid_repair_points` | `50` | points for a paid repair |
//! | `preowned_points` | `20` | points for trading in a pre-owned product |
//! | `preowned_drop_off_bonus` | `30` | extra points when it was dropped off in store |
//! | `preowned_points_per_currency` | `0` | points per currency unit of `reimbursement` |
//! | `recycled_points_per_item` | `{}` | recycling `type` → points per item (decimal) |
//! | `recycled_default_points_per_item` | `5` | points per item for other types |
//! | `wholesale_points_per_currency` | `1` | points per currency unit of `pricePaid` |
//! | `wholesale_registration_points` | `0` | points for registering a reseller purchase |
//! | `coupon_every` | `5` | a coupon every this many counted actions; 0 disables coupons |
//! | `coupon_actions` | all four | which actions count toward the coupon |
//! | `coupon_prefix` | `"CIRC-"` | prefix of coupon codes (at most 100 bytes) |
//! | `coupon_data` | `{}` | fields copied into the perk's data and the trigger (what the coupon is worth) |
//!
//! ```json
//! { "paid_repair_points": 80,
//!   "recycled_points_per_item": { "1": 10, "2": 25, "batteries": 2 },
//!   "preowned_points_per_currency": 0.5,
//!   "coupon_every": 3,
//!   "coupon_actions": ["repair", "preownedProduct", "recycled"],
//!   "coupon_data": { "discount_percent": 15, "valid_days": 60 } }
//! ```
//!
//! # State
//!
//! `{"circular_actions": n}`: how many counted actions the customer has done.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tally_sdk::wire::MAX_NAME_LEN;
use tally_sdk::{Decimal, Decision, Error, Event, Input, Perk, plugin};

/// The actions this plugin rewards, as Voyado names them.
const ACTIONS: [&str; 4] = ["repair", "preownedProduct", "recycled", "wholeSalePurchase"];

/// Characters of randomness in a coupon code.
const CODE_LEN: usize = 8;
/// The longest coupon prefix: leaves the code ample room within a perk id.
const MAX_PREFIX_LEN: usize = MAX_NAME_LEN / 2;

/// The plugin's configuration; see the crate documentation for each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Points for a free repair.
    pub free_repair_points: i64,
    /// Points for a paid repair.
    pub paid_repair_points: i64,
    /// Points for a pre-owned product.
    pub preowned_points: i64,
    /// Extra points when the pre-owned product was dropped off in store.
    pub preowned_drop_off_bonus: i64,
    /// Points per currency unit of the reimbursement.
    pub preowned_points_per_currency: Decimal,
    /// Recycling type → points per item.
    pub recycled_points_per_item: BTreeMap<String, Decimal>,
    /// Points per item for types not listed.
    pub recycled_default_points_per_item: Decimal,
    /// Points per currency unit of a reseller purchase's price.
    pub wholesale_points_per_currency: Decimal,
    /// Points for registering a reseller purchase.
    pub wholesale_registration_points: i64,
    /// A coupon every this many counted actions; 0 disables coupons.
    pub coupon_every: u64,
    /// Actions that count toward the coupon.
    pub coupon_actions: Vec<String>,
    /// Prefix of coupon codes.
    pub coupon_prefix: String,
    /// Fields copied into the coupon perk and the trigger.
    pub coupon_data: Map<String, Value>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            free_repair_points: 10,
            paid_repair_points: 50,
            preowned_points: 20,
            preowned_drop_off_bonus: 30,
            preowned_points_per_currency: Decimal::ZERO,
            recycled_points_per_item: BTreeMap::new(),
            recycled_default_points_per_item: Decimal::from_int(5),
            wholesale_points_per_currency: Decimal::from_int(1),
            wholesale_registration_points: 0,
            coupon_every: 5,
            coupon_actions: ACTIONS.iter().map(|&action| action.to_owned()).collect(),
            coupon_prefix: "CIRC-".to_owned(),
            coupon_data: Map::new(),
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), Error> {
        let counts = [
            ("free_repair_points", self.free_repair_points),
            ("paid_repair_points", self.paid_repair_points),
            ("preowned_points", self.preowned_points),
            ("preowned_drop_off_bonus", self.preowned_drop_off_bonus),
            (
                "wholesale_registration_points",
                self.wholesale_registration_points,
            ),
        ];
        if let Some((key, value)) = counts.iter().find(|(_, value)| *value < 0) {
            return Err(Error::new(format!(
                "plugin config: {key} is {value}; points cannot be negative"
            )));
        }
        let rates = [
            (
                "preowned_points_per_currency".to_owned(),
                self.preowned_points_per_currency,
            ),
            (
                "recycled_default_points_per_item".to_owned(),
                self.recycled_default_points_per_item,
            ),
            (
                "wholesale_points_per_currency".to_owned(),
                self.wholesale_points_per_currency,
            ),
        ]
        .into_iter()
        .chain(
            self.recycled_points_per_item
                .iter()
                .map(|(kind, rate)| (format!("recycled_points_per_item.{kind}"), *rate)),
        );
        for (key, rate) in rates {
            if rate.is_negative() {
                return Err(Error::new(format!(
                    "plugin config: {key} is {rate}; points cannot be negative"
                )));
            }
        }
        if let Some(unknown) = self
            .coupon_actions
            .iter()
            .find(|action| !ACTIONS.contains(&action.as_str()))
        {
            return Err(Error::new(format!(
                "plugin config: coupon_actions names {unknown:?}, which is not one of {ACTIONS:?}"
            )));
        }
        if self.coupon_prefix.len() > MAX_PREFIX_LEN {
            return Err(Error::new(format!(
                "plugin config: coupon_prefix is longer than {MAX_PREFIX_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// Points per recycled item of `kind`.
    fn per_item(&self, kind: Option<&str>) -> Decimal {
        kind.and_then(|kind| {
            self.recycled_points_per_item
                .iter()
                .find(|(key, _)| type_key(key) == kind)
        })
        .map_or(self.recycled_default_points_per_item, |(_, rate)| *rate)
    }
}

/// What the plugin remembers per customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Counted circular actions so far.
    #[serde(default)]
    pub circular_actions: u64,
}

#[plugin]
fn rule(input: &Input) -> Result<Decision, Error> {
    let action = input.event.action.as_str();
    if !ACTIONS.contains(&action) {
        return Ok(Decision::new());
    }
    let config: Config = input.config()?;
    config.validate()?;
    let event = &input.event;
    let points = match action {
        "repair" => repair(event, &config)?,
        "preownedProduct" => preowned(event, &config)?,
        "recycled" => recycled(event, &config)?,
        _ => wholesale(event, &config)?,
    };
    let mut decision = Decision::new();
    if points > 0 {
        decision = decision.earn(points, action);
    }
    if !config
        .coupon_actions
        .iter()
        .any(|counted| counted == action)
    {
        return Ok(decision);
    }
    let mut state: State = input.state()?;
    state.circular_actions = state.circular_actions.saturating_add(1);
    if config.coupon_every > 0 && state.circular_actions.is_multiple_of(config.coupon_every) {
        let code = format!("{}{}", config.coupon_prefix, input.rng().code(CODE_LEN));
        let mut data = config.coupon_data.clone();
        data.insert("action".to_owned(), json!(action));
        data.insert("circular_actions".to_owned(), json!(state.circular_actions));
        let perk = Perk::new("coupon", &code).with_data(Value::Object(data.clone()));
        data.insert("code".to_owned(), Value::String(code));
        decision = decision
            .perk(perk)
            .trigger("CouponAwarded", Value::Object(data));
    }
    decision.state(&state)
}

fn repair(event: &Event, config: &Config) -> Result<i64, Error> {
    Ok(if event.bool_opt("isFreeRepair")?.unwrap_or(false) {
        config.free_repair_points
    } else {
        config.paid_repair_points
    })
}

fn preowned(event: &Event, config: &Config) -> Result<i64, Error> {
    let mut points = config.preowned_points;
    if event.bool_opt("storeDropOff")?.unwrap_or(false) {
        points = points.saturating_add(config.preowned_drop_off_bonus);
    }
    if let Some(reimbursement) = amount(event, "reimbursement")? {
        let extra = reimbursement
            .checked_mul(config.preowned_points_per_currency)?
            .floor()?;
        points = points.saturating_add(extra);
    }
    Ok(points)
}

fn recycled(event: &Event, config: &Config) -> Result<i64, Error> {
    let quantity = amount(event, "quantity")?.unwrap_or(Decimal::from_int(1));
    if quantity == Decimal::ZERO {
        return Err(Error::new(
            "event data.quantity is 0; a recycling drop-off has at least one item",
        ));
    }
    let kind = recycling_type(event)?;
    Ok(quantity
        .checked_mul(config.per_item(kind.as_deref()))?
        .floor()?)
}

fn wholesale(event: &Event, config: &Config) -> Result<i64, Error> {
    let mut points = config.wholesale_registration_points;
    if let Some(price) = amount(event, "pricePaid")? {
        let earned = price
            .checked_mul(config.wholesale_points_per_currency)?
            .floor()?;
        points = points.saturating_add(earned);
    }
    Ok(points)
}

/// An optional amount that may not be negative.
fn amount(event: &Event, field: &str) -> Result<Option<Decimal>, Error> {
    let value = event.decimal_opt(field)?;
    match value {
        Some(value) if value.is_negative() => Err(Error::new(format!(
            "event data.{field} is {value}; it cannot be negative"
        ))),
        _ => Ok(value),
    }
}

/// The recycling type as a lookup key: `2`, `2.0` and `"2"` are all `"2"`.
fn recycling_type(event: &Event) -> Result<Option<String>, Error> {
    match event.field("type")? {
        None => Ok(None),
        Some(Value::Number(_)) => Ok(Some(event.decimal("type")?.to_string())),
        Some(Value::String(kind)) => Ok(Some(type_key(kind))),
        Some(_) => Err(Error::new(
            "event data.type must be a number or a string naming the kind of recycling",
        )),
    }
}

fn type_key(kind: &str) -> String {
    match kind.parse::<Decimal>() {
        Ok(number) => number.to_string(),
        Err(_) => kind.trim().to_owned(),
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use serde_json::json;
    use tally_sdk::testing::{self, InputBuilder};

    use super::*;

    fn run(builder: InputBuilder) -> Decision {
        let decision = rule(&builder.build()).expect("the rule accepts the event");
        decision.check().expect("the decision keeps the rules");
        decision
    }

    fn points(action: &str, data: Value, config: Value) -> i64 {
        run(testing::input(action, data).config(config)).points_total()
    }

    fn refused(action: &str, data: Value) -> String {
        rule(&testing::input(action, data).build())
            .expect_err("the rule refuses the event")
            .message()
            .to_owned()
    }

    fn counted(decision: &Decision) -> u64 {
        testing::state_of::<State>(decision).circular_actions
    }

    #[test]
    fn voyado_repair_paid_and_free() {
        let repair = json!({
            "registrationDate": "2026-11-20T09:00:00Z", "productModel": "Trail 2",
            "brand": "Acme", "productId": "P-1", "storeName": "Oslo", "storeId": "S1",
            "isFreeRepair": false
        });
        let decision = run(testing::input("repair", repair));
        assert_eq!(decision.points_total(), 50);
        assert_eq!(decision.points[0].reason, "repair");
        assert_eq!(
            points("repair", json!({"isFreeRepair": true}), json!({})),
            10
        );
        assert_eq!(
            points("repair", json!({"isFreeRepair": "true"}), json!({})),
            10
        );
        assert_eq!(
            points("repair", json!({"isFreeRepair": "FALSE"}), json!({})),
            50
        );
        assert_eq!(points("repair", json!({}), json!({})), 50, "absent is paid");
        assert_eq!(
            points(
                "repair",
                json!({"isFreeRepair": true}),
                json!({"free_repair_points": 3, "paid_repair_points": 70})
            ),
            3
        );
        assert_eq!(
            refused("repair", json!({"isFreeRepair": "yes"})),
            "event data.isFreeRepair: expected true or false, found a string"
        );
    }

    #[test]
    fn preowned_base_drop_off_and_reimbursement() {
        let config = json!({"preowned_points_per_currency": "0.5"});
        assert_eq!(points("preownedProduct", json!({}), json!({})), 20);
        assert_eq!(
            points("preownedProduct", json!({"storeDropOff": true}), json!({})),
            50
        );
        assert_eq!(
            points(
                "preownedProduct",
                json!({"productSku": "S", "size": "M", "condition": "good",
                       "storeDropOff": "true", "reimbursement": "25.90"}),
                config.clone()
            ),
            20 + 30 + 12
        );
        assert_eq!(
            points("preownedProduct", json!({"reimbursement": 100}), json!({})),
            20,
            "reimbursement earns nothing by default"
        );
        assert_eq!(
            refused("preownedProduct", json!({"reimbursement": -1})),
            "event data.reimbursement is -1; it cannot be negative"
        );
    }

    #[test]
    fn recycled_by_type_and_quantity() {
        let config = json!({
            "recycled_points_per_item": {"1": 10, "2": "2.5", "batteries": 1},
            "recycled_default_points_per_item": 4
        });
        let earned = |data: Value| points("recycled", data, config.clone());
        assert_eq!(earned(json!({"type": 1, "quantity": 3})), 30);
        assert_eq!(earned(json!({"type": "1", "quantity": "3"})), 30);
        assert_eq!(earned(json!({"type": 1.0, "quantity": 2})), 20);
        assert_eq!(earned(json!({"type": 2, "quantity": 3})), 7, "7.5 floors");
        assert_eq!(earned(json!({"type": "batteries", "quantity": 12})), 12);
        assert_eq!(earned(json!({"type": 9, "quantity": 2})), 8, "unlisted");
        assert_eq!(earned(json!({"dropOffPoint": "Store 4"})), 4, "one item");
        assert_eq!(
            points("recycled", json!({"quantity": 2}), json!({})),
            10,
            "5 per item by default"
        );
        assert_eq!(
            refused("recycled", json!({"quantity": 0})),
            "event data.quantity is 0; a recycling drop-off has at least one item"
        );
        assert!(refused("recycled", json!({"quantity": -2})).contains("cannot be negative"));
        assert!(refused("recycled", json!({"quantity": "many"})).contains("is not a number"));
        assert!(refused("recycled", json!({"type": true})).contains("event data.type"));
    }

    #[test]
    fn wholesale_purchase_earns_from_price_paid() {
        let purchase = json!({"date": "2026-11-01T12:00:00Z", "productSku": "SKU-9",
                              "pricePaid": "149.95", "source": "Reseller AB"});
        let decision = run(testing::input("wholeSalePurchase", purchase.clone()));
        assert_eq!(decision.points_total(), 149);
        assert_eq!(decision.points[0].reason, "wholeSalePurchase");
        assert_eq!(
            points(
                "wholeSalePurchase",
                purchase,
                json!({"wholesale_points_per_currency": 0.1, "wholesale_registration_points": 25})
            ),
            25 + 14
        );
        assert_eq!(
            points("wholeSalePurchase", json!({"productSku": "S"}), json!({})),
            0
        );
        assert!(refused("wholeSalePurchase", json!({"pricePaid": "-3"})).contains("negative"));
    }

    #[test]
    fn a_coupon_every_fifth_action_with_a_deterministic_code() {
        let fifth = |seed: u64| {
            run(testing::input("repair", json!({}))
                .state(&State {
                    circular_actions: 4,
                })
                .seed(seed))
        };
        let decision = fifth(7);
        assert_eq!(counted(&decision), 5);
        assert_eq!(decision.perks.len(), 1);
        let perk = &decision.perks[0];
        assert_eq!(perk.kind, "coupon");
        assert!(perk.id.starts_with("CIRC-"));
        assert_eq!(perk.id.len(), "CIRC-".len() + CODE_LEN);
        assert_eq!(
            perk.data,
            json!({"action": "repair", "circular_actions": 5})
        );
        assert_eq!(decision.triggers.len(), 1);
        assert_eq!(decision.triggers[0].name, "CouponAwarded");
        assert_eq!(decision.triggers[0].data.to_value()["code"], json!(perk.id));
        assert_eq!(fifth(7), decision, "the same seed draws the same code");
        assert_ne!(fifth(8).perks[0].id, perk.id);
    }

    #[test]
    fn other_counts_earn_no_coupon() {
        for before in [0, 1, 3, 5, 8] {
            let decision = run(testing::input("recycled", json!({})).state(&State {
                circular_actions: before,
            }));
            assert!(decision.perks.is_empty(), "after {before}");
            assert!(decision.triggers.is_empty());
            assert_eq!(counted(&decision), before + 1);
        }
        let tenth = run(testing::input("recycled", json!({})).state(&State {
            circular_actions: 9,
        }));
        assert_eq!(tenth.perks.len(), 1);
    }

    #[test]
    fn coupon_config() {
        let config = json!({
            "coupon_every": 2, "coupon_prefix": "", "coupon_data": {"discount_percent": 15}
        });
        let decision = run(testing::input("preownedProduct", json!({}))
            .config(config)
            .state(&State {
                circular_actions: 1,
            }));
        assert_eq!(decision.perks[0].id.len(), CODE_LEN);
        assert_eq!(decision.perks[0].data["discount_percent"], 15);
        assert_eq!(decision.triggers[0].data.to_value()["discount_percent"], 15);

        let disabled = run(testing::input("repair", json!({}))
            .config(json!({"coupon_every": 0}))
            .state(&State {
                circular_actions: 4,
            }));
        assert!(disabled.perks.is_empty());
        assert_eq!(counted(&disabled), 5, "counting goes on");
    }

    #[test]
    fn uncounted_actions_leave_the_count_alone() {
        let decision = run(
            testing::input("wholeSalePurchase", json!({"pricePaid": 10}))
                .config(json!({"coupon_actions": ["repair"]}))
                .state(&State {
                    circular_actions: 4,
                }),
        );
        assert_eq!(decision.points_total(), 10);
        assert_eq!(decision.state, None);
        assert!(decision.perks.is_empty());
    }

    #[test]
    fn actions_that_earn_nothing_still_count() {
        let decision = run(
            testing::input("wholeSalePurchase", json!({})).state(&State {
                circular_actions: 4,
            }),
        );
        assert!(decision.points.is_empty());
        assert_eq!(decision.perks.len(), 1);
    }

    #[test]
    fn other_actions_are_ignored() {
        assert_eq!(
            run(testing::input("checkout", json!({"total": 100}))),
            Decision::new()
        );
        assert_eq!(
            run(testing::input("Repair", json!({}))),
            Decision::new(),
            "Voyado's ids are case-sensitive"
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let refused = |config: Value| {
            rule(&testing::input("repair", json!({})).config(config).build())
                .expect_err("a bad config is refused")
                .message()
                .to_owned()
        };
        assert!(refused(json!({"paid_repair_points": -1})).contains("paid_repair_points is -1"));
        assert!(
            refused(json!({"recycled_points_per_item": {"3": -1}}))
                .contains("recycled_points_per_item.3 is -1")
        );
        assert!(refused(json!({"coupon_actions": ["repairs"]})).contains("\"repairs\""));
        assert!(refused(json!({"coupon_prefix": "x".repeat(101)})).contains("coupon_prefix"));
        assert!(refused(json!({"coupon_data": 5})).contains("coupon_data"));
        assert!(refused(json!({"repair_points": 5})).contains("unknown field `repair_points`"));
    }
}
