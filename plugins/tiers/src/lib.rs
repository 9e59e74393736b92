//! Tiers from lifetime points, or from the points earned in a rolling window with periodic
//! reviews, with Yotpo-style tier notifications.
//!
//! # What it does
//!
//! With `qualify_by: "lifetime"` (the default), on every event, whatever its action, the
//! customer's tier is the highest configured tier whose `min_lifetime` their lifetime points
//! reach. Run it after the plugins that award points: it reads `customer.points.lifetime` as
//! they left it, so a purchase that crosses a threshold promotes the customer in the same
//! event. The host's `tier_review` events change nothing in this mode: lifetime tiers never
//! lapse (only reversals, which lower lifetime points, move a customer down). With
//! `qualify_by: "window"` tiers are kept or lost at each review; see *Window tiers*.
//!
//! - When that tier differs from `customer.tier`, the decision sets it and sends `TierEarned`
//!   (moved up) or `TierLost` (moved down: reversals lower lifetime points):
//!
//!   ```json
//!   { "old_tier": { "name": "silver", "rank": 2, "min_lifetime": 500, "description": "..." },
//!     "new_tier": { "name": "gold", "rank": 3, "min_lifetime": 2000, "description": "...",
//!                   "points_multiplier": "1.5" },
//!     "points_earned": 2040 }
//!   ```
//!
//!   `rank` counts from 1 for the lowest tier; `points_multiplier` is there when the tier
//!   sets one; `points_earned` is the customer's lifetime points.
//! - A customer without a tier gets one on their first event, and `TierEarned` (with
//!   `old_tier` null) only when it is above the lowest tier: joining the program is not a
//!   promotion. A customer whose tier is not in the config (renamed, set by hand) is moved to
//!   the computed tier with a warning, as if they had no tier, `old_tier` carrying just their
//!   old name with a null rank.
//! - Whenever lifetime points changed since this plugin last saw the customer, it sends
//!   `TierStatusChanged`:
//!
//!   ```json
//!   { "current_points": 650, "previous_points": 400,
//!     "tier": "silver", "tier_rank": 2,
//!     "next_tier": "gold", "points_needed_for_next_tier": 1350, "progress_percent": 10,
//!     "points_needed_to_maintain_tier": 0, "points_above_tier_minimum": 150 }
//!   ```
//!
//!   `progress_percent` (0-100) is how far the customer is from their tier's threshold to the
//!   next one; at the top tier `next_tier` and `points_needed_for_next_tier` are null and the
//!   progress is 100. Lifetime tiers never lapse, so `points_needed_to_maintain_tier` is 0 (it
//!   is there for consumers built on Yotpo's fields); `points_above_tier_minimum` is what
//!   reversals could take before the customer drops a tier.
//!
//! # Window tiers
//!
//! With `qualify_by: "window"`, the points that count are those earned (lifetime points
//! gained, less reversals) in the last `review_window_days` days: the calendar days (UTC) up
//! to and including the event's. `min_lifetime` is then the threshold for those points. Set
//! `review_window_days` to the tenant's `tier_review_days` (365 for a year), so that a
//! review looks at the period since the last one.
//!
//! - On every event the customer moves *up* to the highest tier their window points reach
//!   (`TierEarned`, as above, with `points_in_window` added), and never down: points leaving
//!   the window, and reversals, count at the next review only.
//! - On `tier_review` (written by the host `tier_review_days` after the customer reached their
//!   tier, and as often again while they keep it), a customer whose window points fall short
//!   of their tier's threshold is demoted to the highest tier those points reach, with
//!   `TierLost`:
//!
//!   ```json
//!   { "tier": "gold", "new_tier": "silver", "points_in_window": 1200, "needed": 2000,
//!     "review_window_days": 365, "next_tier": "gold", "points_needed_for_next_tier": 800 }
//!   ```
//!
//!   `needed` is the threshold of the tier lost; `next_tier` and
//!   `points_needed_for_next_tier` are counted from the new tier (null at the top). A
//!   customer who keeps their tier gets `TierKept` (not for the lowest tier, which every
//!   customer keeps):
//!
//!   ```json
//!   { "tier": "gold", "points_in_window": 2300, "needed": 2000, "review_window_days": 365,
//!     "window_complete": true, "next_tier": "platinum",
//!     "points_needed_for_next_tier": 2700 }
//!   ```
//!
//!   A review whose window the plugin saw only part of (`window_complete: false`: it started
//!   counting after the customer's history began, as when a tenant moves from lifetime to
//!   window tiers or installs the plugin for existing customers) never demotes: the customer
//!   keeps their tier until a review whose whole window it counted.
//! - `TierStatusChanged` (sent when lifetime points change) counts from the window:
//!   `points_in_window` is added, and `points_needed_to_maintain_tier` is what the customer
//!   must still earn for their window to reach their tier's threshold, were the review today;
//!   `points_above_tier_minimum`, `points_needed_for_next_tier` and `progress_percent` are
//!   counted from the window's points too. `current_points` and `previous_points` stay
//!   lifetime points.
//!
//! # Profile
//!
//! Whenever it sends `TierStatusChanged`, and at each review in window mode, the plugin shows
//! the figures on the customer's profile (`plugins.tiers` in `GET /v1/customers/{id}`):
//! `tier`, `next_tier`, `points_needed_for_next_tier`, `points_needed_to_maintain_tier` and,
//! in window mode, `points_in_window`.
//!
//! # Config
//!
//! `tiers`: the tiers in ascending order, each `{name, min_lifetime, multiplier?,
//! description?}`. `min_lifetime` must rise strictly and the first must be 0: the lowest tier
//! is where every customer starts, since a decision can set a tier but never clear one.
//! Default:
//!
//! ```json
//! { "tiers": [
//!     { "name": "bronze",   "min_lifetime": 0,    "description": "Welcome to the club" },
//!     { "name": "silver",   "min_lifetime": 500,  "description": "500 lifetime points" },
//!     { "name": "gold",     "min_lifetime": 2000, "description": "2,000 lifetime points" },
//!     { "name": "platinum", "min_lifetime": 5000, "description": "5,000 lifetime points" } ] }
//! ```
//!
//! `multiplier` is informational here (sent as `points_multiplier`); the points plugin has
//! its own `tier_multipliers`.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `tiers` | above | the tiers, lowest first |
//! | `qualify_by` | `"lifetime"` | what `min_lifetime` is compared with: `"lifetime"` points (tiers never lapse) or the points earned in the review `"window"` (tiers are reviewed) |
//! | `review_window_days` | `365` | with `"window"`, how many days of points count (at least 1) |
//!
//! ```json
//! { "qualify_by": "window", "review_window_days": 365,
//!   "tiers": [ { "name": "member", "min_lifetime": 0 },
//!              { "name": "gold", "min_lifetime": 2000 } ] }
//! ```
//!
//! # State
//!
//! With `"lifetime"`, `{"lifetime": n}`: the lifetime points this plugin last saw for the
//! customer. With `"window"`, also the points earned per day (UTC days since 1970-01-01,
//! net of reversals, only the days inside the window kept) and the tier figures as of the
//! last event that wrote the state:
//!
//! ```json
//! { "lifetime": 2300, "days": [20415, 20500], "earned": [300, 2000],
//!   "as_of": "2026-02-16T10:00:00Z", "points_in_window": 2300,
//!   "points_needed_to_maintain_tier": 0, "next_tier": "platinum",
//!   "points_needed_for_next_tier": 2700 }
//! ```
//!
//! `tracked_from` (a day) is there while the window is not whole: the first day the plugin
//! counted in full, for a customer who had history before it started counting.

