//! The account's invariants over generated event sequences: whatever the plugins decide, in
//! whatever order, held or not, with the clock expiring and releasing in between: earned =
//! available + pending + expired + spent + reversed, lifetime = earned - reversed, the lots
//! add up to the balance and the pending points, nothing expires before its time, the balance
//! stays at or above zero unless the tenant allows otherwise, nothing due repeats, and the
//! store's replay of the ledger agrees with the account.

#![allow(clippy::unwrap_used, reason = "a failing test should panic")]

use proptest::prelude::*;
use serde_json::json;
use tally_sdk::{Decision, PointEntry, PointKind, Points, Timestamp};

use super::records::{CustomerRecord, OnError, PluginErrorRecord};
use super::testing::event;
use super::{
    Account, CustomerId, DueKind, PluginOutcome, PointsExpiry, Policy, apply_event, new_account,
    points_after,
};

/// One plugin's answer to one event: points entries, or a failure.
#[derive(Debug, Clone)]
enum Answer {
    Entries(Vec<Entry>),
    Fails,
}

/// A points entry a plugin may make: earnings may be held and may carry an expiry (days
/// after the event).
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: PointKind,
    amount: i64,
    held: Option<Hold>,
    expires_in_days: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
enum Hold {
    Days(i64),
    UntilAccepted,
}

/// What happens next in a customer's life.
#[derive(Debug, Clone)]
enum Step {
    /// An outside event of transaction `0..3`, with the plugins' answers.
    Event {
        action: &'static str,
        transaction: u8,
        answers: Vec<Answer>,
    },
    /// The host's clock: expiry or release at the event's time.
    Clock(&'static str),
}

fn entry() -> impl Strategy<Value = Entry> {
    let hold = prop_oneof![
        3 => Just(None),
        1 => (1_i64..20).prop_map(|days| Some(Hold::Days(days))),
        1 => Just(Some(Hold::UntilAccepted)),
    ];
    (
        prop_oneof![
            Just(PointKind::Earn),
            Just(PointKind::Spend),
            Just(PointKind::Reverse)
        ],
        1_i64..500,
        hold,
        prop::option::of(1_i64..40),
    )
        .prop_map(|(kind, amount, held, expires_in_days)| Entry {
            kind,
            amount,
            held: held.filter(|_| kind == PointKind::Earn),
            expires_in_days,
        })
}

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => prop::collection::vec(entry(), 0..4).prop_map(Answer::Entries),
        1 => Just(Answer::Fails),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let action = prop_oneof![
        4 => Just("checkout"),
        1 => Just("checkout_accept"),
        1 => Just("checkout_reject"),
    ];
    prop_oneof![
        4 => (action, 0_u8..3, prop::collection::vec(answer(), 1..3)).prop_map(
            |(action, transaction, answers)| Step::Event { action, transaction, answers }
        ),
        1 => prop_oneof![Just("point_expire"), Just("points_release")].prop_map(Step::Clock),
    ]
}

fn decision(entries: &[Entry], at: Timestamp) -> Decision {
    entries.iter().fold(Decision::new(), |decision, entry| {
        let amount = match entry.kind {
            PointKind::Earn => entry.amount,
            _ => -entry.amount,
        };
        let mut point = PointEntry::new(amount, "entry").with_kind(entry.kind);
        if let Some(days) = entry.expires_in_days {
            point = point.expiring(at.plus_days(days));
        }
        point = match entry.held {
            Some(Hold::Days(days)) => point.pending_until(at.plus_days(days)),
            Some(Hold::UntilAccepted) => point.pending_until_accepted(),
            None => point,
        };
        decision.points_entry(point)
    })
}

/// Sums of the ledger by kind, as the invariants read them.
#[derive(Debug, Default)]
struct Sums {
    earned: i64,
    reversed: i64,
    spent: i64,
    expired: i64,
    /// What merges brought in (less what they took out).
    merged: i64,
}

fn check_lots(record: &CustomerRecord) -> Result<(), TestCaseError> {
    let points = record.customer.points;
    let pending: i64 = record
        .lots
        .iter()
        .filter(|lot| lot.pending.is_some())
        .map(|lot| lot.amount)
        .sum();
    let spendable: i64 = record
        .lots
        .iter()
        .filter(|lot| lot.pending.is_none())
        .map(|lot| lot.amount)
        .sum();
    prop_assert_eq!(pending, points.pending, "pending lots sum to pending");
    prop_assert_eq!(
        spendable,
        points.balance.max(0),
        "spendable lots sum to the balance"
    );
    prop_assert!(
        record.lots.iter().all(|lot| lot.amount > 0),
        "an empty lot is kept"
    );
    Ok(())
}

