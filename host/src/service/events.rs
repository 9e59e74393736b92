//! Reading an event as senders post it (`{"customer", "action", "data", "id"?,
//! "timestamp"?, "label"?}`, from JSON, a form or a CSV row) into a [`NewEvent`] for the
//! writer: the envelope is checked field by field, the data against the action's type.

use serde_json::{Map, Value, json};
use tally_sdk::Timestamp;
pub use tally_sdk::wire::kind_of;

use super::{ErrorKind, ServiceError};
use crate::auth;
use crate::domain::records::TenantRecord;
use crate::domain::schedule::is_internal_event_id;
use crate::domain::{CustomerId, EventId, IdError, Interaction, NewEvent};
use crate::schema::EventTypes;
use crate::storage::RawJson;
use tally_sdk::{INTERNAL_ACTIONS, is_internal_action};

pub use crate::domain::ids::{MAX_CUSTOMER_LEN, MAX_EVENT_ID_LEN};
/// The longest label.
pub const MAX_LABEL_LEN: usize = 200;

/// The fields an event may have; anything else is refused, so a typo (`"costumer"`) is
/// caught instead of silently dropped.
const FIELDS: [&str; 10] = [
    "customer",
    "action",
    "data",
    "id",
    "timestamp",
    "label",
    "channel",
    "campaign",
    "goals",
    "engagement_value",
];

/// The most goals one event may name.
const MAX_GOALS: usize = 100;

/// Where a request came from, recorded on its events.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// `api`, `import`, `demo`, ...
    pub source: String,
    /// The client's address.
    pub ip_address: Option<String>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
}

/// Checks one posted event and resolves its type. `now` is the received time, and the
/// event's time when it gives none.
pub(super) fn read_event(
    tenant: &TenantRecord,
    types: &EventTypes,
    input: Value,
    origin: &Origin,
    now: Timestamp,
) -> Result<NewEvent, ServiceError> {
    let Value::Object(mut fields) = input else {
        return Err(ServiceError::invalid_event(
            "",
            format!(
                "an event must be a JSON object with \"customer\", \"action\" and \"data\", not {}",
                kind_of(&input)
            ),
        ));
    };
    if let Some(unknown) = fields.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(ServiceError::invalid_event(
            unknown,
            format!(
                "unknown field \"{unknown}\": an event has {}; the action's own attributes go in \"data\"",
                FIELDS.join(", ")
            ),
        ));
    }
    let customer = identifier(&mut fields, "customer", CustomerId::parse)?.ok_or_else(|| {
        ServiceError::invalid_event(
            "customer",
            "\"customer\" is required: the id of the customer who did this",
        )
    })?;
    let action = action_of(&mut fields)?;
    let written_for = match action.as_str() {
        "customer_erase" => Some("DELETE /v1/customers/{id}"),
        "customer_merge" => Some("POST /v1/customers/{id}/merge"),
        _ => None,
    };
    if let Some(route) = written_for {
        return Err(ServiceError::new(
            ErrorKind::Unprocessable,
            "reserved_action",
            format!("\"{action}\" is written by the host for {route}; use that"),
        )
        .with_details(json!({"field": "action", "action": action})));
    }
    if is_internal_action(&action) {
        return Err(ServiceError::new(
            ErrorKind::Unprocessable,
            "reserved_action",
            format!(
                "\"{action}\" is an action only the host writes, when its moment comes ({}); \
                 post the interaction itself instead",
                INTERNAL_ACTIONS.join(", ")
            ),
        )
        .with_details(json!({"field": "action", "action": action})));
    }
    let data = data_of(&mut fields)?;
    let id = match identifier(&mut fields, "id", EventId::parse)? {
        Some(id) if is_internal_event_id(id.as_str()) => {
            return Err(ServiceError::invalid_event(
                "id",
                format!(
                    "\"id\" {:?} starts with \"system:\", which is kept for the host's own events",
                    id.as_str()
                ),
            ));
        }
        Some(id) => id,
        None => generate_id()?,
    };
    let timestamp = timestamp_of(&mut fields, now)?;
    let tolerance = i64::from(tenant.future_tolerance_seconds);
    if timestamp > now.plus_seconds(tolerance) {
        return Err(ServiceError::new(
            ErrorKind::Unprocessable,
            "timestamp_in_future",
            format!(
                "\"timestamp\" {timestamp} is {} seconds ahead of the host's clock ({now}); \
                 at most {tolerance} are allowed",
                timestamp.unix_seconds() - now.unix_seconds()
            ),
        )
        .with_details(json!({"field": "timestamp", "now": now, "tolerance_seconds": tolerance})));
    }
    let label = short_text(&mut fields, "label")?;
    let interaction = interaction_of(&mut fields)?;

    let resolved = types.check_event(&action, &data)?;
    let contact_card = resolved
        .event_type()
        .map(|event_type| event_type.contact_card_values(&data))
        .unwrap_or_default();
    Ok(NewEvent {
        tenant: tenant.id.clone(),
        id,
        action,
        label,
        customer,
        timestamp,
        source: origin.source.clone(),
        ip_address: origin.ip_address.clone(),
        user_agent: origin.user_agent.clone(),
        data: RawJson::from_value(&data),
        received_at: now,
        contact_card,
        due: None,
        interaction,
    })
}

