//! Perks and rewards spent: a perk redeemed once while it is valid, perks expired by the
//! clock, a reward's cost spent and its perk issued in one event, and why the host refuses
//! such an event by its own rules.

use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tally_sdk::{Perk, PerkStatus, PointEntry, PointKind, Timestamp};

use super::NewEvent;
use super::account::{Account, SYSTEM, move_points};
use super::policy::Policy;
use super::records::{RewardClaim, RewardPerk};

impl Account {
    /// Redeems a reward: spends its cost and issues its perk, in this one event, with
    /// `RewardRedeemed`. The event's data is the reward as the catalogue had it when the
    /// redemption was accepted (the host writes it), so a replay spends the same.
    pub(super) fn redeem_reward(
        &mut self,
        event: &NewEvent,
        policy: &Policy,
    ) -> Result<(), EventRefusal> {
        #[derive(Deserialize)]
        struct Redemption {
            reward: String,
            #[serde(default)]
            name: String,
            cost: i64,
            perk: RewardPerk,
            #[serde(default)]
            stock: Option<u64>,
            #[serde(default)]
            limit_per_customer: Option<u32>,
        }
        let redemption: Redemption = serde_json::from_str(event.data.get()).map_err(|error| {
            EventRefusal::RewardUnreadable {
                reason: error.to_string(),
            }
        })?;
        let redeemed = self.rewards.get(&redemption.reward).copied().unwrap_or(0);
        if let Some(limit) = redemption.limit_per_customer
            && redeemed >= limit
        {
            return Err(EventRefusal::RewardLimitReached {
                reward: redemption.reward,
                limit,
            });
        }
        let balance = self.customer.points.balance;
        if redemption.cost > balance {
            return Err(EventRefusal::InsufficientPoints {
                reward: redemption.reward,
                cost: redemption.cost,
                balance,
            });
        }
        if redemption.cost > 0 {
            let name = if redemption.name.is_empty() {
                &redemption.reward
            } else {
                &redemption.name
            };
            let spend = PointEntry::new(-redemption.cost, format!("reward: {name}"))
                .with_kind(PointKind::Spend);
            let mut lots = std::mem::take(&mut self.lots);
            let points = self.customer.points;
            let new = self.place(&mut lots, points, &spend, event, policy, SYSTEM);
            self.lots = lots;
            self.customer.points = move_points(self.customer.points, &new);
            self.ledger.push(new);
        }
        let digest = Sha256::digest(format!("{}/{}", event.tenant, event.id).as_bytes());
        let code: String = digest[..5]
            .iter()
            .map(|byte| format!("{byte:02X}"))
            .collect();
        let mut perk = Perk::new(
            redemption.perk.kind,
            format!("{}-{code}", redemption.reward.to_uppercase()),
        )
        .with_value(redemption.perk.value);
        perk.valid_until = redemption
            .perk
            .valid_days
            .map(|days| event.timestamp.plus_days(i64::from(days)));
        perk.issued_at = Some(event.timestamp);
        let data = json!({
            "reward": redemption.reward, "cost": redemption.cost, "perk": perk,
            "balance": self.customer.points.balance,
        });
        self.customer.perks.push(perk);
        self.host_trigger("RewardRedeemed", &data);
        self.rewards
            .insert(redemption.reward.clone(), redeemed.saturating_add(1));
        self.claim = Some(RewardClaim {
            reward: redemption.reward,
            stock: redemption.stock,
        });
        Ok(())
    }

