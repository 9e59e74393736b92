//! Event-type documents (`{"id", "displayName", "jsonSchema"}`, as Voyado writes
//! interaction schemas), their compiled form, and validating event data against them.
//!
//! Schemas are JSON Schema draft 2020-12, compiled with `jsonschema` with formats asserted
//! (`date-time` really is checked) and with no way to fetch anything: a tenant's `$ref` to a
//! URL is a compile error, never a request from the host.

use super::error::pointer_token;
use super::{SchemaError, Violation};
use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, ValidationError, Validator};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// The `$schema` of draft 2020-12, the only draft accepted.
pub const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// The longest event-type id.
pub const MAX_ID_LEN: usize = crate::domain::ids::MAX_NAME_LEN;

/// The longest `displayName` (of the type or of a property).
pub const MAX_DISPLAY_NAME_LEN: usize = 200;

/// A violation message longer than this is cut (the value it quotes may be big).
const MAX_MESSAGE_LEN: usize = 300;

/// The pattern the built-in types use for numbers that may be written as strings; a
/// violation of it gets a message a person can act on instead of the regex.
pub(crate) const NUMERIC_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

/// The pattern the built-in types use for positive whole numbers written as strings.
pub(crate) const POSITIVE_INTEGER_PATTERN: &str = "^[1-9][0-9]*$";

/// A property of an event type shown on the customer's contact card
/// (marked `"showInContactCard": true` in the schema).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactCardField {
    /// The property name in the event data.
    pub property: String,
    /// Its `displayName`, or the property name when there is none.
    pub display_name: String,
}

pub use crate::domain::ContactCardValue;

/// A compiled event type: its document, as posted, and what Tally derived from it.
#[derive(Clone)]
pub struct EventType {
    id: String,
    display_name: Option<String>,
    document: Value,
    contact_card: Vec<ContactCardField>,
    builtin: bool,
    hash: String,
    validator: Arc<Validator>,
}

