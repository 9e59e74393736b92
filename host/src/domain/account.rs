//! How a decision moves a customer's account: the points rule and the balance rule.

use tally_sdk::{Customer, Decision, PointEntry, PointKind, Points};

/// The tenant's settings that the account's rules read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Whether a decision may take a customer's balance below zero. Off by default: a
    /// customer cannot spend points they do not have, and a return cannot take back more than
    /// is left; a plugin that wants otherwise caps its own amounts, or the tenant turns this
    /// on (some programs let a return after a redemption leave a debt).
    pub allow_negative_balance: bool,
}

/// Why a decision cannot be applied to an account. The plugin that made it is reported as
/// failed with [`Refusal::code`], and its `on_error` decides what happens to the event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
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
        }
    }
}

/// The points after one ledger entry: every entry moves the balance; earnings and reversals
/// move lifetime points too, spending does not (tiers count what was earned, not what is
/// left). Saturating, so no amount can wrap a balance around.
pub fn move_points(points: Points, entry: &PointEntry) -> Points {
    let lifetime = match entry.kind() {
        PointKind::Spend => points.lifetime,
        PointKind::Earn | PointKind::Reverse => points.lifetime.saturating_add(entry.amount),
    };
    Points {
        balance: points.balance.saturating_add(entry.amount),
        lifetime,
    }
}

/// The points after each of `entries`, starting from `start`: what the ledger records as
/// `balance_after` and `lifetime_after`.
pub fn points_after<'a>(
    start: Points,
    entries: impl IntoIterator<Item = &'a PointEntry>,
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

/// Applies one plugin's decision to the customer as the plugins before it left them: points,
/// then tier, then perks. A decision that breaks the balance rule changes nothing.
pub fn apply_decision(
    customer: &mut Customer,
    decision: &Decision,
    policy: Policy,
) -> Result<(), Refusal> {
    let before = customer.points;
    let after = decision.points.iter().fold(before, move_points);
    // Only a decision that lowers the balance can break the rule: an award to a customer
    // already below zero (a debt the tenant allowed earlier) is still an award.
    if !policy.allow_negative_balance && after.balance < 0 && after.balance < before.balance {
        return Err(Refusal::InsufficientPoints {
            balance: before.balance,
            after: after.balance,
        });
    }
    customer.points = after;
    if let Some(tier) = &decision.tier {
        customer.tier = Some(tier.clone());
    }
    customer.perks.extend(decision.perks.iter().cloned());
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use tally_sdk::Perk;

    use super::*;

    #[test]
    fn points_move_by_kind() {
        let mut customer = Customer::default();
        let policy = Policy::default();
        apply_decision(
            &mut customer,
            &Decision::new().earn(100, "buy").tier("silver"),
            policy,
        )
        .unwrap();
        apply_decision(&mut customer, &Decision::new().spend(30, "reward"), policy).unwrap();
        apply_decision(
            &mut customer,
            &Decision::new().reverse(20, "return"),
            policy,
        )
        .unwrap();
        assert_eq!(
            customer.points,
            Points {
                balance: 50,
                lifetime: 80
            }
        );
        assert_eq!(customer.tier.as_deref(), Some("silver"));
    }

    #[test]
    fn the_balance_stays_at_or_above_zero_obeyed() {
        let mut customer = Customer::default();
        let policy = Policy::default();
        apply_decision(&mut customer, &Decision::new().earn(10, "buy"), policy).unwrap();
        apply_decision(&mut customer, &Decision::new().spend(10, "reward"), policy).unwrap();
        assert_eq!(customer.points.balance, 0);
        let allowed = Policy {
            allow_negative_balance: true,
        };
        apply_decision(
            &mut customer,
            &Decision::new().reverse(5, "return"),
            allowed,
        )
        .unwrap();
        assert_eq!(customer.points.balance, -5);
        // An award to a customer in debt is still an award.
        apply_decision(&mut customer, &Decision::new().earn(2, "buy"), policy).unwrap();
        assert_eq!(customer.points.balance, -3);
    }

    #[test]
    fn the_balance_stays_at_or_above_zero_violated() {
        let mut customer = Customer::default();
        let policy = Policy::default();
        apply_decision(&mut customer, &Decision::new().earn(10, "buy"), policy).unwrap();
        let greedy = Decision::new()
            .spend(11, "reward")
            .tier("gold")
            .perk(Perk::new("coupon", "X"));
        let refusal = apply_decision(&mut customer, &greedy, policy).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::InsufficientPoints {
                balance: 10,
                after: -1
            }
        );
        assert_eq!(refusal.code(), "insufficient_points");
        assert!(refusal.to_string().contains("from 10 to -1"), "{refusal}");
        // Nothing of a refused decision is applied.
        assert_eq!(customer.points.balance, 10);
        assert!(customer.tier.is_none() && customer.perks.is_empty());
    }
}
