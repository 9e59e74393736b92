//! Engagement values for interactions, and rewards for swims, reviews and referrals.
//!
//! # What it does
//!
//! Like Sitecore xConnect scoring interactions from non-web systems, every interaction has an
//! engagement value (`engagement_values`, by action). An interaction worth more than 0 adds
//! its value to the customer's running engagement total, kept in the plugin's state, and
//! sends `EngagementScored` `{"action", "value", "total"}`. Engagement measures activity, so
//! it is scored even for an interaction whose points reward is capped or refused below.
//!
//! Three actions also earn points:
//!
//! - `swim` (Sitecore's swim app: `{distance, duration, pace, club, personalRecord}`, the flag
//!   also accepted as `personal_record`): `floor(distance × swim_points_per_distance)`, in
//!   whatever unit the app sends, plus `personal_record_bonus` (as its own ledger entry) and a
//!   `PersonalRecord` trigger `{distance, duration, pace, club, timestamp, bonus_points}` when
//!   the swim is a personal record. `distance` is required.
//! - `review`: `review_points`, plus `review_photo_bonus` with a photo (`has_photo` true, a
//!   non-empty `photo_url` / `image_url`, or a non-empty `photos` / `images` list), plus
//!   `review_long_text_bonus` when the text (`text` or `content`) has more than
//!   `review_long_text_chars` characters. At most `max_reviews_per_day` reviews earn points
//!   per calendar day (UTC) of the event's timestamp.
//! - `referral`: `referral_points` for the referrer, and a `ReferralCompleted` trigger with
//!   the referred friend's `referred_email`, `referred_first_name`, `referred_last_name`,
//!   `referred_name` and `referred_customer`, those present. A friend is rewarded once: a
//!   second referral with the same `referred_email` (case-insensitive) earns nothing and
//!   sends nothing, and neither does referring the customer's own email (their
//!   `attributes.email`).
//!
//! # Config
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `engagement_values` | see below | action → engagement value, merged over the defaults |
//! | `default_engagement_value` | `0` | value of actions not in `engagement_values` |
//! | `swim_points_per_distance` | `0.01` | points per unit of `distance` (1 per 100 m) |
//! | `personal_record_bonus` | `100` | extra points for a personal-record swim |
//! | `review_points` | `10` | points for a review |
//! | `review_photo_bonus` | `10` | extra points for a review with a photo |
//! | `review_long_text_bonus` | `5` | extra points for a review with a long text |
//! | `review_long_text_chars` | `200` | characters a text must exceed to be long |
//! | `max_reviews_per_day` | `3` | reviews rewarded per day; `null` for no limit |
//! | `referral_points` | `100` | points for referring a friend |
//!
//! Default engagement values: `app_open` 1, `wishlist` 5, `review` 10, `survey` 10, `swim` 20,
//! `referral` 50. Setting an action to 0 stops scoring it.
//!
//! ```json
//! { "engagement_values": { "swim": 30, "checkout": 15, "app_open": 0 },
//!   "swim_points_per_distance": 0.02,
//!   "personal_record_bonus": 250,
//!   "max_reviews_per_day": 1 }
//! ```
//!
//! # State
//!
//! `{"engagement_total": n, "review_days": {"2026-11-23": 2}, "referred": ["<hash>"]}`:
//! the running total, rewarded reviews for the last 7 days seen, and hashes (not the
//! addresses) of the last 200 referred emails.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tally_sdk::{Decimal, Decision, Error, Event, Input, log, plugin};

/// Days of review counts kept: enough for events arriving a few days late.
const REVIEW_DAYS_KEPT: usize = 7;
/// Referred emails remembered to reward each friend once.
const REFERRALS_KEPT: usize = 200;
/// The friend's fields a `ReferralCompleted` trigger passes on.
const REFERRED_FIELDS: [&str; 5] = [
    "referred_email",
    "referred_first_name",
    "referred_last_name",
    "referred_name",
    "referred_customer",
];

