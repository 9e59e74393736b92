//! Time in the account: what the host's clock is to write for a customer next, and the
//! internal event it writes when that moment comes.
//!
//! Plugins never see a clock. Time enters as internal events with reserved actions, written
//! by the host at the moment they were due, with that moment as their timestamp and an id
//! made of (kind, customer, due time), so each is written once whatever crashes or catch-ups
//! happen, and a replay of the history through the same plugins gives the same ledger.
//!
//! What is due is a pure function of the account and the tenant's settings ([`schedule`]),
//! worked out after every event and kept on the account; the store indexes it by time, so
//! the clock reads only what is due and never scans customers.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tally_sdk::{PerkStatus, Timestamp};

use super::NewEvent;
use super::account::Lot;
use super::ids::{CustomerId, EventId, MAX_EVENT_ID_LEN, TenantId};
use super::policy::Policy;
use super::records::{CustomerRecord, RawJson};

/// The source internal events are stored with.
pub const SYSTEM_SOURCE: &str = "system";

/// A kind of moment the clock writes an event for. Two kinds share the action `reminder`
/// and tell themselves apart by `data.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DueKind {
    /// A lot reached its expiry.
    PointExpire,
    /// A hold on pending points ended.
    PointsRelease,
    /// The customer's birthday, at the tenant's daily time.
    Birthday,
    /// The anniversary of the customer's first event.
    Anniversary,
    /// N days without an event from outside.
    InactivityReminder,
    /// N days before points expire.
    ExpiryReminder,
    /// The review of the customer's tier.
    TierReview,
    /// A perk's last day passed.
    PerkExpire,
}

impl DueKind {
    /// Every kind.
    pub const ALL: [DueKind; 8] = [
        DueKind::PointExpire,
        DueKind::PointsRelease,
        DueKind::Birthday,
        DueKind::Anniversary,
        DueKind::InactivityReminder,
        DueKind::ExpiryReminder,
        DueKind::TierReview,
        DueKind::PerkExpire,
    ];