proptest! {
    #[test]
    fn the_account_keeps_its_invariants(
        steps in prop::collection::vec((step(), 0_i64..6), 1..40),
        allow_negative_balance in any::<bool>(),
        expiry_days in prop::option::of(1_u32..30),
    ) {
        let policy = policy(allow_negative_balance, expiry_days);
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let account = new_account(&CustomerId::parse("ada").unwrap(), start);
        live(account, &mut Sums::default(), &steps, &policy, start)?;
    }

    /// Two customers' lives, then one merged into the other, then the survivor's life goes
    /// on: every invariant holds for both throughout, with what the merge moved counted.
    #[test]
    fn a_merge_keeps_both_accounts_invariants(
        ada_steps in prop::collection::vec((step(), 0_i64..6), 0..20),
        bo_steps in prop::collection::vec((step(), 0_i64..6), 0..20),
        after in prop::collection::vec((step(), 0_i64..6), 0..20),
        allow_negative_balance in any::<bool>(),
        expiry_days in prop::option::of(1_u32..30),
    ) {
        let policy = policy(allow_negative_balance, expiry_days);
        let start: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let (mut ada_sums, mut bo_sums) = (Sums::default(), Sums::default());
        let ada = new_account(&CustomerId::parse("ada").unwrap(), start);
        let ada = live(ada, &mut ada_sums, &ada_steps, &policy, start)?;
        let bo = new_account(&CustomerId::parse("bo").unwrap(), start);
        let bo = live(bo, &mut bo_sums, &bo_steps, &policy, start)?;
        let at = ada.customer.stats.last_event_at.max(bo.customer.stats.last_event_at).unwrap_or(start).plus_seconds(1);
        let mut merge = event("customer_merge", &at.to_string(), json!({"from": "bo"}));
        merge.id = super::EventId::parse("merge").unwrap();

        let working = Account::open_merging(&ada, Some(&bo), &merge, &policy).unwrap();
        let append = apply_event(&ada, &merge, Vec::new(), working, &policy).unwrap();
        let away = append.merged.as_deref().unwrap();
        let (before, other_before) = (ada.customer.points, bo.customer.points);
        let survivor = append.customer.customer.points;
        let left = away.customer.customer.points;
        prop_assert_eq!(points_after(before, &append.ledger).last().copied().unwrap_or(before), survivor);
        prop_assert_eq!(points_after(other_before, &away.ledger).last().copied().unwrap_or(other_before), left);
        prop_assert_eq!(survivor.balance, before.balance + other_before.balance, "the balance moves whole");
        prop_assert_eq!(survivor.pending, before.pending + other_before.pending, "pending points move whole");
        prop_assert_eq!(survivor.lifetime, before.lifetime, "lifetime stays with each history");
        prop_assert_eq!((left.balance, left.pending, left.lifetime), (0, 0, other_before.lifetime));
        prop_assert!(away.customer.lots.is_empty() && away.customer.due.is_empty());
        prop_assert_eq!(away.customer.merged_into.as_deref(), Some("ada"));
        check_lots(&append.customer)?;
        for new in &append.ledger {
            ada_sums.merged += new.entry.amount;
        }
        let moved: i64 = away.ledger.iter().map(|new| new.entry.amount).sum();
        prop_assert_eq!(moved, -(other_before.balance + other_before.pending));
        live(append.customer, &mut ada_sums, &after, &policy, at)?;
    }
}

fn policy(allow_negative_balance: bool, expiry_days: Option<u32>) -> Policy {
    Policy {
        allow_negative_balance,
        expiry: expiry_days.map_or(PointsExpiry::None, |days| PointsExpiry::DaysAfterEarning {
            days,
        }),
        ..Policy::DEFAULT
    }
}