    /// Redeems the perk `data.code` names, once, while it is valid: `CouponRedeemed`.
    pub(super) fn redeem(&mut self, event: &NewEvent) -> Result<(), EventRefusal> {
        let code = code_of(event).unwrap_or_default();
        let at = event.timestamp;
        // The first of that code that can be redeemed; else the first of it, to say why not.
        let index = self
            .customer
            .perks
            .iter()
            .position(|perk| perk.id == code && perk.is_redeemable_at(at))
            .or_else(|| self.customer.perks.iter().position(|perk| perk.id == code))
            .ok_or_else(|| EventRefusal::PerkNotFound { code: code.clone() })?;
        let perk = &mut self.customer.perks[index];
        match perk.status {
            PerkStatus::Redeemed => {
                return Err(EventRefusal::PerkRedeemed {
                    code,
                    at: perk.closed_at,
                });
            }
            PerkStatus::Expired => {
                return Err(EventRefusal::PerkExpired {
                    code,
                    at: perk.closed_at.or(perk.valid_until),
                });
            }
            PerkStatus::Active if !perk.is_redeemable_at(at) => {
                return Err(EventRefusal::PerkExpired {
                    code,
                    at: perk.valid_until,
                });
            }
            PerkStatus::Active => {}
        }
        perk.status = PerkStatus::Redeemed;
        perk.closed_at = Some(at);
        let data = json!({
            "code": perk.id, "kind": perk.kind, "value": perk.value, "redeemed_at": at,
        });
        self.host_trigger("CouponRedeemed", &data);
        Ok(())
    }

    /// Expires every active perk whose last moment is before `at`: `PerkExpired` each.
    pub(super) fn expire_perks(&mut self, at: Timestamp) {
        let mut expired = Vec::new();
        for perk in &mut self.customer.perks {
            if perk.status == PerkStatus::Active && perk.valid_until.is_some_and(|until| until < at)
            {
                perk.status = PerkStatus::Expired;
                perk.closed_at = Some(at);
                expired.push(
                    json!({"code": perk.id, "kind": perk.kind, "valid_until": perk.valid_until}),
                );
            }
        }
        for data in expired {
            self.host_trigger("PerkExpired", &data);
        }
    }
}

/// Why the host refuses an event by its own rules, before any plugin runs; nothing of it is
/// stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRefusal {
    /// The customer holds no perk with that code.
    #[error("the customer has no perk with code {code:?}")]
    PerkNotFound {
        /// The code asked for.
        code: String,
    },
    /// The perk was redeemed already.
    #[error("perk {code:?} was redeemed already{}", since(*at))]
    PerkRedeemed {
        /// Its code.
        code: String,
        /// When it was redeemed.
        at: Option<Timestamp>,
    },
    /// The customer has fewer points than the reward costs.
    #[error("reward {reward:?} costs {cost} points and the balance is {balance}")]
    InsufficientPoints {
        /// The reward.
        reward: String,
        /// What it costs.
        cost: i64,
        /// The balance.
        balance: i64,
    },
    /// The customer redeemed the reward as many times as it allows.
    #[error("reward {reward:?} may be redeemed {limit} times by one customer, and this one has")]
    RewardLimitReached {
        /// The reward.
        reward: String,
        /// The limit.
        limit: u32,
    },
    /// The reward's stock is gone.
    #[error("reward {reward:?} is out of stock ({stock} redeemed)")]
    RewardOutOfStock {
        /// The reward.
        reward: String,
        /// Its stock.
        stock: u64,
    },
    /// A `reward_redeem` whose data is not a reward the host wrote (a bug).
    #[error("the redemption cannot be read: {reason}")]
    RewardUnreadable {
        /// Why.
        reason: String,
    },
    /// A `customer_merge` names a customer the tenant does not have.
    #[error("there is no customer {customer:?} to merge")]
    CustomerNotFound {
        /// The id asked for.
        customer: String,
    },
    /// A `customer_merge` of a customer into themselves.
    #[error("customer {customer:?} cannot be merged into itself")]
    MergeWithItself {
        /// The customer.
        customer: String,
    },
    /// A `customer_merge` of a customer merged before.
    #[error("customer {customer:?} was merged into {into:?} already")]
    CustomerMerged {
        /// The customer asked for.
        customer: String,
        /// The customer it was merged into.
        into: String,
    },
    /// A `customer_merge` whose data does not say `from` (a bug: the host writes it).
    #[error("the merge cannot be read: its data has no \"from\"")]
    MergeUnreadable,
    /// The perk expired before this redemption.
    #[error("perk {code:?} expired{}", since(*at))]
    PerkExpired {
        /// Its code.
        code: String,
        /// When it expired.
        at: Option<Timestamp>,
    },
}

