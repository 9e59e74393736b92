//! How a decision moves a customer's account: points are lots, placed and taken by the one
//! points rule, and the balance rule.

use serde::{Deserialize, Serialize};
use serde_json::json;
use tally_sdk::{Customer, Decision, PointEntry, PointKind, Points, RawJson, Timestamp, Trigger};

use super::NewEvent;
use super::merge::Absorbed;
use super::policy::Policy;
use super::records::{CustomerRecord, NewLedgerEntry, NewTrigger, RewardClaim};
use super::redemption::EventRefusal;

/// The name the host's own ledger entries and triggers carry where a plugin's would: the
/// host expires and releases points itself, whatever the plugins do.
pub const SYSTEM: &str = "system";

/// Earned points that are still held: what spending, reversals and expiry take from. One lot
/// per earning entry, but spendable points of one expiry share a lot. `amount` is what is
/// left of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    /// The (first) event that earned it.
    pub event_id: String,
    /// Points left in it, above zero.
    pub amount: i64,
    /// When it expires; `None` for never, or for the tenant's last-activity deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Why it is pending, when it is: pending points are not in the balance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Hold>,
}

/// What holds a pending lot: a date, a transaction to accept, or both (whichever first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Released at this moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
    /// Released by a `checkout_accept` of this transaction, and cancelled first by a reversal
    /// in an event of it (`checkout_reject`, a lower `checkout_update`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<String>,
}

impl Lot {
    /// When it expires, `deadline` standing in for a lot without a date of its own.
    pub fn expiry(&self, deadline: Option<Timestamp>) -> Option<Timestamp> {
        self.expires_at.or(deadline)
    }
}

/// Why a decision cannot be applied to an account. The plugin that made it is reported as
/// failed with [`Refusal::code`], and its `on_error` decides what happens to the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The decision earns points for a customer who is not a member, and the tenant
    /// requires membership to earn.
    #[error(
        "the decision earns {earned} points for a customer who is not a member, and the \
         tenant requires membership to earn"
    )]
    NotAMember {
        /// The points it would earn.
        earned: i64,
    },
    /// The decision would leave the balance below zero.
    #[error(
        "the decision would take the balance from {balance} to {after}, and the tenant does \
         not allow a negative balance"
    )]
    InsufficientPoints {
        /// The balance before the decision.
        balance: i64,
        /// The balance the decision would leave.
        after: i64,
    },
}

impl Refusal {
    /// The stable code the plugin's failure is recorded with.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::InsufficientPoints { .. } => "insufficient_points",
            Refusal::NotAMember { .. } => "not_a_member",
        }
    }
}

/// The points after one ledger entry. Earnings and reversals move lifetime points, the rest
/// do not (tiers count what was earned, not what is left). The part of an entry that is
/// `held` moves `pending` instead of the balance: an earning held for a return window, or a
/// reversal that cancels held points. A release moves its amount from `pending` to the
/// balance. Saturating, so no amount can wrap a balance around.
pub fn move_points(points: Points, new: &NewLedgerEntry) -> Points {
    let amount = new.entry.amount;
    let held = new.held;
    let (balance, pending, lifetime) = match new.entry.kind() {
        PointKind::Earn => (amount.saturating_sub(held), held, amount),
        PointKind::Reverse => (amount.saturating_add(held), held.saturating_neg(), amount),
        PointKind::Spend | PointKind::Expire => (amount, 0, 0),
        PointKind::Release => (amount, amount.saturating_neg(), 0),
        // `held` carries the amount's sign: out of one profile's pending, into the other's.
        PointKind::Merge => (amount.saturating_sub(held), held, 0),
    };
    Points {
        balance: points.balance.saturating_add(balance),
        lifetime: points.lifetime.saturating_add(lifetime),
        pending: points.pending.saturating_add(pending),
    }
}

/// The points after each of `entries`, starting from `start`: what the ledger records as
/// `balance_after`, `pending_after` and `lifetime_after`.
pub fn points_after<'a>(
    start: Points,
    entries: impl IntoIterator<Item = &'a NewLedgerEntry>,
) -> Vec<Points> {
    let mut points = start;
    entries
        .into_iter()
        .map(|entry| {
            points = move_points(points, entry);
            points
        })
        .collect()
}

