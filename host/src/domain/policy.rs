//! The tenant's settings that the account's rules read: the balance rule, when earned points
//! expire, and which moments of a customer's life the host's clock turns into events.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tally_sdk::Timestamp;
use tally_sdk::time::days_in_month_of;

/// The tenant's settings the account's rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Whether a decision may take a customer's balance below zero. Off by default: a
    /// customer cannot spend points they do not have, and a return cannot take back more than
    /// is left; a plugin that wants otherwise caps its own amounts, or the tenant turns this
    /// on (some programs let a return after a redemption leave a debt).
    pub allow_negative_balance: bool,
    /// When earned points expire if the decision that earned them gave no date.
    pub expiry: PointsExpiry,
    /// The daily moments the clock writes events for.
    pub schedule: Schedule,
    /// Whether only members (customers who opted in and did not opt out) earn points: a
    /// decision that would earn for anyone else is refused (`not_a_member`).
    pub membership_required: bool,
}

impl Policy {
    /// A new tenant's: no negative balances, no expiry, nothing daily.
    pub const DEFAULT: Policy = Policy {
        allow_negative_balance: false,
        expiry: PointsExpiry::None,
        schedule: Schedule::DEFAULT,
        membership_required: false,
    };
}

impl Default for Policy {
    fn default() -> Policy {
        Policy::DEFAULT
    }
}

/// When earned points expire, for entries whose decision gave no `expires_at` (Antavo's
/// fixed and dynamic expiry). JSON: `{"policy": "none"}`, `{"policy": "days_after_earning",
/// "days": 365}`, `{"policy": "end_of_period", "period": "year", "months": 12}`,
/// `{"policy": "last_activity", "days": 365}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum PointsExpiry {
    /// Points never expire.
    #[default]
    None,
    /// Each lot expires `days` days after the event that earned it.
    DaysAfterEarning {
        /// Days from the earning event.
        days: u32,
    },
    /// Each lot expires at the end of the calendar `period` in which the moment `months`
    /// months after earning falls: "earned in 2026, expires at the end of 2027" is
    /// `{"period": "year", "months": 12}`.
    EndOfPeriod {
        /// The calendar period whose end is the expiry.
        period: Period,
        /// Months after earning.
        months: u32,
    },
    /// Every lot expires `days` days after the customer's last event from outside the host,
    /// so any activity pushes all of them back.
    LastActivity {
        /// Days after the last activity.
        days: u32,
    },
}

/// A calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// A calendar month.
    Month,
    /// A calendar quarter (January-March, ...).
    Quarter,
    /// A calendar year.
    Year,
}

impl PointsExpiry {
    /// The expiry of points earned at `earned` that is fixed when they are earned; `None` for
    /// no expiry and for last-activity expiry, which moves (see [`PointsExpiry::deadline`]).
    pub fn fixed(self, earned: Timestamp) -> Option<Timestamp> {
        match self {
            PointsExpiry::None | PointsExpiry::LastActivity { .. } => None,
            PointsExpiry::DaysAfterEarning { days } => Some(earned.plus_days(i64::from(days))),
            PointsExpiry::EndOfPeriod { period, months } => {
                Some(end_of_period(earned, period, months))
            }
        }
    }

    /// When every lot without a date of its own expires under last-activity expiry, given
    /// the customer's last activity.
    pub fn deadline(self, last_activity: Option<Timestamp>) -> Option<Timestamp> {
        match self {
            PointsExpiry::LastActivity { days } => {
                last_activity.map(|last| last.plus_days(i64::from(days)))
            }
            _ => None,
        }
    }
}

/// The first moment after the calendar `period` that holds `earned` moved `months` months on.
fn end_of_period(earned: Timestamp, period: Period, months: u32) -> Timestamp {
    let (year, month, _) = earned.date();
    // Months counted from year 0, so adding and splitting back is plain arithmetic.
    let moved = i64::from(year) * 12 + i64::from(month - 1) + i64::from(months);
    let (year, month0) = (moved.div_euclid(12), moved.rem_euclid(12));
    let first_month_after = match period {
        Period::Month => month0 + 1,
        Period::Quarter => (month0 / 3 + 1) * 3,
        Period::Year => 12,
    };
    let next = year * 12 + first_month_after;
    let (year, month) = (next.div_euclid(12), next.rem_euclid(12) + 1);
    i32::try_from(year)
        .ok()
        .and_then(|year| Timestamp::from_date(year, month as u32, 1))
        .unwrap_or(Timestamp::from_unix_seconds(i64::MAX))
}

/// Which moments of a customer's life the host's clock writes events for, and at what time
/// of day (Yotpo/Rule's daily triggers). Points expiry and holds ending are written at the
/// moment they fall due whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// The time of day, UTC, at which daily events (birthday, anniversary, reminders) are
    /// due: `"09:00"`.
    pub daily_at: TimeOfDay,
    /// A `birthday` event on the customer's birthday (their `birthday` attribute).
    pub birthday: bool,
    /// An `anniversary` event each year on the date of the customer's first event.
    pub anniversary: bool,
    /// A `reminder` (`reason: "inactivity"`) this many days after the customer's last event.
    pub inactivity_days: Option<u32>,
    /// A `reminder` (`reason: "points_expiring"`) this many days before points expire.
    pub expiry_reminder_days: Option<u32>,
    /// A `tier_review` event this many days after a customer reached their tier, and every
    /// as many days after each review while they hold it; `None` for no reviews (tiers that
    /// never lapse need none: 365 is a year's).
    pub tier_review_days: Option<u32>,
}