/// The plugin's configuration; see the crate documentation for each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Action → engagement value, over the defaults.
    pub engagement_values: BTreeMap<String, i64>,
    /// Engagement value of other actions.
    pub default_engagement_value: i64,
    /// Points per unit of swim distance.
    pub swim_points_per_distance: Decimal,
    /// Extra points for a personal record.
    pub personal_record_bonus: i64,
    /// Points for a review.
    pub review_points: i64,
    /// Extra points for a review with a photo.
    pub review_photo_bonus: i64,
    /// Extra points for a review with a long text.
    pub review_long_text_bonus: i64,
    /// Characters a review text must exceed to be long.
    pub review_long_text_chars: usize,
    /// Reviews rewarded per calendar day; `None` for no limit.
    pub max_reviews_per_day: Option<u32>,
    /// Points for a referral.
    pub referral_points: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            engagement_values: BTreeMap::new(),
            default_engagement_value: 0,
            // 0.01: scale 2 is within the SDK's maximum, so the fallback is never taken.
            swim_points_per_distance: Decimal::new(1, 2).unwrap_or(Decimal::ZERO),
            personal_record_bonus: 100,
            review_points: 10,
            review_photo_bonus: 10,
            review_long_text_bonus: 5,
            review_long_text_chars: 200,
            max_reviews_per_day: Some(3),
            referral_points: 100,
        }
    }
}

/// Engagement values when the config does not set them.
const DEFAULT_ENGAGEMENT: [(&str, i64); 6] = [
    ("app_open", 1),
    ("wishlist", 5),
    ("review", 10),
    ("survey", 10),
    ("swim", 20),
    ("referral", 50),
];

impl Config {
    fn validate(&self) -> Result<(), Error> {
        let counts = [
            ("default_engagement_value", self.default_engagement_value),
            ("personal_record_bonus", self.personal_record_bonus),
            ("review_points", self.review_points),
            ("review_photo_bonus", self.review_photo_bonus),
            ("review_long_text_bonus", self.review_long_text_bonus),
            ("referral_points", self.referral_points),
        ];
        if let Some((key, value)) = counts.iter().find(|(_, value)| *value < 0) {
            return Err(Error::new(format!(
                "plugin config: {key} is {value}; it cannot be negative"
            )));
        }
        if let Some((action, value)) = self.engagement_values.iter().find(|(_, value)| **value < 0)
        {
            return Err(Error::new(format!(
                "plugin config: engagement_values.{action} is {value}; it cannot be negative"
            )));
        }
        if self.swim_points_per_distance.is_negative() {
            return Err(Error::new(format!(
                "plugin config: swim_points_per_distance is {}; it cannot be negative",
                self.swim_points_per_distance
            )));
        }
        Ok(())
    }

    fn engagement_value(&self, action: &str) -> i64 {
        self.engagement_values
            .get(action)
            .copied()
            .or_else(|| {
                DEFAULT_ENGAGEMENT
                    .iter()
                    .find(|(name, _)| *name == action)
                    .map(|(_, value)| *value)
            })
            .unwrap_or(self.default_engagement_value)
    }
}

/// What the plugin remembers per customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The running engagement total.
    #[serde(default)]
    pub engagement_total: i64,
    /// Rewarded reviews per calendar day (`YYYY-MM-DD`), the most recent days only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub review_days: BTreeMap<String, u32>,
    /// Hashes of referred emails, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referred: Vec<String>,
}

#[plugin]
fn rule(input: &Input) -> Result<Decision, Error> {
    let config: Config = input.config()?;
    config.validate()?;
    let action = input.event.action.as_str();
    let value = config.engagement_value(action);
    if value == 0 && !matches!(action, "swim" | "review" | "referral") {
        return Ok(Decision::new());
    }
    let mut state: State = input.state()?;
    let before = state.clone();
    let mut decision = match action {
        "swim" => swim(&input.event, &config)?,
        "review" => review(&input.event, &config, &mut state)?,
        "referral" => referral(input, &config, &mut state)?,
        _ => Decision::new(),
    };
    if value > 0 {
        state.engagement_total = state.engagement_total.saturating_add(value);
        decision = decision.trigger(
            "EngagementScored",
            json!({"action": action, "value": value, "total": state.engagement_total}),
        );
    }
    if state != before {
        decision = decision.state(&state)?;
    }
    Ok(decision)
}

fn swim(event: &Event, config: &Config) -> Result<Decision, Error> {
    let distance = event.decimal("distance")?;
    if distance.is_negative() {
        return Err(Error::new(format!(
            "event data.distance is {distance}; it cannot be negative"
        )));
    }
    let mut decision = Decision::new();
    let points = distance
        .checked_mul(config.swim_points_per_distance)?
        .floor()?;
    if points > 0 {
        decision = decision.earn(points, "swim");
    }
    let record = match event.bool_opt("personalRecord")? {
        Some(flag) => flag,
        None => event.bool_opt("personal_record")?.unwrap_or(false),
    };
    if record {
        if config.personal_record_bonus > 0 {
            decision = decision.earn(config.personal_record_bonus, "personal_record");
        }
        let mut data = Map::new();
        for field in ["distance", "duration", "pace", "club"] {
            if let Some(value) = event.field(field)? {
                data.insert(field.to_owned(), value.clone());
            }
        }
        data.insert("timestamp".to_owned(), json!(event.timestamp));
        data.insert(
            "bonus_points".to_owned(),
            json!(config.personal_record_bonus),
        );
        decision = decision.trigger("PersonalRecord", Value::Object(data));
    }
    Ok(decision)
}