/// `channel`, `campaign`, `goals` and `engagement_value`, each optional; `None` for none.
fn interaction_of(
    fields: &mut Map<String, Value>,
) -> Result<Option<Box<Interaction>>, ServiceError> {
    let channel = short_text(fields, "channel")?;
    let campaign = short_text(fields, "campaign")?;
    let goals = match fields.remove("goals") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(goals)) if goals.len() <= MAX_GOALS => goals
            .into_iter()
            .map(|goal| match goal {
                Value::String(goal) if !goal.is_empty() && goal.len() <= MAX_LABEL_LEN => Ok(goal),
                Value::Number(goal) => Ok(goal.to_string()),
                other => Err(ServiceError::invalid_event(
                    "goals",
                    format!(
                        "each of \"goals\" is a goal's id (a string of at most \
                         {MAX_LABEL_LEN} bytes), not {}",
                        kind_of(&other)
                    ),
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ServiceError::invalid_event(
                "goals",
                format!("\"goals\" is a list of at most {MAX_GOALS} goal ids"),
            ));
        }
    };
    let engagement_value = match fields.remove("engagement_value") {
        None | Some(Value::Null) => None,
        Some(value) => Some(serde_json::from_value::<tally_sdk::Decimal>(value).map_err(
            |error| {
                ServiceError::invalid_event(
                    "engagement_value",
                    format!("\"engagement_value\" is a number: {error}"),
                )
            },
        )?),
    };
    let interaction = Interaction {
        channel,
        campaign,
        goals,
        engagement_value,
    };
    Ok((interaction != Interaction::default()).then(|| Box::new(interaction)))
}

/// `action`: required, a non-empty string.
fn action_of(fields: &mut Map<String, Value>) -> Result<String, ServiceError> {
    Ok(match fields.remove("action") {
        Some(Value::String(action)) if !action.is_empty() => action,
        None | Some(Value::Null) => {
            return Err(ServiceError::invalid_event(
                "action",
                "\"action\" is required: what happened, e.g. \"checkout\"",
            ));
        }
        Some(other) => {
            return Err(ServiceError::invalid_event(
                "action",
                format!(
                    "\"action\" must be a non-empty string, not {}",
                    kind_of(&other)
                ),
            ));
        }
    })
}

/// `data`: a JSON object of the action's attributes; empty when absent.
fn data_of(fields: &mut Map<String, Value>) -> Result<Value, ServiceError> {
    Ok(match fields.remove("data") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(data @ Value::Object(_)) => data,
        Some(other) => {
            return Err(ServiceError::invalid_event(
                "data",
                format!(
                    "\"data\" must be a JSON object of the action's attributes, not {}",
                    kind_of(&other)
                ),
            ));
        }
    })
}

/// `timestamp`: RFC 3339; `now` when absent.
fn timestamp_of(
    fields: &mut Map<String, Value>,
    now: Timestamp,
) -> Result<Timestamp, ServiceError> {
    Ok(match fields.remove("timestamp") {
        None | Some(Value::Null) => now,
        Some(Value::String(text)) => text.parse::<Timestamp>().map_err(|error| {
            ServiceError::invalid_event("timestamp", format!("\"timestamp\": {error}"))
        })?,
        Some(other) => {
            return Err(ServiceError::invalid_event(
                "timestamp",
                format!(
                    "\"timestamp\" must be an RFC 3339 string such as 2026-11-23T10:00:00Z, not {}",
                    kind_of(&other)
                ),
            ));
        }
    })
}

/// `label`, `channel`, `campaign`: an optional string of at most [`MAX_LABEL_LEN`] bytes.
fn short_text(fields: &mut Map<String, Value>, name: &str) -> Result<Option<String>, ServiceError> {
    Ok(match fields.remove(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.len() <= MAX_LABEL_LEN => Some(text),
        Some(Value::String(_)) => {
            return Err(ServiceError::invalid_event(
                name,
                format!("\"{name}\" is longer than {MAX_LABEL_LEN} bytes"),
            ));
        }
        Some(other) => {
            return Err(ServiceError::invalid_event(
                name,
                format!("\"{name}\" must be a string, not {}", kind_of(&other)),
            ));
        }
    })
}

/// A customer or event id: a string or a whole number (many systems keep numeric ids),
/// checked by `parse` (the id type's own rules). `Ok(None)` when absent.
fn identifier<T>(
    fields: &mut Map<String, Value>,
    name: &str,
    parse: fn(String) -> Result<T, IdError>,
) -> Result<Option<T>, ServiceError> {
    let text = match fields.remove(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => text,
        Some(Value::Number(number)) if number.is_u64() || number.is_i64() => number.to_string(),
        Some(other) => {
            return Err(ServiceError::invalid_event(
                name,
                format!(
                    "\"{name}\" must be a string or a whole number, not {}",
                    kind_of(&other)
                ),
            ));
        }
    };
    parse(text)
        .map(Some)
        .map_err(|error| ServiceError::invalid_event(name, format!("\"{name}\" {error}")))
}

/// A fresh event id for an event posted without one: 128 random bits.
pub fn generate_id() -> Result<EventId, ServiceError> {
    let hex = auth::random_hex(16).map_err(|error| ServiceError::internal(error.to_string()))?;
    EventId::parse(format!("evt_{hex}")).map_err(|error| ServiceError::internal(error.to_string()))
}
