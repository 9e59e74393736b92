//! Which event type an action has, per tenant, and a process-wide cache of compiled
//! validators so that a tenant's schema is compiled once, not once per event.

use super::SchemaError;
use super::builtins::{BUILTIN_IDS, builtin, builtins};
use super::document::{EventType, document_hash, is_valid_id, parse_document};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

/// Compiled tenant event types, shared by every request handler (clone it: clones share
/// one cache).
///
/// Entries are keyed by (tenant, type id) and valid for one document hash: asking with a
/// changed document compiles it and replaces the old entry, so the cache holds at most one
/// validator per live event type and needs no other eviction.
#[derive(Debug, Clone, Default)]
pub struct SchemaCache {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: RwLock<HashMap<(String, String), Arc<EventType>>>,
    compiles: AtomicU64,
}

impl SchemaCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The compiled type of a tenant's stored document, compiling it only if this exact
    /// document (by hash) has not been compiled for this tenant and id before.
    ///
    /// # Errors
    /// Whatever [`parse_document`] says of the document (not cached: stored documents were
    /// checked at upload, so a failure here is rare and worth seeing each time).
    pub fn get_or_compile(
        &self,
        tenant: &str,
        document: &Value,
    ) -> Result<Arc<EventType>, SchemaError> {
        let id = document
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let hash = document_hash(document);
        let key = (tenant.to_owned(), id.to_owned());
        {
            // Poisoning cannot leave the map half-updated (every write is a single insert
            // or remove), so a poisoned lock's data is still good.
            let entries = self
                .inner
                .entries
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(hit) = entries.get(&key).filter(|t| t.document_hash() == hash) {
                return Ok(Arc::clone(hit));
            }
        }
        // Compile outside the lock: a big schema must not stall every other tenant. Two
        // handlers racing on the same new document both compile; the result is the same.
        let compiled = Arc::new(parse_document(document)?);
        self.inner.compiles.fetch_add(1, Ordering::Relaxed);
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        entries.insert(key, Arc::clone(&compiled));
        Ok(compiled)
    }

    /// Forgets a tenant's type (after it is deleted or replaced).
    pub fn remove(&self, tenant: &str, type_id: &str) {
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        entries.remove(&(tenant.to_owned(), type_id.to_owned()));
    }

    /// Forgets every type of a tenant.
    pub fn remove_tenant(&self, tenant: &str) {
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        entries.retain(|(t, _), _| t != tenant);
    }

    /// How many compiled types are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner
            .entries
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the cache holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many documents this cache has compiled since it was made (for tests and metrics).
    #[must_use]
    pub fn compiles(&self) -> u64 {
        self.inner.compiles.load(Ordering::Relaxed)
    }
}

/// What an action resolves to.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// A built-in or tenant type: validate the data with it.
    Typed(Arc<EventType>),
    /// No type, and the tenant allows untyped custom events: the data is stored unchecked.
    Untyped {
        /// The action as sent.
        action: String,
    },
}

impl Resolved {
    /// The event type, if the action has one.
    #[must_use]
    pub fn event_type(&self) -> Option<&Arc<EventType>> {
        match self {
            Self::Typed(t) => Some(t),
            Self::Untyped { .. } => None,
        }
    }
}

/// One tenant's view of event types: the built-ins, then the tenant's stored documents,
/// then (if the tenant turned them on) untyped custom events.
#[derive(Debug, Clone)]
pub struct EventTypes {
    cache: SchemaCache,
    tenant: String,
    documents: Arc<Vec<Value>>,
    allow_untyped: bool,
}

/// How many type ids an unknown-action message lists before it says "and N more".
const LISTED: usize = 30;