/// A customer's account while one event is applied: the customer as plugins see it, the lots
/// behind their points, and what the event has written so far (the host's own entries and
/// triggers first, then each plugin's, in the order they ran).
#[derive(Debug, Clone)]
pub struct Account {
    /// What the next plugin sees.
    pub customer: Customer,
    /// The lots behind `customer.points`: the pending ones sum to `pending`, the others to
    /// the balance when it is not below zero (a debt the tenant allowed has no lots).
    pub lots: Vec<Lot>,
    /// When the customer reached their tier.
    pub tier_since: Option<Timestamp>,
    /// Ledger entries made so far.
    pub ledger: Vec<NewLedgerEntry>,
    /// The host's own triggers (`PointsExpired`, `PointsReleased`).
    pub triggers: Vec<NewTrigger>,
    /// The event's `data.transaction_id`, read the first time a rule needs it.
    transaction: Option<Option<String>>,
    /// How many times the customer redeemed each reward.
    pub rewards: std::collections::BTreeMap<String, u32>,
    /// The reward this event redeems, for the store to count against its stock.
    pub claim: Option<RewardClaim>,
    /// The customer a `customer_merge` took in, as it leaves them.
    pub absorbed: Option<Box<Absorbed>>,
}

impl Account {
    /// The account `before` holds, with the host's own rules for `event` applied before any
    /// plugin sees it: a `point_expire` expires every lot due by its time, a
    /// `points_release` releases every hold that has ended, a `checkout_accept` releases its
    /// transaction's pending points.
    pub fn open(
        before: &CustomerRecord,
        event: &NewEvent,
        policy: &Policy,
    ) -> Result<Account, EventRefusal> {
        Account::open_merging(before, None, event, policy)
    }

    /// [`Account::open`], with the customer a `customer_merge` takes in as the writer read
    /// them (`None`: there is no such customer, and the merge is refused).
    pub fn open_merging(
        before: &CustomerRecord,
        merging: Option<&CustomerRecord>,
        event: &NewEvent,
        policy: &Policy,
    ) -> Result<Account, EventRefusal> {
        let mut account = Account {
            customer: before.customer.clone(),
            lots: before.lots.clone(),
            tier_since: before.tier_since,
            ledger: Vec::new(),
            triggers: Vec::new(),
            transaction: None,
            rewards: before.rewards.clone(),
            claim: None,
            absorbed: None,
        };
        let at = event.timestamp;
        match event.action.as_str() {
            "point_expire" => account.expire_due(at, policy),
            "points_release" => {
                account.release(|hold| hold.until.is_some_and(|until| until <= at), at);
            }
            "checkout_accept" => {
                if let Some(transaction) = account.transaction(event).map(str::to_owned) {
                    let accepted =
                        |hold: &Hold| hold.transaction.as_deref() == Some(transaction.as_str());
                    account.release(accepted, at);
                }
            }
            "perk_redeem" => account.redeem(event)?,
            "reward_redeem" => account.redeem_reward(event, policy)?,
            "opt_in" => account.set_member(true, at),
            "opt_out" => account.set_member(false, at),
            "profile_update" => account.update_profile(event),
            "customer_erase" => account.erase(),
            "customer_merge" => account.absorb(merging, event, policy)?,
            "perk_expire" => account.expire_perks(at),
            _ => {}
        }
        Ok(account)
    }

