//! The records of the domain, which the store keeps: serde types shared by every backend.
//!
//! The wire types plugins see (`Customer`, `PointEntry`, `Perk`, `Trigger`, ...) are reused
//! from `tally_sdk` rather than copied, so a stored outcome is exactly what the plugins
//! decided. Fields added later must be `#[serde(default)]`, so records written by an older
//! build still read.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
// Event data and plugin state travel as JSON text from the request to the plugins and into
// the store, without being rebuilt as a `Value` tree at each step: cloning, re-encoding and
// dropping such trees would be a large share of the writer's time.
use std::collections::BTreeMap;

use crate::domain::TenantId;
use crate::domain::account::Lot;
use crate::domain::policy::{PointsExpiry, Policy, Schedule};
use crate::domain::schedule::{Due, DueKind};
pub use tally_sdk::RawJson;
use tally_sdk::{Customer, Perk, PointEntry, PointKind, Timestamp, Trigger};

/// A tenant (brand). Its API key is kept apart, hashed, and never in this record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// The tenant's id, the first element of every key the tenant owns.
    pub id: TenantId,
    /// A human-readable name.
    pub name: String,
    /// When the tenant was created (RFC 3339 in JSON).
    pub created_at: Timestamp,
    /// Whether events whose action has no registered event type are accepted.
    #[serde(default)]
    pub allow_untyped_events: bool,
    /// Whether a decision may take a customer's balance below zero (see
    /// [`Policy`](crate::domain::Policy)).
    #[serde(default)]
    pub allow_negative_balance: bool,
    /// When earned points expire if the decision that earned them gave no date.
    #[serde(default)]
    pub points_expiry: PointsExpiry,
    /// Which moments of a customer's life the host's clock writes events for.
    #[serde(default)]
    pub schedule: Schedule,
    /// How far in the future, in seconds, an event's timestamp may be (clocks drift); beyond
    /// it the event is refused with `timestamp_in_future`.
    #[serde(default = "default_future_tolerance")]
    pub future_tolerance_seconds: u32,
    /// Whether only members earn points (see [`Policy`]).
    #[serde(default)]
    pub membership_required: bool,
    /// The JSON Schema customer attributes are checked against when a profile is written,
    /// `None` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_schema: Option<Value>,
    /// What Segment events become (over the e-commerce defaults).
    #[serde(default, skip_serializing_if = "SegmentMapping::is_empty")]
    pub segment: SegmentMapping,
}

/// A tenant's reading of Segment `track` events: by event name, the action and data each
/// becomes. Events it does not name follow Segment's e-commerce spec, or become their name
/// in snake case with their properties as data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentMapping {
    /// By Segment event name.
    #[serde(default)]
    pub events: BTreeMap<String, SegmentEvent>,
}

impl SegmentMapping {
    fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// What one Segment event becomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEvent {
    /// The Tally action.
    pub action: String,
    /// Each data field and the property path (dots for nesting) it is read from; absent:
    /// the properties as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<BTreeMap<String, String>>,
}

/// Five minutes: more than honest clocks drift, less than a mistyped date.
pub const DEFAULT_FUTURE_TOLERANCE_SECONDS: u32 = 300;

fn default_future_tolerance() -> u32 {
    DEFAULT_FUTURE_TOLERANCE_SECONDS
}

impl TenantRecord {
    /// The settings the account's rules read.
    pub fn policy(&self) -> Policy {
        Policy {
            allow_negative_balance: self.allow_negative_balance,
            expiry: self.points_expiry,
            schedule: self.schedule,
            membership_required: self.membership_required,
        }
    }
}

/// An event type (interaction schema) a tenant registered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventTypeRecord {
    /// The action the schema describes, e.g. `checkout`.
    pub id: String,
    /// A human-readable name.
    pub display_name: String,
    /// The whole interaction-schema document as it was posted.
    pub document: Value,
    /// When it was registered or last replaced (RFC 3339 in JSON).
    pub created_at: Timestamp,
}

