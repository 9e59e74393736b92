//! Tiers from lifetime points, with Yotpo-style tier notifications.
//!
//! # What it does
//!
//! On every event, whatever its action, the customer's tier is the highest configured tier
//! whose `min_lifetime` their lifetime points reach. Run it after the plugins that award
//! points: it reads `customer.points.lifetime` as they left it, so a purchase that crosses a
//! threshold promotes the customer in the same event.
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
//! # State
//!
//! `{"lifetime": n}`: the lifetime points this plugin last saw for the customer.

use serde::{Deserialize, Serialize};
use tally_sdk::wire::MAX_NAME_LEN;
use tally_sdk::{Decimal, Decision, Error, Input, log, plugin};

/// The plugin's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Tiers in ascending order of `min_lifetime`.
    pub tiers: Vec<Tier>,
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
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), Error> {
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

    /// A move from `old_tier` to the tier at `index`, with the customer's lifetime points.
    fn change<'a>(
        &'a self,
        index: usize,
        old_tier: Option<Described<'a>>,
        points_earned: i64,
    ) -> TierChange<'a> {
        TierChange {
            new_tier: self.describe(index),
            old_tier,
            points_earned,
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

/// The data of `TierEarned` and `TierLost`.
#[derive(Debug, Serialize)]
struct TierChange<'a> {
    new_tier: Described<'a>,
    old_tier: Option<Described<'a>>,
    points_earned: i64,
}

/// The data of `TierStatusChanged`.
#[derive(Debug, Serialize)]
struct TierStatus<'a> {
    current_points: i64,
    next_tier: Option<&'a str>,
    points_above_tier_minimum: i64,
    points_needed_for_next_tier: Option<i64>,
    points_needed_to_maintain_tier: i64,
    previous_points: i64,
    progress_percent: i64,
    tier: &'a str,
    tier_rank: usize,
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
    let state: State = input.state()?;
    let lifetime = input.customer.points.lifetime;
    let index = config.tier_for(lifetime);
    let new_tier = &config.tiers[index];

    let mut decision = Decision::new();
    match input.customer.tier.as_deref() {
        Some(current) if current == new_tier.name => {}
        Some(current) => {
            decision = decision.tier(&new_tier.name);
            let change = |old_tier| config.change(index, Some(old_tier), lifetime);
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
                decision =
                    decision.trigger_as("TierEarned", &config.change(index, None, lifetime))?;
            }
        }
    }

    // A customer this plugin has not seen had, as far as it knows, no points: one migrated
    // with points gets a status on their first event, a new one with none does not.
    let previous = state.lifetime.unwrap_or(0);
    if lifetime != previous {
        decision = decision
            .trigger_as(
                "TierStatusChanged",
                &status(&config, index, lifetime, previous),
            )?
            .state(&State {
                lifetime: Some(lifetime),
            })?;
    }
    Ok(decision)
}

fn status(config: &Config, index: usize, lifetime: i64, previous: i64) -> TierStatus<'_> {
    let tier = &config.tiers[index];
    let next = config.tiers.get(index + 1);
    let progress = match next {
        None => 100,
        Some(next) => {
            // i128: thresholds and points are i64, and their differences and products must
            // not overflow on a hostile config.
            let done = i128::from(lifetime) - i128::from(tier.min_lifetime);
            let span = i128::from(next.min_lifetime) - i128::from(tier.min_lifetime);
            // Clamped to 0..=100, so it fits.
            i64::try_from((done * 100 / span).clamp(0, 100)).unwrap_or(100)
        }
    };
    TierStatus {
        current_points: lifetime,
        next_tier: next.map(|next| next.name.as_str()),
        points_above_tier_minimum: lifetime.saturating_sub(tier.min_lifetime).max(0),
        points_needed_for_next_tier: next
            .map(|next| next.min_lifetime.saturating_sub(lifetime).max(0)),
        points_needed_to_maintain_tier: tier.min_lifetime.saturating_sub(lifetime).max(0),
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
}