impl fmt::Debug for EventType {
    // The compiled validator's own Debug is a tree of nodes; it tells a reader nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventType")
            .field("id", &self.id)
            .field("display_name", &self.display_name)
            .field("builtin", &self.builtin)
            .field("contact_card", &self.contact_card)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl EventType {
    /// The id, which is the action of events of this type.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The `displayName` of the document, if it has one.
    #[must_use]
    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    /// The document as posted, unknown keys included (serve it back as it came).
    #[must_use]
    pub fn document(&self) -> &Value {
        &self.document
    }

    /// The `jsonSchema` of the document.
    #[must_use]
    pub fn json_schema(&self) -> &Value {
        &self.document["jsonSchema"]
    }

    /// The properties shown on the contact card, in the order the document's object keys
    /// are kept (by name, as serde_json sorts them unless its `preserve_order` is on).
    #[must_use]
    pub fn contact_card(&self) -> &[ContactCardField] {
        &self.contact_card
    }

    /// Whether this is one of Tally's built-in types.
    #[must_use]
    pub fn is_builtin(&self) -> bool {
        self.builtin
    }

    /// The SHA-256 (hex) of the document, which keys the compile cache.
    #[must_use]
    pub fn document_hash(&self) -> &str {
        &self.hash
    }

    /// Checks event data against the schema and lists every violation (not just the first).
    ///
    /// Paths are JSON Pointers into `data` (see [`Violation`]). Data must be the event's
    /// `data` object; an event sent without data should be checked as `{}`.
    ///
    /// # Errors
    /// Every violation, in the order the schema found them.
    pub fn validate(&self, data: &Value) -> Result<(), Vec<Violation>> {
        if self.validator.is_valid(data) {
            return Ok(());
        }
        let mut violations = Vec::new();
        for error in self.validator.iter_errors(data) {
            violations_of(&error, &mut violations);
        }
        if self.builtin {
            for v in &mut violations {
                if let Some(hint) = super::builtins::hint(&self.id, v) {
                    v.message.push_str(hint);
                }
            }
        }
        if violations.is_empty() {
            // is_valid and iter_errors disagree only if jsonschema has a bug; refusing with
            // a violation is safer than accepting data the schema said no to.
            violations.push(Violation {
                path: String::new(),
                message: "the data does not match the schema".to_owned(),
                keyword: "schema".to_owned(),
            });
        }
        Err(violations)
    }

    /// [`EventType::validate`], as a [`SchemaError::SchemaViolation`] naming this type.
    ///
    /// # Errors
    /// [`SchemaError::SchemaViolation`] with every violation.
    pub fn check(&self, data: &Value) -> Result<(), SchemaError> {
        self.validate(data)
            .map_err(|violations| SchemaError::SchemaViolation {
                type_id: self.id.clone(),
                violations,
            })
    }

    /// The contact-card fields present in `data` with their values (absent and `null`
    /// values are left out), for the customer profile's "from recent events" section.
    #[must_use]
    pub fn contact_card_values(&self, data: &Value) -> Vec<ContactCardValue> {
        self.contact_card
            .iter()
            .filter_map(|field| {
                let value = data.get(&field.property)?;
                if value.is_null() {
                    return None;
                }
                Some(ContactCardValue {
                    property: field.property.clone(),
                    display_name: field.display_name.clone(),
                    value: value.clone(),
                })
            })
            .collect()
    }
}

/// Parses and compiles a tenant's event-type document.
///
/// Checks, in order: the document is an object; `id` is 1–64 characters of
/// `[A-Za-z0-9_.-]` starting with a letter and is not a built-in id (compared without case,
/// so `Checkout` cannot shadow `checkout`); `displayName`, if present, is a string;
/// `jsonSchema` is an object whose `$schema`, if present, is draft 2020-12 and whose
/// `type`, if present, is `object`; the property annotations `displayName` (string) and
/// `showInContactCard` (`true`/`false` or the strings `"true"`/`"false"`) are well-formed;
/// the schema compiles. Unknown top-level keys are kept in [`EventType::document`].
///
/// # Errors
/// [`SchemaError::InvalidEventType`] or [`SchemaError::InvalidSchema`], with the path in
/// the document.
pub fn parse_document(value: &Value) -> Result<EventType, SchemaError> {
    let id = value.get("id").and_then(Value::as_str).unwrap_or_default();
    if super::builtins::is_builtin_id(id) {
        return Err(SchemaError::event_type(
            "/id",
            format!(
                "\"{id}\" is a built-in event type and cannot be redefined; built-in types are: {}",
                super::builtins::BUILTIN_IDS.join(", ")
            ),
        ));
    }
    compile(value, false)
}

/// Parses and compiles a document; `builtin` skips the reserved-id check.
pub(crate) fn compile(value: &Value, builtin: bool) -> Result<EventType, SchemaError> {
    let Some(doc) = value.as_object() else {
        return Err(SchemaError::event_type(
            "",
            format!(
                "an event type must be a JSON object with \"id\" and \"jsonSchema\", not {}",
                tally_sdk::wire::kind_of(value)
            ),
        ));
    };
    let id = check_id(doc.get("id"))?;
    let display_name = match doc.get("displayName") {
        None | Some(Value::Null) => None,
        Some(v) => Some(check_display_name("/displayName", v)?),
    };
    let schema = match doc.get("jsonSchema") {
        Some(Value::Object(schema)) => schema,
        Some(other) => {
            return Err(SchemaError::event_type(
                "/jsonSchema",
                format!(
                    "\"jsonSchema\" must be a JSON Schema object, not {}",
                    tally_sdk::wire::kind_of(other)
                ),
            ));
        }
        None => {
            return Err(SchemaError::event_type(
                "/jsonSchema",
                "\"jsonSchema\" is required: the JSON Schema (draft 2020-12) of the event data",
            ));
        }
    };
    check_draft(schema)?;
    check_top_level_type(schema)?;
    let contact_card = contact_card_of(schema)?;
    let validator = build_validator(&Value::Object(schema.clone()))?;
    Ok(EventType {
        id,
        display_name,
        document: value.clone(),
        contact_card,
        builtin,
        hash: document_hash(value),
        validator: Arc::new(validator),
    })
}

/// The SHA-256 (hex) of a document's canonical text (serde_json sorts object keys, so two
/// equal documents hash the same whatever their key order when posted).
#[must_use]
pub fn document_hash(document: &Value) -> String {
    hex::encode(Sha256::digest(document.to_string().as_bytes()))
}

/// Whether `id` is a well-formed event-type id or action name: a name, as tenant ids and
/// plugin names are (1–64 characters of `[A-Za-z0-9_.-]`, starting with a letter).
#[must_use]
pub fn is_valid_id(id: &str) -> bool {
    crate::domain::ids::is_name(id)
}

fn check_id(id: Option<&Value>) -> Result<String, SchemaError> {
    let id = match id {
        Some(Value::String(id)) => id,
        Some(other) => {
            return Err(SchemaError::event_type(
                "/id",
                format!(
                    "\"id\" must be a string, not {}",
                    tally_sdk::wire::kind_of(other)
                ),
            ));
        }
        None => {
            return Err(SchemaError::event_type(
                "/id",
                "\"id\" is required: the action name of events of this type (e.g. \"repair\")",
            ));
        }
    };
    if !is_valid_id(id) {
        return Err(SchemaError::event_type(
            "/id",
            format!(
                "\"id\" must be 1-{MAX_ID_LEN} characters of letters, digits, '_', '.' or '-', starting with a letter; got {}",
                Value::String(id.chars().take(MAX_ID_LEN + 16).collect())
            ),
        ));
    }
    Ok(id.clone())
}

fn check_display_name(path: &str, value: &Value) -> Result<String, SchemaError> {
    match value {
        Value::String(s) if s.chars().count() <= MAX_DISPLAY_NAME_LEN => Ok(s.clone()),
        Value::String(_) => Err(SchemaError::event_type(
            path,
            format!("\"displayName\" is longer than {MAX_DISPLAY_NAME_LEN} characters"),
        )),
        other => Err(SchemaError::event_type(
            path,
            format!(
                "\"displayName\" must be a string, not {}",
                tally_sdk::wire::kind_of(other)
            ),
        )),
    }
}

fn check_draft(schema: &Map<String, Value>) -> Result<(), SchemaError> {
    let Some(declared) = schema.get("$schema") else {
        return Ok(());
    };
    let Some(uri) = declared.as_str() else {
        return Err(SchemaError::InvalidSchema {
            path: "/jsonSchema/$schema".to_owned(),
            message: format!(
                "\"$schema\" must be a string, not {}",
                tally_sdk::wire::kind_of(declared)
            ),
        });
    };
    let trimmed = uri.trim_end_matches('#');
    if trimmed == DRAFT_2020_12 || trimmed == "http://json-schema.org/draft/2020-12/schema" {
        return Ok(());
    }
    let named = match Draft::from_schema_uri(uri) {
        Draft::Draft4 => Some("draft-04"),
        Draft::Draft6 => Some("draft-06"),
        Draft::Draft7 => Some("draft-07"),
        Draft::Draft201909 => Some("draft 2019-09"),
        _ => None,
    };
    let what = named.map_or_else(
        || format!("\"{uri}\" is not a JSON Schema draft Tally knows"),
        |draft| format!("\"{uri}\" is JSON Schema {draft}"),
    );
    Err(SchemaError::InvalidSchema {
        path: "/jsonSchema/$schema".to_owned(),
        message: format!(
            "{what}; Tally accepts draft 2020-12 only: use \"{DRAFT_2020_12}\" or leave \"$schema\" out"
        ),
    })
}

fn check_top_level_type(schema: &Map<String, Value>) -> Result<(), SchemaError> {
    let ok = match schema.get("type") {
        None => true,
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.len() == 1 && ts[0] == "object",
        Some(_) => false,
    };
    if ok {
        return Ok(());
    }
    Err(SchemaError::InvalidSchema {
        path: "/jsonSchema/type".to_owned(),
        message: format!(
            "the top-level \"type\" must be \"object\" (event data is an object) or left out; got {}",
            schema.get("type").map(Value::to_string).unwrap_or_default()
        ),
    })
}

/// Reads the `displayName`/`showInContactCard` annotations of the top-level properties.
fn contact_card_of(schema: &Map<String, Value>) -> Result<Vec<ContactCardField>, SchemaError> {
    let Some(Value::Object(properties)) = schema.get("properties") else {
        return Ok(Vec::new());
    };
    let mut fields = Vec::new();
    for (property, subschema) in properties {
        let Some(subschema) = subschema.as_object() else {
            continue; // `true`/`false` subschemas carry no annotations; the compiler checks the rest.
        };
        let base = format!("/jsonSchema/properties/{}", pointer_token(property));
        let display_name = match subschema.get("displayName") {
            None | Some(Value::Null) => None,
            Some(v) => Some(check_display_name(&format!("{base}/displayName"), v)?),
        };
        let shown = match subschema.get("showInContactCard") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => true,
            Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("false") => false,
            Some(other) => {
                return Err(SchemaError::event_type(
                    format!("{base}/showInContactCard"),
                    format!(
                        "\"showInContactCard\" must be true or false (or the strings \"true\"/\"false\"), not {other}"
                    ),
                ));
            }
        };
        if shown {
            fields.push(ContactCardField {
                property: property.clone(),
                display_name: display_name.unwrap_or_else(|| property.clone()),
            });
        }
    }
    Ok(fields)
}