    /// Applies one plugin's decision: points (each entry placed in the lots), then tier, then
    /// perks. A decision that breaks the balance rule changes nothing.
    pub fn apply_decision(
        &mut self,
        plugin: &str,
        decision: &Decision,
        event: &NewEvent,
        policy: &Policy,
    ) -> Result<(), Refusal> {
        if policy.membership_required && !self.customer.member {
            let earned: i64 = decision
                .points
                .iter()
                .filter(|entry| entry.kind() == PointKind::Earn)
                .map(|entry| entry.amount)
                .fold(0, i64::saturating_add);
            if earned > 0 {
                return Err(Refusal::NotAMember { earned });
            }
        }
        if !decision.points.is_empty() {
            let before = self.customer.points;
            let mut lots = self.lots.clone();
            let mut points = before;
            let mut entries = Vec::with_capacity(decision.points.len());
            for entry in &decision.points {
                let new = self.place(&mut lots, points, entry, event, policy, plugin);
                points = move_points(points, &new);
                entries.push(new);
            }
            // Only a decision that lowers the balance can break the rule: an award to a
            // customer already below zero (a debt the tenant allowed earlier) is still an
            // award.
            if !policy.allow_negative_balance
                && points.balance < 0
                && points.balance < before.balance
            {
                return Err(Refusal::InsufficientPoints {
                    balance: before.balance,
                    after: points.balance,
                });
            }
            self.lots = lots;
            self.customer.points = points;
            self.ledger.extend(entries);
        }
        if let Some(tier) = &decision.tier {
            if self.customer.tier.as_ref() != Some(tier) {
                self.tier_since = Some(event.timestamp);
            }
            self.customer.tier = Some(tier.clone());
        }
        self.customer
            .perks
            .extend(decision.perks.iter().cloned().map(|mut perk| {
                perk.issued_at = Some(event.timestamp);
                perk
            }));
        Ok(())
    }

    /// The ledger entry for `entry`, adding to or taking from `lots`; `points` are the
    /// customer's before it.
    pub(super) fn place(
        &mut self,
        lots: &mut Vec<Lot>,
        points: Points,
        entry: &PointEntry,
        event: &NewEvent,
        policy: &Policy,
        plugin: &str,
    ) -> NewLedgerEntry {
        let mut entry = entry.clone();
        let mut held = 0;
        let deadline = policy.expiry.deadline(self.customer.stats.last_event_at);
        match entry.kind() {
            PointKind::Earn => {
                entry.expires_at = entry
                    .expires_at
                    .or_else(|| policy.expiry.fixed(event.timestamp));
                let pending = if entry.is_pending() {
                    Some(Hold {
                        until: entry.pending_until,
                        transaction: self.transaction(event).map(str::to_owned),
                    })
                } else {
                    None
                };
                let amount = if pending.is_some() {
                    held = entry.amount;
                    entry.amount
                } else {
                    // What pays back a debt is not a lot: it is spent already.
                    entry.amount.saturating_sub(debt(points))
                };
                // Spendable points of one expiry are one lot: what never expires does not
                // grow the record by a lot per purchase.
                let same = lots.iter_mut().find(|lot| {
                    pending.is_none() && lot.pending.is_none() && lot.expires_at == entry.expires_at
                });
                match same {
                    Some(lot) => lot.amount = lot.amount.saturating_add(amount),
                    None if amount > 0 => lots.push(Lot {
                        event_id: event.id.to_string(),
                        amount,
                        expires_at: entry.expires_at,
                        pending,
                    }),
                    None => {}
                }
            }
            PointKind::Reverse => {
                let mut wanted = entry.amount.saturating_neg();
                if let Some(transaction) = self.transaction(event) {
                    held = take(lots, wanted, |lot| {
                        lot.pending
                            .as_ref()
                            .is_some_and(|hold| hold.transaction.as_deref() == Some(transaction))
                    });
                    wanted -= held;
                }
                take_soonest(lots, wanted, deadline);
            }
            // Expire and release are the host's alone (`Decision::check` refuses them from a
            // plugin); were one to come, it takes like a spend.
            PointKind::Spend | PointKind::Expire | PointKind::Release | PointKind::Merge => {
                take_soonest(lots, entry.amount.saturating_neg(), deadline);
            }
        }
        NewLedgerEntry {
            plugin: plugin.to_owned(),
            entry,
            held,
        }
    }

