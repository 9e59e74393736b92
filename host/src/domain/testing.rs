//! Events for the domain's unit tests.

#![allow(clippy::unwrap_used, reason = "test helpers panic on a bad literal")]

use serde_json::Value;

use super::{CustomerId, EventId, NewEvent, TenantId};
use crate::domain::records::RawJson;

/// An event of `action` by customer `ada` of tenant `acme` at `at`, with `data`.
pub(crate) fn event(action: &str, at: &str, data: Value) -> NewEvent {
    NewEvent {
        tenant: TenantId::parse("acme").unwrap(),
        id: EventId::parse(format!("{action}-{at}")).unwrap(),
        action: action.to_owned(),
        label: None,
        customer: CustomerId::parse("ada").unwrap(),
        timestamp: at.parse().unwrap(),
        source: "api".to_owned(),
        ip_address: None,
        user_agent: None,
        data: RawJson::from_value(&data),
        received_at: "2026-11-23T00:00:00Z".parse().unwrap(),
        contact_card: Vec::new(),
        due: None,
        interaction: Default::default(),
    }
}