mod window;

use serde::{Deserialize, Serialize};
use tally_sdk::wire::MAX_NAME_LEN;
use tally_sdk::{Decimal, Decision, Error, Input, log, plugin};

use crate::window::{Earned, WindowState, day_of};

/// The plugin's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Tiers in ascending order of `min_lifetime`.
    pub tiers: Vec<Tier>,
    /// What the thresholds are compared with.
    pub qualify_by: QualifyBy,
    /// With [`QualifyBy::Window`], how many days of points count.
    pub review_window_days: u32,
}

/// What a tier's threshold is compared with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualifyBy {
    /// Lifetime points: tiers never lapse.
    #[default]
    Lifetime,
    /// Points earned in the last `review_window_days` days: tiers are reviewed.
    Window,
}

/// One tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The tier's name, as the customer profile shows it.
    pub name: String,
    /// Lifetime points from which a customer is in this tier.
    pub min_lifetime: i64,
    /// The points multiplier of the tier, passed on in notifications.
    #[serde(default)]
    pub multiplier: Option<Decimal>,
    /// A description, passed on in notifications.
    #[serde(default)]
    pub description: Option<String>,
}

impl Tier {
    fn new(name: &str, min_lifetime: i64, description: &str) -> Tier {
        Tier {
            name: name.to_owned(),
            min_lifetime,
            multiplier: None,
            description: Some(description.to_owned()),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tiers: vec![
                Tier::new("bronze", 0, "Welcome to the club"),
                Tier::new("silver", 500, "500 lifetime points"),
                Tier::new("gold", 2000, "2,000 lifetime points"),
                Tier::new("platinum", 5000, "5,000 lifetime points"),
            ],
            qualify_by: QualifyBy::Lifetime,
            review_window_days: 365,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), Error> {
        if self.review_window_days == 0 {
            return Err(Error::new(
                "plugin config: review_window_days is 0, so no points would ever count toward \
                 a tier; it must be at least 1",
            ));
        }
        let Some(lowest) = self.tiers.first() else {
            return Err(Error::new("plugin config: tiers is empty"));
        };
        if lowest.min_lifetime != 0 {
            return Err(Error::new(format!(
                "plugin config: tiers[0] ({}) has min_lifetime {}, but the lowest tier must start \
                 at 0: every customer is in some tier",
                lowest.name, lowest.min_lifetime
            )));
        }
        for (index, tier) in self.tiers.iter().enumerate() {
            if tier.name.trim().is_empty() || tier.name.len() > MAX_NAME_LEN {
                return Err(Error::new(format!(
                    "plugin config: tiers[{index}].name must be 1 to {MAX_NAME_LEN} bytes"
                )));
            }
            if self.tiers[..index]
                .iter()
                .any(|other| other.name == tier.name)
            {
                return Err(Error::new(format!(
                    "plugin config: tier {} is listed twice",
                    tier.name
                )));
            }
            if let Some(previous) = index.checked_sub(1).map(|before| &self.tiers[before])
                && tier.min_lifetime <= previous.min_lifetime
            {
                return Err(Error::new(format!(
                    "plugin config: tiers[{index}] ({}) has min_lifetime {}, not above {} of {}: \
                     list tiers from lowest to highest",
                    tier.name, tier.min_lifetime, previous.min_lifetime, previous.name
                )));
            }
        }
        Ok(())
    }

    /// The index of the tier for `lifetime` points; below every threshold is the lowest tier.
    fn tier_for(&self, lifetime: i64) -> usize {
        self.tiers
            .iter()
            .rposition(|tier| tier.min_lifetime <= lifetime)
            .unwrap_or(0)
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|tier| tier.name == name)
    }