fn review(event: &Event, config: &Config, state: &mut State) -> Result<Decision, Error> {
    let day = event.timestamp.date_string();
    let rewarded_today = state.review_days.get(&day).copied().unwrap_or(0);
    if let Some(max) = config.max_reviews_per_day
        && rewarded_today >= max
    {
        log::info(&format!(
            "{rewarded_today} reviews were already rewarded on {day}, the most allowed: no points"
        ));
        return Ok(Decision::new());
    }
    let mut points = config.review_points;
    if has_photo(event)? {
        points = points.saturating_add(config.review_photo_bonus);
    }
    let text = match event.str_opt("text")? {
        Some(text) => Some(text),
        None => event.str_opt("content")?,
    };
    if text.is_some_and(|text| text.trim().chars().count() > config.review_long_text_chars) {
        points = points.saturating_add(config.review_long_text_bonus);
    }
    state
        .review_days
        .insert(day, rewarded_today.saturating_add(1));
    // Dates as YYYY-MM-DD sort in time order, so the first keys are the oldest days.
    while state.review_days.len() > REVIEW_DAYS_KEPT {
        state.review_days.pop_first();
    }
    Ok(if points > 0 {
        Decision::new().earn(points, "review")
    } else {
        Decision::new()
    })
}

fn has_photo(event: &Event) -> Result<bool, Error> {
    if event.bool_opt("has_photo")?.unwrap_or(false) {
        return Ok(true);
    }
    for field in ["photo_url", "image_url"] {
        if event
            .str_opt(field)?
            .is_some_and(|url| !url.trim().is_empty())
        {
            return Ok(true);
        }
    }
    for field in ["photos", "images"] {
        if let Some(Value::Array(photos)) = event.field(field)?
            && !photos.is_empty()
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn referral(input: &Input, config: &Config, state: &mut State) -> Result<Decision, Error> {
    let event = &input.event;
    let email = event
        .str_opt("referred_email")?
        .map(|email| email.trim().to_lowercase())
        .filter(|email| !email.is_empty());
    if let Some(email) = &email {
        let own = input
            .customer
            .attributes
            .get("email")
            .and_then(Value::as_str)
            .map(|own| own.trim().to_lowercase());
        if own.as_deref() == Some(email.as_str()) {
            log::warn("a customer referred their own email: no reward");
            return Ok(Decision::new());
        }
        let hash = email_hash(email);
        if state.referred.contains(&hash) {
            log::warn("this friend was referred before: no reward");
            return Ok(Decision::new());
        }
        state.referred.push(hash);
        if state.referred.len() > REFERRALS_KEPT {
            state.referred.remove(0);
        }
    }
    let mut friend = Map::new();
    for field in REFERRED_FIELDS {
        if let Some(value) = event.field(field)? {
            friend.insert(field.to_owned(), value.clone());
        }
    }
    let mut decision = Decision::new().trigger("ReferralCompleted", Value::Object(friend));
    if config.referral_points > 0 {
        decision = decision.earn(config.referral_points, "referral");
    }
    Ok(decision)
}

/// FNV-1a, 64 bits, as hex: stable across builds and Rust versions (std's hasher is not), and
/// keeps the friend's address itself out of the customer's plugin state.
fn email_hash(email: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in email.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use serde_json::json;
    use tally_sdk::testing::{self, InputBuilder};
    use tally_sdk::{Customer, Trigger};

    use super::*;

    fn run(builder: InputBuilder) -> Decision {
        let decision = rule(&builder.build()).expect("the rule accepts the event");
        decision.check().expect("the decision keeps the rules");
        decision
    }

    fn refused(builder: InputBuilder) -> String {
        rule(&builder.build())
            .expect_err("the rule refuses the event")
            .message()
            .to_owned()
    }

    fn trigger<'a>(decision: &'a Decision, name: &str) -> Option<&'a Trigger> {
        decision
            .triggers
            .iter()
            .find(|trigger| trigger.name == name)
    }

    fn reasons(decision: &Decision) -> Vec<(&str, i64)> {
        decision
            .points
            .iter()
            .map(|entry| (entry.reason.as_str(), entry.amount))
            .collect()
    }

    #[test]
    fn interactions_are_scored_and_totalled() {
        let decision = run(
            testing::input("wishlist", json!({"productSku": "A"})).state(&State {
                engagement_total: 40,
                ..State::default()
            }),
        );
        assert!(decision.points.is_empty());
        assert_eq!(
            trigger(&decision, "EngagementScored")
                .expect("scored")
                .data
                .to_value(),
            json!({"action": "wishlist", "value": 5, "total": 45})
        );
        assert_eq!(testing::state_of::<State>(&decision).engagement_total, 45);
    }

    #[test]
    fn unscored_actions_decide_nothing() {
        assert_eq!(
            run(testing::input("checkout", json!({"total": 1}))),
            Decision::new()
        );
    }

    #[test]
    fn engagement_values_merge_over_the_defaults() {
        let config = json!({"engagement_values": {"checkout": 15, "app_open": 0},
                            "default_engagement_value": 2});
        let value = |action: &str| {
            let decision =
                run(testing::input(action, json!({"distance": 0})).config(config.clone()));
            trigger(&decision, "EngagementScored")
                .map(|scored| scored.data.to_value()["value"].clone())
        };
        assert_eq!(value("checkout"), Some(json!(15)));
        assert_eq!(value("wishlist"), Some(json!(5)), "defaults stay");
        assert_eq!(value("app_open"), None, "0 stops scoring");
        assert_eq!(value("login"), Some(json!(2)));
    }

    #[test]
    fn sitecore_swim_earns_by_distance() {
        let decision = run(testing::input(
            "swim",
            json!({"distance": 1650, "duration": "00:32:10", "pace": "1:57/100m",
                   "club": "USMS Boston", "personalRecord": false}),
        ));
        assert_eq!(reasons(&decision), [("swim", 16)]);
        assert!(trigger(&decision, "PersonalRecord").is_none());
        assert_eq!(
            trigger(&decision, "EngagementScored")
                .expect("scored")
                .data
                .to_value()["value"],
            20
        );
    }

    #[test]
    fn a_personal_record_earns_a_bonus_and_a_trigger() {
        for flag in ["personalRecord", "personal_record"] {
            let decision = run(testing::input(
                "swim",
                json!({"distance": "400", "duration": 600, "club": "Masters", flag: "true"}),
            )
            .timestamp("2026-11-23T07:30:00Z"));
            assert_eq!(
                reasons(&decision),
                [("swim", 4), ("personal_record", 100)],
                "{flag}"
            );
            assert_eq!(
                trigger(&decision, "PersonalRecord")
                    .expect("a record")
                    .data
                    .to_value(),
                json!({"distance": "400", "duration": 600, "club": "Masters",
                       "timestamp": "2026-11-23T07:30:00Z", "bonus_points": 100})
            );
        }
    }

    #[test]
    fn swim_config_and_refusals() {
        let decision = run(testing::input(
            "swim",
            json!({"distance": 1000, "personalRecord": true}),
        )
        .config(json!({"swim_points_per_distance": "0.1", "personal_record_bonus": 0})));
        assert_eq!(reasons(&decision), [("swim", 100)]);
        assert!(trigger(&decision, "PersonalRecord").is_some());
        assert_eq!(
            refused(testing::input("swim", json!({"duration": 60}))),
            "event data.distance is missing"
        );
        assert!(refused(testing::input("swim", json!({"distance": -5}))).contains("negative"));
        assert!(
            refused(testing::input(
                "swim",
                json!({"distance": 5, "personalRecord": 1})
            ))
            .contains("personalRecord")
        );
    }

    #[test]
    fn review_points_with_photo_and_long_text() {
        let points = |data: Value| run(testing::input("review", data)).points_total();
        assert_eq!(points(json!({"text": "Nice"})), 10);
        assert_eq!(points(json!({"has_photo": "true"})), 20);
        assert_eq!(points(json!({"photo_url": "https://x/y.jpg"})), 20);
        assert_eq!(points(json!({"photos": ["a.jpg"]})), 20);
        assert_eq!(points(json!({"photos": [], "photo_url": " "})), 10);
        assert_eq!(
            points(json!({"text": "é".repeat(201)})),
            15,
            "characters, not bytes"
        );
        assert_eq!(
            points(json!({"content": "x".repeat(200)})),
            10,
            "over, not at"
        );
        assert_eq!(
            points(json!({"text": "x".repeat(300), "images": ["a"]})),
            25
        );
    }

    #[test]
    fn reviews_are_capped_per_calendar_day() {
        let mut state = State::default();
        let mut earned = Vec::new();
        for timestamp in [
            "2026-11-23T08:00:00Z",
            "2026-11-23T12:00:00Z",
            "2026-11-23T23:59:59Z",
            "2026-11-23T23:59:59Z",
            "2026-11-24T00:00:00Z",
            "2026-11-23T15:00:00Z",
        ] {
            let decision = run(testing::input("review", json!({}))
                .config(json!({"max_reviews_per_day": 3}))
                .timestamp(timestamp)
                .state(&state));
            state = testing::state_of::<State>(&decision);
            earned.push(decision.points_total());
        }
        assert_eq!(earned, [10, 10, 10, 0, 10, 0]);
        assert_eq!(state.engagement_total, 60, "every review is engagement");
        assert_eq!(state.review_days["2026-11-23"], 3);
        assert_eq!(state.review_days["2026-11-24"], 1);
    }

    #[test]
    fn review_limit_can_be_lifted_and_days_are_bounded() {
        let mut state = State::default();
        for day in 1..=20 {
            let decision = run(testing::input("review", json!({}))
                .config(json!({"max_reviews_per_day": null}))
                .timestamp(&format!("2026-11-{day:02}T10:00:00Z"))
                .state(&state));
            assert_eq!(decision.points_total(), 10);
            state = testing::state_of::<State>(&decision);
        }
        assert_eq!(state.review_days.len(), REVIEW_DAYS_KEPT);
        assert!(state.review_days.contains_key("2026-11-20"));
        assert!(!state.review_days.contains_key("2026-11-13"));
    }

    #[test]
    fn referral_rewards_the_referrer_once_per_friend() {
        let friend = json!({"referred_email": "Ann@Example.com", "referred_first_name": "Ann",
                            "referred_last_name": "Lee", "campaign": "x"});
        let first = run(testing::input("referral", friend));
        assert_eq!(reasons(&first), [("referral", 100)]);
        assert_eq!(
            trigger(&first, "ReferralCompleted")
                .expect("completed")
                .data
                .to_value(),
            json!({"referred_email": "Ann@Example.com", "referred_first_name": "Ann",
                   "referred_last_name": "Lee"})
        );
        let state = testing::state_of::<State>(&first);
        assert_eq!(state.referred.len(), 1);
        assert!(!state.referred[0].contains('@'), "no address in state");

        let again = run(
            testing::input("referral", json!({"referred_email": " ann@example.COM"})).state(&state),
        );
        assert!(again.points.is_empty());
        assert!(trigger(&again, "ReferralCompleted").is_none());
        assert!(
            trigger(&again, "EngagementScored").is_some(),
            "still an interaction"
        );
    }

    #[test]
    fn referral_without_friend_fields_and_self_referral() {
        let anonymous = run(testing::input("referral", json!({})));
        assert_eq!(anonymous.points_total(), 100);
        assert_eq!(
            trigger(&anonymous, "ReferralCompleted")
                .expect("completed")
                .data
                .to_value(),
            json!({})
        );

        let mut attributes = Map::new();
        attributes.insert("email".to_owned(), json!("me@example.com"));
        let me = Customer {
            id: "c1".to_owned(),
            attributes,
            ..Customer::default()
        };
        let selfish = run(
            testing::input("referral", json!({"referred_email": "ME@example.com"})).customer(me),
        );
        assert!(selfish.points.is_empty());
        assert!(trigger(&selfish, "ReferralCompleted").is_none());
    }

    #[test]
    fn remembered_referrals_are_bounded() {
        let state = State {
            referred: (0..REFERRALS_KEPT).map(|n| format!("{n:016x}")).collect(),
            ..State::default()
        };
        let decision =
            run(testing::input("referral", json!({"referred_email": "new@x.io"})).state(&state));
        let referred = testing::state_of::<State>(&decision).referred;
        assert_eq!(referred.len(), REFERRALS_KEPT);
        assert_eq!(referred[0], format!("{:016x}", 1));
        assert_eq!(referred.last(), Some(&email_hash("new@x.io")));
    }

    #[test]
    fn email_hash_is_stable() {
        // FNV-1a test vectors: the state written today must match tomorrow's build.
        assert_eq!(email_hash(""), "cbf29ce484222325");
        assert_eq!(email_hash("a"), "af63dc4c8601ec8c");
    }

    #[test]
    fn bad_configs_are_refused() {
        let refused = |config: Value| refused(testing::input("wishlist", json!({})).config(config));
        assert!(refused(json!({"review_points": -1})).contains("review_points is -1"));
        assert!(
            refused(json!({"engagement_values": {"swim": -3}}))
                .contains("engagement_values.swim is -3")
        );
        assert!(refused(json!({"swim_points_per_distance": -1})).contains("cannot be negative"));
        assert!(refused(json!({"max_reviews": 1})).contains("unknown field `max_reviews`"));
    }
}
