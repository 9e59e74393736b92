//! The built-in event types every tenant has, written as event-type documents (JSON Schema
//! 2020-12) so that they are documented and served exactly like a tenant's own.
//!
//! They accept events as other systems really send them, not as a strict API would like:
//! - amounts may be JSON numbers or strings holding a decimal number (`"200"`, `"19.99"`),
//!   because Antavo's own checkout example writes them as strings and form-encoded or CSV
//!   input has no numbers at all;
//! - ids (`transaction_id`, `product_id`) may be strings or whole numbers;
//! - point amounts are positive whole numbers or strings holding one;
//! - properties the schema does not name are allowed (senders extend built-in events with
//!   their own attributes, as Antavo lets them).
//!
//! `email` on `opt_in`/`opt_out` is a plain string without a format check: imports carry
//! whatever the source system holds, and the address is the customer's key, not something
//! this layer should refuse to record.

use super::Violation;
use super::document::{self, DRAFT_2020_12, EventType, NUMERIC_PATTERN, POSITIVE_INTEGER_PATTERN};
use serde_json::{Value, json};
use std::sync::{Arc, OnceLock};

/// The ids of the built-in event types, in the order [`builtins`] lists them.
pub const BUILTIN_IDS: [&str; 11] = [
    "checkout",
    "checkout_update",
    "checkout_reject",
    "checkout_accept",
    "perk_redeem",
    "profile_update",
    "reward_redeem",
    "point_add",
    "point_sub",
    "opt_in",
    "opt_out",
];

/// Whether `id` names a built-in type, compared without case (a tenant type `Checkout`
/// beside the built-in `checkout` would only confuse).
#[must_use]
pub fn is_builtin_id(id: &str) -> bool {
    BUILTIN_IDS.iter().any(|b| b.eq_ignore_ascii_case(id))
}

/// The built-in types, compiled once per process.
///
/// Their documents are constants covered by this module's tests, so they always compile;
/// should one ever fail (a jsonschema upgrade that changes its rules), it is logged and
/// left out rather than taking the host down, and the tests say which.
#[must_use]
pub fn builtins() -> &'static [Arc<EventType>] {
    static BUILTINS: OnceLock<Vec<Arc<EventType>>> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        builtin_documents()
            .iter()
            .filter_map(|doc| match document::compile(doc, true) {
                Ok(t) => Some(Arc::new(t)),
                Err(err) => {
                    tracing::error!(id = %doc["id"], %err, "built-in event type does not compile");
                    None
                }
            })
            .collect()
    })
}

/// The built-in type with this exact id.
#[must_use]
pub fn builtin(id: &str) -> Option<&'static Arc<EventType>> {
    builtins().iter().find(|t| t.id() == id)
}

/// A few words to add to a built-in type's violation where the schema alone cannot say
/// what the sender should do.
pub(crate) fn hint(type_id: &str, violation: &Violation) -> Option<&'static str> {
    match (type_id, violation.keyword.as_str(), violation.path.as_str()) {
        // Required only when there are no items (the schema's `if`/`else`).
        ("checkout", "required", "/total") => {
            Some(" (or send a non-empty \"items\" list to derive the total from)")
        }
        _ => None,
    }
}

/// The documents of the built-in types, as `GET /v1/event-types` serves them.
#[must_use]
pub fn builtin_documents() -> Vec<Value> {
    vec![
        checkout(),
        checkout_update(),
        checkout_reject(),
        checkout_accept(),
        perk_redeem(),
        profile_update(),
        reward_redeem(),
        points(
            "point_add",
            "Points added",
            "Adds points to the customer's balance.",
        ),
        points(
            "point_sub",
            "Points removed",
            "Removes points from the customer's balance.",
        ),
        opt_in(),
        opt_out(),
    ]
}

