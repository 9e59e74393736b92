//! Birthday and anniversary rewards, and reminders passed on as triggers: the plugin side of
//! the host's clock.
//!
//! # What it does
//!
//! The host writes these events itself when they fall due (source `system`, timestamp the
//! moment they were due; see the tenant's schedule settings): a tenant cannot post them.
//!
//! - `birthday` `{"birthday": "MM-DD"}` (written when the tenant's schedule has `birthday`
//!   on and the customer has a `birthday` attribute): grants a perk of `perk_kind` whose id is
//!   `<perk_id_prefix>-<year>-<8 characters>` (`BIRTHDAY-2026-7KQ3M9XP`), earns `points`
//!   when set, and sends `BirthdayReward`:
//!
//!   ```json
//!   { "birthday": "11-23", "year": 2026, "points": 0,
//!     "perk": { "kind": "coupon", "id": "BIRTHDAY-2026-7KQ3M9XP",
//!               "data": { "discount_percent": 20 } } }
//!   ```
//!
//!   `year` is the year of the event's timestamp; `birthday` is the event's `data.birthday`
//!   (null when absent); the perk's `data` is `perk_data`, left out when that is empty. The
//!   code's characters come from the event's seed, so a replay of the same event draws the
//!   same code, and two events never share one by design of their ids. Once a year at most:
//!   the plugin remembers the last year it rewarded, and a birthday event of that year or an
//!   earlier one (a duplicate, a replay, a late backfill) does nothing but log.
//! - `anniversary` `{"years": N, "member_since": "..."}` (the date of the customer's first
//!   event, each year): with `anniversary_points` above 0, earns them (reason `anniversary`)
//!   and sends `AnniversaryReward`, once a year at most as for birthdays:
//!
//!   ```json
//!   { "years": 3, "member_since": "2023-05-02T14:10:00Z", "year": 2026, "points": 100 }
//!   ```
//!
//!   `years` and `member_since` are copied from the event's data (null when absent).
//!   With `anniversary_points` at 0 an anniversary does nothing.
//! - `reminder` (`{"reason": "inactivity", "days": N, "last_event_at": "..."}` or
//!   `{"reason": "points_expiring", "days": N, "amount": X, "expires_at": "..."}`): sends
//!   `ReminderDue` whose data is the event's data exactly as the host wrote it, so every
//!   reason the host adds later is passed on too. It grants nothing.
//! - Any other action: nothing. Subscribe it to `birthday`, `anniversary` and `reminder`
//!   (the tenant's `actions` list) so that it does not run on every event for nothing.
//!
//! # Config
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `perk_kind` | `"coupon"` | the kind of the birthday perk (1 to 200 bytes) |
//! | `perk_id_prefix` | `"BIRTHDAY"` | the start of the perk's id, before `-<year>-<code>` (1 to 100 bytes) |
//! | `perk_data` | `{}` | what the perk carries (what the coupon is worth), copied into the perk and `BirthdayReward` |
//! | `points` | `0` | points earned on a birthday (reason `birthday`) |
//! | `anniversary_points` | `0` | points earned on an anniversary (reason `anniversary`); 0 rewards nothing |
//!
//! ```json
//! { "perk_kind": "coupon",
//!   "perk_id_prefix": "BDAY",
//!   "perk_data": { "discount_percent": 20, "valid_days": 30 },
//!   "points": 50,
//!   "anniversary_points": 100 }
//! ```
//!
//! Unknown keys are refused, as are negative points.
//!
//! # State
//!
//! `{"birthday_year": 2026, "anniversary_year": 2025}`: the last year each was rewarded,
//! each absent until the first.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tally_sdk::wire::MAX_NAME_LEN;
use tally_sdk::{Decision, Error, Input, Perk, RawJson, Trigger, log, plugin};

/// Characters of randomness in a perk id.
const CODE_LEN: usize = 8;
/// The longest perk id prefix: leaves the year and the code ample room within a perk id.
const MAX_PREFIX_LEN: usize = MAX_NAME_LEN / 2;

