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
//!   the customer can give back (the balance, plus the transaction's own points while they
//!   are still pending, see *Holds*) unless `allow_negative_balance` is set.
//! - `checkout_accept` ends the hold on the transaction's points, as far as this plugin is
//!   concerned (the host releases them itself, before any plugin runs); it earns nothing.
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
//! The host's own events for time passing (`point_expire`, `points_release` and the other
//! internal actions) are not this plugin's business: the host expires and releases points
//! itself, and the plugin decides nothing on them. A tenant that gives the plugin an
//! `actions` list should list the six actions above (`checkout`, `checkout_update`,
//! `checkout_reject`, `checkout_accept`, `point_add`, `point_sub`); leaving out
//! `checkout_accept` only matters with holds (an accepted transaction's later raise would be
//! held again).
//!
//! # Holds
//!
//! With `hold_days` or `hold_until_accepted`, what a checkout earns is *pending*
//! (`customer.points.pending`, not spendable) for the return window: the entry carries
//! `pending_until` = the checkout's time + `hold_days` days, and, with
//! `hold_until_accepted`, `pending: true`, so a `checkout_accept` of the transaction releases
//! it sooner (with `hold_until_accepted` alone the points wait for that accept). The host
//! releases held points when the hold ends (its internal `points_release` event) or on the
//! transaction's `checkout_accept`.
//!
//! The plugin remembers each transaction's hold. A `checkout_update` that raises the total
//! while the transaction is still held (not accepted, and before its `pending_until`) holds
//! the extra points the same way, until the same moment; after the hold ended they are
//! spendable at once. A reversal (`checkout_reject`, a lower `checkout_update`) takes from the
//! transaction's pending points first (the host does so), so its cap is the balance plus
//! those: a reject of a purchase still held takes back everything it earned even when the
//! balance is 0, and a reject of one already released takes no more than the balance, never
//! another purchase's pending points (which the host would not let it take). Points from
//! `point_add` are never held.
//!
//! # Config
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `rate` | `1` | points per currency unit of the total (a decimal, e.g. `0.1`) |
//! | `tier_multipliers` | `{}` | tier name → multiplier of `rate`; tiers not listed get 1 |
//! | `expires_in_days` | none | earned points expire this many days after the event |
//! | `hold_days` | none | a checkout's points are pending this many days after it (the return window) |
//! | `hold_until_accepted` | `false` | a checkout's points are pending until its `checkout_accept` (or `hold_days`, whichever first) |
//! | `remember_transactions` | `1000` | transactions kept per customer for corrections; the oldest are forgotten first |
//! | `allow_negative_balance` | `false` | let `point_sub` and reversals take the balance below zero (the tenant must allow it too) |
//!
//! ```json
//! { "rate": 0.1,
//!   "tier_multipliers": { "silver": 1.25, "gold": 1.5 },
//!   "expires_in_days": 365,
//!   "hold_days": 30,
//!   "hold_until_accepted": true,
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
//! points-per-unit factor its checkout used, whether it was rejected, and its hold. Stored as
//! columns,
//! `{"ids": ["T-1", "T-2"], "points": [200, 0], "factors": ["1", "1.5"], "rejected": ["T-2"]}`,
//! roughly 10 bytes plus the id per transaction. `holds` is there when a remembered
//! transaction is held: one element per transaction, `null` (not held, or accepted), the
//! moment its hold ends (`"2026-12-23T10:00:00Z"`), or `"accept"` (held until accepted),
//! `{"ids": ["T-1", "T-2"], "points": [200, 50], "factors": ["1", "1"], "holds": [null,
//! "2026-12-23T10:00:00Z"]}`. The array of objects this plugin wrote before
//! (`{"transactions": [{"id": "T-1", "points": 200, "factor": "1"}]}`) is still read.
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
    Decimal, Decision, Error, Event, Input, PointEntry, PointKind, RawJson, Timestamp, log, plugin,
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
    /// Days a checkout's points are pending (the return window); `None` means not held.
    pub hold_days: Option<u32>,
    /// Whether a checkout's points are pending until its `checkout_accept`.
    pub hold_until_accepted: bool,
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
            hold_days: None,
            hold_until_accepted: false,
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
        if self.hold_days == Some(0) {
            return Err(Error::new(
                "plugin config: hold_days is 0, so points would be released as they are earned; \
                 leave it out for points that are not held",
            ));
        }
        if let (Some(hold), Some(expiry)) = (self.hold_days, self.expires_in_days)
            && expiry <= hold
        {
            return Err(Error::new(format!(
                "plugin config: expires_in_days is {expiry} and hold_days is {hold}, so points \
                 would expire before or as they are released; hold them for fewer days than \
                 they last"
            )));
        }
        if self.remember_transactions == 0 {
            return Err(Error::new(
                "plugin config: remember_transactions is 0, so no checkout could ever be \
                 corrected or recognised when resent; it must be at least 1",
            ));
        }
        Ok(())
    }

    /// The hold on what a checkout at `at` earns, if the config holds it.
    fn hold(&self, at: Timestamp) -> Option<Hold> {
        match (self.hold_days, self.hold_until_accepted) {
            (Some(days), _) => Some(Hold::Until(at.plus_days(i64::from(days)))),
            (None, true) => Some(Hold::Accept),
            (None, false) => None,
        }
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
/// [{...}]}`, is still read. A `holds` column, one element per transaction, is written only
/// when some remembered transaction has a hold, so a state without holds is what it was.
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
    /// How its points are held, when they were earned held and not accepted since.
    #[serde(default)]
    pub hold: Option<Hold>,
}