    /// A tier as notifications describe it.
    fn describe(&self, index: usize) -> Described<'_> {
        let tier = &self.tiers[index];
        Described {
            description: tier.description.as_deref(),
            min_lifetime: Some(tier.min_lifetime),
            name: &tier.name,
            points_multiplier: tier.multiplier.map(|multiplier| multiplier.to_string()),
            rank: Some(index + 1),
        }
    }

    /// A move from `old_tier` to the tier at `index`, with the customer's lifetime points
    /// (and window points, with window tiers).
    fn change<'a>(
        &'a self,
        index: usize,
        old_tier: Option<Described<'a>>,
        points_earned: i64,
        points_in_window: Option<i64>,
    ) -> TierChange<'a> {
        TierChange {
            new_tier: self.describe(index),
            old_tier,
            points_earned,
            points_in_window,
        }
    }

    /// The tier above the one at `index` and what `points` still lack to reach it.
    fn next(&self, index: usize, points: i64) -> (Option<&str>, Option<i64>) {
        match self.tiers.get(index + 1) {
            Some(next) => (
                Some(next.name.as_str()),
                Some(next.min_lifetime.saturating_sub(points).max(0)),
            ),
            None => (None, None),
        }
    }
}

// The notifications' data, written straight to JSON (`Decision::trigger_as`) rather than
// built as `json!` trees: this plugin sends one on almost every event. Fields are in
// alphabetical order, the order the trees had, so the JSON is the same text.

/// A tier in `TierEarned` and `TierLost`.
#[derive(Debug, Serialize)]
struct Described<'a> {
    description: Option<&'a str>,
    /// `None` for a tier the config does not have.
    min_lifetime: Option<i64>,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    points_multiplier: Option<String>,
    /// `None` for a tier the config does not have.
    rank: Option<usize>,
}

/// The data of `TierEarned`, and of `TierLost` with lifetime tiers.
#[derive(Debug, Serialize)]
struct TierChange<'a> {
    new_tier: Described<'a>,
    old_tier: Option<Described<'a>>,
    points_earned: i64,
    /// With window tiers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    points_in_window: Option<i64>,
}

/// The data of `TierLost` at a review of window tiers.
#[derive(Debug, Serialize)]
struct TierReviewLost<'a> {
    tier: &'a str,
    new_tier: &'a str,
    points_in_window: i64,
    needed: i64,
    review_window_days: u32,
    next_tier: Option<&'a str>,
    points_needed_for_next_tier: Option<i64>,
}

/// The data of `TierKept` at a review of window tiers.
#[derive(Debug, Serialize)]
struct TierReviewKept<'a> {
    tier: &'a str,
    points_in_window: i64,
    needed: i64,
    review_window_days: u32,
    window_complete: bool,
    next_tier: Option<&'a str>,
    points_needed_for_next_tier: Option<i64>,
}

/// The data of `TierStatusChanged`.
#[derive(Debug, Serialize)]
struct TierStatus<'a> {
    current_points: i64,
    next_tier: Option<&'a str>,
    points_above_tier_minimum: i64,
    /// With window tiers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    points_in_window: Option<i64>,
    points_needed_for_next_tier: Option<i64>,
    points_needed_to_maintain_tier: i64,
    previous_points: i64,
    progress_percent: i64,
    tier: &'a str,
    tier_rank: usize,
}

/// What the plugin shows on the customer's profile: the figures a person asks about, no
/// more (the profile is rewritten with every purchase, so it is kept short).
#[derive(Serialize)]
struct TierFigures<'a> {
    tier: &'a str,
    next_tier: Option<&'a str>,
    points_needed_for_next_tier: Option<i64>,
    points_needed_to_maintain_tier: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    points_in_window: Option<i64>,
}

impl<'a> TierStatus<'a> {
    fn figures(&self) -> TierFigures<'a> {
        TierFigures {
            tier: self.tier,
            next_tier: self.next_tier,
            points_needed_for_next_tier: self.points_needed_for_next_tier,
            points_needed_to_maintain_tier: self.points_needed_to_maintain_tier,
            points_in_window: self.points_in_window,
        }
    }
}

/// What the plugin remembers per customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Lifetime points when this plugin last saw the customer.
    #[serde(default)]
    pub lifetime: Option<i64>,
}

#[plugin]
fn rule(input: &Input) -> Result<Decision, Error> {
    let config: Config = input.config()?;
    config.validate()?;
    match config.qualify_by {
        QualifyBy::Lifetime => lifetime_rule(input, &config),
        QualifyBy::Window => window_rule(input, &config),
    }
}

/// Tiers from lifetime points.
fn lifetime_rule(input: &Input, config: &Config) -> Result<Decision, Error> {
    let state: State = input.state()?;
    let lifetime = input.customer.points.lifetime;
    let index = config.tier_for(lifetime);
    let decision = move_to(config, Decision::new(), input, index, None)?;

    // A customer this plugin has not seen had, as far as it knows, no points: one migrated
    // with points gets a status on their first event, a new one with none does not.
    let previous = state.lifetime.unwrap_or(0);
    if lifetime != previous {
        let figures = status(config, index, lifetime, previous, None);
        return decision
            .trigger_as("TierStatusChanged", &figures)?
            .profile(&figures.figures())?
            .state(&State {
                lifetime: Some(lifetime),
            });
    }
    Ok(decision)
}