impl EventTypes {
    /// A tenant's view, given the documents it has stored (as [`parse_document`] accepted
    /// them) and whether it allows untyped custom events. Nothing is compiled until an
    /// action needs its type.
    #[must_use]
    pub fn new(
        cache: &SchemaCache,
        tenant: impl Into<String>,
        documents: impl Into<Arc<Vec<Value>>>,
        allow_untyped: bool,
    ) -> Self {
        Self {
            cache: cache.clone(),
            tenant: tenant.into(),
            documents: documents.into(),
            allow_untyped,
        }
    }

    /// The type of `action`: a built-in first, then the tenant's, then untyped.
    ///
    /// # Errors
    /// [`SchemaError::UnknownAction`] when nothing matches and untyped events are off (or the
    /// action is not a well-formed name), listing what is defined; a stored document that no
    /// longer compiles gives its [`SchemaError::InvalidSchema`].
    pub fn resolve(&self, action: &str) -> Result<Resolved, SchemaError> {
        if let Some(t) = builtin(action) {
            return Ok(Resolved::Typed(Arc::clone(t)));
        }
        if let Some(doc) = self.document(action) {
            return self
                .cache
                .get_or_compile(&self.tenant, doc)
                .map(Resolved::Typed);
        }
        if let Some(near) = BUILTIN_IDS.iter().find(|b| b.eq_ignore_ascii_case(action)) {
            return Err(self.unknown(
                action,
                &format!("action names are case-sensitive: did you mean \"{near}\"?"),
            ));
        }
        if !is_valid_id(action) {
            return Err(self.unknown(
                action,
                "an action is 1-64 characters of letters, digits, '_', '.' or '-', starting with a letter",
            ));
        }
        if self.allow_untyped {
            return Ok(Resolved::Untyped {
                action: action.to_owned(),
            });
        }
        Err(self.unknown(
            action,
            "define an event type with this id, or turn on untyped custom events for this tenant",
        ))
    }

    /// Resolves `action` and checks `data` against its type (untyped data is not checked).
    ///
    /// # Errors
    /// As [`EventTypes::resolve`], or [`SchemaError::SchemaViolation`] with every violation.
    pub fn check_event(&self, action: &str, data: &Value) -> Result<Resolved, SchemaError> {
        let resolved = self.resolve(action)?;
        if let Some(t) = resolved.event_type() {
            t.check(data)?;
        }
        Ok(resolved)
    }

    /// Every type this tenant has: the built-ins, then its own in stored order (for
    /// `GET /v1/event-types`).
    ///
    /// # Errors
    /// A stored document that no longer compiles.
    pub fn list(&self) -> Result<Vec<Arc<EventType>>, SchemaError> {
        let mut all: Vec<_> = builtins().to_vec();
        for doc in self.documents.iter() {
            all.push(self.cache.get_or_compile(&self.tenant, doc)?);
        }
        Ok(all)
    }

    /// The tenant's ids, in stored order.
    fn tenant_ids(&self) -> impl Iterator<Item = &str> {
        self.documents
            .iter()
            .filter_map(|d| d.get("id").and_then(Value::as_str))
    }

    fn document(&self, action: &str) -> Option<&Value> {
        self.documents
            .iter()
            .find(|d| d.get("id").and_then(Value::as_str) == Some(action))
    }

