//! Points for purchases, with tier multipliers, corrections and manual adjustments.
//!
//! # What it does
//!
//! - `checkout` earns `floor(total × rate × multiplier of the customer's tier)` points. The
//!   total is `data.total` (a number or a numeric string, as Antavo sends `"200"`); without
//!   it, the sum of the items' `subtotal`, or `price × quantity` (quantity 1 when absent).
//!   `data.transaction_id` is required: corrections find the purchase by it. A checkout for a
//!   transaction already seen awards nothing, so a resent purchase is never paid twice.
//! - `checkout_update` recomputes the purchase from its new total or items and earns or
//!   reverses the difference, at the rate and multiplier of the original checkout.
//! - `checkout_reject` reverses exactly what the transaction earned, corrections included,
//!   and marks it rejected; later corrections of it do nothing. A reversal takes no more than
//!   the balance holds unless `allow_negative_balance` is set.
//! - `point_add` earns `data.points` (a whole number, or a numeric string), `point_sub` spends
//!   them; `data.reason`, when given, is the ledger reason. `point_sub` refuses to take the
//!   balance below zero unless `allow_negative_balance` is set.
//! - Any other action: nothing.
//!
//! A correction (`checkout_update`, `checkout_reject`) for a transaction this plugin does not
//! remember — never seen, or forgotten because more than `remember_transactions` came after
//! it — does nothing and logs a warning: paying out or taking back points for a purchase whose
//! award is unknown would be a guess.
//!
//! # Config
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rate` | `1` | points per currency unit of the total (a decimal, e.g. `0.1`) |
//! | `tier_multipliers` | `{}` | tier name → multiplier of `rate`; tiers not listed get 1 |
//! | `expires_in_days` | none | earned points expire this many days after the event |
//! | `remember_transactions` | `1000` | transactions kept per customer for corrections; the oldest are forgotten first |
//! | `allow_negative_balance` | `false` | let `point_sub` and reversals take the balance below zero (the tenant must allow it too) |
//!
//! ```json
//! { "rate": 0.1,
//!   "tier_multipliers": { "silver": 1.25, "gold": 1.5 },
//!   "expires_in_days": 365,
//!   "remember_transactions": 500,
//!   "allow_negative_balance": false }
//! ```
//!
//! Unknown config keys are refused, so a typo such as `"rates"` fails loudly instead of
//! silently paying the default.
//!
//! # State
//!
//! Per customer, the transactions it remembers: id, points currently held from it, the
//! points-per-unit factor its checkout used, and whether it was rejected. Stored as columns,
//! `{"ids": ["T-1", "T-2"], "points": [200, 0], "factors": ["1", "1.5"], "rejected": ["T-2"]}`,
//! roughly 10 bytes plus the id per transaction. The array of objects this plugin wrote
//! before (`{"transactions": [{"id": "T-1", "points": 200, "factor": "1"}]}`) is still read.
//!
//! A checkout of a transaction not seen before, the common event, appends to the state's
//! text without parsing it (the `appending` module), which costs well under half of parsing
//! the remembered transactions and writing them all back. Corrections, repeats and states in
//! another form parse it.

mod appending;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tally_sdk::wire::MAX_NAME_LEN;
use tally_sdk::{
    Decimal, Decision, Error, Event, Input, PointEntry, PointKind, RawJson, log, plugin,
};

use crate::appending::ColumnsText;

/// The plugin's configuration; see the crate documentation for each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Points per currency unit of a checkout's total.
    pub rate: Decimal,
    /// Tier name → multiplier of `rate`.
    pub tier_multipliers: BTreeMap<String, Decimal>,
    /// Days until earned points expire; `None` means they never do.
    pub expires_in_days: Option<u32>,
    /// How many transactions per customer are remembered for corrections.
    pub remember_transactions: usize,
    /// Whether `point_sub` may take the balance below zero.
    pub allow_negative_balance: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rate: Decimal::from_int(1),
            tier_multipliers: BTreeMap::new(),
            expires_in_days: None,
            remember_transactions: 1000,
            allow_negative_balance: false,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), Error> {
        if self.rate.is_negative() {
            return Err(Error::new(format!(
                "plugin config: rate {} is negative",
                self.rate
            )));
        }
        if let Some((tier, multiplier)) = self
            .tier_multipliers
            .iter()
            .find(|(_, multiplier)| multiplier.is_negative())
        {
            return Err(Error::new(format!(
                "plugin config: tier_multipliers.{tier} is {multiplier}, a negative multiplier"
            )));
        }
        if self.expires_in_days == Some(0) {
            return Err(Error::new(
                "plugin config: expires_in_days is 0, so points would expire as they are earned; \
                 leave it out for points that never expire",
            ));
        }
        if self.remember_transactions == 0 {
            return Err(Error::new(
                "plugin config: remember_transactions is 0, so no checkout could ever be \
                 corrected or recognised when resent; it must be at least 1",
            ));
        }
        Ok(())
    }

    /// Points per currency unit for this customer now.
    fn factor(&self, tier: Option<&str>) -> Result<Decimal, Error> {
        let multiplier = tier
            .and_then(|tier| self.tier_multipliers.get(tier))
            .copied()
            .unwrap_or(Decimal::from_int(1));
        Ok(self.rate.checked_mul(multiplier)?)
    }
}