/// The `$defs` every built-in document carries, so each stands alone.
fn defs() -> Value {
    json!({
        "decimal": {
            "description": "A decimal number, as a JSON number or a string holding one (\"200\", \"19.99\", \"-5\").",
            "type": ["number", "string"],
            "pattern": NUMERIC_PATTERN
        },
        "identifier": {
            "description": "An identifier: a non-empty string or a whole number.",
            "type": ["string", "integer"],
            "minLength": 1,
            "maxLength": 256
        },
        "currency": {
            "description": "An ISO 4217 currency code (\"EUR\").",
            "type": "string",
            "pattern": "^[A-Za-z]{3}$"
        },
        "item": {
            "description": "One line of a purchase.",
            "type": "object",
            "properties": {
                "transaction_id": {"$ref": "#/$defs/identifier", "displayName": "Transaction ID"},
                "product_id": {"$ref": "#/$defs/identifier", "displayName": "Product ID"},
                "sku": {"$ref": "#/$defs/identifier", "displayName": "SKU"},
                "product_name": {"type": "string", "displayName": "Product name"},
                "product_url": {"type": "string", "displayName": "Product URL"},
                "product_category": {"type": "string", "displayName": "Product category"},
                "quantity": {"$ref": "#/$defs/decimal", "displayName": "Quantity"},
                "price": {"$ref": "#/$defs/decimal", "displayName": "Unit price"},
                "subtotal": {"$ref": "#/$defs/decimal", "displayName": "Subtotal"},
                "discount": {"$ref": "#/$defs/decimal", "displayName": "Discount"}
            }
        }
    })
}

fn purchase_properties() -> Value {
    json!({
        "transaction_id": {"$ref": "#/$defs/identifier", "displayName": "Transaction ID"},
        "total": {"$ref": "#/$defs/decimal", "displayName": "Total"},
        "currency": {"$ref": "#/$defs/currency", "displayName": "Currency"},
        "discount": {"$ref": "#/$defs/decimal", "displayName": "Discount"},
        "shipping": {"$ref": "#/$defs/decimal", "displayName": "Shipping"},
        "channel": {"type": "string", "displayName": "Channel"},
        "store": {"$ref": "#/$defs/identifier", "displayName": "Store"},
        "items": {
            "type": "array",
            "displayName": "Items",
            "items": {"$ref": "#/$defs/item"}
        }
    })
}

fn document(id: &str, display_name: &str, description: &str, schema: Value) -> Value {
    json!({
        "id": id,
        "displayName": display_name,
        "description": description,
        "builtIn": true,
        "jsonSchema": schema
    })
}

fn checkout() -> Value {
    document(
        "checkout",
        "Checkout",
        "A purchase. Needs a transaction_id, and a total or a non-empty items list to derive it from. Corrected later by checkout_update or checkout_reject with the same transaction_id.",
        json!({
            "$schema": DRAFT_2020_12,
            "$defs": defs(),
            "type": "object",
            "properties": purchase_properties(),
            "required": ["transaction_id"],
            // A total is needed unless there are items to add up.
            "if": {"required": ["items"], "properties": {"items": {"type": "array", "minItems": 1}}},
            "else": {"required": ["total"]}
        }),
    )
}

fn checkout_update() -> Value {
    document(
        "checkout_update",
        "Checkout update",
        "Changes a pending checkout (items, quantities, total), named by its transaction_id.",
        json!({
            "$schema": DRAFT_2020_12,
            "$defs": defs(),
            "type": "object",
            "properties": purchase_properties(),
            "required": ["transaction_id"]
        }),
    )
}

fn checkout_reject() -> Value {
    document(
        "checkout_reject",
        "Checkout rejected",
        "Cancels a whole checkout (a return of the entire purchase), named by its transaction_id.",
        json!({
            "$schema": DRAFT_2020_12,
            "$defs": defs(),
            "type": "object",
            "properties": {
                "transaction_id": {"$ref": "#/$defs/identifier", "displayName": "Transaction ID"},
                "reason": {"type": "string", "displayName": "Reason"}
            },
            "required": ["transaction_id"]
        }),
    )
}

fn checkout_accept() -> Value {
    document(
        "checkout_accept",
        "Checkout accepted",
        "Confirms a checkout once it can no longer be returned (Antavo's checkout_accept): the host releases the points it holds pending for that transaction_id at once.",
        json!({
            "$schema": DRAFT_2020_12,
            "$defs": defs(),
            "type": "object",
            "properties": {
                "transaction_id": {"$ref": "#/$defs/identifier", "displayName": "Transaction ID"}
            },
            "required": ["transaction_id"]
        }),
    )
}