impl Schedule {
    /// Nothing daily, no tier reviews.
    pub const DEFAULT: Schedule = Schedule {
        daily_at: TimeOfDay::NINE,
        birthday: false,
        anniversary: false,
        inactivity_days: None,
        expiry_reminder_days: None,
        tier_review_days: None,
    };
}

impl Default for Schedule {
    fn default() -> Schedule {
        Schedule::DEFAULT
    }
}

/// A time of day in UTC, `"HH:MM"` in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay {
    seconds: u32,
}

impl Default for TimeOfDay {
    fn default() -> TimeOfDay {
        TimeOfDay::NINE
    }
}

impl TimeOfDay {
    /// 09:00 UTC, the default: a reminder is better read in the morning than at midnight.
    pub const NINE: TimeOfDay = TimeOfDay { seconds: 9 * 3600 };

    /// Seconds after midnight.
    pub fn seconds(self) -> u32 {
        self.seconds
    }

    /// This time on the day of `day`.
    pub fn on(self, day: Timestamp) -> Timestamp {
        day.plus_seconds(i64::from(self.seconds) - i64::from(day.seconds_of_day()))
    }

    /// The first moment at this time of day at or after `moment`.
    pub fn on_or_after(self, moment: Timestamp) -> Timestamp {
        let today = self.on(moment);
        if today >= moment {
            today
        } else {
            today.plus_days(1)
        }
    }

    /// This time on `month`-`day` of `year` (the 29th of February is the 28th in other
    /// years).
    pub fn on_date(self, year: i32, month: u32, day: u32) -> Option<Timestamp> {
        let day = day.min(days_in_month_of(year, month)?);
        Timestamp::from_date(year, month, day).map(|date| self.on(date))
    }

    /// The first time, at this time of day, of a yearly `month`-`day` strictly after
    /// `after`.
    pub fn next_yearly(self, month: u32, day: u32, after: Timestamp) -> Option<Timestamp> {
        let year = after.year();
        let this_year = self.on_date(year, month, day)?;
        if this_year > after {
            Some(this_year)
        } else {
            self.on_date(year.checked_add(1)?, month, day)
        }
    }
}

impl FromStr for TimeOfDay {
    type Err = String;

    fn from_str(text: &str) -> Result<TimeOfDay, String> {
        let invalid = || format!("\"{text}\" is not a time of day: write it as HH:MM, e.g. 09:00");
        let (hours, minutes) = text.split_once(':').ok_or_else(invalid)?;
        if hours.len() != 2 || minutes.len() != 2 {
            return Err(invalid());
        }
        let hours: u32 = hours.parse().map_err(|_| invalid())?;
        let minutes: u32 = minutes.parse().map_err(|_| invalid())?;
        if hours > 23 || minutes > 59 {
            return Err(invalid());
        }
        Ok(TimeOfDay {
            seconds: hours * 3600 + minutes * 60,
        })
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}",
            self.seconds / 3600,
            self.seconds / 60 % 60
        )
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TimeOfDay, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn fixed_expiry_by_policy() {
        let earned = at("2026-11-23T10:00:00Z");
        assert_eq!(PointsExpiry::None.fixed(earned), None);
        assert_eq!(
            PointsExpiry::DaysAfterEarning { days: 30 }.fixed(earned),
            Some(at("2026-12-23T10:00:00Z"))
        );
        let end = |period, months| PointsExpiry::EndOfPeriod { period, months }.fixed(earned);
        assert_eq!(end(Period::Month, 0), Some(at("2026-12-01T00:00:00Z")));
        assert_eq!(end(Period::Month, 2), Some(at("2027-02-01T00:00:00Z")));
        assert_eq!(end(Period::Quarter, 0), Some(at("2027-01-01T00:00:00Z")));
        assert_eq!(end(Period::Quarter, 4), Some(at("2027-04-01T00:00:00Z")));
        assert_eq!(end(Period::Year, 12), Some(at("2028-01-01T00:00:00Z")));
        let dynamic = PointsExpiry::LastActivity { days: 10 };
        assert_eq!(dynamic.fixed(earned), None);
        assert_eq!(
            dynamic.deadline(Some(earned)),
            Some(at("2026-12-03T10:00:00Z"))
        );
    }

    #[test]
    fn policies_read_as_json() {
        let policy: PointsExpiry = serde_json::from_str(
            r#"{"policy": "end_of_period", "period": "quarter", "months": 3}"#,
        )
        .unwrap();
        assert_eq!(
            policy,
            PointsExpiry::EndOfPeriod {
                period: Period::Quarter,
                months: 3
            }
        );
        let schedule: Schedule =
            serde_json::from_str(r#"{"daily_at": "07:30", "birthday": true}"#).unwrap();
        assert_eq!(schedule.daily_at.seconds(), 7 * 3600 + 1800);
        assert!(schedule.birthday && schedule.tier_review_days.is_none());
        assert!(serde_json::from_str::<Schedule>(r#"{"daily_at": "25:00"}"#).is_err());
    }

    #[test]
    fn yearly_moments_fall_strictly_after() {
        let nine = TimeOfDay::default();
        assert_eq!(
            nine.next_yearly(3, 5, at("2026-03-05T08:00:00Z")),
            Some(at("2026-03-05T09:00:00Z"))
        );
        assert_eq!(
            nine.next_yearly(3, 5, at("2026-03-05T09:00:00Z")),
            Some(at("2027-03-05T09:00:00Z"))
        );
        // A 29 February birthday is kept on the 28th in other years.
        assert_eq!(
            nine.next_yearly(2, 29, at("2026-01-01T00:00:00Z")),
            Some(at("2026-02-28T09:00:00Z"))
        );
    }
}