/// A tenant's plugin: its uploaded versions and how it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// The plugin's name within its tenant.
    pub name: String,
    /// Every uploaded version, oldest first; versions are numbered 1, 2, 3, ...
    pub versions: Vec<PluginVersion>,
    /// The version that runs.
    pub active_version: u32,
    /// The tenant's configuration, passed to the plugin as `plugin.config`.
    #[serde(default)]
    pub config: Value,
    /// The actions the plugin subscribes to; `None` means every action.
    #[serde(default)]
    pub actions: Option<Vec<String>>,
    /// Plugins run in ascending priority, ties broken by name.
    #[serde(default)]
    pub priority: i32,
    /// A disabled plugin is kept but not run.
    pub enabled: bool,
    /// What a failure of this plugin does to the event.
    #[serde(default)]
    pub on_error: OnError,
}

impl PluginRecord {
    /// The record of the active version, `None` only for a damaged record.
    pub fn active(&self) -> Option<&PluginVersion> {
        self.versions
            .iter()
            .find(|version| version.version == self.active_version)
    }
}

/// One uploaded version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersion {
    /// 1 for the first upload, then one more per upload.
    pub version: u32,
    /// The SHA-256 of the wasm module, lowercase hex.
    pub sha256: String,
    /// The module's size in bytes.
    pub size: u64,
    /// When it was uploaded (RFC 3339 in JSON).
    pub uploaded_at: Timestamp,
}

/// What a plugin failure does to the event being evaluated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The plugin's decision is left out; the event and the other plugins' decisions stand.
    #[default]
    Skip,
    /// The whole event is refused and nothing is stored.
    Reject,
}

/// An event as stored: what was posted, and what the plugins made of it. Immutable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// The tenant-wide event sequence number, assigned by the store when it is appended.
    pub seq: u64,
    /// The sender's id for the event, unique per tenant.
    pub id: String,
    /// What happened: `checkout`, `repair`, ...
    pub action: String,
    /// A human-readable name of the action, when the sender gave one.
    #[serde(default)]
    pub label: Option<String>,
    /// The event's calendar date, `YYYY-MM-DD`.
    pub date: String,
    /// When it happened. Histories are ordered by it.
    pub timestamp: Timestamp,
    /// The customer's id.
    pub customer: String,
    /// The net points the event moved: the sum of its ledger entries.
    pub points: i64,
    /// Where it came from: `api`, `import`, `webhook`, ...
    pub source: String,
    /// The sender's IP address, when known.
    #[serde(default)]
    pub ip_address: Option<String>,
    /// The sender's user agent, when known.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The action's own attributes.
    pub data: RawJson,
    /// When the host received it (RFC 3339 in JSON).
    pub received_at: Timestamp,
    /// The channel it came through, when the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The campaign it belongs to, when the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// Ids of the goals it reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub goals: Vec<String>,
    /// Its engagement value, when the sender gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engagement_value: Option<tally_sdk::Decimal>,
    /// What the plugins decided.
    #[serde(default)]
    pub outcome: EventOutcome,
}

/// The merged result of every plugin that ran on an event.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventOutcome {
    /// Points entries, in the order the plugins made them.
    #[serde(default)]
    pub points: Vec<PointEntry>,
    /// Perks granted.
    #[serde(default)]
    pub perks: Vec<Perk>,
    /// The tier the event left the customer in, when a plugin set one.
    #[serde(default)]
    pub tier: Option<String>,
    /// Outbound notifications sent.
    #[serde(default)]
    pub triggers: Vec<Trigger>,
    /// Each plugin considered, in the order it ran.
    #[serde(default)]
    pub plugins: Vec<PluginRun>,
}

/// How one plugin fared on one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRun {
    /// The plugin's name.
    pub name: String,
    /// The version that ran.
    pub version: u32,
    /// Whether it ran, failed or was skipped.
    pub status: PluginStatus,
    /// Why it failed, when it did.
    #[serde(default)]
    pub error: Option<PluginErrorRecord>,
}

/// The result of one plugin run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginStatus {
    /// It ran and its decision was applied.
    Ok,
    /// It failed; see [`PluginRun::error`].
    Error,
    /// It was not run (disabled, or not subscribed to the action).
    Skipped,
}

/// A recorded plugin failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginErrorRecord {
    /// A stable machine-readable code: `out_of_fuel`, `trap`, `plugin_error`, ...
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
}