/// Compiles a schema: draft 2020-12, formats asserted, no reference fetching.
fn build_validator(schema: &Value) -> Result<Validator, SchemaError> {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        // `offline` refuses every reference that is not inside the schema itself, whatever
        // features another crate in the build may switch on for jsonschema.
        .offline()
        .build(schema)
        .map_err(|error| compile_error(&error))
}

fn compile_error(error: &ValidationError<'_>) -> SchemaError {
    let path = format!("/jsonSchema{}", error.instance_path().as_str());
    let message = match error.kind() {
        ValidationErrorKind::Referencing(inner) => format!(
            "{inner} (a schema must be self-contained: Tally never fetches referenced schemas, so use \"$defs\" and \"#/$defs/...\" references)"
        ),
        _ => format!(
            "the schema is not valid JSON Schema 2020-12: {}",
            message_of(error)
        ),
    };
    SchemaError::InvalidSchema { path, message }
}

/// Turns one jsonschema error into violations (one per property for the keywords that
/// name several).
fn violations_of(error: &ValidationError<'_>, out: &mut Vec<Violation>) {
    let base = error.instance_path().as_str();
    let keyword = error.kind().keyword().to_owned();
    let child = |name: &str| format!("{base}/{}", pointer_token(name));
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            out.push(Violation {
                path: child(&name),
                message: format!("\"{name}\" is required"),
                keyword,
            });
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
            for name in unexpected {
                out.push(Violation {
                    path: child(name),
                    message: format!("\"{name}\" is not an allowed property"),
                    keyword: keyword.clone(),
                });
            }
        }
        _ => out.push(Violation {
            path: base.to_owned(),
            message: message_of(error),
            keyword,
        }),
    }
}