/// What the plugin remembers per customer: the transactions, oldest first.
///
/// Stored as columns, one array per field (`{"ids": [...], "points": [...], "factors":
/// [...], "rejected": [ids]}`), not as an array of objects: a plugin reads and writes its
/// whole state on every event, and in wasm serde_json costs about the same per token
/// whatever the token, so an object per transaction (`{"id": .., "points": .., "factor":
/// ..}`, a dozen tokens) costs about 6,200 wasm instructions per remembered transaction per
/// event where three plain array elements cost 3,500 (`tally eval` fuel with a hundred
/// remembered; see docs/performance.md). The shape written before, `{"transactions":
/// [{...}]}`, is still read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(try_from = "StoredState")]
pub struct State {
    /// Remembered transactions, oldest first.
    pub transactions: VecDeque<Award>,
}

/// One remembered transaction (and, as an object, how the state stored it before columns).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Award {
    /// The transaction id.
    pub id: String,
    /// Points the customer holds from it now (after updates).
    pub points: i64,
    /// Points per currency unit at checkout. Updates reuse it: a purchase that lifted the
    /// customer into a richer tier must not be re-priced at that tier when it is corrected.
    pub factor: Decimal,
    /// Whether the transaction was rejected (its points reversed).
    #[serde(default)]
    pub rejected: bool,
}

/// The state as written, borrowed from a [`State`].
#[derive(Serialize)]
struct Columns<'a> {
    ids: Vec<&'a str>,
    points: Vec<i64>,
    factors: Vec<Decimal>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<&'a str>,
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let awards = &self.transactions;
        Columns {
            ids: awards.iter().map(|award| award.id.as_str()).collect(),
            points: awards.iter().map(|award| award.points).collect(),
            factors: awards.iter().map(|award| award.factor).collect(),
            rejected: awards
                .iter()
                .filter(|award| award.rejected)
                .map(|award| award.id.as_str())
                .collect(),
        }
        .serialize(serializer)
    }
}

/// The state as stored: columns, or the array of objects this plugin wrote before.
#[derive(Deserialize, Default)]
#[serde(default)]
struct StoredState {
    ids: Vec<String>,
    points: Vec<i64>,
    factors: Vec<Decimal>,
    rejected: Vec<String>,
    transactions: VecDeque<Award>,
}

impl TryFrom<StoredState> for State {
    type Error = String;

    fn try_from(stored: StoredState) -> Result<State, String> {
        let StoredState {
            ids,
            points,
            factors,
            rejected,
            mut transactions,
        } = stored;
        if ids.len() != points.len() || ids.len() != factors.len() {
            return Err(format!(
                "the columns differ in length: {} ids, {} points, {} factors",
                ids.len(),
                points.len(),
                factors.len()
            ));
        }
        // A set, so that a state with many rejections is not read in quadratic time.
        let rejected: BTreeSet<String> = rejected.into_iter().collect();
        transactions.extend(ids.into_iter().zip(points).zip(factors).map(
            |((id, points), factor)| Award {
                rejected: rejected.contains(&id),
                id,
                points,
                factor,
            },
        ));
        Ok(State { transactions })
    }
}

impl State {
    fn find_mut(&mut self, id: &str) -> Option<&mut Award> {
        self.transactions.iter_mut().find(|award| award.id == id)
    }

    fn remember(&mut self, award: Award, limit: usize) {
        self.transactions.push_back(award);
        while self.transactions.len() > limit {
            self.transactions.pop_front();
        }
    }
}

/// The rule; public so that the host's benchmark can run it natively beside the wasm build.
#[plugin]
pub fn rule(input: &Input) -> Result<Decision, Error> {
    let action = input.event.action.as_str();
    if !matches!(
        action,
        "checkout" | "checkout_update" | "checkout_reject" | "point_add" | "point_sub"
    ) {
        return Ok(Decision::new());
    }
    let config: Config = input.config()?;
    config.validate()?;
    match action {
        "checkout" => checkout(input, &config),
        "checkout_update" => checkout_update(input, &config),
        "checkout_reject" => checkout_reject(input, &config),
        "point_add" => point_add(input, &config),
        _ => point_sub(input, &config),
    }
}

fn checkout(input: &Input, config: &Config) -> Result<Decision, Error> {
    let id = transaction_id(&input.event)?;
    // The common case, a transaction not seen before, only appends to the state: done on its
    // text when it is in the form this plugin writes (see `appending`).
    let columns = input
        .state
        .as_ref()
        .and_then(|state| ColumnsText::find(state.get()));
    if let Some(columns) = columns.filter(|columns| columns.contains(&id) == Some(false)) {
        let (points, factor) = checkout_points(input, config)?;
        if let Some(text) = columns.appended(&id, points, factor, config.remember_transactions) {
            let mut decision = earn(input, config, points, "checkout");
            // The text is the stored state with one transaction spliced in; the host checks
            // it, and checking it here as well would add ~37 instructions a byte.
            decision.state = Some(RawJson::from_text_unchecked(text));
            return Ok(decision);
        }
    }
    checkout_parsed(input, config, id)
}