/// How a transaction's points are held. Every hold also ends with the transaction's
/// `checkout_accept`, which the host releases them on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until the transaction is accepted; stored as `"accept"`.
    Accept,
    /// Until this moment (or an accept sooner); stored as the moment.
    Until(Timestamp),
}

impl Hold {
    /// Whether the points are still held at `at`, as far as this plugin knows: the host
    /// releases them at the hold's end, or sooner on an accept (which the plugin records).
    fn holds_at(self, at: Timestamp) -> bool {
        match self {
            Hold::Accept => true,
            Hold::Until(until) => until > at,
        }
    }

    /// `entry` held this way; `accept` also marks it held until accepted (which the host
    /// releases a hold on anyway, so it only says what the config asked for).
    fn apply(self, entry: PointEntry, accept: bool) -> PointEntry {
        match self {
            Hold::Accept => entry.pending_until_accepted(),
            Hold::Until(until) if accept => entry.pending_until(until).pending_until_accepted(),
            Hold::Until(until) => entry.pending_until(until),
        }
    }
}

/// The text a hold is stored as.
const ACCEPT: &str = "accept";

impl Serialize for Hold {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Hold::Accept => serializer.serialize_str(ACCEPT),
            Hold::Until(until) => until.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Hold {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Hold, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == ACCEPT {
            return Ok(Hold::Accept);
        }
        text.parse().map(Hold::Until).map_err(|_| {
            serde::de::Error::custom(format!(
                "{text:?} is neither \"accept\" nor the moment a hold ends"
            ))
        })
    }
}