/// Moves the customer to the tier at `index` from the tier they are in: sets it, and sends
/// `TierEarned` (up, or into the program above its lowest tier) or `TierLost` (down). The
/// same tier changes nothing. `window` is the window's points, with window tiers.
fn move_to(
    config: &Config,
    mut decision: Decision,
    input: &Input,
    index: usize,
    window: Option<i64>,
) -> Result<Decision, Error> {
    let lifetime = input.customer.points.lifetime;
    let new_tier = &config.tiers[index];
    match input.customer.tier.as_deref() {
        Some(current) if current == new_tier.name => {}
        Some(current) => {
            decision = decision.tier(&new_tier.name);
            let change = |old_tier| config.change(index, Some(old_tier), lifetime, window);
            match config.position(current) {
                Some(old) if old < index => {
                    decision = decision.trigger_as("TierEarned", &change(config.describe(old)))?;
                }
                Some(old) => {
                    decision = decision.trigger_as("TierLost", &change(config.describe(old)))?;
                }
                None => {
                    log::warn(&format!(
                        "the customer's tier {current:?} is not configured; moving them to {}",
                        new_tier.name
                    ));
                    if index > 0 {
                        let unknown = Described {
                            description: None,
                            min_lifetime: None,
                            name: current,
                            points_multiplier: None,
                            rank: None,
                        };
                        decision = decision.trigger_as("TierEarned", &change(unknown))?;
                    }
                }
            }
        }
        None => {
            decision = decision.tier(&new_tier.name);
            if index > 0 {
                decision = decision
                    .trigger_as("TierEarned", &config.change(index, None, lifetime, window))?;
            }
        }
    }
    Ok(decision)
}

/// Tiers from the points earned in the review window: up on any event, down only at a
/// `tier_review`.
fn window_rule(input: &Input, config: &Config) -> Result<Decision, Error> {
    let mut state: WindowState = input.state()?;
    let window_days = config.review_window_days;
    let today = day_of(input.event.timestamp);
    let lifetime = input.customer.points.lifetime;
    let previous = state.lifetime;
    let mut changed = previous != Some(lifetime);

    let mut earned = match state.earned()? {
        Some(earned) => earned,
        None => {
            // Counting starts. For a customer new to the program it covers everything;
            // for one with history (points this plugin saw in lifetime mode, or events
            // before it ran) today is not whole and the days before are unknown.
            changed = true;
            let new = previous.is_none() && input.customer.stats.events.values().all(|n| *n == 0);
            Earned {
                tracked_from: (!new).then_some(today.saturating_add(1)),
                ..Earned::default()
            }
        }
    };
    let gained = match previous {
        Some(previous) => lifetime.saturating_sub(previous),
        // Unseen and new: whatever they have, they earned in this event.
        None if earned.tracked_from.is_none() => lifetime,
        // Unseen with history: those points were not earned today.
        None => 0,
    };
    earned.add(today, gained);
    earned.forget_before(today, window_days);
    let in_window = earned.in_window(today, window_days);
    let qualified = config.tier_for(in_window);

    let current = input
        .customer
        .tier
        .as_deref()
        .and_then(|tier| config.position(tier));
    let (mut decision, index) = match current {
        Some(old) if input.event.action == "tier_review" => {
            changed = true;
            let whole = earned.whole(today, window_days);
            review(config, input, old, in_window, whole)?
        }
        // Between reviews a customer only moves up.
        Some(old) if qualified <= old => (Decision::new(), old),
        // Up, into the program, or out of a tier the config does not have.
        _ => (
            move_to(config, Decision::new(), input, qualified, Some(in_window))?,
            qualified,
        ),
    };
    changed |= decision.tier.is_some();

    let seen = previous.unwrap_or(0);
    let figures = status(config, index, lifetime, seen, Some(in_window));
    if lifetime != seen {
        decision = decision.trigger_as("TierStatusChanged", &figures)?;
    }
    // The profile shows the figures as of the last event that moved them (a review moves
    // the window without moving lifetime points).
    if lifetime != seen || changed {
        decision = decision.profile(&figures.figures())?;
    }
    if !changed {
        return Ok(decision);
    }
    let (next_tier, for_next) = config.next(index, in_window);
    state.lifetime = Some(lifetime);
    state.set_earned(&earned);
    state.as_of = Some(input.event.timestamp);
    state.points_in_window = Some(in_window);
    state.points_needed_to_maintain_tier = Some(
        config.tiers[index]
            .min_lifetime
            .saturating_sub(in_window)
            .max(0),
    );
    state.next_tier = next_tier.map(str::to_owned);
    state.points_needed_for_next_tier = for_next;
    decision.state(&state)
}

/// A `tier_review` of a customer in the tier at `old` whose window holds `in_window` points
/// (`whole` when every day of it was counted): the decision, and the tier they end in.
fn review(
    config: &Config,
    input: &Input,
    old: usize,
    in_window: i64,
    whole: bool,
) -> Result<(Decision, usize), Error> {
    let qualified = config.tier_for(in_window);
    // A window partly unknown may hold more than was counted: it never demotes.
    let index = if whole { qualified } else { qualified.max(old) };
    let tier = &config.tiers[old];
    let (next_tier, points_needed_for_next_tier) = config.next(index, in_window);
    let review_window_days = config.review_window_days;
    let decision = if index < old {
        let new_tier = &config.tiers[index];
        Decision::new().tier(&new_tier.name).trigger_as(
            "TierLost",
            &TierReviewLost {
                tier: &tier.name,
                new_tier: &new_tier.name,
                points_in_window: in_window,
                needed: tier.min_lifetime,
                review_window_days,
                next_tier,
                points_needed_for_next_tier,
            },
        )?
    } else if index > old {
        move_to(config, Decision::new(), input, index, Some(in_window))?
    } else if old > 0 {
        Decision::new().trigger_as(
            "TierKept",
            &TierReviewKept {
                tier: &tier.name,
                points_in_window: in_window,
                needed: tier.min_lifetime,
                review_window_days,
                window_complete: whole,
                next_tier,
                points_needed_for_next_tier,
            },
        )?
    } else {
        // The lowest tier is every customer's: nothing to keep.
        Decision::new()
    };
    Ok((decision, index))
}

