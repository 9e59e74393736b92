//! Two profiles of one person made one. A `customer_merge` on the profile that stays (the
//! survivor) takes what describes the person from the other profile: its points, each lot
//! with its expiry and hold, as ledger entries of kind `merge` on both sides; its active
//! perks; the attributes, contact fields, tier and membership the survivor lacks; the
//! purchase figures. What each history's own ledger sums (lifetime points, points spent,
//! expired, reversed) stays with it, so every id's ledger still adds up on its own. The other
//! id becomes an alias: its record keeps its history and `merged_into`, and the writer sends
//! its later events to the survivor.

use serde::Deserialize;
use serde_json::json;
use tally_sdk::{PerkStatus, PointEntry, PointKind, Stats};

use super::NewEvent;
use super::account::{Account, Lot, SYSTEM, debt, move_points, take_soonest};
use super::policy::Policy;
use super::records::{CustomerRecord, MergedAway, NewLedgerEntry, Summary};
use super::redemption::EventRefusal;

/// The other side of a merge while it is applied: the other's record as the merge leaves it,
/// and the entries taking its points out.
#[derive(Debug, Clone)]
pub struct Absorbed {
    /// The other's record as the merge leaves it.
    pub away: MergedAway,
    /// What moved of the figures the record keeps beside the customer (purchase totals).
    pub summary: Summary,
}

impl Account {
    /// Takes in the customer `data.from` names (`other`, as the writer read them: `None`
    /// when there is no such customer), with `CustomerMerged`.
    pub(super) fn absorb(
        &mut self,
        other: Option<&CustomerRecord>,
        event: &NewEvent,
        policy: &Policy,
    ) -> Result<(), EventRefusal> {
        let from = merged_from(event).ok_or(EventRefusal::MergeUnreadable)?;
        let other = other
            .filter(|other| other.customer.id == from)
            .ok_or_else(|| EventRefusal::CustomerNotFound {
                customer: from.clone(),
            })?;
        if other.customer.id == self.customer.id {
            return Err(EventRefusal::MergeWithItself { customer: from });
        }
        if let Some(into) = &other.merged_into {
            return Err(EventRefusal::CustomerMerged {
                customer: from,
                into: into.clone(),
            });
        }
        let mut away = other.clone();
        let survivor = self.customer.id.clone();
        let (points, pending) = (other.customer.points.balance, other.customer.points.pending);

        let mut out = Vec::new();
        let lots = std::mem::take(&mut away.lots);
        for lot in lots {
            let held = if lot.pending.is_some() { lot.amount } else { 0 };
            let mut leaving = PointEntry::new(
                lot.amount.saturating_neg(),
                format!("merged into {survivor}"),
            )
            .with_kind(PointKind::Merge);
            leaving.expires_at = lot.expires_at;
            out.push(NewLedgerEntry {
                plugin: SYSTEM.to_owned(),
                entry: leaving,
                held: held.saturating_neg(),
            });
            self.take_lot(lot, held, &from);
        }
        // A debt the tenant allowed moves too: it is the person's.
        let owed = debt(other.customer.points);
        if owed > 0 {
            out.push(NewLedgerEntry {
                plugin: SYSTEM.to_owned(),
                entry: PointEntry::new(owed, format!("merged into {survivor}"))
                    .with_kind(PointKind::Merge),
                held: 0,
            });
            let deadline = policy.expiry.deadline(self.customer.stats.last_event_at);
            take_soonest(&mut self.lots, owed, deadline);
            self.host_entry(
                PointEntry::new(owed.saturating_neg(), format!("merged from {from}"))
                    .with_kind(PointKind::Merge),
                0,
            );
        }
        for entry in &out {
            away.customer.points = move_points(away.customer.points, entry);
        }

        let (moving, staying): (Vec<_>, Vec<_>) = std::mem::take(&mut away.customer.perks)
            .into_iter()
            .partition(|perk| perk.status == PerkStatus::Active);
        let perks = moving.len();
        self.customer.perks.extend(moving);
        away.customer.perks = staying;

        for (name, value) in std::mem::take(&mut away.customer.attributes) {
            self.customer.attributes.entry(name).or_insert(value);
        }
        self.customer.member |= std::mem::take(&mut away.customer.member);
        if self.customer.tier.is_none() {
            self.customer.tier = away.customer.tier.take();
            self.tier_since = away.tier_since.take();
        }
        add_stats(
            &mut self.customer.stats,
            std::mem::take(&mut away.customer.stats),
        );
        for (reward, count) in std::mem::take(&mut away.rewards) {
            let kept = self.rewards.entry(reward).or_default();
            *kept = kept.saturating_add(count);
        }
        let summary = Summary {
            total_spend: std::mem::take(&mut away.summary.total_spend),
            last_purchase_at: away.summary.last_purchase_at.take(),
            engagement_value: std::mem::take(&mut away.summary.engagement_value),
            ..Summary::default()
        };
        away.merged_into = Some(survivor);
        away.plugin_profiles.clear();
        away.due.clear();

        self.host_trigger(
            "CustomerMerged",
            &json!({"from": from, "points": points, "pending": pending, "perks": perks,
                    "balance": self.customer.points.balance}),
        );
        self.absorbed = Some(Box::new(Absorbed {
            away: MergedAway {
                customer: away,
                ledger: out,
            },
            summary,
        }));
        Ok(())
    }

    /// One lot of the other profile, taken in: a `merge` entry and the lot kept with its
    /// expiry and hold (a spendable one pays a debt first, as an earning does).
    fn take_lot(&mut self, mut lot: Lot, held: i64, from: &str) {
        let mut arriving =
            PointEntry::new(lot.amount, format!("merged from {from}")).with_kind(PointKind::Merge);
        arriving.expires_at = lot.expires_at;
        let owed = debt(self.customer.points);
        self.host_entry(arriving, held);
        if lot.pending.is_none() {
            lot.amount = lot.amount.saturating_sub(owed);
            if lot.amount <= 0 {
                return;
            }
            if let Some(same) = self
                .lots
                .iter_mut()
                .find(|kept| kept.pending.is_none() && kept.expires_at == lot.expires_at)
            {
                same.amount = same.amount.saturating_add(lot.amount);
                return;
            }
        }
        self.lots.push(lot);
    }
}

/// `data.from` of a `customer_merge`: the id merged into the event's customer.
fn merged_from(event: &NewEvent) -> Option<String> {
    #[derive(Deserialize)]
    struct From {
        from: String,
    }
    serde_json::from_str::<From>(event.data.get())
        .ok()
        .map(|data| data.from)
}

/// The counts of `other` added to `stats`, and its first and last event times taken in.
fn add_stats(stats: &mut Stats, other: Stats) {
    for (action, count) in other.events {
        let kept = stats.events.entry(action).or_default();
        *kept = kept.saturating_add(count);
    }
    stats.first_event_at = match (stats.first_event_at, other.first_event_at) {
        (Some(mine), Some(theirs)) => Some(mine.min(theirs)),
        (mine, theirs) => mine.or(theirs),
    };
    stats.last_event_at = stats.last_event_at.max(other.last_event_at);
}