/// The plugin's configuration; see the crate documentation for each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The kind of the birthday perk.
    pub perk_kind: String,
    /// The start of the birthday perk's id.
    pub perk_id_prefix: String,
    /// What the birthday perk carries.
    pub perk_data: Map<String, Value>,
    /// Points earned on a birthday.
    pub points: i64,
    /// Points earned on an anniversary; 0 rewards nothing.
    pub anniversary_points: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            perk_kind: "coupon".to_owned(),
            perk_id_prefix: "BIRTHDAY".to_owned(),
            perk_data: Map::new(),
            points: 0,
            anniversary_points: 0,
        }
    }
}

impl Config {
    fn validate(&self) -> Result<(), Error> {
        if self.perk_kind.trim().is_empty() || self.perk_kind.len() > MAX_NAME_LEN {
            return Err(Error::new(format!(
                "plugin config: perk_kind must be 1 to {MAX_NAME_LEN} bytes"
            )));
        }
        if self.perk_id_prefix.trim().is_empty() || self.perk_id_prefix.len() > MAX_PREFIX_LEN {
            return Err(Error::new(format!(
                "plugin config: perk_id_prefix must be 1 to {MAX_PREFIX_LEN} bytes"
            )));
        }
        for (key, points) in [
            ("points", self.points),
            ("anniversary_points", self.anniversary_points),
        ] {
            if points < 0 {
                return Err(Error::new(format!(
                    "plugin config: {key} is {points}; points cannot be negative"
                )));
            }
        }
        Ok(())
    }
}

/// What the plugin remembers per customer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    /// The last year a birthday was rewarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birthday_year: Option<i32>,
    /// The last year an anniversary was rewarded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anniversary_year: Option<i32>,
}

/// The data of `BirthdayReward`.
#[derive(Debug, Serialize)]
struct BirthdayReward<'a> {
    birthday: Option<&'a str>,
    year: i32,
    points: i64,
    perk: &'a Perk,
}

/// The data of `AnniversaryReward`.
#[derive(Debug, Serialize)]
struct AnniversaryReward<'a> {
    years: Option<&'a Value>,
    member_since: Option<&'a Value>,
    year: i32,
    points: i64,
}

#[plugin]
fn rule(input: &Input) -> Result<Decision, Error> {
    let action = input.event.action.as_str();
    if !matches!(action, "birthday" | "anniversary" | "reminder") {
        return Ok(Decision::new());
    }
    let config: Config = input.config()?;
    config.validate()?;
    match action {
        "birthday" => birthday(input, &config),
        "anniversary" => anniversary(input, &config),
        _ => Ok(reminder(input)),
    }
}

fn birthday(input: &Input, config: &Config) -> Result<Decision, Error> {
    let mut state: State = input.state()?;
    let year = input.event.timestamp.year();
    if let Some(last) = state.birthday_year.filter(|last| *last >= year) {
        log::info(&format!(
            "birthday of {year}: the customer's birthday of {last} was rewarded already"
        ));
        return Ok(Decision::new());
    }
    let birthday = input.event.str_opt("birthday")?;
    let id = format!(
        "{}-{year}-{}",
        config.perk_id_prefix,
        input.rng().code(CODE_LEN)
    );
    let mut perk = Perk::new(&config.perk_kind, id);
    if !config.perk_data.is_empty() {
        perk = perk.with_data(Value::Object(config.perk_data.clone()));
    }
    let reward = BirthdayReward {
        birthday,
        year,
        points: config.points,
        perk: &perk,
    };
    let mut decision = Decision::new().trigger_as("BirthdayReward", &reward)?;
    if config.points > 0 {
        decision = decision.earn(config.points, "birthday");
    }
    state.birthday_year = Some(year);
    decision.perk(perk).state(&state)
}

fn anniversary(input: &Input, config: &Config) -> Result<Decision, Error> {
    if config.anniversary_points == 0 {
        return Ok(Decision::new());
    }
    let mut state: State = input.state()?;
    let year = input.event.timestamp.year();
    if let Some(last) = state.anniversary_year.filter(|last| *last >= year) {
        log::info(&format!(
            "anniversary of {year}: the customer's anniversary of {last} was rewarded already"
        ));
        return Ok(Decision::new());
    }
    let event = &input.event;
    let reward = AnniversaryReward {
        years: event.field("years")?,
        member_since: event.field("member_since")?,
        year,
        points: config.anniversary_points,
    };
    state.anniversary_year = Some(year);
    Decision::new()
        .earn(config.anniversary_points, "anniversary")
        .trigger_as("AnniversaryReward", &reward)?
        .state(&state)
}

