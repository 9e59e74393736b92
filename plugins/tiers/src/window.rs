//! Window tiers: the points a customer earned per day, kept for the review window.

use serde::{Deserialize, Serialize};
use tally_sdk::{Error, Timestamp};

const SECONDS_PER_DAY: i64 = 86_400;

/// The UTC day of `at`, counted from 1970-01-01.
pub(crate) fn day_of(at: Timestamp) -> i64 {
    at.unix_seconds().div_euclid(SECONDS_PER_DAY)
}

/// What the plugin remembers per customer with `qualify_by: "window"`.
///
/// The points per day are two columns, `days` and `earned`, sorted by day: a plugin reads
/// and writes its whole state on every event it changes, and plain numbers are the cheapest
/// tokens. `days` is absent until the plugin starts counting for the customer (a state
/// written in lifetime mode has none).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WindowState {
    /// Lifetime points when this plugin last saw the customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<i64>,
    /// The days on which lifetime points changed, ascending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<i64>>,
    /// The net lifetime points gained on each of `days`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earned: Option<Vec<i64>>,
    /// The first day counted in full, for a customer with history before the plugin started
    /// counting: until the window begins on or after it, the window is not whole.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracked_from: Option<i64>,
    /// When the figures below were worked out. They are written for whoever reads the state
    /// and never read back (every write works them out again), which spares the plugin the
    /// code to read them.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<Timestamp>,
    /// Points earned in the window ending `as_of`.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub points_in_window: Option<i64>,
    /// What the window still needed to reach the customer's tier's threshold.
    #[serde(skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub points_needed_to_maintain_tier: Option<i64>,
    /// The tier above the customer's; `None` at the top.
    #[serde(skip_deserializing)]
    pub next_tier: Option<String>,
    /// What the window still needed to reach the next tier; `None` at the top.
    #[serde(skip_deserializing)]
    pub points_needed_for_next_tier: Option<i64>,
}

/// Points earned per day, and whether they go back far enough.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Earned {
    /// (day, net lifetime points gained that day), by day, no day twice, none of 0. A sorted
    /// vector rather than a map: a few hundred days at most, and a map's code would add a
    /// sixth to the plugin's wasm.
    pub by_day: Vec<(i64, i64)>,
    /// See [`WindowState::tracked_from`].
    pub tracked_from: Option<i64>,
}

impl WindowState {
    /// The days counted so far, `None` when the plugin has not started counting.
    pub(crate) fn earned(&self) -> Result<Option<Earned>, Error> {
        let (Some(days), Some(earned)) = (&self.days, &self.earned) else {
            return Ok(None);
        };
        if days.len() != earned.len() {
            return Err(Error::new(format!(
                "plugin state: {} days but {} earned figures",
                days.len(),
                earned.len()
            )));
        }
        let mut counted = Earned {
            by_day: Vec::with_capacity(days.len()),
            tracked_from: self.tracked_from,
        };
        for (&day, &points) in days.iter().zip(earned) {
            counted.add(day, points);
        }
        Ok(Some(counted))
    }

    /// Writes `earned` back into the columns.
    pub(crate) fn set_earned(&mut self, earned: &Earned) {
        self.days = Some(earned.by_day.iter().map(|(day, _)| *day).collect());
        self.earned = Some(earned.by_day.iter().map(|(_, points)| *points).collect());
        self.tracked_from = earned.tracked_from;
    }
}

impl Earned {
    /// The first day of the `window_days`-day window ending with `today`.
    pub(crate) fn window_start(today: i64, window_days: u32) -> i64 {
        today
            .saturating_sub(i64::from(window_days))
            .saturating_add(1)
    }

    /// Adds `points` (any sign) to `day`; a day that nets to zero is dropped.
    pub(crate) fn add(&mut self, day: i64, points: i64) {
        if points == 0 {
            return;
        }
        // Days come in order (events do), so the search usually ends at the last one.
        match self.by_day.binary_search_by_key(&day, |(day, _)| *day) {
            Ok(at) => {
                let total = self.by_day[at].1.saturating_add(points);
                if total == 0 {
                    self.by_day.remove(at);
                } else {
                    self.by_day[at].1 = total;
                }
            }
            Err(at) => self.by_day.insert(at, (day, points)),
        }
    }

    /// Forgets the days before the window ending with `today`, and `tracked_from` once the
    /// window lies wholly after it.
    pub(crate) fn forget_before(&mut self, today: i64, window_days: u32) {
        let start = Earned::window_start(today, window_days);
        self.by_day.retain(|(day, _)| *day >= start);
        if self.tracked_from.is_some_and(|from| from <= start) {
            self.tracked_from = None;
        }
    }

    /// Points earned in the window ending with `today` (never below 0: a reversal of a
    /// purchase from before the window cannot make it owe).
    pub(crate) fn in_window(&self, today: i64, window_days: u32) -> i64 {
        let start = Earned::window_start(today, window_days);
        self.by_day
            .iter()
            .filter(|(day, _)| (start..=today).contains(day))
            .map(|(_, points)| *points)
            .fold(0_i64, i64::saturating_add)
            .max(0)
    }

    /// Whether every day of the window ending with `today` was counted.
    pub(crate) fn whole(&self, today: i64, window_days: u32) -> bool {
        self.tracked_from
            .is_none_or(|from| from <= Earned::window_start(today, window_days))
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "tests fail loudly on a broken expectation"
)]
mod tests {
    use super::*;

    #[test]
    fn days_stay_sorted_and_net() {
        let state = WindowState {
            days: Some(vec![30, 10, 20, 10]),
            earned: Some(vec![5, 1, 2, 3]),
            ..WindowState::default()
        };
        let mut earned = state.earned().expect("even columns").expect("counting");
        assert_eq!(earned.by_day, [(10, 4), (20, 2), (30, 5)]);
        // A backdated event, a return that nets a day to nothing, a new day.
        earned.add(15, 7);
        earned.add(20, -2);
        earned.add(40, -1);
        assert_eq!(earned.by_day, [(10, 4), (15, 7), (30, 5), (40, -1)]);
        // The 10-day window ending on day 40 holds days 31 to 40.
        assert_eq!(earned.in_window(40, 10), 0, "never below zero");
        assert_eq!(earned.in_window(39, 10), 5);
        earned.forget_before(40, 30);
        assert_eq!(earned.by_day, [(15, 7), (30, 5), (40, -1)]);
        let mut written = WindowState::default();
        written.set_earned(&earned);
        assert_eq!(written.days, Some(vec![15, 30, 40]));
        assert_eq!(written.earned, Some(vec![7, 5, -1]));
    }
}