    /// Expires every spendable lot due by `at`: an `expire` entry each and one
    /// `PointsExpired` trigger.
    fn expire_due(&mut self, at: Timestamp, policy: &Policy) {
        let deadline = policy.expiry.deadline(self.customer.stats.last_event_at);
        let (due, kept): (Vec<Lot>, Vec<Lot>) =
            std::mem::take(&mut self.lots).into_iter().partition(|lot| {
                lot.pending.is_none() && lot.expiry(deadline).is_some_and(|expiry| expiry <= at)
            });
        self.lots = kept;
        let mut total = 0_i64;
        for lot in due {
            total = total.saturating_add(lot.amount);
            let mut entry =
                PointEntry::new(-lot.amount, "points expired").with_kind(PointKind::Expire);
            entry.expires_at = lot.expiry(deadline);
            self.host_entry(entry, 0);
        }
        if total > 0 {
            let balance = self.customer.points.balance;
            self.host_trigger(
                "PointsExpired",
                &json!({"amount": total, "at": at, "balance": balance}),
            );
        }
    }

    /// Releases every pending lot whose hold `released` says has ended: a `release` entry
    /// each and one `PointsReleased` trigger.
    fn release(&mut self, released: impl Fn(&Hold) -> bool, at: Timestamp) {
        let mut total = 0_i64;
        let mut lots = std::mem::take(&mut self.lots);
        for lot in &mut lots {
            if !lot.pending.as_ref().is_some_and(&released) {
                continue;
            }
            lot.pending = None;
            let amount = lot.amount;
            total = total.saturating_add(amount);
            let mut entry =
                PointEntry::new(amount, "points released").with_kind(PointKind::Release);
            entry.expires_at = lot.expires_at;
            let debt = debt(self.customer.points);
            self.host_entry(entry, amount);
            lot.amount = amount.saturating_sub(debt);
        }
        lots.retain(|lot| lot.amount > 0);
        self.lots = lots;
        if total > 0 {
            let balance = self.customer.points.balance;
            self.host_trigger(
                "PointsReleased",
                &json!({"amount": total, "at": at, "balance": balance}),
            );
        }
    }

    pub(super) fn host_entry(&mut self, entry: PointEntry, held: i64) {
        let new = NewLedgerEntry {
            plugin: SYSTEM.to_owned(),
            entry,
            held,
        };
        self.customer.points = move_points(self.customer.points, &new);
        self.ledger.push(new);
    }

    pub(super) fn host_trigger(&mut self, name: &str, data: &serde_json::Value) {
        self.triggers.push(NewTrigger {
            plugin: SYSTEM.to_owned(),
            trigger: Trigger {
                name: name.to_owned(),
                data: RawJson::from_value(data),
            },
        });
    }

    /// The event's `data.transaction_id` as text (Antavo sends numbers and strings).
    fn transaction(&mut self, event: &NewEvent) -> Option<&str> {
        self.transaction
            .get_or_insert_with(|| transaction_of(event))
            .as_deref()
    }
}

/// What a balance below zero owes.
pub(super) fn debt(points: Points) -> i64 {
    points.balance.min(0).saturating_neg()
}

/// Takes up to `wanted` points from the lots `from` picks, in order; returns what it took.
fn take(lots: &mut Vec<Lot>, wanted: i64, from: impl Fn(&Lot) -> bool) -> i64 {
    let mut taken = 0_i64;
    for lot in lots.iter_mut().filter(|lot| from(lot)) {
        if taken >= wanted {
            break;
        }
        let part = lot.amount.min(wanted - taken);
        lot.amount -= part;
        taken += part;
    }
    lots.retain(|lot| lot.amount > 0);
    taken
}

/// Takes up to `wanted` points from the spendable lots, soonest-expiring first (one that
/// never expires last).
pub(super) fn take_soonest(lots: &mut Vec<Lot>, wanted: i64, deadline: Option<Timestamp>) {
    let mut order: Vec<usize> = (0..lots.len())
        .filter(|&index| lots[index].pending.is_none())
        .collect();
    // Stable, so lots of one expiry go oldest first.
    order.sort_by_key(|&index| {
        lots[index]
            .expiry(deadline)
            .map_or(i64::MAX, Timestamp::unix_seconds)
    });
    let mut left = wanted;
    for index in order {
        if left <= 0 {
            break;
        }
        let part = lots[index].amount.min(left);
        lots[index].amount -= part;
        left -= part;
    }
    lots.retain(|lot| lot.amount > 0);
}