/// A checkout with the state parsed: what `checkout` does when the state's text is not in
/// the form it appends to, or the transaction was seen before.
fn checkout_parsed(input: &Input, config: &Config, id: String) -> Result<Decision, Error> {
    let mut state: State = input.state()?;
    if let Some(award) = state.find_mut(&id) {
        log::info(&format!(
            "transaction {id} was already checked out ({} points); a repeated checkout awards nothing",
            award.points
        ));
        return Ok(Decision::new());
    }
    let (points, factor) = checkout_points(input, config)?;
    state.remember(
        Award {
            id,
            points,
            factor,
            rejected: false,
        },
        config.remember_transactions,
    );
    earn(input, config, points, "checkout").state(&state)
}

/// What a checkout earns, and the points-per-unit factor it earns at.
fn checkout_points(input: &Input, config: &Config) -> Result<(i64, Decimal), Error> {
    let total = purchase_total(&input.event)?;
    let factor = config.factor(input.customer.tier.as_deref())?;
    Ok((total.checked_mul(factor)?.floor()?, factor))
}

fn checkout_update(input: &Input, config: &Config) -> Result<Decision, Error> {
    let id = transaction_id(&input.event)?;
    let mut state: State = input.state()?;
    let Some(award) = state.find_mut(&id) else {
        log::warn(&format!(
            "checkout_update for transaction {id}, which this plugin does not remember: nothing changes"
        ));
        return Ok(Decision::new());
    };
    if award.rejected {
        log::warn(&format!(
            "checkout_update for transaction {id}, which was rejected: nothing changes"
        ));
        return Ok(Decision::new());
    }
    let total = purchase_total(&input.event)?;
    let points = total.checked_mul(award.factor)?.floor()?;
    let difference = points.saturating_sub(award.points);
    if difference == 0 {
        return Ok(Decision::new());
    }
    award.points = points;
    let decision = if difference > 0 {
        earn(input, config, difference, "checkout_update")
    } else {
        take_back(
            input,
            config,
            difference.saturating_neg(),
            "checkout_update",
        )
    };
    decision.state(&state)
}

/// Reverses `points`, but no more than the customer holds unless `allow_negative_balance`
/// is set: a customer who spent what a purchase earned and then returns it keeps a balance
/// of zero, not a debt (the host refuses a decision that would go below zero unless the
/// tenant allows it).
fn take_back(input: &Input, config: &Config, points: i64, reason: &str) -> Decision {
    let balance = input.customer.points.balance.max(0);
    let taken = if config.allow_negative_balance {
        points
    } else {
        points.min(balance)
    };
    if taken < points {
        log::info(&format!(
            "{reason}: {points} points to take back, the balance holds {balance}: taking {taken}"
        ));
    }
    if taken > 0 {
        Decision::new().reverse(taken, reason)
    } else {
        Decision::new()
    }
}

fn checkout_reject(input: &Input, config: &Config) -> Result<Decision, Error> {
    let id = transaction_id(&input.event)?;
    let mut state: State = input.state()?;
    let Some(award) = state.find_mut(&id) else {
        log::warn(&format!(
            "checkout_reject for transaction {id}, which this plugin does not remember: nothing to reverse"
        ));
        return Ok(Decision::new());
    };
    if award.rejected {
        log::warn(&format!(
            "checkout_reject for transaction {id}, which was already rejected: nothing to reverse"
        ));
        return Ok(Decision::new());
    }
    let points = award.points;
    award.rejected = true;
    award.points = 0;
    take_back(input, config, points, "checkout_reject").state(&state)
}

fn point_add(input: &Input, config: &Config) -> Result<Decision, Error> {
    let points = adjustment_points(&input.event)?;
    let reason = adjustment_reason(&input.event, "point_add")?;
    Ok(earn(input, config, points, reason))
}

fn point_sub(input: &Input, config: &Config) -> Result<Decision, Error> {
    let points = adjustment_points(&input.event)?;
    let reason = adjustment_reason(&input.event, "point_sub")?;
    let balance = input.customer.points.balance;
    if !config.allow_negative_balance && points > balance {
        return Err(Error::new(format!(
            "point_sub of {points} points would take the balance of {balance} below zero"
        )));
    }
    Ok(Decision::new().spend(points, reason))
}

/// Adds an earn entry (expiring as configured), or nothing for zero points: an entry must
/// move points.
fn earn(input: &Input, config: &Config, points: i64, reason: &str) -> Decision {
    if points <= 0 {
        return Decision::new();
    }
    let mut entry = PointEntry::new(points, reason).with_kind(PointKind::Earn);
    if let Some(days) = config.expires_in_days {
        entry = entry.expiring(input.event.timestamp.plus_days(i64::from(days)));
    }
    Decision::new().points_entry(entry)
}

