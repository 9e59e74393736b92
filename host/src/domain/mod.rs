//! The loyalty account's rules, as pure functions: no I/O, no threads, no wasm, no HTTP.
//!
//! A customer's account is the stored [`CustomerRecord`]: points balance, pending and
//! lifetime and the lots behind them, tier, perks, profile attributes, statistics, contact
//! card, and what the clock is to write for it next. It changes in three steps, all here:
//!
//! - before the plugins, [`Account::open`] applies the host's own rules for the event
//!   (expiring, releasing);
//! - while the plugins run, each successful decision is applied with
//!   [`Account::apply_decision`], which places its entries in the lots and moves points
//!   ([`move_points`], the one points rule) and refuses a decision that would break the
//!   balance rule, so each plugin sees the customer as the ones before left it;
//! - once they have run, [`apply_event`] says everything the event changes: the stored event
//!   with its outcome, the ledger entries, the triggers, the plugin states, the statistics and
//!   profile fields the host keeps itself, what is due next ([`schedule::schedule`]), or the
//!   event's refusal when a plugin set to reject failed.
//!
//! The writer, `simulate` and `tally eval` all go through these functions, so a simulated
//! event and a posted one cannot disagree, and the store checks every append against
//! [`points_after`], so a ledger cannot disagree with its balances.
//!
//! Ids are typed ([`TenantId`], [`CustomerId`], [`EventId`], [`PluginName`]) and checked once,
//! where they enter the host.

mod account;
mod event;
pub mod ids;
pub mod imports;
mod merge;
mod policy;
mod profile;
pub mod records;
mod redemption;
pub mod schedule;

pub use self::account::{Account, Hold, Lot, Refusal, SYSTEM, move_points, points_after};
pub use self::event::{Interaction, NewEvent, PluginOutcome, Rejection, apply_event, new_account};
pub use self::ids::{CustomerId, EventId, IdError, PluginName, TenantId};
pub use self::merge::Absorbed;
pub use self::policy::{Period, PointsExpiry, Policy, Schedule, TimeOfDay};
pub use self::profile::{ContactCardValue, erase_event};
pub use self::records::CustomerRecord;
pub use self::redemption::EventRefusal;
pub use self::schedule::{Due, DueKind};

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