/// Runs `steps` on `account` from `start`, checking every invariant after each, with the
/// ledger counted in `sums`; answers the account they leave.
fn live(
    mut account: CustomerRecord,
    sums: &mut Sums,
    steps: &[(Step, i64)],
    policy: &Policy,
    start: Timestamp,
) -> Result<CustomerRecord, TestCaseError> {
    let mut at = start;
    for (step, days_later) in steps {
        at = at.plus_days(*days_later).plus_seconds(1);
        let (action, transaction, answers) = match step {
            Step::Event {
                action,
                transaction,
                answers,
            } => (*action, *transaction, answers.clone()),
            Step::Clock(action) => (*action, 0, Vec::new()),
        };
        let mut event = event(
            action,
            &at.to_string(),
            json!({"transaction_id": format!("T{transaction}")}),
        );
        event.id = super::EventId::parse(format!("e{}", account.event_count)).unwrap();
        if matches!(step, Step::Clock(_)) {
            event.due = Some(if action == "point_expire" {
                DueKind::PointExpire
            } else {
                DueKind::PointsRelease
            });
        }
        // As the pipeline runs the plugins: each decision applied on the one before.
        let mut working = Account::open(&account, &event, policy).unwrap();
        let mut outcomes = Vec::new();
        for (plugin, answer) in answers.iter().enumerate() {
            let name = format!("p{plugin}");
            let result = match answer {
                Answer::Entries(entries) => {
                    let decision = decision(entries, at);
                    working
                        .apply_decision(&name, &decision, &event, policy)
                        .map(|()| decision)
                        .map_err(|refusal| PluginErrorRecord {
                            code: refusal.code().to_owned(),
                            message: refusal.to_string(),
                        })
                }
                Answer::Fails => Err(PluginErrorRecord {
                    code: "trap".to_owned(),
                    message: "trapped".to_owned(),
                }),
            };
            outcomes.push(PluginOutcome {
                name,
                version: 1,
                on_error: OnError::Skip,
                result,
            });
        }
        let before: Points = account.customer.points;
        let append = apply_event(&account, &event, outcomes, working, policy).unwrap();

        // What the store checks on every append: the ledger replayed from the stored
        // points gives the new account's points, and the event's net is its entries' sum.
        let replayed = points_after(before, &append.ledger)
            .last()
            .copied()
            .unwrap_or(before);
        prop_assert_eq!(replayed, append.customer.customer.points);
        let net: i64 = append.ledger.iter().map(|new| new.entry.amount).sum();
        prop_assert_eq!(append.event.points, net);

        for new in &append.ledger {
            let amount = new.entry.amount;
            match new.entry.kind() {
                PointKind::Earn => sums.earned += amount,
                PointKind::Reverse => sums.reversed -= amount,
                PointKind::Spend => sums.spent -= amount,
                PointKind::Expire => {
                    sums.expired -= amount;
                    prop_assert!(
                        new.entry.expires_at.is_some_and(|expiry| expiry <= at),
                        "expired before its time"
                    );
                }
                PointKind::Release => prop_assert_eq!(new.held, amount),
                PointKind::Merge => prop_assert!(false, "a merge in an ordinary event"),
            }
        }
        let after: Points = append.customer.customer.points;
        prop_assert_eq!(
            sums.earned + sums.merged,
            after.balance + after.pending + sums.expired + sums.spent + sums.reversed,
            "earned + merged in = available + pending + expired + spent + reversed"
        );
        prop_assert_eq!(after.lifetime, sums.earned - sums.reversed);
        prop_assert!(after.pending >= 0, "pending {} below zero", after.pending);
        if !policy.allow_negative_balance {
            prop_assert!(after.balance >= 0, "balance {} below zero", after.balance);
        }
        check_lots(&append.customer)?;
        if action == "point_expire" {
            let deadline = None;
            prop_assert!(
                append.customer.lots.iter().all(|lot| lot.pending.is_some()
                    || lot.expiry(deadline).is_none_or(|expiry| expiry > at)),
                "a lot due by the expiry is left"
            );
        }
        for due in &append.customer.due {
            if let Some(done) = append.customer.done.get(&due.kind) {
                prop_assert!(
                    due.at > *done,
                    "{} due at {} again after {}",
                    due.kind,
                    due.at,
                    done
                );
            }
        }
        prop_assert_eq!(append.customer.event_count, account.event_count + 1);
        account = append.customer;
    }
    Ok(account)
}

/// A rejecting plugin's failure refuses the event whole, whatever the others decided.
#[test]
fn a_rejecting_plugin_refuses_the_event() {
    let account = new_account(
        &CustomerId::parse("ada").unwrap(),
        "2026-01-01T00:00:00Z".parse().unwrap(),
    );
    let event = event("checkout", "2026-01-02T00:00:00Z", json!({}));
    let failure = PluginErrorRecord {
        code: "out_of_fuel".to_owned(),
        message: "ran out of fuel".to_owned(),
    };
    let outcomes = vec![
        PluginOutcome {
            name: "points".to_owned(),
            version: 2,
            on_error: OnError::Skip,
            result: Ok(Decision::new().earn(10, "buy")),
        },
        PluginOutcome {
            name: "fraud".to_owned(),
            version: 7,
            on_error: OnError::Reject,
            result: Err(failure.clone()),
        },
    ];
    let policy = Policy::DEFAULT;
    let working = Account::open(&account, &event, &policy).unwrap();
    let rejection = apply_event(&account, &event, outcomes, working, &policy).unwrap_err();
    assert_eq!((rejection.plugin.as_str(), rejection.version), ("fraud", 7));
    assert_eq!(rejection.error, failure);
    assert_eq!(
        rejection.to_string(),
        "plugin fraud (version 7) rejected the event: ran out of fuel"
    );
}
