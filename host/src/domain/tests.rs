//! The account's invariants over generated event sequences: whatever the plugins decide, in
//! whatever order, the balance is the sum of the ledger, lifetime points fall only by a
//! reversal, the balance stays at or above zero unless the tenant allows otherwise, and the
//! store's replay of the ledger agrees with the account.

#![allow(clippy::unwrap_used, reason = "a failing test should panic")]

use proptest::prelude::*;
use serde_json::json;
use tally_sdk::{Decision, PointKind, Points};

use super::records::{OnError, PluginErrorRecord};
use super::testing::event;
use super::{
    CustomerId, PluginOutcome, Policy, apply_decision, apply_event, new_account, points_after,
};

/// One plugin's answer to one event: points entries, or a failure.
#[derive(Debug, Clone)]
enum Answer {
    Entries(Vec<(PointKind, i64)>),
    Fails,
}

fn answer() -> impl Strategy<Value = Answer> {
    let entry = (
        prop_oneof![
            Just(PointKind::Earn),
            Just(PointKind::Spend),
            Just(PointKind::Reverse)
        ],
        1_i64..500,
    );
    prop_oneof![
        4 => prop::collection::vec(entry, 0..4).prop_map(Answer::Entries),
        1 => Just(Answer::Fails),
    ]
}

fn decision(entries: &[(PointKind, i64)]) -> Decision {
    entries
        .iter()
        .fold(Decision::new(), |decision, &(kind, amount)| match kind {
            PointKind::Earn => decision.earn(amount, "earn"),
            PointKind::Spend => decision.spend(amount, "spend"),
            PointKind::Reverse => decision.reverse(amount, "reverse"),
        })
}

proptest! {
    #[test]
    fn the_account_keeps_its_invariants(
        events in prop::collection::vec(prop::collection::vec(answer(), 1..4), 1..40),
        allow_negative_balance in any::<bool>(),
    ) {
        let policy = Policy { allow_negative_balance };
        let mut account = new_account(&CustomerId::parse("ada").unwrap(), "2026-01-01T00:00:00Z".parse().unwrap());
        let mut ledger_sum = 0_i64;
        let mut earned_less_reversed = 0_i64;
        for (index, answers) in events.iter().enumerate() {
            let at = format!("2026-01-01T00:00:{:02}Z", index % 60);
            let event = event("checkout", &at, json!({}));
            // As the pipeline runs the plugins: each decision applied on the one before.
            let mut customer = account.customer.clone();
            let mut outcomes = Vec::new();
            for (plugin, answer) in answers.iter().enumerate() {
                let result = match answer {
                    Answer::Entries(entries) => {
                        let decision = decision(entries);
                        apply_decision(&mut customer, &decision, policy)
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
                    name: format!("p{plugin}"),
                    version: 1,
                    on_error: OnError::Skip,
                    result,
                });
            }
            let before = account.customer.points;
            let append = apply_event(&account, &event, outcomes, customer).unwrap();

            // What the store checks on every append: the ledger replayed from the stored
            // points gives the new account's points, and the event's net is its entries' sum.
            let entries: Vec<_> = append.ledger.iter().map(|new| new.entry.clone()).collect();
            let replayed = points_after(before, &entries).last().copied().unwrap_or(before);
            prop_assert_eq!(replayed, append.customer.customer.points);
            let net: i64 = entries.iter().map(|entry| entry.amount).sum();
            prop_assert_eq!(append.event.points, net);

            for entry in &entries {
                ledger_sum += entry.amount;
                if entry.kind() != PointKind::Spend {
                    earned_less_reversed += entry.amount;
                }
            }
            let after: Points = append.customer.customer.points;
            prop_assert_eq!(after.balance, ledger_sum, "balance = sum of the ledger");
            prop_assert_eq!(after.lifetime, earned_less_reversed);
            if after.lifetime < before.lifetime {
                prop_assert!(
                    entries.iter().any(|entry| entry.kind() == PointKind::Reverse),
                    "lifetime fell from {} to {} without a reversal", before.lifetime, after.lifetime
                );
            }
            if !allow_negative_balance {
                prop_assert!(after.balance >= 0, "balance {} below zero", after.balance);
            }
            prop_assert_eq!(append.customer.event_count, index as u64 + 1);
            prop_assert_eq!(append.customer.customer.stats.events("checkout"), index as u64 + 1);
            account = append.customer;
        }
    }
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
    let rejection = apply_event(&account, &event, outcomes, account.customer.clone()).unwrap_err();
    assert_eq!((rejection.plugin.as_str(), rejection.version), ("fraud", 7));
    assert_eq!(rejection.error, failure);
    assert_eq!(
        rejection.to_string(),
        "plugin fraud (version 7) rejected the event: ran out of fuel"
    );
}
