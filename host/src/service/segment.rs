//! Segment's HTTP Tracking API, read as Segment sends it: each `track` and `identify`
//! message becomes a Tally event in the envelope every posted event has, and goes through
//! the same checks. A tenant's mapping names the action and data a Segment event becomes;
//! without one, Segment's e-commerce spec decides (`Order Completed` is a `checkout`,
//! `Order Refunded` a `checkout_reject`), and any other event becomes its name in snake
//! case with its properties as data. `identify` writes its traits to the profile
//! (`profile_update`, merged in).

use serde_json::{Map, Value, json};

use super::error::{ErrorKind, ServiceError};
use crate::domain::records::{SegmentEvent, SegmentMapping};

/// A Segment message read as a Tally event, with the end user's address and agent from its
/// `context` (the request itself comes from the CDP).
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    /// The event as `POST /v1/events` takes it.
    pub event: Value,
    /// `context.ip`.
    pub ip_address: Option<String>,
    /// `context.userAgent`.
    pub user_agent: Option<String>,
}

/// Reads one message; `kind` is the route's (`track`, `identify`) or, in a batch, `None`
/// for the message's own `type`.
pub fn translate(
    message: &Value,
    kind: Option<&str>,
    mapping: &SegmentMapping,
) -> Result<Translated, ServiceError> {
    let Value::Object(fields) = message else {
        return Err(invalid("a Segment message is a JSON object"));
    };
    let kind = match kind {
        Some(kind) => kind,
        None => fields
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("a batch message needs its \"type\": track or identify"))?,
    };
    let customer = ["userId", "anonymousId"]
        .iter()
        .find_map(|name| match fields.get(*name) {
            Some(Value::String(id)) if !id.is_empty() => Some(id.clone()),
            Some(Value::Number(id)) => Some(id.to_string()),
            _ => None,
        })
        .ok_or_else(|| invalid("a Segment message needs a \"userId\" or an \"anonymousId\""))?;
    let mut event = Map::new();
    event.insert("customer".to_owned(), json!(customer));
    for (theirs, ours) in [("messageId", "id"), ("timestamp", "timestamp")] {
        if let Some(value) = fields.get(theirs).filter(|value| !value.is_null()) {
            event.insert(ours.to_owned(), value.clone());
        }
    }
    match kind {
        "track" => {
            let name = fields
                .get("event")
                .and_then(Value::as_str)
                .filter(|name| !name.trim().is_empty())
                .ok_or_else(|| invalid("a track message needs its \"event\" name"))?;
            let properties = fields.get("properties").cloned().unwrap_or(json!({}));
            let (action, data) = match mapping.events.get(name) {
                Some(mapped) => (mapped.action.clone(), mapped_data(mapped, &properties)),
                None => default_event(name, &properties),
            };
            event.insert("action".to_owned(), json!(action));
            event.insert("label".to_owned(), json!(name));
            event.insert("data".to_owned(), data);
        }
        "identify" => {
            let traits = fields.get("traits").cloned().unwrap_or(json!({}));
            event.insert("action".to_owned(), json!("profile_update"));
            event.insert("data".to_owned(), json!({"attributes": traits}));
        }
        other => {
            return Err(ServiceError::new(
                ErrorKind::Unprocessable,
                "unsupported_segment_type",
                format!("Segment {other:?} messages are not taken; send track or identify"),
            ));
        }
    }
    let context = fields.get("context");
    let text = |name: &str| {
        context
            .and_then(|context| context.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    Ok(Translated {
        event: Value::Object(event),
        ip_address: text("ip"),
        user_agent: text("userAgent"),
    })
}

/// Segment's e-commerce spec, and snake case for the rest.
fn default_event(name: &str, properties: &Value) -> (String, Value) {
    let get = |path: &str| properties.get(path).filter(|value| !value.is_null());
    match name {
        "Order Completed" => {
            let mut data = Map::new();
            let fields = [
                ("transaction_id", get("order_id")),
                ("total", get("total").or_else(|| get("revenue"))),
                ("currency", get("currency")),
                ("discount", get("discount")),
                ("shipping", get("shipping")),
            ];
            for (ours, value) in fields {
                if let Some(value) = value {
                    data.insert(ours.to_owned(), value.clone());
                }
            }
            if let Some(Value::Array(products)) = get("products") {
                let items: Vec<Value> = products.iter().map(item).collect();
                data.insert("items".to_owned(), Value::Array(items));
            }
            ("checkout".to_owned(), Value::Object(data))
        }
        "Order Refunded" => {
            let mut data = Map::new();
            if let Some(order) = get("order_id") {
                data.insert("transaction_id".to_owned(), order.clone());
            }
            ("checkout_reject".to_owned(), Value::Object(data))
        }
        _ => (snake_case(name), properties.clone()),
    }
}

/// A Segment product as a checkout item.
fn item(product: &Value) -> Value {
    let mut item = Map::new();
    for (theirs, ours) in [
        ("product_id", "product_id"),
        ("sku", "sku"),
        ("name", "product_name"),
        ("category", "product_category"),
        ("url", "product_url"),
        ("price", "price"),
        ("quantity", "quantity"),
    ] {
        if let Some(value) = product.get(theirs).filter(|value| !value.is_null()) {
            item.insert(ours.to_owned(), value.clone());
        }
    }
    Value::Object(item)
}

/// The data a tenant's mapping makes of `properties`: each field from its property path
/// (dots for nesting), or the properties as they are when it names none.
fn mapped_data(mapped: &SegmentEvent, properties: &Value) -> Value {
    let Some(fields) = &mapped.data else {
        return properties.clone();
    };
    let mut data = Map::new();
    for (ours, path) in fields {
        let value = path
            .split('.')
            .try_fold(properties, |value, step| value.get(step));
        if let Some(value) = value.filter(|value| !value.is_null()) {
            data.insert(ours.clone(), value.clone());
        }
    }
    Value::Object(data)
}

/// `Product Added to Wishlist` → `product_added_to_wishlist`.
pub fn snake_case(name: &str) -> String {
    let mut action = String::with_capacity(name.len());
    for character in name.trim().chars() {
        if character.is_ascii_alphanumeric() {
            action.push(character.to_ascii_lowercase());
        } else if !action.ends_with('_') && !action.is_empty() {
            action.push('_');
        }
    }
    action.trim_end_matches('_').to_owned()
}

fn invalid(message: &str) -> ServiceError {
    ServiceError::new(ErrorKind::Unprocessable, "invalid_event", message)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;

    /// Segment's own `Order Completed` example from its e-commerce spec, trimmed.
    #[test]
    fn an_order_completed_is_a_checkout() {
        let message = json!({
            "userId": "019mr8mf4r",
            "type": "track",
            "event": "Order Completed",
            "messageId": "ajs-0f8a1b",
            "timestamp": "2026-12-01T10:00:00Z",
            "context": {"ip": "8.8.8.8", "userAgent": "Mozilla/5.0"},
            "properties": {
                "checkout_id": "fksdjfsdjfisjf9sdfjsd9f",
                "order_id": "50314b8e9bcf000000000000",
                "affiliation": "Google Store",
                "total": 27.50,
                "revenue": 25.00,
                "shipping": 3,
                "discount": 2.5,
                "currency": "USD",
                "products": [
                    {"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32",
                     "name": "Monopoly: 3rd Edition", "price": 19, "quantity": 1,
                     "category": "Games", "url": "https://www.example.com/product/path"}
                ]
            }
        });
        let translated = translate(&message, None, &SegmentMapping::default()).unwrap();
        assert_eq!(
            translated.event,
            json!({
                "customer": "019mr8mf4r", "id": "ajs-0f8a1b", "timestamp": "2026-12-01T10:00:00Z",
                "action": "checkout", "label": "Order Completed",
                "data": {"transaction_id": "50314b8e9bcf000000000000", "total": 27.5,
                         "currency": "USD", "discount": 2.5, "shipping": 3,
                         "items": [{"product_id": "507f1f77bcf86cd799439011", "sku": "45790-32",
                                    "product_name": "Monopoly: 3rd Edition", "price": 19,
                                    "quantity": 1, "product_category": "Games",
                                    "product_url": "https://www.example.com/product/path"}]}
            })
        );
        assert_eq!(translated.ip_address.as_deref(), Some("8.8.8.8"));
        assert_eq!(translated.user_agent.as_deref(), Some("Mozilla/5.0"));
    }

    #[test]
    fn a_tenant_mapping_wins_over_the_defaults_obeyed() {
        let mapping: SegmentMapping = serde_json::from_value(json!({"events": {
            "Bike Repaired": {"action": "repair", "data": {"brand": "bike.brand", "cost": "price"}}
        }}))
        .unwrap();
        let message = json!({"anonymousId": "anon-1", "event": "Bike Repaired",
                             "properties": {"bike": {"brand": "Crescent"}, "price": 40}});
        let translated = translate(&message, Some("track"), &mapping).unwrap();
        assert_eq!(translated.event["action"], "repair");
        assert_eq!(translated.event["customer"], "anon-1");
        assert_eq!(
            translated.event["data"],
            json!({"brand": "Crescent", "cost": 40})
        );
        let other =
            json!({"userId": 7, "event": "Product Added to Wishlist", "properties": {"sku": "x"}});
        let translated = translate(&other, Some("track"), &mapping).unwrap();
        assert_eq!(translated.event["action"], "product_added_to_wishlist");
        assert_eq!(translated.event["customer"], "7");
    }

    #[test]
    fn identify_writes_traits_obeyed() {
        let message = json!({"type": "identify", "userId": "97980cfea0067",
                             "traits": {"name": "Peter Gibbons", "email": "peter@example.com"}});
        let translated = translate(&message, None, &SegmentMapping::default()).unwrap();
        assert_eq!(translated.event["action"], "profile_update");
        assert_eq!(
            translated.event["data"],
            json!({"attributes": {"name": "Peter Gibbons", "email": "peter@example.com"}})
        );
    }

    #[test]
    fn messages_without_a_user_or_of_other_types_violated() {
        let none = SegmentMapping::default();
        for (message, code) in [
            (json!({"event": "Order Completed"}), "invalid_event"),
            (
                json!({"userId": "u", "type": "page", "name": "Home"}),
                "unsupported_segment_type",
            ),
            (json!({"userId": "u", "type": "track"}), "invalid_event"),
            (json!([1]), "invalid_event"),
        ] {
            assert_eq!(
                translate(&message, None, &none).unwrap_err().code,
                code,
                "{message}"
            );
        }
    }
}