/// The customer's standing in the tier at `index`: counted from `window` points with window
/// tiers, from `lifetime` points otherwise.
fn status(
    config: &Config,
    index: usize,
    lifetime: i64,
    previous: i64,
    window: Option<i64>,
) -> TierStatus<'_> {
    let tier = &config.tiers[index];
    let next = config.tiers.get(index + 1);
    let counted = window.unwrap_or(lifetime);
    let progress = match next {
        None => 100,
        Some(next) => {
            // i128: thresholds and points are i64, and their differences and products must
            // not overflow on a hostile config.
            let done = i128::from(counted) - i128::from(tier.min_lifetime);
            let span = i128::from(next.min_lifetime) - i128::from(tier.min_lifetime);
            // Clamped to 0..=100, so it fits.
            i64::try_from((done * 100 / span).clamp(0, 100)).unwrap_or(100)
        }
    };
    TierStatus {
        current_points: lifetime,
        next_tier: next.map(|next| next.name.as_str()),
        points_above_tier_minimum: counted.saturating_sub(tier.min_lifetime).max(0),
        points_in_window: window,
        points_needed_for_next_tier: next
            .map(|next| next.min_lifetime.saturating_sub(counted).max(0)),
        points_needed_to_maintain_tier: tier.min_lifetime.saturating_sub(counted).max(0),
        previous_points: previous,
        progress_percent: progress,
        tier: &tier.name,
        tier_rank: index + 1,
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use serde_json::{Value, json};
    use tally_sdk::Trigger;
    use tally_sdk::testing::{self, InputBuilder};

    use super::*;

    fn customer(lifetime: i64, tier: Option<&str>, seen: Option<i64>) -> InputBuilder {
        let mut builder = testing::input("checkout", json!({"total": 10}))
            .customer_points(lifetime, lifetime)
            .state(&State { lifetime: seen });
        if let Some(tier) = tier {
            builder = builder.tier(tier);
        }
        builder
    }

    fn run(builder: InputBuilder) -> Decision {
        let decision = rule(&builder.build()).expect("the rule accepts the event");
        decision.check().expect("the decision keeps the rules");
        decision
    }

    fn names(decision: &Decision) -> Vec<&str> {
        decision
            .triggers
            .iter()
            .map(|trigger| trigger.name.as_str())
            .collect()
    }

    fn trigger<'a>(decision: &'a Decision, name: &str) -> &'a Trigger {
        decision
            .triggers
            .iter()
            .find(|trigger| trigger.name == name)
            .expect("the trigger is sent")
    }

    #[test]
    fn crossing_a_threshold_earns_the_tier() {
        let decision = run(customer(2040, Some("silver"), Some(1800)));
        assert_eq!(decision.tier.as_deref(), Some("gold"));
        assert_eq!(names(&decision), ["TierEarned", "TierStatusChanged"]);
        assert_eq!(
            trigger(&decision, "TierEarned").data.to_value(),
            json!({
                "old_tier": {"name": "silver", "rank": 2, "min_lifetime": 500,
                             "description": "500 lifetime points"},
                "new_tier": {"name": "gold", "rank": 3, "min_lifetime": 2000,
                             "description": "2,000 lifetime points"},
                "points_earned": 2040,
            })
        );
        assert_eq!(
            trigger(&decision, "TierStatusChanged").data.to_value(),
            json!({
                "current_points": 2040,
                "previous_points": 1800,
                "tier": "gold",
                "tier_rank": 3,
                "next_tier": "platinum",
                "points_needed_for_next_tier": 2960,
                "progress_percent": 1,
                "points_needed_to_maintain_tier": 0,
                "points_above_tier_minimum": 40,
            })
        );
        assert_eq!(
            decision.state.map(|state| state.to_value()),
            Some(json!({"lifetime": 2040}))
        );
    }

    #[test]
    fn jumping_several_tiers_is_one_promotion() {
        let decision = run(customer(6000, Some("bronze"), Some(10)));
        assert_eq!(decision.tier.as_deref(), Some("platinum"));
        let earned = &trigger(&decision, "TierEarned").data.to_value();
        assert_eq!(earned["old_tier"]["name"], "bronze");
        assert_eq!(earned["new_tier"]["rank"], 4);
    }

    #[test]
    fn a_reversal_below_the_threshold_loses_the_tier() {
        let decision = run(customer(450, Some("silver"), Some(600)));
        assert_eq!(decision.tier.as_deref(), Some("bronze"));
        assert_eq!(names(&decision), ["TierLost", "TierStatusChanged"]);
        let lost = &trigger(&decision, "TierLost").data.to_value();
        assert_eq!(lost["old_tier"]["name"], "silver");
        assert_eq!(lost["new_tier"]["name"], "bronze");
        assert_eq!(lost["points_earned"], 450);
        let status = &trigger(&decision, "TierStatusChanged").data.to_value();
        assert_eq!(status["progress_percent"], 90);
        assert_eq!(status["points_needed_for_next_tier"], 50);
    }

    #[test]
    fn unchanged_points_and_tier_decide_nothing() {
        assert_eq!(
            run(customer(700, Some("silver"), Some(700))),
            Decision::new()
        );
    }

    #[test]
    fn points_moving_within_a_tier_only_report_status() {
        let decision = run(customer(1250, Some("silver"), Some(700)));
        assert_eq!(decision.tier, None);
        assert_eq!(names(&decision), ["TierStatusChanged"]);
        let status = &trigger(&decision, "TierStatusChanged").data.to_value();
        assert_eq!(status["progress_percent"], 50);
        assert_eq!(status["next_tier"], "gold");
        assert_eq!(status["points_needed_for_next_tier"], 750);
    }

    #[test]
    fn first_event_assigns_the_lowest_tier_quietly() {
        let decision = run(customer(0, None, None));
        assert_eq!(decision.tier.as_deref(), Some("bronze"));
        assert!(decision.triggers.is_empty());
        assert_eq!(decision.state, None, "nothing changed worth remembering");

        let decision = run(customer(120, None, None));
        assert_eq!(decision.tier.as_deref(), Some("bronze"));
        assert_eq!(names(&decision), ["TierStatusChanged"]);
    }

    #[test]
    fn first_event_above_the_lowest_tier_is_earned() {
        let decision = run(customer(900, None, None));
        assert_eq!(decision.tier.as_deref(), Some("silver"));
        let earned = &trigger(&decision, "TierEarned").data.to_value();
        assert_eq!(earned["old_tier"], Value::Null);
        assert_eq!(earned["new_tier"]["name"], "silver");
        assert_eq!(
            trigger(&decision, "TierStatusChanged").data.to_value()["previous_points"],
            0
        );
    }

    #[test]
    fn an_unconfigured_tier_is_replaced() {
        let decision = run(customer(600, Some("vip"), Some(600)));
        assert_eq!(decision.tier.as_deref(), Some("silver"));
        let earned = &trigger(&decision, "TierEarned").data.to_value();
        assert_eq!(earned["old_tier"]["name"], "vip");
        assert_eq!(earned["old_tier"]["rank"], Value::Null);

        let decision = run(customer(10, Some("vip"), Some(10)));
        assert_eq!(decision.tier.as_deref(), Some("bronze"));
        assert!(decision.triggers.is_empty());
    }

    #[test]
    fn the_top_tier_has_no_next() {
        let decision = run(customer(9000, Some("platinum"), Some(8000)));
        let status = &trigger(&decision, "TierStatusChanged").data.to_value();
        assert_eq!(status["next_tier"], Value::Null);
        assert_eq!(status["points_needed_for_next_tier"], Value::Null);
        assert_eq!(status["progress_percent"], 100);
        assert_eq!(status["points_above_tier_minimum"], 4000);
    }

    #[test]
    fn thresholds_are_inclusive() {
        assert_eq!(
            run(customer(500, Some("bronze"), Some(499)))
                .tier
                .as_deref(),
            Some("silver")
        );
        assert_eq!(
            run(customer(499, Some("silver"), Some(500)))
                .tier
                .as_deref(),
            Some("bronze")
        );
    }

    #[test]
    fn negative_lifetime_stays_in_the_lowest_tier() {
        let decision = run(customer(-5, Some("bronze"), Some(20)));
        assert_eq!(decision.tier, None);
        assert_eq!(
            trigger(&decision, "TierStatusChanged").data.to_value()["progress_percent"],
            0
        );
    }

    #[test]
    fn custom_tiers_with_multipliers() {
        let config = json!({"tiers": [
            {"name": "member", "min_lifetime": 0},
            {"name": "insider", "min_lifetime": 100, "multiplier": 1.2, "description": "Insiders"}
        ]});
        let decision = run(customer(150, Some("member"), Some(50)).config(config));
        assert_eq!(decision.tier.as_deref(), Some("insider"));
        assert_eq!(
            trigger(&decision, "TierEarned").data.to_value()["new_tier"],
            json!({"name": "insider", "rank": 2, "min_lifetime": 100,
                   "description": "Insiders", "points_multiplier": "1.2"})
        );
        assert_eq!(
            trigger(&decision, "TierEarned").data.to_value()["old_tier"]["description"],
            Value::Null
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        let refused = |config: Value| {
            rule(&customer(0, None, None).config(config).build())
                .expect_err("a bad config is refused")
                .message()
                .to_owned()
        };
        assert!(refused(json!({"tiers": []})).contains("tiers is empty"));
        assert!(
            refused(json!({"tiers": [{"name": "a", "min_lifetime": 10}]}))
                .contains("must start at 0")
        );
        assert!(
            refused(json!({"tiers": [
                {"name": "a", "min_lifetime": 0}, {"name": "b", "min_lifetime": 0}
            ]}))
            .contains("list tiers from lowest to highest")
        );
        assert!(
            refused(json!({"tiers": [
                {"name": "a", "min_lifetime": 0}, {"name": "a", "min_lifetime": 5}
            ]}))
            .contains("listed twice")
        );
        assert!(
            refused(json!({"tiers": [{"name": " ", "min_lifetime": 0}]})).contains("tiers[0].name")
        );
        assert!(
            refused(json!({"tiers": [{"name": "a", "min_lifetime": 0, "multipler": 2}]}))
                .contains("unknown field `multipler`")
        );
    }

    #[test]
    fn extreme_thresholds_do_not_overflow() {
        let config = json!({"tiers": [
            {"name": "low", "min_lifetime": 0},
            {"name": "high", "min_lifetime": i64::MAX}
        ]});
        let decision = run(customer(i64::MAX - 1, Some("low"), Some(0)).config(config));
        assert_eq!(
            trigger(&decision, "TierStatusChanged").data.to_value()["progress_percent"],
            99
        );
    }

    /// One customer's events through the plugin, carrying what the host would: the tier
    /// the decisions set, the state, the count of events before each.
    struct Journey {
        config: Value,
        tier: Option<String>,
        state: Option<tally_sdk::RawJson>,
        events: u64,
    }

    impl Journey {
        fn window() -> Journey {
            Journey {
                config: json!({"qualify_by": "window"}),
                tier: None,
                state: None,
                events: 0,
            }
        }

        /// An event of `action` at `at`, the customer's lifetime points being `lifetime`
        /// once the plugins before this one ran.
        fn event(&mut self, action: &str, at: &str, lifetime: i64) -> Decision {
            let mut customer = tally_sdk::Customer {
                id: "customer-1".to_owned(),
                points: tally_sdk::Points {
                    balance: lifetime,
                    lifetime,
                    pending: 0,
                },
                tier: self.tier.clone(),
                ..tally_sdk::Customer::default()
            };
            if self.events > 0 {
                customer
                    .stats
                    .events
                    .insert("checkout".to_owned(), self.events);
            }
            let mut builder = testing::input(action, json!({}))
                .timestamp(at)
                .customer(customer)
                .config(self.config.clone());
            if let Some(state) = &self.state {
                builder = builder.state(state);
            }
            let mut input = builder.build();
            if tally_sdk::is_internal_action(action) {
                input.event.source = "system".to_owned();
            }
            let decision = rule(&input).expect("the rule accepts the event");
            decision.check().expect("the decision keeps the rules");
            if let Some(tier) = &decision.tier {
                self.tier = Some(tier.clone());
            }
            if let Some(state) = &decision.state {
                self.state = Some(state.clone());
            }
            self.events += 1;
            decision
        }

        fn state(&self) -> Value {
            self.state
                .as_ref()
                .map_or(Value::Null, tally_sdk::RawJson::to_value)
        }
    }

    fn day(date: &str) -> i64 {
        window::day_of(date.parse().expect("valid"))
    }

    #[test]
    fn a_review_demotes_a_customer_short_of_their_tier() {
        let mut journey = Journey::window();
        let joined = journey.event("checkout", "2026-01-10T10:00:00Z", 2500);
        assert_eq!(joined.tier.as_deref(), Some("gold"));
        assert_eq!(
            trigger(&joined, "TierEarned").data.to_value()["points_in_window"],
            2500
        );
        let later = journey.event("checkout", "2026-07-01T10:00:00Z", 2800);
        assert_eq!(later.tier, None);
        let status = trigger(&later, "TierStatusChanged").data.to_value();
        assert_eq!(status["points_in_window"], 2800);
        assert_eq!(status["points_needed_to_maintain_tier"], 0);
        // A year after reaching gold: the purchase that earned it is out of the window.
        let review = journey.event("tier_review", "2027-01-10T10:00:00Z", 2800);
        assert_eq!(review.tier.as_deref(), Some("bronze"));
        assert_eq!(names(&review), ["TierLost"]);
        // The profile shows the figures after the review.
        let shown = review.profile.as_ref().expect("a profile").to_value();
        assert_eq!(
            (
                &shown["tier"],
                &shown["points_in_window"],
                &shown["next_tier"],
                &shown["points_needed_for_next_tier"]
            ),
            (&json!("bronze"), &json!(300), &json!("silver"), &json!(200)),
            "{shown}"
        );
        assert_eq!(
            trigger(&review, "TierLost").data.to_value(),
            json!({"tier": "gold", "new_tier": "bronze", "points_in_window": 300,
                   "needed": 2000, "review_window_days": 365,
                   "next_tier": "silver", "points_needed_for_next_tier": 200})
        );
        assert_eq!(
            journey.state(),
            json!({"lifetime": 2800, "days": [day("2026-07-01T00:00:00Z")], "earned": [300],
                   "as_of": "2027-01-10T10:00:00Z", "points_in_window": 300,
                   "points_needed_to_maintain_tier": 0, "next_tier": "silver",
                   "points_needed_for_next_tier": 200})
        );
    }

    #[test]
    fn a_review_demotes_only_as_far_as_the_window_reaches() {
        let mut journey = Journey::window();
        journey.event("checkout", "2026-01-10T10:00:00Z", 6000);
        assert_eq!(journey.tier.as_deref(), Some("platinum"));
        journey.event("checkout", "2026-09-01T10:00:00Z", 6900);
        let review = journey.event("tier_review", "2027-01-10T10:00:00Z", 6900);
        assert_eq!(review.tier.as_deref(), Some("silver"));
        let lost = trigger(&review, "TierLost").data.to_value();
        assert_eq!(lost["points_in_window"], 900);
        assert_eq!(lost["needed"], 5000);
        assert_eq!(lost["next_tier"], "gold");
        assert_eq!(lost["points_needed_for_next_tier"], 1100);
    }

    #[test]
    fn a_review_keeps_a_customer_who_earned_enough() {
        let mut journey = Journey::window();
        journey.event("checkout", "2026-01-10T10:00:00Z", 2500);
        journey.event("checkout", "2026-07-01T10:00:00Z", 4600);
        let review = journey.event("tier_review", "2027-01-10T10:00:00Z", 4600);
        assert_eq!(review.tier, None);
        assert_eq!(names(&review), ["TierKept"]);
        assert_eq!(
            trigger(&review, "TierKept").data.to_value(),
            json!({"tier": "gold", "points_in_window": 2100, "needed": 2000,
                   "review_window_days": 365, "window_complete": true,
                   "next_tier": "platinum", "points_needed_for_next_tier": 2900})
        );
        assert_eq!(journey.state()["as_of"], "2027-01-10T10:00:00Z");
        // The lowest tier is kept without a word.
        let mut bronze = Journey::window();
        bronze.event("checkout", "2026-01-10T10:00:00Z", 100);
        let review = bronze.event("tier_review", "2027-01-10T10:00:00Z", 100);
        assert_eq!(review.tier, None);
        assert!(review.triggers.is_empty());
    }

    #[test]
    fn window_tiers_only_move_down_at_a_review() {
        let mut journey = Journey::window();
        journey.event("checkout", "2026-01-10T10:00:00Z", 2500);
        // A return takes 1,500 of the points back: the window no longer reaches gold, but the
        // customer keeps it until the review.
        let reversal = journey.event("checkout_reject", "2026-02-01T10:00:00Z", 1000);
        assert_eq!(reversal.tier, None);
        let status = trigger(&reversal, "TierStatusChanged").data.to_value();
        assert_eq!(status["tier"], "gold");
        assert_eq!(status["points_in_window"], 1000);
        assert_eq!(status["points_needed_to_maintain_tier"], 1000);
        assert_eq!(status["points_above_tier_minimum"], 0);
        assert_eq!(
            status["current_points"], 1000,
            "current_points stays lifetime"
        );
        // Points leaving the window do not demote either.
        let quiet = journey.event("opt_in", "2027-03-01T10:00:00Z", 1000);
        assert_eq!(quiet, Decision::new());
        // With lifetime tiers the same return demotes at once.
        let lifetime = run(customer(1000, Some("gold"), Some(2500)));
        assert_eq!(lifetime.tier.as_deref(), Some("silver"));
    }

    #[test]
    fn window_tiers_move_up_on_window_points() {
        let mut journey = Journey::window();
        journey.event("checkout", "2026-01-10T10:00:00Z", 400);
        assert_eq!(journey.tier.as_deref(), Some("bronze"));
        // Lifetime 2,100, but only 1,700 of it in the window: silver, not gold.
        let up = journey.event("checkout", "2027-02-01T10:00:00Z", 2100);
        assert_eq!(up.tier.as_deref(), Some("silver"));
        let earned = trigger(&up, "TierEarned").data.to_value();
        assert_eq!(earned["old_tier"]["name"], "bronze");
        assert_eq!(earned["points_earned"], 2100);
        assert_eq!(earned["points_in_window"], 1700);
    }

    #[test]
    fn a_new_customer_is_counted_from_the_start() {
        let mut journey = Journey::window();
        let first = journey.event("opt_in", "2026-01-10T10:00:00Z", 0);
        assert_eq!(first.tier.as_deref(), Some("bronze"));
        assert!(first.triggers.is_empty());
        assert_eq!(
            journey.state(),
            json!({"lifetime": 0, "days": [], "earned": [],
                   "as_of": "2026-01-10T10:00:00Z", "points_in_window": 0,
                   "points_needed_to_maintain_tier": 0, "next_tier": "silver",
                   "points_needed_for_next_tier": 500})
        );
        assert_eq!(
            journey.event("opt_in", "2026-01-11T10:00:00Z", 0),
            Decision::new()
        );
    }

    #[test]
    fn a_partly_counted_window_never_demotes_obeyed() {
        // A gold customer of the lifetime days: the plugin starts counting at the review.
        let mut journey = Journey::window();
        journey.tier = Some("gold".to_owned());
        journey.state = Some(tally_sdk::RawJson::from_value(&json!({"lifetime": 3000})));
        journey.events = 12;
        let review = journey.event("tier_review", "2026-06-01T10:00:00Z", 3000);
        assert_eq!(review.tier, None);
        let kept = trigger(&review, "TierKept").data.to_value();
        assert_eq!(kept["window_complete"], false);
        assert_eq!(kept["points_in_window"], 0);
        assert_eq!(
            journey.state()["tracked_from"],
            json!(day("2026-06-02T00:00:00Z"))
        );
        // A year on, the window was counted whole: 100 points do not keep gold.
        journey.event("checkout", "2026-08-01T10:00:00Z", 3100);
        let review = journey.event("tier_review", "2027-06-02T10:00:00Z", 3100);
        assert_eq!(review.tier.as_deref(), Some("bronze"));
        assert_eq!(
            trigger(&review, "TierLost").data.to_value()["points_in_window"],
            100
        );
        assert_eq!(journey.state().get("tracked_from"), None);
    }

    #[test]
    fn a_partly_counted_window_never_demotes_violated() {
        // Seen before (events, but no state): what they have was not earned today.
        let mut journey = Journey::window();
        journey.tier = Some("gold".to_owned());
        journey.events = 3;
        let first = journey.event("checkout", "2026-06-01T10:00:00Z", 3000);
        assert_eq!(first.tier, None);
        assert_eq!(journey.state()["days"], json!([]));
        assert_eq!(journey.state()["points_in_window"], 0);
        let review = journey.event("tier_review", "2026-12-01T10:00:00Z", 3000);
        assert_eq!(review.tier, None, "not a whole window: kept");
        assert_eq!(names(&review), ["TierKept"]);
    }

    #[test]
    fn lifetime_tiers_are_not_reviewed() {
        let review = rule(
            &customer(2500, Some("gold"), Some(2500))
                .config(json!({"qualify_by": "lifetime", "review_window_days": 30}))
                .build(),
        )
        .expect("accepted");
        assert_eq!(review, Decision::new());
        let mut input = customer(2500, Some("gold"), Some(2500)).build();
        input.event.action = "tier_review".to_owned();
        input.event.source = "system".to_owned();
        assert_eq!(rule(&input), Ok(Decision::new()));
    }

    #[test]
    fn bad_window_configs_are_refused() {
        let refused = |config: Value| {
            rule(&customer(0, None, None).config(config).build())
                .expect_err("a bad config is refused")
                .message()
                .to_owned()
        };
        assert!(
            refused(json!({"qualify_by": "window", "review_window_days": 0}))
                .contains("review_window_days is 0")
        );
        assert!(refused(json!({"qualify_by": "rolling"})).contains("qualify_by"));
        assert!(
            refused(json!({"qualify_by": "window", "review_window": 30}))
                .contains("unknown field `review_window`")
        );
        let error = rule(
            &customer(0, None, None)
                .config(json!({"qualify_by": "window"}))
                .state(&json!({"lifetime": 0, "days": [1, 2], "earned": [5]}))
                .build(),
        )
        .expect_err("uneven columns are refused");
        assert!(error.message().contains("2 days but 1 earned"), "{error}");
    }
}