/// A customer as stored: the state plugins see, plus what the host keeps about them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRecord {
    /// The state plugins see. `customer.points` is derived from the ledger and the store
    /// checks it against the ledger on every append.
    pub customer: Customer,
    /// When the first event for the customer was received (RFC 3339 in JSON).
    pub created_at: Timestamp,
    /// When the latest event was received (RFC 3339 in JSON).
    pub updated_at: Timestamp,
    /// How many events the customer has; the store checks it grows by one per event.
    pub event_count: u64,
    /// Contact fields gathered from events: field → `{value, display_name, event_id, at}`.
    #[serde(default)]
    pub contact_card: Map<String, Value>,
    /// The lots behind `customer.points`, in the order they were earned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<Lot>,
    /// When the customer reached their tier (the time of the event that set it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier_since: Option<Timestamp>,
    /// The due time of the last internal event of each kind applied: the next one of a kind
    /// is always later, so none is written twice.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub done: BTreeMap<DueKind, Timestamp>,
    /// What the host's clock is to write for the customer next, soonest first. The store
    /// indexes it by time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub due: Vec<Due>,
    /// What each plugin shows on the profile (a decision's `profile`), by plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_profiles: BTreeMap<String, RawJson>,
    /// How many times the customer redeemed each reward, for `limit_per_customer`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rewards: BTreeMap<String, u32>,
    /// What a marketer reads of the customer that the rest of the record cannot tell.
    #[serde(default, skip_serializing_if = "Summary::is_empty")]
    pub summary: Summary,
    /// The customer this one was merged into (`customer_merge`): the id is an alias of
    /// theirs from then on, and the record keeps only its history's own figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<String>,
    /// The ids merged into this customer (and into those before), which are aliases of it:
    /// erasing the customer erases their histories too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

/// What the host counts of a customer for the people and tools that read profiles (the
/// fields Yotpo/Rule send with every trigger), beyond what the record holds already
/// (purchases and returns are in the statistics, points earned is lifetime plus reversed).
/// Zeros are not stored: every event rewrites the record, so it is kept small.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The sum of the checkouts' `total`, as sent (gross: corrections are not taken off).
    #[serde(default, skip_serializing_if = "is_zero_decimal")]
    pub total_spend: tally_sdk::Decimal,
    /// The latest checkout's time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_purchase_at: Option<Timestamp>,
    /// Points spent, as a positive sum.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub points_spent: i64,
    /// Points expired, as a positive sum.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub points_expired: i64,
    /// Points reversed (returns), as a positive sum.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub points_reversed: i64,
    /// The events' engagement values, summed.
    #[serde(default, skip_serializing_if = "is_zero_decimal")]
    pub engagement_value: tally_sdk::Decimal,
}

impl Summary {
    fn is_empty(&self) -> bool {
        *self == Summary::default()
    }

    /// `other`'s figures added to these: sums summed, the latest purchase the later one.
    pub fn add(&mut self, other: &Summary) {
        if let Ok(sum) = self.total_spend.checked_add(other.total_spend) {
            self.total_spend = sum;
        }
        self.last_purchase_at = self.last_purchase_at.max(other.last_purchase_at);
        self.points_spent = self.points_spent.saturating_add(other.points_spent);
        self.points_expired = self.points_expired.saturating_add(other.points_expired);
        self.points_reversed = self.points_reversed.saturating_add(other.points_reversed);
        if let Ok(sum) = self.engagement_value.checked_add(other.engagement_value) {
            self.engagement_value = sum;
        }
    }
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

fn is_zero_decimal(value: &tally_sdk::Decimal) -> bool {
    *value == tally_sdk::Decimal::default()
}

/// One entry of a customer's points ledger. Append-only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The tenant-wide ledger sequence number, assigned by the store.
    pub seq: u64,
    /// The event that made the entry.
    pub event_id: String,
    /// The plugin that decided it.
    pub plugin: String,
    /// Points moved: positive awards, negative takes.
    pub amount: i64,
    /// Earn, reverse, spend, expire or release.
    pub kind: PointKind,
    /// Why, as the customer sees it.
    pub reason: String,
    /// When these points expire, if they do.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// The part of `amount` that moved pending points rather than the balance: an earning
    /// held, a reversal of held points (a release moves all of it from pending).
    #[serde(default)]
    pub held: i64,
    /// The customer's balance after this entry.
    pub balance_after: i64,
    /// The customer's pending points after this entry.
    #[serde(default)]
    pub pending_after: i64,
    /// The customer's lifetime points after this entry.
    pub lifetime_after: i64,
    /// The event's timestamp: business time, so a replay writes the same ledger.
    pub at: Timestamp,
}