/// `ReminderDue` carrying the reminder's data as the host wrote it.
fn reminder(input: &Input) -> Decision {
    let mut decision = Decision::new();
    decision.triggers.push(Trigger {
        name: "ReminderDue".to_owned(),
        data: RawJson::clone(&input.event.data),
    });
    decision
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use serde_json::json;
    use tally_sdk::testing::{self, InputBuilder};
    use tally_sdk::{PointKind, is_internal_action};

    use super::*;

    /// An internal event of `action`, written by the host at `at`.
    fn due(action: &str, data: Value, at: &str) -> InputBuilder {
        assert!(is_internal_action(action), "{action} is the host's");
        testing::input(action, data)
            .timestamp(at)
            .event_id(&format!("system:{action}:customer-1:{at}"))
    }

    fn run(builder: InputBuilder) -> Decision {
        let mut input = builder.build();
        input.event.source = "system".to_owned();
        let decision = rule(&input).expect("the rule accepts the event");
        decision.check().expect("the decision keeps the rules");
        decision
    }

    fn refused(config: Value) -> String {
        rule(
            &due(
                "birthday",
                json!({"birthday": "11-23"}),
                "2026-11-23T09:00:00Z",
            )
            .config(config)
            .build(),
        )
        .expect_err("a bad config is refused")
        .message()
        .to_owned()
    }

    fn birthday_in(year: i32) -> InputBuilder {
        due(
            "birthday",
            json!({"birthday": "11-23"}),
            &format!("{year}-11-23T09:00:00Z"),
        )
    }

    #[test]
    fn a_birthday_grants_a_coupon_and_sends_the_reward() {
        let decision = run(birthday_in(2026).seed(7));
        assert!(decision.points.is_empty(), "no points by default");
        assert_eq!(decision.perks.len(), 1);
        let perk = &decision.perks[0];
        assert_eq!(perk.kind, "coupon");
        let code = perk
            .id
            .strip_prefix("BIRTHDAY-2026-")
            .expect("prefix and year");
        assert_eq!(code.len(), 8);
        assert_eq!(perk.data, Value::Null);
        assert_eq!(decision.triggers.len(), 1);
        assert_eq!(decision.triggers[0].name, "BirthdayReward");
        assert_eq!(
            decision.triggers[0].data.to_value(),
            json!({"birthday": "11-23", "year": 2026, "points": 0,
                   "perk": {"kind": "coupon", "id": perk.id}})
        );
        assert_eq!(
            testing::state_of::<State>(&decision),
            State {
                birthday_year: Some(2026),
                anniversary_year: None
            }
        );
        // The same event draws the same code; another event another one.
        assert_eq!(run(birthday_in(2026).seed(7)).perks[0].id, perk.id);
        assert_ne!(run(birthday_in(2026).seed(8)).perks[0].id, perk.id);
    }

    #[test]
    fn a_birthday_with_points_and_perk_data() {
        let decision = run(birthday_in(2026).config(json!({
            "perk_kind": "reward", "perk_id_prefix": "BDAY", "points": 50,
            "perk_data": {"discount_percent": 20}
        })));
        assert_eq!(decision.points.len(), 1);
        assert_eq!(decision.points[0].amount, 50);
        assert_eq!(decision.points[0].kind(), PointKind::Earn);
        assert_eq!(decision.points[0].reason, "birthday");
        let perk = &decision.perks[0];
        assert_eq!(perk.kind, "reward");
        assert!(perk.id.starts_with("BDAY-2026-"));
        assert_eq!(perk.data, json!({"discount_percent": 20}));
        let reward = decision.triggers[0].data.to_value();
        assert_eq!(reward["points"], 50);
        assert_eq!(reward["perk"]["data"], json!({"discount_percent": 20}));
    }

    #[test]
    fn once_a_year_obeyed() {
        let first = run(birthday_in(2026));
        let state = testing::state_of::<State>(&first);
        // Next year's birthday is rewarded again.
        let next = run(birthday_in(2027).state(&state));
        assert_eq!(next.perks.len(), 1);
        assert_eq!(testing::state_of::<State>(&next).birthday_year, Some(2027));
    }

    #[test]
    fn once_a_year_violated() {
        let first = run(birthday_in(2026));
        let state = testing::state_of::<State>(&first);
        // A duplicate the same year (another id, another time of day), or a late one of an
        // earlier year, grants nothing.
        let again = run(due(
            "birthday",
            json!({"birthday": "11-23"}),
            "2026-12-01T09:00:00Z",
        )
        .state(&state));
        assert_eq!(again, Decision::new());
        assert_eq!(run(birthday_in(2025).state(&state)), Decision::new());
    }

    #[test]
    fn an_anniversary_earns_its_points_once_a_year() {
        let anniversary = |at: &str| {
            due(
                "anniversary",
                json!({"years": 3, "member_since": "2023-05-02T14:10:00Z"}),
                at,
            )
            .config(json!({"anniversary_points": 100}))
        };
        let decision = run(anniversary("2026-05-02T09:00:00Z"));
        assert_eq!(decision.points_total(), 100);
        assert_eq!(decision.points[0].reason, "anniversary");
        assert!(decision.perks.is_empty());
        assert_eq!(decision.triggers[0].name, "AnniversaryReward");
        assert_eq!(
            decision.triggers[0].data.to_value(),
            json!({"years": 3, "member_since": "2023-05-02T14:10:00Z", "year": 2026,
                   "points": 100})
        );
        let state = testing::state_of::<State>(&decision);
        assert_eq!(state.anniversary_year, Some(2026));
        assert_eq!(
            run(anniversary("2026-05-02T09:00:01Z").state(&state)),
            Decision::new()
        );
        // Birthdays and anniversaries are counted apart.
        let birthday = run(birthday_in(2026).state(&state));
        assert_eq!(
            testing::state_of::<State>(&birthday),
            State {
                birthday_year: Some(2026),
                anniversary_year: Some(2026)
            }
        );
        // Without anniversary_points an anniversary rewards nothing.
        let plain = run(due(
            "anniversary",
            json!({"years": 1, "member_since": "2025-05-02T14:10:00Z"}),
            "2026-05-02T09:00:00Z",
        ));
        assert_eq!(plain, Decision::new());
    }

    #[test]
    fn reminders_are_passed_on() {
        for data in [
            json!({"reason": "inactivity", "days": 90, "last_event_at": "2026-08-25T10:00:00Z"}),
            json!({"reason": "points_expiring", "days": 14, "amount": 120,
                   "expires_at": "2026-12-07T09:00:00Z"}),
        ] {
            let decision = run(due("reminder", data.clone(), "2026-11-23T09:00:00Z"));
            assert!(decision.points.is_empty() && decision.perks.is_empty());
            assert_eq!(decision.state, None);
            assert_eq!(decision.triggers.len(), 1);
            assert_eq!(decision.triggers[0].name, "ReminderDue");
            assert_eq!(decision.triggers[0].data.to_value(), data);
        }
    }

    #[test]
    fn other_actions_are_ignored_even_with_a_broken_config() {
        for action in ["checkout", "point_expire", "points_release", "tier_review"] {
            let decision = run(testing::input(action, json!({})).config(json!({"points": "x"})));
            assert_eq!(decision, Decision::new(), "{action}");
        }
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(refused(json!({"point": 5})).contains("unknown field `point`"));
        assert!(refused(json!({"points": -5})).contains("points is -5"));
        assert!(refused(json!({"anniversary_points": -1})).contains("anniversary_points is -1"));
        assert!(refused(json!({"perk_kind": " "})).contains("perk_kind"));
        assert!(refused(json!({"perk_id_prefix": ""})).contains("perk_id_prefix"));
        assert!(refused(json!({"perk_id_prefix": "x".repeat(101)})).contains("perk_id_prefix"));
        assert!(refused(json!({"perk_data": [1]})).contains("perk_data"));
    }

    #[test]
    fn a_bad_birthday_field_is_refused() {
        let error = rule(
            &due(
                "birthday",
                json!({"birthday": 1123}),
                "2026-11-23T09:00:00Z",
            )
            .build(),
        )
        .expect_err("a birthday that is not text");
        assert!(error.message().contains("data.birthday"), "{error}");
    }
}
