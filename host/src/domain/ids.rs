//! Typed ids, each checked once where it enters the host (a request, a file, the store) so
//! that nothing past that point can mix a customer id up with an event id, or hold one that
//! breaks its rules.
//!
//! Tenant ids and plugin names are *names*: 1-64 ASCII letters, digits, `_`, `.` or `-`,
//! starting with a letter, because they appear in URLs, logs and keys. Customer and event ids
//! are the tenant's own (an external master id, an order number): any printable text up to a
//! length, so that other systems' ids are taken as they are.

use std::borrow::Borrow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest name (a tenant id, a plugin name, an event type id), in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// The longest customer id, in bytes.
pub const MAX_CUSTOMER_LEN: usize = 256;
/// The longest event id, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 128;

/// Why a text is not a valid id; says what the rule is, with the numbers involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct IdError {
    /// What is wrong, as the end of a sentence that names the field: "must not be empty".
    pub reason: String,
}

/// Whether `text` is a name: 1-64 letters, digits, `_`, `.` or `-`, starting with a letter.
pub fn is_name(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && text.len() <= MAX_NAME_LEN
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

fn check_name(text: &str) -> Result<(), IdError> {
    if is_name(text) {
        Ok(())
    } else {
        Err(IdError {
            reason: format!(
                "must be 1-{MAX_NAME_LEN} letters, digits, '_', '.' or '-', starting with a letter"
            ),
        })
    }
}

/// A tenant's own id: non-blank printable text of at most `max` bytes.
fn check_external(text: &str, max: usize) -> Result<(), IdError> {
    let reason = if text.trim().is_empty() {
        "must not be empty".to_owned()
    } else if text.len() > max {
        format!("is {} bytes long, more than the {max} allowed", text.len())
    } else if text.chars().any(char::is_control) {
        "must not contain control characters".to_owned()
    } else {
        return Ok(());
    };
    Err(IdError { reason })
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $check:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `text` and takes it as this kind of id.
            pub fn parse(text: impl Into<String>) -> Result<$name, IdError> {
                let text = text.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&text)?;
                Ok($name(text))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        /// Read as text wherever text is taken (keys, messages); made only by `parse`.
        impl std::ops::Deref for $name {
            type Target = str;

            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        /// Deserializing checks the id, so a record or request cannot smuggle in a bad one.
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<$name, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::parse(text).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A tenant (brand): the first part of every key the tenant owns.
    TenantId,
    check_name
);
id_type!(
    /// A plugin's name within its tenant.
    PluginName,
    check_name
);
id_type!(
    /// A customer, by the tenant's own id for them.
    CustomerId,
    |text| check_external(text, MAX_CUSTOMER_LEN)
);
id_type!(
    /// An event, by the sender's id for it (unique per tenant) or one the host generated.
    EventId,
    |text| check_external(text, MAX_EVENT_ID_LEN)
);

impl EventId {
    /// An id the host made itself (an internal event's), printable and within the length by
    /// construction.
    pub(crate) fn internal(text: String) -> EventId {
        EventId(text)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failing test should panic")]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_name_rule_obeyed() {
        for name in ["acme", "a", "points-v2", "Tiers.eu_1", &"a".repeat(64)] {
            assert_eq!(TenantId::parse(name).unwrap().as_str(), name);
            assert!(PluginName::parse(name).is_ok());
        }
    }

    #[test]
    fn names_follow_the_name_rule_violated() {
        for name in ["", "1acme", "-x", "a b", "é", &"a".repeat(65)] {
            let error = TenantId::parse(name).unwrap_err();
            assert!(error.reason.contains("1-64 letters"), "{name:?}: {error}");
        }
    }

    #[test]
    fn external_ids_take_other_systems_ids_obeyed() {
        for id in ["374397439743", "order #12/3", "Ünïcödé", &"x".repeat(256)] {
            assert_eq!(CustomerId::parse(id).unwrap().as_str(), id);
        }
        assert!(EventId::parse("x".repeat(128)).is_ok());
    }

    #[test]
    fn external_ids_take_other_systems_ids_violated() {
        let reason = |result: Result<CustomerId, IdError>| result.unwrap_err().reason;
        assert_eq!(reason(CustomerId::parse("  ")), "must not be empty");
        assert_eq!(
            reason(CustomerId::parse("x".repeat(257))),
            "is 257 bytes long, more than the 256 allowed"
        );
        assert_eq!(
            reason(CustomerId::parse("a\u{0}b")),
            "must not contain control characters"
        );
        assert_eq!(
            EventId::parse("x".repeat(129)).unwrap_err().reason,
            "is 129 bytes long, more than the 128 allowed"
        );
    }

    #[test]
    fn deserializing_checks_the_id() {
        let id: CustomerId = serde_json::from_str("\"ada\"").unwrap();
        assert_eq!(id, *"ada");
        let error = serde_json::from_str::<CustomerId>("\"\"").unwrap_err();
        assert!(error.to_string().contains("must not be empty"), "{error}");
    }
}