fn message_of(error: &ValidationError<'_>) -> String {
    let instance = error.instance();
    match error.kind() {
        ValidationErrorKind::Pattern { pattern } if pattern == NUMERIC_PATTERN => {
            return format!(
                "{} is not a number: send a number (200, 19.99) or a string holding one (\"200\", \"19.99\")",
                short(instance)
            );
        }
        ValidationErrorKind::Pattern { pattern } if pattern == POSITIVE_INTEGER_PATTERN => {
            return format!(
                "{} is not a positive whole number: send one (100) or a string holding one (\"100\")",
                short(instance)
            );
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => format!("\"{t}\""),
                TypeKind::Multiple(ts) => ts
                    .iter()
                    .map(|t| format!("\"{t}\""))
                    .collect::<Vec<_>>()
                    .join(" or "),
            };
            let got = match &**instance {
                Value::Object(_) | Value::Array(_) | Value::Null => {
                    tally_sdk::wire::kind_of(instance).to_owned()
                }
                other => format!("{} ({})", short(other), tally_sdk::wire::kind_of(other)),
            };
            return format!("expected {expected}, got {got}");
        }
        _ => {}
    }
    // Objects and arrays can be large: name them rather than quote them.
    let text = match &**instance {
        Value::Object(_) => error.masked_with("the object").to_string(),
        Value::Array(_) => error.masked_with("the array").to_string(),
        _ => error.to_string(),
    };
    truncate(text)
}

