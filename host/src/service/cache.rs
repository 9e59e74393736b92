//! A cache of what the store holds, for the reads every request makes (keys, event types).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

/// A cache of what the store holds, filled on reads and emptied (in part or whole) by the
/// writes that change it.
///
/// A read that misses takes the cache's epoch, reads the store, and keeps what it read only if
/// no write has emptied the cache since: a write stores first and empties the cache after,
/// so a value read before the write can never be kept after it (a rotated key never works
/// again, a new event type is always seen).
#[derive(Debug)]
pub(super) struct StoreCache<K, V> {
    entries: RwLock<(u64, HashMap<K, V>)>,
}

impl<K, V> Default for StoreCache<K, V> {
    fn default() -> Self {
        StoreCache {
            entries: RwLock::new((0, HashMap::new())),
        }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> StoreCache<K, V> {
    pub(super) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        read_lock(&self.entries).1.get(key).cloned()
    }

    /// Take it before reading the store, and give it to [`StoreCache::insert`].
    pub(super) fn epoch(&self) -> u64 {
        read_lock(&self.entries).0
    }

    pub(super) fn insert(&self, epoch: u64, key: K, value: V) {
        let mut entries = write_lock(&self.entries);
        if entries.0 == epoch {
            entries.1.insert(key, value);
        }
    }

    pub(super) fn forget<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let mut entries = write_lock(&self.entries);
        entries.0 += 1;
        entries.1.remove(key);
    }

    pub(super) fn forget_all(&self) {
        let mut entries = write_lock(&self.entries);
        entries.0 += 1;
        entries.1.clear();
    }
}

/// A cache's lock for reading. A panic while a cache was locked leaves nothing half-done
/// (entries are inserted or removed whole), so a poisoned lock is used as it is.
pub(super) fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// A cache's lock for writing; see [`read_lock`].
pub(super) fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_read_after_the_last_write_is_kept_obeyed() {
        let cache = StoreCache::<String, u32>::default();
        let epoch = cache.epoch();
        cache.insert(epoch, "acme".to_owned(), 1);
        assert_eq!(cache.get("acme"), Some(1));
        cache.forget("acme");
        assert_eq!(cache.get("acme"), None);
    }

    #[test]
    fn a_value_read_before_a_write_is_not_kept_violated() {
        let cache = StoreCache::<String, u32>::default();
        // A read misses and takes the epoch; a write lands while it reads the store.
        let epoch = cache.epoch();
        cache.forget_all();
        cache.insert(epoch, "acme".to_owned(), 1);
        assert_eq!(cache.get("acme"), None, "the stale value is dropped");
        // The next read is kept.
        let epoch = cache.epoch();
        cache.insert(epoch, "acme".to_owned(), 2);
        assert_eq!(cache.get("acme"), Some(2));
    }
}