/// `data.transaction_id` of an event as text, read without building the rest of the data.
fn transaction_of(event: &NewEvent) -> Option<String> {
    #[derive(Deserialize)]
    struct Transaction {
        #[serde(default)]
        transaction_id: Option<serde_json::Value>,
    }
    let data: Transaction = serde_json::from_str(event.data.get()).ok()?;
    match data.transaction_id? {
        serde_json::Value::String(text) => Some(text),
        serde_json::Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use serde_json::json;
    use tally_sdk::PointEntry;

    use super::*;
    use crate::domain::testing::event;
    use crate::domain::{CustomerId, PointsExpiry, new_account};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    /// Ada's account after `entries`, each decided on a checkout of `transaction` at `when`.
    fn account_after(steps: &[(&str, &str, Decision)], policy: &Policy) -> CustomerRecord {
        let mut record = new_account(
            &CustomerId::parse("ada").unwrap(),
            at("2026-01-01T00:00:00Z"),
        );
        for (index, (action, when, decision)) in steps.iter().enumerate() {
            let mut new = event(action, when, json!({"transaction_id": "T1"}));
            new.id = crate::domain::EventId::parse(format!("e{index}")).unwrap();
            let mut account = Account::open(&record, &new, policy).unwrap();
            account.apply_decision("p", decision, &new, policy).unwrap();
            record.customer = account.customer;
            record.lots = account.lots;
        }
        record
    }

    #[test]
    fn spending_takes_the_soonest_expiring_lot_first() {
        let soon = PointEntry::new(100, "a").expiring(at("2026-03-01T00:00:00Z"));
        let late = PointEntry::new(100, "b").expiring(at("2026-06-01T00:00:00Z"));
        let never = PointEntry::new(100, "c");
        let record = account_after(
            &[
                (
                    "checkout",
                    "2026-01-02T00:00:00Z",
                    Decision::new().points_entry(late),
                ),
                (
                    "checkout",
                    "2026-01-03T00:00:00Z",
                    Decision::new().points_entry(never),
                ),
                (
                    "checkout",
                    "2026-01-04T00:00:00Z",
                    Decision::new().points_entry(soon),
                ),
                (
                    "point_sub",
                    "2026-01-05T00:00:00Z",
                    Decision::new().spend(150, "reward"),
                ),
            ],
            &Policy::DEFAULT,
        );
        let left: Vec<(i64, Option<Timestamp>)> = record
            .lots
            .iter()
            .map(|lot| (lot.amount, lot.expires_at))
            .collect();
        assert_eq!(
            left,
            vec![(50, Some(at("2026-06-01T00:00:00Z"))), (100, None)],
            "the March lot went first, then half the June one; the one that never expires stays"
        );
        assert_eq!(record.customer.points.balance, 150);
    }

    #[test]
    fn a_return_cancels_its_own_pending_points_before_the_balance_obeyed() {
        let held = PointEntry::new(80, "buy").pending_until(at("2026-01-20T00:00:00Z"));
        let record = account_after(
            &[
                (
                    "point_add",
                    "2026-01-01T00:00:00Z",
                    Decision::new().earn(30, "gift"),
                ),
                (
                    "checkout",
                    "2026-01-02T00:00:00Z",
                    Decision::new().points_entry(held),
                ),
                (
                    "checkout_reject",
                    "2026-01-03T00:00:00Z",
                    Decision::new().reverse(80, "return"),
                ),
            ],
            &Policy::DEFAULT,
        );
        let points = record.customer.points;
        assert_eq!(
            (points.balance, points.pending, points.lifetime),
            (30, 0, 30)
        );
    }

    #[test]
    fn a_return_past_its_pending_points_takes_from_the_balance_violated() {
        let held = PointEntry::new(80, "buy").pending_until_accepted();
        let mut record = account_after(
            &[(
                "checkout",
                "2026-01-02T00:00:00Z",
                Decision::new().points_entry(held),
            )],
            &Policy::DEFAULT,
        );
        // 100 back of 80 held and nothing spendable: refused, nothing changes.
        let reject = event(
            "checkout_reject",
            "2026-01-03T00:00:00Z",
            json!({"transaction_id": "T1"}),
        );
        let mut account = Account::open(&record, &reject, &Policy::DEFAULT).unwrap();
        let refusal = account
            .apply_decision(
                "p",
                &Decision::new().reverse(100, "return"),
                &reject,
                &Policy::DEFAULT,
            )
            .unwrap_err();
        assert_eq!(
            refusal,
            Refusal::InsufficientPoints {
                balance: 0,
                after: -20
            }
        );
        assert_eq!(account.customer.points.pending, 80);
        record.lots = account.lots;
        assert_eq!(record.lots[0].amount, 80);
    }

    #[test]
    fn an_accept_releases_its_transaction_and_the_release_pays_a_debt_first() {
        let allowed = Policy {
            allow_negative_balance: true,
            ..Policy::DEFAULT
        };
        let held = PointEntry::new(50, "buy").pending_until_accepted();
        let mut record = account_after(
            &[
                (
                    "checkout",
                    "2026-01-02T00:00:00Z",
                    Decision::new().points_entry(held),
                ),
                (
                    "point_sub",
                    "2026-01-03T00:00:00Z",
                    Decision::new().spend(20, "reward"),
                ),
            ],
            &allowed,
        );
        assert_eq!(record.customer.points.balance, -20);
        let accept = event(
            "checkout_accept",
            "2026-01-04T00:00:00Z",
            json!({"transaction_id": "T1"}),
        );
        let account = Account::open(&record, &accept, &allowed).unwrap();
        assert_eq!(account.ledger.len(), 1);
        assert_eq!(account.ledger[0].entry.kind(), PointKind::Release);
        assert_eq!(account.triggers[0].trigger.name, "PointsReleased");
        record.customer = account.customer;
        record.lots = account.lots;
        assert_eq!(
            (
                record.customer.points.balance,
                record.customer.points.pending
            ),
            (30, 0)
        );
        assert_eq!(
            record.lots.iter().map(|lot| lot.amount).sum::<i64>(),
            30,
            "the debt is paid first"
        );
    }

    #[test]
    fn points_expire_on_their_day_and_not_before() {
        let policy = Policy {
            expiry: PointsExpiry::DaysAfterEarning { days: 10 },
            ..Policy::DEFAULT
        };
        let record = account_after(
            &[(
                "checkout",
                "2026-01-01T00:00:00Z",
                Decision::new().earn(40, "buy"),
            )],
            &policy,
        );
        assert_eq!(record.lots[0].expires_at, Some(at("2026-01-11T00:00:00Z")));
        let early = event("point_expire", "2026-01-10T23:59:59Z", json!({}));
        assert!(
            Account::open(&record, &early, &policy)
                .unwrap()
                .ledger
                .is_empty()
        );
        let due = event("point_expire", "2026-01-11T00:00:00Z", json!({}));
        let account = Account::open(&record, &due, &policy).unwrap();
        assert_eq!(account.ledger[0].entry.amount, -40);
        assert_eq!(account.ledger[0].entry.kind(), PointKind::Expire);
        assert_eq!(account.customer.points.balance, 0);
        assert!(account.lots.is_empty());
    }

    #[test]
    fn points_that_never_expire_share_one_lot() {
        let record = account_after(
            &[
                (
                    "checkout",
                    "2026-01-01T00:00:00Z",
                    Decision::new().earn(40, "a"),
                ),
                (
                    "checkout",
                    "2026-01-02T00:00:00Z",
                    Decision::new().earn(2, "b"),
                ),
            ],
            &Policy::DEFAULT,
        );
        assert_eq!(record.lots.len(), 1);
        assert_eq!(record.lots[0].amount, 42);
    }
}