/// A value for a message: scalars quoted in full (up to a cap), containers named.
fn short(value: &Value) -> String {
    match value {
        Value::Object(_) => "the object".to_owned(),
        Value::Array(_) => "the array".to_owned(),
        other => truncate(other.to_string()),
    }
}

fn truncate(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(schema: Value) -> Value {
        json!({"id": "thing", "jsonSchema": schema})
    }

    #[test]
    fn ids_obeyed() {
        for id in [
            "a",
            "repair",
            "wholeSalePurchase",
            "app.open-v2_x",
            &"x".repeat(64),
        ] {
            assert!(is_valid_id(id), "{id}");
        }
    }

    #[test]
    fn ids_violated() {
        for id in ["", "1abc", "_x", "a b", "é", "a/b", &"x".repeat(65)] {
            assert!(!is_valid_id(id), "{id}");
        }
    }

    #[test]
    fn draft_2020_12_obeyed() {
        for s in [
            DRAFT_2020_12,
            "https://json-schema.org/draft/2020-12/schema#",
        ] {
            parse_document(&doc(json!({"$schema": s}))).unwrap();
        }
        parse_document(&doc(json!({}))).unwrap();
    }

    #[test]
    fn other_draft_violated() {
        let err = parse_document(&doc(
            json!({"$schema": "http://json-schema.org/draft-07/schema#"}),
        ))
        .unwrap_err();
        assert_eq!(err.code(), "invalid_schema");
        let text = err.to_string();
        assert!(
            text.contains("draft-07") && text.contains("2020-12"),
            "{text}"
        );
        let err = parse_document(&doc(json!({"$schema": "https://example.com/meta"}))).unwrap_err();
        assert!(
            err.to_string()
                .contains("not a JSON Schema draft Tally knows"),
            "{err}"
        );
    }

    #[test]
    fn top_level_type_violated() {
        let err = parse_document(&doc(json!({"type": "string"}))).unwrap_err();
        assert!(err.to_string().contains("/jsonSchema/type"), "{err}");
        parse_document(&doc(json!({"type": ["object"]}))).unwrap();
    }

    #[test]
    fn compile_error_violated() {
        let err =
            parse_document(&doc(json!({"properties": {"a": {"type": "strin"}}}))).unwrap_err();
        assert_eq!(err.code(), "invalid_schema");
        assert!(
            err.to_string().contains("/jsonSchema/properties/a/type"),
            "{err}"
        );
    }

    #[test]
    fn remote_reference_violated() {
        // Must fail at compile time without any network access.
        let err =
            parse_document(&doc(json!({"$ref": "https://example.com/schema.json"}))).unwrap_err();
        assert_eq!(err.code(), "invalid_schema");
        assert!(err.to_string().contains("never fetches"), "{err}");
    }

    #[test]
    fn local_reference_obeyed() {
        let t = parse_document(&doc(json!({
            "$defs": {"sku": {"type": "string"}},
            "properties": {"sku": {"$ref": "#/$defs/sku"}}
        })))
        .unwrap();
        assert!(t.validate(&json!({"sku": "A"})).is_ok());
        assert_eq!(t.validate(&json!({"sku": 1})).unwrap_err()[0].path, "/sku");
    }

    #[test]
    fn bad_annotations_violated() {
        let err = parse_document(&doc(
            json!({"properties": {"a/b": {"showInContactCard": "yes"}}}),
        ))
        .unwrap_err();
        assert_eq!(err.code(), "invalid_event_type");
        assert!(
            err.to_string()
                .contains("/jsonSchema/properties/a~1b/showInContactCard"),
            "{err}"
        );
        let err =
            parse_document(&doc(json!({"properties": {"a": {"displayName": 3}}}))).unwrap_err();
        assert!(
            err.to_string()
                .contains("/jsonSchema/properties/a/displayName"),
            "{err}"
        );
    }

    #[test]
    fn annotations_obeyed() {
        let t = parse_document(&doc(json!({"properties": {
            "a": {"showInContactCard": true, "displayName": "A"},
            "b": {"showInContactCard": "TRUE"},
            "c": {"showInContactCard": "false", "displayName": "C"},
            "d": {"displayName": "D"},
            "e": true
        }})))
        .unwrap();
        assert_eq!(
            t.contact_card(),
            [
                ContactCardField {
                    property: "a".into(),
                    display_name: "A".into()
                },
                ContactCardField {
                    property: "b".into(),
                    display_name: "b".into()
                },
            ]
        );
    }

    #[test]
    fn document_shape_violated() {
        let cases = [
            (json!([]), ""),
            (json!({"jsonSchema": {}}), "/id"),
            (json!({"id": 5, "jsonSchema": {}}), "/id"),
            (json!({"id": "9x", "jsonSchema": {}}), "/id"),
            (json!({"id": "x"}), "/jsonSchema"),
            (json!({"id": "x", "jsonSchema": true}), "/jsonSchema"),
            (
                json!({"id": "x", "displayName": 1, "jsonSchema": {}}),
                "/displayName",
            ),
            (json!({"id": "Checkout", "jsonSchema": {}}), "/id"),
        ];
        for (value, path) in cases {
            match parse_document(&value) {
                Err(SchemaError::InvalidEventType { path: p, .. }) => {
                    assert_eq!(p, path, "{value}")
                }
                other => panic!("{value}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_keys_round_trip_obeyed() {
        let value =
            json!({"id": "x", "jsonSchema": {}, "category": "circular", "x-owner": {"team": 1}});
        let t = parse_document(&value).unwrap();
        assert_eq!(t.document(), &value);
        assert_eq!(t.document_hash(), document_hash(&value));
    }

    #[test]
    fn additional_properties_each_reported_violated() {
        let t = parse_document(&doc(
            json!({"additionalProperties": false, "properties": {"a": {}}}),
        ))
        .unwrap();
        let v = t.validate(&json!({"a": 1, "b": 2, "c~": 3})).unwrap_err();
        let paths: Vec<_> = v.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths, ["/b", "/c~0"]);
    }

    #[test]
    fn type_messages_violated() {
        let t = parse_document(&doc(json!({"properties": {"a": {"type": "string"}}}))).unwrap();
        let message = |v: Value| t.validate(&json!({"a": v})).unwrap_err()[0].message.clone();
        assert_eq!(message(json!(3)), "expected \"string\", got 3 (a number)");
        assert_eq!(message(json!([1])), "expected \"string\", got an array");
        assert_eq!(message(json!(null)), "expected \"string\", got null");
    }

    #[test]
    fn big_values_are_not_quoted_violated() {
        let t = parse_document(&doc(json!({"properties": {"a": {"type": "string"}}}))).unwrap();
        let big = "x".repeat(10_000);
        let v = t.validate(&json!({"a": {"big": big}})).unwrap_err();
        assert!(v[0].message.len() < 200, "{}", v[0].message);
        let t = parse_document(&doc(json!({"properties": {"a": {"maxLength": 3}}}))).unwrap();
        let v = t.validate(&json!({"a": big})).unwrap_err();
        assert!(
            v[0].message.len() <= MAX_MESSAGE_LEN + 3,
            "{}",
            v[0].message.len()
        );
    }
}