fn since(at: Option<Timestamp>) -> String {
    at.map(|at| format!(" at {at}")).unwrap_or_default()
}

impl EventRefusal {
    /// The stable code the refusal is answered with.
    pub fn code(&self) -> &'static str {
        match self {
            EventRefusal::PerkNotFound { .. } => "perk_not_found",
            EventRefusal::PerkRedeemed { .. } => "perk_redeemed",
            EventRefusal::PerkExpired { .. } => "perk_expired",
            EventRefusal::InsufficientPoints { .. } => "insufficient_points",
            EventRefusal::RewardLimitReached { .. } => "reward_limit_reached",
            EventRefusal::RewardOutOfStock { .. } => "reward_out_of_stock",
            EventRefusal::RewardUnreadable { .. } | EventRefusal::MergeUnreadable => {
                "invalid_event"
            }
            EventRefusal::CustomerNotFound { .. } => "customer_not_found",
            EventRefusal::MergeWithItself { .. } => "invalid_merge",
            EventRefusal::CustomerMerged { .. } => "customer_merged",
        }
    }
}

/// `data.code` of a `perk_redeem`.
fn code_of(event: &NewEvent) -> Option<String> {
    #[derive(Deserialize)]
    struct Code {
        #[serde(default)]
        code: Option<String>,
    }
    serde_json::from_str::<Code>(event.data.get()).ok()?.code
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use serde_json::json;
    use tally_sdk::Perk;

    use super::*;
    use crate::domain::records::CustomerRecord;
    use crate::domain::testing::event;
    use crate::domain::{CustomerId, new_account};

    fn holding(perk: Perk) -> CustomerRecord {
        let mut record = new_account(
            &CustomerId::parse("ada").unwrap(),
            "2026-01-01T00:00:00Z".parse().unwrap(),
        );
        record.customer.perks.push(perk);
        record
    }

    fn redeem(record: &CustomerRecord, at: &str) -> Result<Account, EventRefusal> {
        let redeem = event("perk_redeem", at, json!({"code": "C1"}));
        Account::open(record, &redeem, &Policy::DEFAULT)
    }

    #[test]
    fn a_perk_is_redeemed_up_to_its_last_moment_obeyed() {
        let last = "2026-01-31T23:59:59Z".parse().unwrap();
        let record = holding(Perk::new("coupon", "C1").valid_until(last));
        let account = redeem(&record, "2026-01-31T23:59:59Z").unwrap();
        assert_eq!(account.customer.perks[0].status, PerkStatus::Redeemed);
        assert_eq!(account.triggers[0].trigger.name, "CouponRedeemed");
    }

    #[test]
    fn a_perk_is_redeemed_up_to_its_last_moment_violated() {
        let last = "2026-01-31T23:59:59Z".parse().unwrap();
        let record = holding(Perk::new("coupon", "C1").valid_until(last));
        let refusal = redeem(&record, "2026-02-01T00:00:00Z").unwrap_err();
        assert_eq!(refusal.code(), "perk_expired");
        let mut redeemed = holding(Perk::new("coupon", "C1"));
        redeemed.customer.perks[0].status = PerkStatus::Redeemed;
        assert_eq!(
            redeem(&redeemed, "2026-01-02T00:00:00Z")
                .unwrap_err()
                .code(),
            "perk_redeemed"
        );
        assert_eq!(
            redeem(&holding(Perk::new("coupon", "C2")), "2026-01-02T00:00:00Z")
                .unwrap_err()
                .code(),
            "perk_not_found"
        );
    }
}