    fn unknown(&self, action: &str, advice: &str) -> SchemaError {
        let shown: String = action.chars().take(80).collect();
        let own: Vec<&str> = self.tenant_ids().collect();
        let own_list = if own.is_empty() {
            "none".to_owned()
        } else {
            let mut list = own
                .iter()
                .take(LISTED)
                .copied()
                .collect::<Vec<_>>()
                .join(", ");
            if own.len() > LISTED {
                list.push_str(&format!(" and {} more", own.len() - LISTED));
            }
            list
        };
        SchemaError::UnknownAction {
            action: action.to_owned(),
            message: format!(
                "unknown action \"{shown}\": {advice}. Built-in types: {}; this tenant's types: {own_list}",
                BUILTIN_IDS.join(", ")
            ),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a failing test should panic
mod tests {
    use super::*;
    use serde_json::json;

    fn repair() -> Value {
        json!({"id": "repair", "jsonSchema": {"properties": {"brand": {"type": "string"}}}})
    }

    #[test]
    fn cache_compiles_once_obeyed() {
        let cache = SchemaCache::new();
        let a = cache.get_or_compile("acme", &repair()).unwrap();
        let b = cache.get_or_compile("acme", &repair()).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.compiles(), 1);
        // Another tenant with the same document has its own entry.
        cache.get_or_compile("other", &repair()).unwrap();
        assert_eq!((cache.compiles(), cache.len()), (2, 2));
    }

    #[test]
    fn cache_recompiles_changed_document_obeyed() {
        let cache = SchemaCache::new();
        cache.get_or_compile("acme", &repair()).unwrap();
        let changed =
            json!({"id": "repair", "jsonSchema": {"properties": {"brand": {"type": "number"}}}});
        let t = cache.get_or_compile("acme", &changed).unwrap();
        assert!(t.validate(&json!({"brand": 1})).is_ok());
        assert_eq!((cache.compiles(), cache.len()), (2, 1));
        cache.remove("acme", "repair");
        assert!(cache.is_empty());
        cache.get_or_compile("acme", &repair()).unwrap();
        cache.remove_tenant("acme");
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_is_shared_across_threads_obeyed() {
        let cache = SchemaCache::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                let cache = cache.clone();
                s.spawn(move || {
                    for _ in 0..50 {
                        cache.get_or_compile("acme", &repair()).unwrap();
                    }
                });
            }
        });
        assert_eq!(cache.len(), 1);
        assert!(cache.compiles() <= 4, "{}", cache.compiles());
    }

    #[test]
    fn resolve_order_obeyed() {
        let cache = SchemaCache::new();
        let types = EventTypes::new(&cache, "acme", vec![repair()], false);
        assert!(matches!(types.resolve("checkout").unwrap(), Resolved::Typed(t) if t.is_builtin()));
        assert!(matches!(types.resolve("repair").unwrap(), Resolved::Typed(t) if !t.is_builtin()));
        let open = EventTypes::new(&cache, "acme", vec![], true);
        assert!(
            matches!(open.resolve("swim").unwrap(), Resolved::Untyped { action } if action == "swim")
        );
        assert_eq!(types.list().unwrap().len(), BUILTIN_IDS.len() + 1);
    }

    #[test]
    fn unknown_action_violated() {
        let cache = SchemaCache::new();
        let types = EventTypes::new(&cache, "acme", vec![repair()], false);
        let err = types.resolve("swim").unwrap_err();
        assert_eq!(err.code(), "unknown_action");
        let m = err.to_string();
        assert!(
            m.contains("\"swim\"")
                && m.contains("checkout, checkout_update")
                && m.contains("types: repair"),
            "{m}"
        );
        assert!(m.contains("untyped custom events"), "{m}");
        let open = EventTypes::new(&cache, "acme", vec![], true);
        assert!(
            open.resolve("Checkout")
                .unwrap_err()
                .to_string()
                .contains("did you mean \"checkout\"")
        );
        assert!(
            open.resolve("no spaces")
                .unwrap_err()
                .to_string()
                .contains("1-64 characters")
        );
        assert!(open.resolve("").is_err());
    }

    #[test]
    fn check_event_violated() {
        let cache = SchemaCache::new();
        let types = EventTypes::new(&cache, "acme", vec![repair()], false);
        let err = types
            .check_event("repair", &json!({"brand": 7}))
            .unwrap_err();
        assert_eq!(err.code(), "schema_violation");
        assert_eq!(err.violations()[0].path, "/brand");
        assert!(err.to_string().contains("event type \"repair\""), "{err}");
        assert!(
            types
                .check_event("repair", &json!({"brand": "Acme"}))
                .is_ok()
        );
    }
}