/// An outbound trigger waiting in the tenant's outbox. Append-only; consumers remember the
/// last `seq` they delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxTrigger {
    /// The tenant-wide outbox sequence number, assigned by the store.
    pub seq: u64,
    /// The event that caused it.
    pub event_id: String,
    /// The customer it is about.
    pub customer: String,
    /// The plugin that sent it.
    pub plugin: String,
    /// Its name, e.g. `TierEarned`.
    pub name: String,
    /// What it carries, as the plugin wrote it.
    #[serde(default)]
    pub data: RawJson,
    /// The customer as the event left them, for whoever the trigger goes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<CustomerSnapshot>,
    /// When it entered the outbox (the event's receipt); what its retention counts from.
    /// Absent in rows written before it was kept, which count as old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
}

/// What marketing tools read of a customer with every trigger (the fields Yotpo/Rule send),
/// as an event left them: kept with each trigger, since the profile moves on. The figures
/// as counted; how they are shown (`average_order`, `points_earned`) is worked out on read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CustomerSnapshot {
    /// Balance, pending and lifetime points.
    pub points: tally_sdk::Points,
    /// The tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// Whether they are a member.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub member: bool,
    /// Checkouts.
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub purchases: u64,
    /// Rejected checkouts.
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub returns: u64,
    /// Perks redeemed.
    #[serde(default, skip_serializing_if = "is_zero_count")]
    pub perks_redeemed: u64,
    /// The latest event from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<Timestamp>,
    /// The sums the record keeps.
    #[serde(default, skip_serializing_if = "Summary::is_empty")]
    pub summary: Summary,
}

impl CustomerSnapshot {
    /// How the snapshot is shown: points, tier and the marketer's summary (in a trigger's
    /// `customer_snapshot` and a webhook's `customer`).
    pub fn view(&self) -> SnapshotView<'_> {
        SnapshotView {
            points: self.points,
            tier: &self.tier,
            summary: self.summary_view(),
        }
    }

    /// The fields marketing tools read, as shown (the profile's `summary`).
    pub fn summary_view(&self) -> SummaryView {
        let kept = &self.summary;
        let purchases = self.purchases;
        let average_order = (purchases > 0).then(|| {
            // Cents: a display figure, not money to compute with (total_spend is exact).
            (kept.total_spend.to_f64() / purchases as f64 * 100.0).round() / 100.0
        });
        SummaryView {
            purchases,
            returns: self.returns,
            total_spend: kept.total_spend,
            average_order,
            last_purchase_at: kept.last_purchase_at,
            last_seen_at: self.last_seen_at,
            points_earned: self.points.lifetime.saturating_add(kept.points_reversed),
            points_spent: kept.points_spent,
            points_expired: kept.points_expired,
            points_reversed: kept.points_reversed,
            perks_redeemed: self.perks_redeemed,
            member: self.member,
            engagement_value: kept.engagement_value,
        }
    }
}

/// A [`CustomerSnapshot`] as shown.
#[derive(Debug, Serialize)]
pub struct SnapshotView<'a> {
    points: tally_sdk::Points,
    tier: &'a Option<String>,
    summary: SummaryView,
}

/// The fields marketing tools read on every customer (Yotpo/Rule's), worked out from a
/// snapshot.
#[derive(Debug, Serialize)]
pub struct SummaryView {
    purchases: u64,
    returns: u64,
    total_spend: tally_sdk::Decimal,
    /// `total_spend / purchases`, to the cent; `null` before a purchase.
    average_order: Option<f64>,
    last_purchase_at: Option<Timestamp>,
    /// The time of the latest event from outside (the clock's are not the customer).
    last_seen_at: Option<Timestamp>,
    points_earned: i64,
    points_spent: i64,
    points_expired: i64,
    points_reversed: i64,
    perks_redeemed: u64,
    member: bool,
    /// The events' engagement values, summed (Sitecore's).
    engagement_value: tally_sdk::Decimal,
}