/// The transaction id, as a string; some systems send it as a number.
fn transaction_id(event: &Event) -> Result<String, Error> {
    match event.field("transaction_id")? {
        None => Err(Error::new(
            "event data.transaction_id is missing: it ties a checkout to its later corrections",
        )),
        Some(Value::String(id)) if !id.trim().is_empty() => Ok(id.clone()),
        Some(Value::Number(id)) => Ok(id.to_string()),
        Some(_) => Err(Error::new(
            "event data.transaction_id must be a non-empty string",
        )),
    }
}

#[derive(Deserialize)]
struct Basket {
    items: Option<Vec<Item>>,
}

#[derive(Deserialize)]
struct Item {
    subtotal: Option<Decimal>,
    price: Option<Decimal>,
    quantity: Option<Decimal>,
}

/// `data.total`, or the sum of the items when the sender left the total out.
fn purchase_total(event: &Event) -> Result<Decimal, Error> {
    let total = match event.decimal_opt("total")? {
        Some(total) => total,
        None => {
            let basket: Basket = event.data_as()?;
            let items = basket.items.ok_or_else(|| {
                Error::new("event data.total is missing, and there are no data.items to sum")
            })?;
            let mut sum = Decimal::ZERO;
            for (index, item) in items.iter().enumerate() {
                let line = match (item.subtotal, item.price) {
                    (Some(subtotal), _) => subtotal,
                    (None, Some(price)) => {
                        price.checked_mul(item.quantity.unwrap_or(Decimal::from_int(1)))?
                    }
                    (None, None) => {
                        return Err(Error::new(format!(
                            "event data.items[{index}] has neither subtotal nor price"
                        )));
                    }
                };
                sum = sum.checked_add(line)?;
            }
            sum
        }
    };
    if total.is_negative() {
        return Err(Error::new(format!(
            "the purchase total {total} is negative; returns are checkout_update or checkout_reject events"
        )));
    }
    Ok(total)
}

fn adjustment_points(event: &Event) -> Result<i64, Error> {
    let points = event.integer("points")?;
    if points <= 0 {
        return Err(Error::new(format!(
            "event data.points is {points}; it must be a positive whole number"
        )));
    }
    Ok(points)
}