/// The state as written, borrowed from a [`State`].
#[derive(Serialize)]
struct Columns<'a> {
    ids: Vec<&'a str>,
    points: Vec<i64>,
    factors: Vec<Decimal>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rejected: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holds: Option<Vec<Option<Hold>>>,
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
            holds: awards
                .iter()
                .any(|award| award.hold.is_some())
                .then(|| awards.iter().map(|award| award.hold).collect()),
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
    holds: Option<Vec<Option<Hold>>>,
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
            holds,
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
        let holds = match holds {
            Some(holds) if holds.len() != ids.len() => {
                return Err(format!(
                    "the columns differ in length: {} ids, {} holds",
                    ids.len(),
                    holds.len()
                ));
            }
            Some(holds) => holds,
            None => vec![None; ids.len()],
        };
        // A set, so that a state with many rejections is not read in quadratic time.
        let rejected: BTreeSet<String> = rejected.into_iter().collect();
        transactions.extend(ids.into_iter().zip(points).zip(factors).zip(holds).map(
            |(((id, points), factor), hold)| Award {
                rejected: rejected.contains(&id),
                id,
                points,
                factor,
                hold,
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
        "checkout"
            | "checkout_update"
            | "checkout_reject"
            | "checkout_accept"
            | "point_add"
            | "point_sub"
    ) {
        return Ok(Decision::new());
    }
    let config: Config = input.config()?;
    config.validate()?;
    match action {
        "checkout" => checkout(input, &config),
        "checkout_update" => checkout_update(input, &config),
        "checkout_reject" => checkout_reject(input, &config),
        "checkout_accept" => checkout_accept(input),
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
        let hold = config.hold(input.event.timestamp);
        let appended = columns.appended(
            &id,
            points,
            factor,
            hold_text(hold).as_deref(),
            config.remember_transactions,
        );
        if let Some(text) = appended {
            let mut decision = earn(input, config, points, "checkout", hold);
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
    let hold = config.hold(input.event.timestamp);
    state.remember(
        Award {
            id,
            points,
            factor,
            rejected: false,
            hold,
        },
        config.remember_transactions,
    );
    earn(input, config, points, "checkout", hold).state(&state)
}

/// A hold as the text of its element in the `holds` column (`None` for `null`), as serde
/// writes it, for the text path (`appending`).
fn hold_text(hold: Option<Hold>) -> Option<String> {
    match hold? {
        Hold::Accept => Some(format!("\"{ACCEPT}\"")),
        Hold::Until(until) => Some(format!("\"{until}\"")),
    }
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
    let pending = pending_of(input, award);
    award.points = points;
    let decision = if difference > 0 {
        // Held the same way as the purchase while it still is: the extra is part of it.
        let hold = award
            .hold
            .filter(|hold| hold.holds_at(input.event.timestamp));
        earn(input, config, difference, "checkout_update", hold)
    } else {
        take_back(
            input,
            config,
            difference.saturating_neg(),
            pending,
            "checkout_update",
        )
    };
    decision.state(&state)
}

/// How many of the customer's pending points are `award`'s, as far as this plugin knows:
/// all it holds from the transaction while its hold lasts (the host takes those first in a
/// reversal of the transaction), never more than the customer has pending.
fn pending_of(input: &Input, award: &Award) -> i64 {
    let held = award
        .hold
        .is_some_and(|hold| hold.holds_at(input.event.timestamp));
    if held {
        award.points.min(input.customer.points.pending).max(0)
    } else {
        0
    }
}

/// Reverses `points`, but no more than the customer can give back unless
/// `allow_negative_balance` is set: the balance, plus `pending`, the transaction's own
/// points still pending, which the host cancels first. A customer who spent what a purchase
/// earned and then returns it keeps a balance of zero, not a debt (the host refuses a
/// decision that would go below zero unless the tenant allows it).
fn take_back(input: &Input, config: &Config, points: i64, pending: i64, reason: &str) -> Decision {
    let balance = input.customer.points.balance.max(0);
    let taken = if config.allow_negative_balance {
        points
    } else {
        points.min(balance.saturating_add(pending))
    };
    if taken < points {
        log::info(&format!(
            "{reason}: {points} points to take back, the balance holds {balance} and \
             {pending} of the transaction's are pending: taking {taken}"
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
    let pending = pending_of(input, award);
    award.rejected = true;
    award.points = 0;
    award.hold = None;
    take_back(input, config, points, pending, "checkout_reject").state(&state)
}

/// Records that the transaction's hold has ended: the host released its pending points
/// before this plugin ran, so a later raise of it is not held again.
fn checkout_accept(input: &Input) -> Result<Decision, Error> {
    let id = transaction_id(&input.event)?;
    // Without a `holds` column no remembered transaction is held: nothing to parse.
    let holds = input
        .state
        .as_ref()
        .is_some_and(|state| state.get().contains(r#""holds""#));
    if !holds {
        return Ok(Decision::new());
    }
    let mut state: State = input.state()?;
    match state.find_mut(&id) {
        Some(award) if award.hold.is_some() => {
            award.hold = None;
            Decision::new().state(&state)
        }
        // Not held, or not remembered: nothing to record.
        _ => Ok(Decision::new()),
    }
}

fn point_add(input: &Input, config: &Config) -> Result<Decision, Error> {
    let points = adjustment_points(&input.event)?;
    let reason = adjustment_reason(&input.event, "point_add")?;
    let mut decision = earn(input, config, points, reason, None);
    // The event's own `expires_at` (Antavo's point_add) wins over `expires_in_days`.
    if let Some(text) = input.event.str_opt("expires_at")? {
        let expires_at: Timestamp = text
            .parse()
            .map_err(|error| Error::new(format!("event data.expires_at: {error}")))?;
        for entry in &mut decision.points {
            entry.expires_at = Some(expires_at);
        }
    }
    Ok(decision)
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

/// Adds an earn entry (expiring as configured, pending under `hold`), or nothing for zero
/// points: an entry must move points.
fn earn(input: &Input, config: &Config, points: i64, reason: &str, hold: Option<Hold>) -> Decision {
    if points <= 0 {
        return Decision::new();
    }
    let mut entry = PointEntry::new(points, reason).with_kind(PointKind::Earn);
    if let Some(days) = config.expires_in_days {
        entry = entry.expiring(input.event.timestamp.plus_days(i64::from(days)));
    }
    if let Some(hold) = hold {
        entry = hold.apply(entry, config.hold_until_accepted);
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
    fn point_add_honours_its_own_expires_at() {
        let add = run(testing::input(
            "point_add",
            json!({"points": 5, "expires_at": "2027-01-31T00:00:00Z"}),
        )
        .config(json!({"expires_in_days": 1})));
        let expected: Timestamp = "2027-01-31T00:00:00Z".parse().expect("valid");
        assert_eq!(add.points[0].expires_at, Some(expected));
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
        // Holds: none, by date (short enough to end within a run), until accepted, both.
        let holds = [
            json!({}),
            json!({"hold_days": 2}),
            json!({"hold_until_accepted": true}),
            json!({"hold_days": 1, "hold_until_accepted": true}),
        ];
        let mut appended = 0;
        let mut checkouts = 0;
        let mut held = 0;
        let mut appended_to_holds = 0;
        // A state holding an escaped id is never appended to, so some runs leave them out.
        let plain = ids.len() - 2;
        for ((seed, limit, escapes), hold) in [
            (1, 1, false),
            (2, 2, false),
            (3, 3, true),
            (4, 5, false),
            (5, 1000, false),
            (6, 1000, true),
        ]
        .into_iter()
        .flat_map(|run| holds.iter().map(move |hold| (run, hold)))
        {
            let drawn_from = if escapes { ids.len() } else { plain } as u64;
            let mut draws = Draws(0x9E37_79B9_7F4A_7C15 ^ seed);
            let config_for = |hold: &Value| {
                let mut config = json!({
                    "rate": "0.5",
                    "tier_multipliers": {"silver": "1.25"},
                    "remember_transactions": limit,
                });
                for (key, value) in hold.as_object().expect("an object") {
                    config[key] = value.clone();
                }
                config
            };
            let mut state: Option<RawJson> = None;
            let start: Timestamp = "2026-11-23T10:00:00Z".parse().expect("valid");
            for step in 0..400 {
                // Now and then a checkout without holds, so that a state with holds takes
                // transactions that have none.
                let config_json = match draws.below(5) {
                    0 => config_for(&json!({})),
                    _ => config_for(hold),
                };
                let config: Config = serde_json::from_value(config_json.clone()).expect("config");
                let at = start.plus_seconds(step * 5 * 3600);
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
                    8 => "checkout_reject",
                    _ => "checkout_accept",
                };
                let mut builder =
                    testing::input(action, json!({"transaction_id": id, "total": total}))
                        .config(config_json.clone())
                        .timestamp(&at.to_string())
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
                        && columns
                            .appended(&id, 1, Decimal::ZERO, None, limit)
                            .is_some()
                    {
                        appended += 1;
                        if text.is_some_and(|text| text.contains(r#""holds":"#)) {
                            appended_to_holds += 1;
                        }
                    }
                    let parsed = checkout_parsed(&input, &config, id.clone()).expect("accepted");
                    assert_eq!(decision, parsed, "seed {seed}, step {step}: {action} {id}");
                    if decision.points.iter().any(PointEntry::is_pending) {
                        held += 1;
                    }
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
        assert!(
            held > checkouts / 3 && appended_to_holds > appended / 4,
            "{held} of {checkouts} checkouts held, {appended_to_holds} of {appended} appended \
             to a state with holds"
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
            // Holds uneven, misspelt, or before the rejected column.
            r#"{"ids":["a"],"points":[1],"factors":["1"],"holds":[null,null]}"#,
            r#"{"ids":["a"],"points":[1],"factors":["1"],"holds":[nul]}"#,
            r#"{"ids":["a"],"points":[1],"factors":["1"],"holds":[1]}"#,
            r#"{"ids":["a"],"points":[1],"factors":["1"],"holds":["accept"],"rejected":["a"]}"#,
        ] {
            assert!(ColumnsText::find(text).is_none(), "{text}");
        }
        let columns = ColumnsText::find(r#"{"ids":["a"],"points":[1],"factors":["1"]}"#)
            .expect("the form the plugin writes");
        assert_eq!(columns.contains("a"), Some(true));
        assert_eq!(columns.contains("b"), Some(false));
        assert_eq!(columns.contains("b\""), None, "an id that needs escapes");
        let held = ColumnsText::find(
            r#"{"ids":["a","b"],"points":[1,2],"factors":["1","1"],"rejected":["a"],"holds":[null,"accept"]}"#,
        )
        .expect("the form the plugin writes, with holds");
        assert_eq!(held.contains("b"), Some(true));
    }

    const HELD_AT: &str = "2026-11-23T10:00:00Z";

    fn at(text: &str) -> Timestamp {
        text.parse().expect("valid")
    }

    /// An input for `action` of transaction `t` at `timestamp`, for a customer with `balance`
    /// spendable and `pending` held points.
    fn held_input(
        action: &str,
        data: Value,
        timestamp: &str,
        (balance, pending): (i64, i64),
    ) -> InputBuilder {
        testing::input(action, data)
            .timestamp(timestamp)
            .customer(tally_sdk::Customer {
                id: "customer-1".to_owned(),
                points: tally_sdk::Points {
                    balance,
                    lifetime: balance + pending,
                    pending,
                },
                ..tally_sdk::Customer::default()
            })
    }

    /// Runs `events` (action, data, timestamp, (balance, pending)) in order, threading the
    /// state, as the host would.
    fn replay_held(events: &[(&str, Value, &str, (i64, i64))], config: &Value) -> Vec<Decision> {
        let mut state: Option<RawJson> = None;
        events
            .iter()
            .map(|(action, data, timestamp, points)| {
                let mut builder =
                    held_input(action, data.clone(), timestamp, *points).config(config.clone());
                if let Some(state) = &state {
                    builder = builder.state(state);
                }
                let decision = run(builder);
                if let Some(written) = &decision.state {
                    state = Some(written.clone());
                }
                decision
            })
            .collect()
    }

    #[test]
    fn hold_days_obeyed() {
        let decision = run(checkout_input(json!({"total": 100, "transaction_id": "t"}))
            .timestamp(HELD_AT)
            .config(json!({"hold_days": 30, "expires_in_days": 365})));
        assert_eq!(entries(&decision), vec![(100, PointKind::Earn, "checkout")]);
        let entry = &decision.points[0];
        assert_eq!(entry.pending_until, Some(at("2026-12-23T10:00:00Z")));
        assert!(!entry.pending, "not held until accepted unless configured");
        assert_eq!(entry.expires_at, Some(at("2027-11-23T10:00:00Z")));
        assert_eq!(
            decision.state.map(|state| state.to_value()),
            Some(json!({"ids": ["t"], "points": [100], "factors": ["1"],
                        "holds": ["2026-12-23T10:00:00Z"]}))
        );
        // Adjustments are never held.
        let add =
            run(testing::input("point_add", json!({"points": 5})).config(json!({"hold_days": 30})));
        assert!(!add.points[0].is_pending());
    }

    #[test]
    fn hold_days_violated() {
        let refused = |config: Value| {
            run_err(checkout_input(json!({"total": 1, "transaction_id": "t"})).config(config))
        };
        assert!(refused(json!({"hold_days": 0})).contains("hold_days is 0"));
        assert!(
            refused(json!({"hold_days": 30, "expires_in_days": 30}))
                .contains("would expire before or as they are released")
        );
        assert!(refused(json!({"hold_days": -1})).contains("hold_days"));
        assert!(refused(json!({"hold_until_accepted": "yes"})).contains("hold_until_accepted"));
    }

    #[test]
    fn hold_until_accepted_obeyed() {
        let checkout = |config: Value| {
            run(checkout_input(json!({"total": 100, "transaction_id": "t"}))
                .timestamp(HELD_AT)
                .config(config))
        };
        let alone = checkout(json!({"hold_until_accepted": true}));
        assert!(alone.points[0].pending);
        assert_eq!(alone.points[0].pending_until, None);
        assert_eq!(
            alone.state.map(|state| state.to_value()["holds"].clone()),
            Some(json!(["accept"]))
        );
        // With hold_days, whichever comes first.
        let both = checkout(json!({"hold_until_accepted": true, "hold_days": 14}));
        assert!(both.points[0].pending);
        assert_eq!(
            both.points[0].pending_until,
            Some(at("2026-12-07T10:00:00Z"))
        );
    }

    #[test]
    fn hold_until_accepted_violated() {
        // Without holds configured nothing is pending and the state has no holds column.
        let decision = run(checkout_input(json!({"total": 100, "transaction_id": "t"})));
        assert!(!decision.points[0].is_pending());
        assert_eq!(
            decision
                .state
                .map(|state| state.to_value().get("holds").is_none()),
            Some(true)
        );
    }

    #[test]
    fn a_raise_of_a_held_purchase_is_held_the_same_way_obeyed() {
        let config = json!({"hold_days": 30});
        let checkout = (
            "checkout",
            json!({"total": 100, "transaction_id": "t"}),
            HELD_AT,
            (0, 0),
        );
        let raise = |timestamp| {
            (
                "checkout_update",
                json!({"total": 150, "transaction_id": "t"}),
                timestamp,
                (0, 100),
            )
        };
        // Ten days later: held until the purchase's hold ends, not thirty days from the raise.
        let decisions = replay_held(&[checkout.clone(), raise("2026-12-03T10:00:00Z")], &config);
        assert_eq!(
            entries(&decisions[1]),
            vec![(50, PointKind::Earn, "checkout_update")]
        );
        assert_eq!(
            decisions[1].points[0].pending_until,
            Some(at("2026-12-23T10:00:00Z"))
        );
        // Held until accepted: so is the raise.
        let decisions = replay_held(
            &[checkout.clone(), raise("2026-12-03T10:00:00Z")],
            &json!({"hold_until_accepted": true}),
        );
        assert!(decisions[1].points[0].pending);
    }

    #[test]
    fn a_raise_of_a_held_purchase_is_held_the_same_way_violated() {
        let config = json!({"hold_days": 30});
        let checkout = (
            "checkout",
            json!({"total": 100, "transaction_id": "t"}),
            HELD_AT,
            (0, 0),
        );
        let raise = |timestamp| {
            (
                "checkout_update",
                json!({"total": 150, "transaction_id": "t"}),
                timestamp,
                (100, 0),
            )
        };
        // After the hold ended, or once the purchase was accepted, the extra is spendable.
        let late = replay_held(&[checkout.clone(), raise("2026-12-23T10:00:00Z")], &config);
        assert_eq!(late[1].points_total(), 50);
        assert!(!late[1].points[0].is_pending());
        let accepted = replay_held(
            &[
                checkout.clone(),
                (
                    "checkout_accept",
                    json!({"transaction_id": "t"}),
                    "2026-11-25T10:00:00Z",
                    (100, 0),
                ),
                raise("2026-11-26T10:00:00Z"),
            ],
            &json!({"hold_until_accepted": true}),
        );
        assert_eq!(
            accepted[1].state.as_ref().map(RawJson::to_value),
            Some(json!({"ids": ["t"], "points": [100], "factors": ["1"]})),
            "the accept ends the hold, and the holds column goes with it"
        );
        assert_eq!(accepted[2].points_total(), 50);
        assert!(!accepted[2].points[0].is_pending());
    }

    #[test]
    fn a_reject_of_a_held_purchase_reverses_it_all_obeyed() {
        // Nothing spendable: the 100 points are all pending, and the host cancels them first.
        let decisions = replay_held(
            &[
                (
                    "checkout",
                    json!({"total": 100, "transaction_id": "t"}),
                    HELD_AT,
                    (0, 0),
                ),
                (
                    "checkout_reject",
                    json!({"transaction_id": "t"}),
                    "2026-11-30T10:00:00Z",
                    (0, 100),
                ),
            ],
            &json!({"hold_days": 30}),
        );
        assert_eq!(
            entries(&decisions[1]),
            vec![(-100, PointKind::Reverse, "checkout_reject")]
        );
        assert_eq!(
            decisions[1].state.as_ref().map(RawJson::to_value),
            Some(json!({"ids": ["t"], "points": [0], "factors": ["1"], "rejected": ["t"]}))
        );
        // A lower update of a held purchase likewise takes from its pending points.
        let decisions = replay_held(
            &[
                (
                    "checkout",
                    json!({"total": 100, "transaction_id": "t"}),
                    HELD_AT,
                    (0, 0),
                ),
                (
                    "checkout_update",
                    json!({"total": 40, "transaction_id": "t"}),
                    "2026-11-30T10:00:00Z",
                    (0, 100),
                ),
            ],
            &json!({"hold_until_accepted": true}),
        );
        assert_eq!(
            entries(&decisions[1]),
            vec![(-60, PointKind::Reverse, "checkout_update")]
        );
    }

    #[test]
    fn a_reject_of_a_held_purchase_reverses_it_all_violated() {
        // t1's hold ended (its points were released and spent); t2's 50 are pending. A reject
        // of t1 may not count t2's pending points as its own: the host would take them from
        // the balance, below zero.
        let decisions = replay_held(
            &[
                (
                    "checkout",
                    json!({"total": 100, "transaction_id": "t1"}),
                    HELD_AT,
                    (0, 0),
                ),
                (
                    "checkout",
                    json!({"total": 50, "transaction_id": "t2"}),
                    "2026-11-28T10:00:00Z",
                    (0, 0),
                ),
                (
                    "checkout_reject",
                    json!({"transaction_id": "t1"}),
                    "2026-11-29T10:00:00Z",
                    (0, 50),
                ),
                (
                    "checkout_reject",
                    json!({"transaction_id": "t2"}),
                    "2026-11-29T11:00:00Z",
                    (0, 50),
                ),
            ],
            &json!({"hold_days": 2}),
        );
        assert!(decisions[2].points.is_empty(), "{:?}", decisions[2].points);
        assert_eq!(
            entries(&decisions[3]),
            vec![(-50, PointKind::Reverse, "checkout_reject")]
        );
        // Never more than the customer has pending, whatever the plugin remembers.
        let short = replay_held(
            &[
                (
                    "checkout",
                    json!({"total": 100, "transaction_id": "t"}),
                    HELD_AT,
                    (0, 0),
                ),
                (
                    "checkout_reject",
                    json!({"transaction_id": "t"}),
                    "2026-11-24T10:00:00Z",
                    (10, 30),
                ),
            ],
            &json!({"hold_days": 30}),
        );
        assert_eq!(short[1].points_total(), -40);
    }

    #[test]
    fn checkout_accept_records_only_what_it_ends() {
        let config = json!({"hold_days": 30});
        let accept = |state: Option<&RawJson>, id: &str| {
            let mut builder = held_input(
                "checkout_accept",
                json!({"transaction_id": id}),
                "2026-11-24T10:00:00Z",
                (0, 0),
            )
            .config(config.clone());
            if let Some(state) = state {
                builder = builder.state(state);
            }
            run(builder)
        };
        let plain = run(checkout_input(json!({"total": 100, "transaction_id": "t"})));
        assert_eq!(
            accept(plain.state.as_ref(), "t"),
            Decision::new(),
            "not held"
        );
        assert_eq!(accept(None, "t"), Decision::new(), "not remembered");
        assert!(run_err(testing::input("checkout_accept", json!({}))).contains("transaction_id"));
    }

    #[test]
    fn internal_actions_are_not_this_plugins_business() {
        for action in tally_sdk::INTERNAL_ACTIONS {
            let mut input = testing::input(action, json!({"transaction_id": "t"}))
                .config(json!({"rate": "not a number"}))
                .build();
            input.event.source = "system".to_owned();
            assert_eq!(rule(&input), Ok(Decision::new()), "{action}");
        }
    }

    #[test]
    fn a_state_with_uneven_holds_is_refused() {
        let error = run_err(
            checkout_input(json!({"total": 10, "transaction_id": "t"})).state(
                &json!({"ids": ["a"], "points": [1], "factors": ["1"], "holds": [null, null]}),
            ),
        );
        assert!(error.contains("1 ids, 2 holds"), "{error}");
        let error = run_err(
            checkout_input(json!({"total": 10, "transaction_id": "t"}))
                .state(&json!({"ids": ["a"], "points": [1], "factors": ["1"], "holds": ["soon"]})),
        );
        assert!(error.contains("neither"), "{error}");
    }
}