// Zeros are left out: a snapshot is written with every trigger.
fn is_zero_count(count: &u64) -> bool {
    *count == 0
}

impl CustomerSnapshot {
    /// `record`'s figures now.
    pub fn of(record: &CustomerRecord) -> CustomerSnapshot {
        let customer = &record.customer;
        let stats = &customer.stats;
        CustomerSnapshot {
            points: customer.points,
            tier: customer.tier.clone(),
            member: customer.member,
            purchases: stats.events("checkout"),
            returns: stats.events("checkout_reject"),
            perks_redeemed: stats.events("perk_redeem"),
            last_seen_at: stats.last_event_at,
            summary: record.summary.clone(),
        }
    }
}

/// A reward in a tenant's catalogue: what it costs and the perk it issues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardRecord {
    /// Its id within the tenant.
    pub id: String,
    /// What customers see.
    pub name: String,
    /// Points it costs.
    pub cost: i64,
    /// The perk a redemption issues.
    pub perk: RewardPerk,
    /// How many may be redeemed in all; `None` for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock: Option<u64>,
    /// How many times one customer may redeem it; `None` for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_per_customer: Option<u32>,
    /// Redeemable from this moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_from: Option<Timestamp>,
    /// Redeemable until this moment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_until: Option<Timestamp>,
    /// Whether it can be redeemed at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// When it was added to the catalogue.
    pub created_at: Timestamp,
}

fn yes() -> bool {
    true
}

/// The perk a reward issues: its kind and value, and how many days it stays valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardPerk {
    /// `coupon`, `voucher`, ...
    pub kind: String,
    /// What it is worth.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
    /// Days it can be redeemed after it is issued; `None` for no end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_days: Option<u32>,
}

/// A redemption of a reward an append claims from the reward's stock: the store counts it,
/// and refuses it when the stock is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RewardClaim {
    /// The reward.
    pub reward: String,
    /// Its stock when the redemption was accepted; `None` for no limit.
    pub stock: Option<u64>,
}

/// An evaluated event to append, with everything it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct AppendEvent {
    /// The tenant the event belongs to; it must exist.
    pub tenant: String,
    /// The event. Its `seq` is ignored and assigned by the store; its `points` must be the sum
    /// of `ledger`'s amounts.
    pub event: StoredEvent,
    /// The customer's new state, built on the stored one: `event_count` one more, points the
    /// stored points moved by `ledger`.
    pub customer: CustomerRecord,
    /// Points entries to append to the customer's ledger, in order.
    pub ledger: Vec<NewLedgerEntry>,
    /// Plugin states to replace: `(plugin, Some(state))` sets, `(plugin, None)` deletes.
    pub plugin_states: Vec<(String, Option<RawJson>)>,
    /// Outbound triggers to put in the tenant's outbox, in order.
    pub triggers: Vec<NewTrigger>,
    /// The reward redeemed, to count against its stock.
    pub reward: Option<RewardClaim>,
    /// A `customer_erase`: the store also takes the personal data out of the customer's
    /// stored events and deletes their plugin states, and writes the tenant's audit log.
    pub erase: bool,
    /// A `customer_merge`: the customer merged away, written in the same step.
    pub merged: Option<Box<MergedAway>>,
    /// The customer as the event left them, kept with each of `triggers` (`None` without
    /// triggers).
    pub snapshot: Option<CustomerSnapshot>,
}

/// The other side of a `customer_merge`: the customer merged into the event's customer, as
/// the merge leaves them. The store appends the event to their history too, with `ledger`
/// (the points leaving them), and checks them as it checks the event's customer.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedAway {
    /// Their record after the merge: `merged_into` set, one event more.
    pub customer: CustomerRecord,
    /// Their entries of kind `merge`, taking their points out.
    pub ledger: Vec<NewLedgerEntry>,
}