fn adjustment_reason<'a>(event: &'a Event, default: &'a str) -> Result<&'a str, Error> {
    match event.str_opt("reason")? {
        Some(reason) if reason.len() > MAX_NAME_LEN => Err(Error::new(format!(
            "event data.reason is {} bytes long, more than the {MAX_NAME_LEN} a ledger reason may have",
            reason.len()
        ))),
        Some(reason) if !reason.trim().is_empty() => Ok(reason),
        _ => Ok(default),
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use serde_json::{Value, json};
    use tally_sdk::Timestamp;
    use tally_sdk::testing::{self, InputBuilder};

    use super::*;

    fn checkout_input(data: Value) -> InputBuilder {
        testing::input("checkout", data)
    }

    fn run(builder: InputBuilder) -> Decision {
        let decision = rule(&builder.build()).expect("the rule accepts the event");
        decision.check().expect("the decision keeps the rules");
        decision
    }

    fn run_err(builder: InputBuilder) -> String {
        rule(&builder.build())
            .expect_err("the rule refuses the event")
            .message()
            .to_owned()
    }

    /// One entry: its amount and kind.
    fn entries(decision: &Decision) -> Vec<(i64, PointKind, &str)> {
        decision
            .points
            .iter()
            .map(|entry| (entry.amount, entry.kind(), entry.reason.as_str()))
            .collect()
    }

    /// A customer's plugin state after a series of events, the way the host threads it.
    fn replay(events: &[(&str, Value)], config: Value, tier: Option<&str>) -> Vec<Decision> {
        let mut state = State::default();
        let mut decisions = Vec::new();
        for (action, data) in events {
            let mut builder = testing::input(action, data.clone())
                .config(config.clone())
                .state(&state)
                .customer_points(1_000_000, 1_000_000);
            if let Some(tier) = tier {
                builder = builder.tier(tier);
            }
            let decision = run(builder);
            if decision.state.is_some() {
                state = testing::state_of::<State>(&decision);
            }
            decisions.push(decision);
        }
        decisions
    }

    #[test]
    fn antavo_checkout_with_string_total_earns_at_default_rate() {
        let decision = run(checkout_input(json!({
            "total": "200",
            "transaction_id": "5475-4343-4343-4343-3333",
            "items": [{"product_id": "UFA-8888", "quantity": "1", "subtotal": "200", "price": "200"}]
        })));
        assert_eq!(entries(&decision), vec![(200, PointKind::Earn, "checkout")]);
        assert_eq!(decision.points[0].expires_at, None);
        let state = testing::state_of::<State>(&decision);
        assert_eq!(state.transactions.len(), 1);
        assert_eq!(state.transactions[0].id, "5475-4343-4343-4343-3333");
        assert_eq!(state.transactions[0].points, 200);
    }

    #[test]
    fn rate_and_tier_multiplier_are_exact_and_floored() {
        let config = json!({"rate": 0.1, "tier_multipliers": {"silver": 1.25, "gold": "1.5"}});
        let earned = |tier: Option<&str>, total: &str| {
            let mut builder = checkout_input(json!({"total": total, "transaction_id": "t"}))
                .config(config.clone());
            if let Some(tier) = tier {
                builder = builder.tier(tier);
            }
            run(builder).points_total()
        };
        assert_eq!(earned(None, "199.99"), 19);
        assert_eq!(
            earned(Some("bronze"), "200"),
            20,
            "unlisted tiers multiply by 1"
        );
        assert_eq!(earned(Some("silver"), "200"), 25);
        assert_eq!(earned(Some("gold"), "200"), 30);
        assert_eq!(earned(Some("gold"), "19.99"), 2, "2.9985 floors to 2");
        // 0.29 * 100 in floating point is 28.999...; exact decimals give 29.
        let exact = run(
            checkout_input(json!({"total": 0.29, "transaction_id": "t"}))
                .config(json!({"rate": 100})),
        );
        assert_eq!(exact.points_total(), 29);
    }

    #[test]
    fn total_is_summed_from_items_when_absent() {
        let decision = run(checkout_input(json!({
            "transaction_id": "t1",
            "items": [
                {"subtotal": "30.50"},
                {"price": "10", "quantity": "3"},
                {"price": 4.25},
                {"subtotal": 5, "price": 999, "quantity": 9}
            ]
        })));
        // 30.50 + 30 + 4.25 + 5 (subtotal wins over price × quantity) = 69.75
        assert_eq!(decision.points_total(), 69);
    }

    #[test]
    fn a_small_purchase_earns_nothing_but_is_remembered() {
        let decision = run(checkout_input(
            json!({"total": "0.99", "transaction_id": "t"}),
        ));
        assert!(
            decision.points.is_empty(),
            "an entry of 0 points is not allowed"
        );
        assert_eq!(
            testing::state_of::<State>(&decision).transactions[0].points,
            0
        );
    }

    #[test]
    fn expiry_is_counted_from_the_event_time() {
        let decision = run(checkout_input(json!({"total": 10, "transaction_id": "t"}))
            .config(json!({"expires_in_days": 365}))
            .timestamp("2026-11-23T10:00:00Z"));
        let expected: Timestamp = "2027-11-23T10:00:00Z".parse().expect("valid");
        assert_eq!(decision.points[0].expires_at, Some(expected));
    }

    #[test]
    fn bad_checkouts_are_refused_with_the_field_named() {
        assert_eq!(
            run_err(checkout_input(json!({"total": 10}))),
            "event data.transaction_id is missing: it ties a checkout to its later corrections"
        );
        assert_eq!(
            run_err(checkout_input(json!({"total": 10, "transaction_id": " "}))),
            "event data.transaction_id must be a non-empty string"
        );
        assert_eq!(
            run_err(checkout_input(json!({"transaction_id": "t"}))),
            "event data.total is missing, and there are no data.items to sum"
        );
        assert_eq!(
            run_err(checkout_input(
                json!({"total": "abc", "transaction_id": "t"})
            )),
            r#"event data.total: "abc" is not a number"#
        );
        assert_eq!(
            run_err(checkout_input(
                json!({"transaction_id": "t", "items": [{"price": 1}, {"quantity": 2}]})
            )),
            "event data.items[1] has neither subtotal nor price"
        );
        assert!(
            run_err(checkout_input(
                json!({"transaction_id": "t", "items": [{"price": "1,5"}]})
            ))
            .starts_with("event data.items[0].price: ")
        );
        assert!(
            run_err(checkout_input(json!({"total": -5, "transaction_id": "t"})))
                .contains("negative")
        );
    }

    #[test]
    fn numeric_transaction_ids_are_accepted() {
        let decision = run(checkout_input(json!({"total": 1, "transaction_id": 42})));
        assert_eq!(
            testing::state_of::<State>(&decision).transactions[0].id,
            "42"
        );
    }

    #[test]
    fn a_repeated_checkout_awards_nothing() {
        let checkout = json!({"total": 100, "transaction_id": "t1"});
        let decisions = replay(
            &[("checkout", checkout.clone()), ("checkout", checkout)],
            json!({}),
            None,
        );
        assert_eq!(decisions[0].points_total(), 100);
        assert_eq!(decisions[1], Decision::new());
    }

    #[test]
    fn reject_reverses_what_the_transaction_earned_including_updates() {
        let decisions = replay(
            &[
                ("checkout", json!({"total": 100, "transaction_id": "t1"})),
                ("checkout", json!({"total": 40, "transaction_id": "t2"})),
                (
                    "checkout_update",
                    json!({"total": 130, "transaction_id": "t1"}),
                ),
                ("checkout_reject", json!({"transaction_id": "t1"})),
                ("checkout_reject", json!({"transaction_id": "t1"})),
                (
                    "checkout_update",
                    json!({"total": 500, "transaction_id": "t1"}),
                ),
            ],
            json!({}),
            None,
        );
        assert_eq!(
            entries(&decisions[2]),
            vec![(30, PointKind::Earn, "checkout_update")]
        );
        assert_eq!(
            entries(&decisions[3]),
            vec![(-130, PointKind::Reverse, "checkout_reject")]
        );
        let state = testing::state_of::<State>(&decisions[3]);
        assert!(state.transactions[0].rejected);
        assert!(!state.transactions[1].rejected, "t2 is untouched");
        assert_eq!(
            decisions[4],
            Decision::new(),
            "a second reject does nothing"
        );
        assert_eq!(
            decisions[5],
            Decision::new(),
            "updating a rejected one does nothing"
        );
    }

    #[test]
    fn unknown_transactions_are_not_an_error() {
        let reject = run(testing::input(
            "checkout_reject",
            json!({"transaction_id": "nope"}),
        ));
        assert_eq!(reject, Decision::new());
        let update = run(testing::input(
            "checkout_update",
            json!({"transaction_id": "nope", "total": 10}),
        ));
        assert_eq!(update, Decision::new());
        assert!(
            run_err(testing::input("checkout_reject", json!({})))
                .contains("transaction_id is missing"),
            "the id itself is still required"
        );
    }

    #[test]
    fn update_reverses_a_lower_total_and_keeps_the_original_multiplier() {
        let config = json!({"tier_multipliers": {"gold": 2}});
        let first = run(checkout_input(json!({"total": 100, "transaction_id": "t"}))
            .config(config.clone())
            .tier("bronze"));
        assert_eq!(first.points_total(), 100);
        let state = testing::state_of::<State>(&first);
        // The purchase made the customer gold; a correction must still price it at bronze.
        let update = run(testing::input(
            "checkout_update",
            json!({"transaction_id": "t", "items": [{"price": "20", "quantity": 4}]}),
        )
        .config(config)
        .tier("gold")
        .state(&state)
        .customer_points(100, 100));
        assert_eq!(
            entries(&update),
            vec![(-20, PointKind::Reverse, "checkout_update")]
        );
        assert_eq!(
            testing::state_of::<State>(&update).transactions[0].points,
            80
        );
    }

    #[test]
    fn a_reversal_takes_no_more_than_the_balance_obeyed() {
        let first = run(checkout_input(json!({"total": 100, "transaction_id": "t"})));
        let state = testing::state_of::<State>(&first);
        // The customer spent 70 of the 100 before returning the purchase.
        let reject = |config: Value| {
            run(
                testing::input("checkout_reject", json!({"transaction_id": "t"}))
                    .config(config)
                    .state(&state)
                    .customer_points(30, 100),
            )
        };
        let capped = reject(json!({}));
        assert_eq!(
            entries(&capped),
            vec![(-30, PointKind::Reverse, "checkout_reject")]
        );
        assert!(testing::state_of::<State>(&capped).transactions[0].rejected);
        let whole = reject(json!({"allow_negative_balance": true}));
        assert_eq!(
            entries(&whole),
            vec![(-100, PointKind::Reverse, "checkout_reject")]
        );
    }

    #[test]
    fn a_reversal_takes_no_more_than_the_balance_violated() {
        // Nothing left to take back: the transaction is still marked rejected, with no entry.
        let first = run(checkout_input(json!({"total": 100, "transaction_id": "t"})));
        let state = testing::state_of::<State>(&first);
        let reject = run(
            testing::input("checkout_reject", json!({"transaction_id": "t"}))
                .state(&state)
                .customer_points(0, 100),
        );
        assert!(reject.points.is_empty());
        assert!(testing::state_of::<State>(&reject).transactions[0].rejected);
    }

    #[test]
    fn an_unchanged_update_changes_nothing() {
        let decisions = replay(
            &[
                ("checkout", json!({"total": 100, "transaction_id": "t"})),
                (
                    "checkout_update",
                    json!({"total": "100.40", "transaction_id": "t"}),
                ),
            ],
            json!({}),
            None,
        );
        assert_eq!(decisions[1], Decision::new());
    }

    #[test]
    fn update_earnings_expire_like_checkout_earnings() {
        let decisions = replay(
            &[
                ("checkout", json!({"total": 10, "transaction_id": "t"})),
                (
                    "checkout_update",
                    json!({"total": 15, "transaction_id": "t"}),
                ),
            ],
            json!({"expires_in_days": 30}),
            None,
        );
        assert!(decisions[1].points[0].expires_at.is_some());
    }

    #[test]
    fn memory_is_bounded_and_forgets_the_oldest() {
        let events: Vec<(&str, Value)> = (0..5)
            .map(|n| {
                (
                    "checkout",
                    json!({"total": 10, "transaction_id": format!("t{n}")}),
                )
            })
            .chain([
                ("checkout_reject", json!({"transaction_id": "t0"})),
                ("checkout", json!({"total": 10, "transaction_id": "t0"})),
                ("checkout_reject", json!({"transaction_id": "t4"})),
            ])
            .collect();
        let decisions = replay(&events, json!({"remember_transactions": 3}), None);
        let ids = |decision: &Decision| -> Vec<String> {
            testing::state_of::<State>(decision)
                .transactions
                .iter()
                .map(|award| award.id.clone())
                .collect()
        };
        assert_eq!(ids(&decisions[4]), ["t2", "t3", "t4"]);
        assert_eq!(decisions[5], Decision::new(), "t0 is forgotten");
        assert_eq!(
            decisions[6].points_total(),
            10,
            "a forgotten transaction is a new one"
        );
        assert_eq!(ids(&decisions[6]), ["t3", "t4", "t0"]);
        assert_eq!(decisions[7].points_total(), -10);
    }

    #[test]
    fn point_add_and_point_sub() {
        let add = run(testing::input(
            "point_add",
            json!({"points": "25", "reason": "goodwill"}),
        ));
        assert_eq!(entries(&add), vec![(25, PointKind::Earn, "goodwill")]);
        assert_eq!(add.state, None, "adjustments leave the state alone");
        let add = run(testing::input(
            "point_add",
            json!({"points": 5, "reason": ""}),
        ));
        assert_eq!(entries(&add), vec![(5, PointKind::Earn, "point_add")]);
        let sub =
            run(testing::input("point_sub", json!({"points": 100})).customer_points(100, 500));
        assert_eq!(entries(&sub), vec![(-100, PointKind::Spend, "point_sub")]);
    }

    #[test]
    fn point_add_expires_when_configured() {
        let add =
            run(testing::input("point_add", json!({"points": 5}))
                .config(json!({"expires_in_days": 1})));
        assert!(add.points[0].expires_at.is_some());
    }

    #[test]
    fn point_sub_guards_the_balance() {
        assert_eq!(
            run_err(testing::input("point_sub", json!({"points": 121})).customer_points(120, 900)),
            "point_sub of 121 points would take the balance of 120 below zero"
        );
        let allowed = run(testing::input("point_sub", json!({"points": 121}))
            .customer_points(120, 900)
            .config(json!({"allow_negative_balance": true})));
        assert_eq!(allowed.points_total(), -121);
    }

    #[test]
    fn bad_adjustments_are_refused() {
        assert_eq!(
            run_err(testing::input("point_add", json!({}))),
            "event data.points is missing"
        );
        assert!(
            run_err(testing::input("point_add", json!({"points": "1.5"})))
                .contains("not a whole number")
        );
        assert!(
            run_err(testing::input("point_add", json!({"points": -3})))
                .contains("positive whole number")
        );
        assert!(
            run_err(testing::input("point_sub", json!({"points": 0})))
                .contains("positive whole number")
        );
        assert!(
            run_err(testing::input(
                "point_add",
                json!({"points": 1, "reason": "x".repeat(201)})
            ))
            .contains("more than the 200")
        );
    }

    #[test]
    fn other_actions_are_ignored_even_with_a_broken_config() {
        let decision = run(testing::input("wishlist", json!({"productSku": "A"}))
            .config(json!({"rate": "not a number"})));
        assert_eq!(decision, Decision::new());
    }

    #[test]
    fn bad_config_is_refused_with_the_key_named() {
        let refused = |config: Value| {
            run_err(checkout_input(json!({"total": 1, "transaction_id": "t"})).config(config))
        };
        assert!(refused(json!({"rates": 1})).contains("unknown field `rates`"));
        assert!(refused(json!({"rate": -1})).contains("rate -1 is negative"));
        assert!(
            refused(json!({"tier_multipliers": {"gold": -2}})).contains("tier_multipliers.gold")
        );
        assert!(refused(json!({"expires_in_days": 0})).contains("expires_in_days is 0"));
        assert!(refused(json!({"remember_transactions": 0})).contains("at least 1"));
    }

    #[test]
    fn state_is_compact_and_round_trips() {
        let decision = run(checkout_input(json!({"total": 10, "transaction_id": "t"}))
            .config(json!({"rate": "1.5"})));
        assert_eq!(
            decision.state.map(|state| state.to_value()),
            Some(json!({"ids": ["t"], "points": [15], "factors": ["1.5"]}))
        );
        let rejected = run(
            testing::input("checkout_reject", json!({"transaction_id": "t"}))
                .state(&json!({"ids": ["s", "t"], "points": [5, 15], "factors": ["1", "1.5"]})),
        );
        assert_eq!(
            rejected.state.map(|state| state.to_value()),
            Some(
                json!({"ids": ["s", "t"], "points": [5, 0], "factors": ["1", "1.5"], "rejected": ["t"]})
            )
        );
    }

    #[test]
    fn state_in_the_earlier_shape_is_read_obeyed() {
        // The array of objects this plugin wrote before columns: the transactions in it can
        // still be corrected, and the state is written back as columns.
        let old = json!({"transactions": [
            {"id": "a", "points": 30, "factor": "1"},
            {"id": "b", "points": 0, "factor": "1", "rejected": true}
        ]});
        let update = run(testing::input(
            "checkout_update",
            json!({"transaction_id": "a", "total": 20}),
        )
        .state(&old)
        .customer_points(30, 30));
        assert_eq!(
            entries(&update),
            vec![(-10, PointKind::Reverse, "checkout_update")]
        );
        assert_eq!(
            update.state.map(|state| state.to_value()),
            Some(
                json!({"ids": ["a", "b"], "points": [20, 0], "factors": ["1", "1"], "rejected": ["b"]})
            )
        );
        let again =
            run(testing::input("checkout_reject", json!({"transaction_id": "b"})).state(&old));
        assert_eq!(again.points, Vec::new(), "b was rejected before");
    }

    #[test]
    fn state_with_uneven_columns_is_refused_violated() {
        let error = run_err(
            checkout_input(json!({"total": 10, "transaction_id": "t"}))
                .state(&json!({"ids": ["a", "b"], "points": [1], "factors": ["1", "1"]})),
        );
        assert!(error.contains("2 ids, 1 points, 2 factors"), "{error}");
    }

    /// A small deterministic generator (xorshift), so that a failure replays.
    struct Draws(u64);

    impl Draws {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % bound
        }
    }

    #[test]
    fn appending_matches_the_general_path() {
        // Ids that need escapes, or hold the characters the text scan looks for, send a
        // checkout down the general path or must not confuse the scan.
        let ids = [
            json!("t1"),
            json!("t2"),
            json!("T-00000003"),
            json!(42),
            json!("a,b"),
            json!("x]y"),
            json!("ünï"),
            json!("q\"uote"),
            json!("back\\slash"),
        ];
        let mut appended = 0;
        let mut checkouts = 0;
        // A state holding an escaped id is never appended to, so some runs leave them out.
        let plain = ids.len() - 2;
        for (seed, limit, escapes) in [
            (1, 1, false),
            (2, 2, false),
            (3, 3, true),
            (4, 5, false),
            (5, 1000, false),
            (6, 1000, true),
        ] {
            let drawn_from = if escapes { ids.len() } else { plain } as u64;
            let mut draws = Draws(0x9E37_79B9_7F4A_7C15 ^ seed);
            let config_json = json!({
                "rate": "0.5",
                "tier_multipliers": {"silver": "1.25"},
                "remember_transactions": limit,
            });
            let config: Config = serde_json::from_value(config_json.clone()).expect("config");
            let mut state: Option<RawJson> = None;
            for step in 0..400 {
                // Half the events are for a purchase not seen before, as in real traffic.
                let fresh = json!(format!("n-{step}"));
                let id = match draws.below(2) {
                    0 => &fresh,
                    _ => &ids[draws.below(drawn_from) as usize],
                };
                let total = format!("{}.{}", draws.below(500), draws.below(100));
                let action = match draws.below(10) {
                    0..=5 => "checkout",
                    6..=7 => "checkout_update",
                    _ => "checkout_reject",
                };
                let mut builder =
                    testing::input(action, json!({"transaction_id": id, "total": total}))
                        .config(config_json.clone())
                        .customer_points(1_000_000, 1_000_000);
                if draws.below(2) == 0 {
                    builder = builder.tier("silver");
                }
                if let Some(state) = &state {
                    builder = builder.state(state);
                }
                let input = builder.build();
                let decision = rule(&input).expect("the rule accepts the event");
                if action == "checkout" {
                    checkouts += 1;
                    let id = transaction_id(&input.event).expect("an id");
                    let text = input.state.as_ref().map(RawJson::get);
                    if let Some(columns) = text.and_then(ColumnsText::find)
                        && columns.contains(&id) == Some(false)
                        && columns.appended(&id, 1, Decimal::ZERO, limit).is_some()
                    {
                        appended += 1;
                    }
                    let parsed = checkout_parsed(&input, &config, id.clone()).expect("accepted");
                    assert_eq!(decision, parsed, "seed {seed}, step {step}: {action} {id}");
                }
                if let Some(written) = decision.state {
                    state = Some(written);
                }
            }
        }
        // The fast path must actually have been taken for the comparison to mean anything,
        // and the general path too (escaped ids, repeats, forgetting a rejection).
        assert!(
            appended > checkouts / 3 && appended < checkouts,
            "{appended} of {checkouts} checkouts appended to the text"
        );
    }

    #[test]
    fn a_state_in_another_form_takes_the_general_path() {
        for text in [
            // The earlier shape, and keys in another order.
            r#"{"transactions":[{"id":"a","points":1,"factor":"1"}]}"#,
            r#"{"points":[1],"ids":["a"],"factors":["1"]}"#,
            // Whitespace, an escape, uneven columns, something after the object.
            r#"{"ids": ["a"],"points":[1],"factors":["1"]}"#,
            r#"{"ids":["\u0061"],"points":[1],"factors":["1"]}"#,
            r#"{"ids":["a","b"],"points":[1],"factors":["1","1"]}"#,
            r#"{"ids":["a"],"points":[1],"factors":["1"]} "#,
        ] {
            assert!(ColumnsText::find(text).is_none(), "{text}");
        }
        let columns = ColumnsText::find(r#"{"ids":["a"],"points":[1],"factors":["1"]}"#)
            .expect("the form the plugin writes");
        assert_eq!(columns.contains("a"), Some(true));
        assert_eq!(columns.contains("b"), Some(false));
        assert_eq!(columns.contains("b\""), None, "an id that needs escapes");
    }
}