fn perk_redeem() -> Value {
    document(
        "perk_redeem",
        "Perk redeemed",
        "The customer used a perk (a coupon at the till): the host marks the perk with this code redeemed, once, while it is valid, and sends CouponRedeemed. Redeeming it again is refused (409 perk_redeemed), as is redeeming it after its valid_until (422 perk_expired).",
        json!({
            "$schema": DRAFT_2020_12,
            "$defs": defs(),
            "type": "object",
            "properties": {
                "code": {"type": "string", "minLength": 1, "displayName": "Perk code"}
            },
            "required": ["code"]
        }),
    )
}

fn profile_update() -> Value {
    document(
        "profile_update",
        "Profile updated",
        "The customer's profile written (PUT or PATCH /v1/customers/{id} make one): attributes merged into the profile as a JSON merge patch (null removes a field), or, with replace, in place of it. Checked against the tenant's customer schema when it has one.",
        json!({
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": {
                "attributes": {"type": "object", "displayName": "Attributes"},
                "replace": {"type": "boolean", "displayName": "Replace"}
            },
            "required": ["attributes"],
            "additionalProperties": false
        }),
    )
}

fn reward_redeem() -> Value {
    document(
        "reward_redeem",
        "Reward redeemed",
        "The customer redeems a reward of the tenant's catalogue (POST /v1/customers/{id}/rewards/{reward}/redeem makes one): the host spends its cost and issues its perk in this one event, with RewardRedeemed. Refused with nothing stored when the balance is short (422 insufficient_points), the stock is gone (409 reward_out_of_stock) or the customer reached the reward's limit (422 reward_limit_reached).",
        json!({
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": {
                "reward": {"type": "string", "minLength": 1, "displayName": "Reward"}
            },
            "required": ["reward"],
            "additionalProperties": false
        }),
    )
}

fn points(id: &str, display_name: &str, description: &str) -> Value {
    document(
        id,
        display_name,
        description,
        json!({
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": {
                "points": {
                    "description": "A positive whole number, as a JSON number or a string holding one.",
                    "displayName": "Points",
                    "type": ["integer", "string"],
                    "minimum": 1,
                    "pattern": POSITIVE_INTEGER_PATTERN
                },
                "reason": {"type": "string", "displayName": "Reason"},
                "expires_at": {"type": "string", "format": "date-time", "displayName": "Expires at"}
            },
            "required": ["points"]
        }),
    )
}

fn contact_properties() -> Value {
    json!({
        "email": {"type": "string", "maxLength": 254, "displayName": "Email"},
        "first_name": {"type": "string", "displayName": "First name"},
        "last_name": {"type": "string", "displayName": "Last name"},
        "phone": {"type": "string", "displayName": "Phone"},
        "language": {"type": "string", "displayName": "Language"},
        "channel": {"type": "string", "displayName": "Channel"},
        "birthday": {
            "description": "YYYY-MM-DD, or MM-DD without the year.",
            "type": "string",
            "pattern": "^([0-9]{4}-)?[0-9]{2}-[0-9]{2}$",
            "displayName": "Birthday"
        }
    })
}

fn opt_in() -> Value {
    document(
        "opt_in",
        "Opt-in",
        "The customer joins the loyalty program (or a channel of it).",
        json!({
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": contact_properties()
        }),
    )
}

fn opt_out() -> Value {
    let mut properties = contact_properties();
    if let Some(map) = properties.as_object_mut() {
        map.insert(
            "reason".to_owned(),
            json!({"type": "string", "displayName": "Reason"}),
        );
    }
    document(
        "opt_out",
        "Opt-out",
        "The customer leaves the loyalty program (or a channel of it).",
        json!({
            "$schema": DRAFT_2020_12,
            "type": "object",
            "properties": properties
        }),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;

    #[test]
    fn every_builtin_compiles_obeyed() {
        let ids: Vec<_> = builtins().iter().map(|t| t.id()).collect();
        assert_eq!(ids, BUILTIN_IDS);
        assert!(builtins().iter().all(|t| t.is_builtin()));
        for doc in builtin_documents() {
            assert!(document::compile(&doc, true).is_ok(), "{}", doc["id"]);
        }
    }

    #[test]
    fn builtin_ids_are_reserved_violated() {
        for id in BUILTIN_IDS {
            let err =
                super::super::parse_document(&json!({"id": id, "jsonSchema": {}})).unwrap_err();
            assert_eq!(err.code(), "invalid_event_type", "{id}");
        }
        assert!(is_builtin_id("CHECKOUT"));
        assert!(!is_builtin_id("repair"));
    }
}