    /// Its name, as in ids and the store's index.
    pub fn as_str(self) -> &'static str {
        match self {
            DueKind::PointExpire => "point_expire",
            DueKind::PointsRelease => "points_release",
            DueKind::Birthday => "birthday",
            DueKind::Anniversary => "anniversary",
            DueKind::InactivityReminder => "inactivity_reminder",
            DueKind::ExpiryReminder => "expiry_reminder",
            DueKind::TierReview => "tier_review",
            DueKind::PerkExpire => "perk_expire",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<DueKind> {
        DueKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The action of its events.
    pub fn action(self) -> &'static str {
        match self {
            DueKind::InactivityReminder | DueKind::ExpiryReminder => "reminder",
            other => other.as_str(),
        }
    }
}

impl fmt::Display for DueKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One moment the clock is to write an event for, with the event's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Due {
    /// What kind of moment.
    pub kind: DueKind,
    /// When it is due: the event's timestamp.
    pub at: Timestamp,
    /// The event's data.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

/// What the clock is to write for `account` next, one moment per kind at most, soonest
/// first. Each is later than the last event of its kind applied, so none repeats.
pub fn schedule(account: &CustomerRecord, policy: &Policy) -> Vec<Due> {
    let mut due = Vec::new();
    // An alias has nothing of its own left to fall due: its person is the survivor.
    if account.merged_into.is_some() {
        return due;
    }
    let done = |kind| account.done.get(&kind).copied();
    let settings = policy.schedule;
    let daily = settings.daily_at;
    let stats = &account.customer.stats;
    let deadline = policy.expiry.deadline(stats.last_event_at);
    // Moments after the last of their kind and after the customer joined: a customer met
    // today is not sent last month's birthday.
    let after = |kind| done(kind).map_or(account.created_at, |last| last.max(account.created_at));
    // The host's own moments may lie in the past (a backdated import earning points that
    // expired already): they are written at once, a second after the last of their kind.
    let clamp = |kind, at: Timestamp| match done(kind) {
        Some(last) if at <= last => last.plus_seconds(1),
        _ => at,
    };

    let spendable = || account.lots.iter().filter(|lot| lot.pending.is_none());
    let next_expiry = spendable().filter_map(|lot| lot.expiry(deadline)).min();
    if let Some(at) = next_expiry {
        due.push(Due {
            kind: DueKind::PointExpire,
            at: clamp(DueKind::PointExpire, at),
            data: Value::Null,
        });
    }
    let next_release = account
        .lots
        .iter()
        .filter_map(|lot| lot.pending.as_ref()?.until)
        .min();
    if let Some(at) = next_release {
        due.push(Due {
            kind: DueKind::PointsRelease,
            at: clamp(DueKind::PointsRelease, at),
            data: Value::Null,
        });
    }
    if settings.birthday
        && let Some((month, day)) = birthday(&account.customer.attributes)
        && let Some(at) = daily.next_yearly(month, day, after(DueKind::Birthday))
    {
        due.push(Due {
            kind: DueKind::Birthday,
            at,
            data: json!({"birthday": format!("{month:02}-{day:02}")}),
        });
    }
    if settings.anniversary
        && let Some(first) = stats.first_event_at
    {
        let (_, month, day) = first.date();
        let after = after(DueKind::Anniversary).max(first);
        if let Some(at) = daily.next_yearly(month, day, after) {
            let years = at.year() - first.year();
            due.push(Due {
                kind: DueKind::Anniversary,
                at,
                data: json!({"years": years, "member_since": first}),
            });
        }
    }
    if let (Some(days), Some(last)) = (settings.inactivity_days, stats.last_event_at) {
        let at = daily.on_or_after(last.plus_days(i64::from(days)));
        if done(DueKind::InactivityReminder).is_none_or(|reminded| at > reminded) {
            due.push(Due {
                kind: DueKind::InactivityReminder,
                at,
                data: json!({"reason": "inactivity", "days": days, "last_event_at": last}),
            });
        }
    }
    if let (Some(days), Some(expiry)) = (settings.expiry_reminder_days, next_expiry) {
        let at = daily.on(expiry.plus_days(-i64::from(days)));
        let amount: i64 = spendable()
            .filter(|lot| lot.expiry(deadline) == Some(expiry))
            .map(|lot| lot.amount)
            .sum();
        if at < expiry && at > after(DueKind::ExpiryReminder) {
            due.push(Due {
                kind: DueKind::ExpiryReminder,
                at,
                data: json!({
                    "reason": "points_expiring", "days": days,
                    "amount": amount, "expires_at": expiry,
                }),
            });
        }
    }
    let next_perk_expiry = account
        .customer
        .perks
        .iter()
        .filter(|perk| perk.status == PerkStatus::Active)
        .filter_map(|perk| perk.valid_until)
        .min();
    if let Some(last_day) = next_perk_expiry {
        // A perk can be redeemed up to and including its `valid_until`.
        due.push(Due {
            kind: DueKind::PerkExpire,
            at: clamp(DueKind::PerkExpire, last_day.plus_seconds(1)),
            data: Value::Null,
        });
    }
    if let (Some(days), Some(_)) = (settings.tier_review_days, &account.customer.tier) {
        let since = account.tier_since.unwrap_or(account.created_at);
        let base = done(DueKind::TierReview).map_or(since, |last| last.max(since));
        let at = base.plus_days(i64::from(days.max(1)));
        // No data: the tier under review is the customer's at the review's time, in the
        // plugins' input; the schedule, rewritten by every event, stays short.
        due.push(Due {
            kind: DueKind::TierReview,
            at,
            data: Value::Null,
        });
    }
    due.sort_by_key(|due| (due.at, due.kind));
    due
}

/// The customer's birthday as (month, day), from their `birthday` attribute: `YYYY-MM-DD`,
/// `MM-DD` or `--MM-DD`.
fn birthday(attributes: &serde_json::Map<String, Value>) -> Option<(u32, u32)> {
    let text = attributes.get("birthday")?.as_str()?;
    let month_day = match text.len() {
        10 => &text[5..],
        7 => text.strip_prefix("--")?,
        5 => text,
        _ => return None,
    };
    let (month, day) = month_day.split_once('-')?;
    let (month, day): (u32, u32) = (month.parse().ok()?, day.parse().ok()?);
    ((1..=12).contains(&month) && (1..=31).contains(&day)).then_some((month, day))
}

/// The id of the internal event of `kind` due at `at` for `customer`:
/// `system:<kind>:<customer>:<unix seconds>`, or, for a customer id too long for that,
/// the customer's SHA-256 in its place. Tenants cannot post ids starting `system:`.
pub fn internal_event_id(kind: DueKind, customer: &CustomerId, at: Timestamp) -> EventId {
    host_event_id(kind.as_str(), customer, &format!(":{}", at.unix_seconds()))
}

/// The id of the merge of `from` into another customer: `system:customer_merge:<from>`, one
/// per customer, since a customer is merged once.
pub fn merge_event_id(from: &CustomerId) -> EventId {
    host_event_id("customer_merge", from, "")
}

/// `system:<kind>:<customer><tail>`, the customer's SHA-256 standing in for an id too long.
fn host_event_id(kind: &str, customer: &CustomerId, tail: &str) -> EventId {
    let readable = format!("system:{kind}:{customer}{tail}");
    let id = if readable.len() <= MAX_EVENT_ID_LEN {
        readable
    } else {
        let digest = Sha256::digest(customer.as_str().as_bytes());
        let hash: String = digest[..16]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("system:{kind}:#{hash}{tail}")
    };
    // Both forms are printable text within the length.
    EventId::internal(id)
}

/// Whether a posted event id is in the host's own namespace.
pub fn is_internal_event_id(id: &str) -> bool {
    id.starts_with("system:")
}

/// The internal event the clock writes for `due` of `customer`, received at `now`.
pub fn internal_event(
    tenant: &TenantId,
    customer: &CustomerId,
    due: &Due,
    now: Timestamp,
) -> NewEvent {
    let data = match &due.data {
        Value::Null => RawJson::from_value(&json!({})),
        data => RawJson::from_value(data),
    };
    NewEvent {
        tenant: tenant.clone(),
        id: internal_event_id(due.kind, customer, due.at),
        action: due.kind.action().to_owned(),
        label: None,
        customer: customer.clone(),
        timestamp: due.at,
        source: SYSTEM_SOURCE.to_owned(),
        ip_address: None,
        user_agent: None,
        data,
        received_at: now,
        contact_card: Vec::new(),
        due: Some(due.kind),
        interaction: Default::default(),
    }
}

/// Which lots expire first, soonest first, as the profile shows them: `{"amount", "at"}`,
/// lots of one moment summed, at most `limit` moments.
pub fn expiring(
    lots: &[Lot],
    policy: &Policy,
    last_activity: Option<Timestamp>,
    limit: usize,
) -> Vec<(i64, Timestamp)> {
    let deadline = policy.expiry.deadline(last_activity);
    let mut moments: std::collections::BTreeMap<Timestamp, i64> = std::collections::BTreeMap::new();
    for lot in lots.iter().filter(|lot| lot.pending.is_none()) {
        if let Some(at) = lot.expiry(deadline) {
            let sum = moments.entry(at).or_default();
            *sum = sum.saturating_add(lot.amount);
        }
    }
    moments
        .into_iter()
        .take(limit)
        .map(|(at, amount)| (amount, at))
        .collect()
}