/// One line of a tenant's audit log: what was done that the history does not show, without
/// personal data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The tenant-wide audit sequence number, assigned by the store.
    pub seq: u64,
    /// What was done: `customer_erased`.
    pub action: String,
    /// The SHA-256 (hex) of the customer id it was done to: enough to answer "was this
    /// customer erased?" for someone who has the id, nothing for anyone who has not.
    pub subject: String,
    /// When (the host's time).
    pub at: Timestamp,
    /// Counts of what was done.
    #[serde(default)]
    pub detail: Value,
}

/// What [`BatchTxn::append`] stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Appended {
    /// The event as stored, with its `seq`.
    pub event: StoredEvent,
    /// [`AppendEvent::customer`], handed back: the pipeline answers with it, and the one
    /// serial stage should not copy a customer's maps only to drop the original.
    pub customer: CustomerRecord,
}

/// A points entry, before the store places it in the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLedgerEntry {
    /// The plugin that decided it, or [`SYSTEM`](crate::domain::SYSTEM) for the host's own.
    pub plugin: String,
    /// The entry as the plugin made it, with the expiry the tenant's policy gave it.
    pub entry: PointEntry,
    /// The part of the amount that moves pending points (see [`LedgerEntry::held`]).
    pub held: i64,
}

/// A trigger a plugin sent, before the store places it in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTrigger {
    /// The plugin that sent it.
    pub plugin: String,
    /// The trigger as the plugin made it.
    pub trigger: Trigger,
}

/// A tenant's webhook endpoint: where its triggers are delivered, signed per Standard
/// Webhooks, and how far delivery has got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    /// `wh_` and 16 hex digits.
    pub id: String,
    /// Where triggers are POSTed (http or https).
    pub url: String,
    /// The trigger names delivered, or `["*"]` for all.
    pub triggers: Vec<String>,
    /// The signing secrets, newest first: during a rotation the old one stays valid until
    /// its `expires_at`, and every delivery is signed with each valid one.
    pub secrets: Vec<WebhookSecret>,
    /// False when the tenant turned it off, or the host did because it kept failing.
    pub enabled: bool,
    /// Why the host turned it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// When it was made.
    pub created_at: Timestamp,
    /// How far delivery has got.
    #[serde(default)]
    pub delivery: DeliveryState,
}

impl WebhookRecord {
    /// Whether a trigger called `name` goes to this endpoint.
    pub fn wants(&self, name: &str) -> bool {
        self.triggers
            .iter()
            .any(|wanted| wanted == "*" || wanted == name)
    }
}

/// A signing secret of an endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookSecret {
    /// `whsec_` and the base64 of 24 random bytes.
    pub secret: String,
    /// When it was made.
    pub created_at: Timestamp,
    /// When it stops being used (the old secret of a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// Where an endpoint's delivery stands: every trigger of the tenant's outbox up to `after`
/// was delivered, dead-lettered or not for it; the next one after it is being tried.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeliveryState {
    /// The outbox sequence number handled last.
    #[serde(default)]
    pub after: u64,
    /// Failed attempts at the next trigger so far.
    #[serde(default)]
    pub attempts: u32,
    /// When the next trigger is tried again, after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// Triggers delivered.
    #[serde(default)]
    pub delivered: u64,
    /// Triggers given up on after every retry.
    #[serde(default)]
    pub dead_lettered: u64,
    /// Triggers dead-lettered one after another, without a delivery between.
    #[serde(default)]
    pub dead_in_a_row: u32,
}

/// One attempt to deliver a trigger to an endpoint, for its delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryAttempt {
    /// The endpoint's attempt number, assigned by the store.
    #[serde(default)]
    pub seq: u64,
    /// The trigger's outbox sequence number.
    pub outbox_seq: u64,
    /// The `webhook-id` sent: the same for every attempt at one trigger.
    pub message_id: String,
    /// The trigger's name.
    pub trigger: String,
    /// When the attempt was made (the host's clock).
    pub at: Timestamp,
    /// The HTTP status answered, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// How long the attempt took, in milliseconds.
    pub latency_ms: u64,
    /// Why it failed without a status (refused, timed out, a private address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The start of the response body, at most 512 bytes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub response: String,
    /// `delivered`, `retrying` or `dead_lettered`.
    pub outcome: String,
}
