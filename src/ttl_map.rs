//! One bounded map of entries that expire at a Unix second: the verified-token cache,
//! opaque tokens an issuer called inactive, and remote-enrichment answers all keep
//! their entries here, under one eviction policy.
//!
//! An expired entry is never served. When the map is full, an insert drops the oldest
//! entry (first in, first out): O(1) per insert, so a full cache has no pauses, and no
//! bookkeeping on hits, which are the hot path. Expired entries leave on their own:
//! when read, and by [`TtlMap::purge_expired`], which a background task calls.

use std::{
    collections::VecDeque,
    hash::{BuildHasher, Hash, RandomState},
    sync::Mutex,
};

use dashmap::DashMap;

struct Timed<V> {
    /// Unix seconds until which the entry may be served (exclusive).
    until: i64,
    value: V,
}

pub struct TtlMap<K, V, S = RandomState> {
    entries: DashMap<K, Timed<V>, S>,
    /// Keys in insertion order; may still name entries that left already.
    order: Mutex<VecDeque<K>>,
    max_entries: usize,
}

impl<K: Eq + Hash, V, S: BuildHasher + Clone> std::fmt::Debug for TtlMap<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlMap")
            .field("len", &self.entries.len())
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

impl<K: Eq + Hash + Clone, V, S: BuildHasher + Clone + Default> TtlMap<K, V, S> {
    /// `max_entries == 0` keeps nothing.
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: DashMap::with_hasher(S::default()),
            order: Mutex::new(VecDeque::new()),
            max_entries,
        }
    }

    /// Reads the live entry for `key` through `read`, which may also refuse it (`None`)
    /// for reasons of its own; an expired or refused entry is removed.
    pub fn read<R>(&self, key: &K, now: i64, read: impl Fn(&V) -> Option<R>) -> Option<R> {
        {
            let entry = self.entries.get(key)?;
            if now < entry.until
                && let Some(found) = read(&entry.value)
            {
                return Some(found);
            }
        }
        // Only a dead entry goes: another caller may have just put a live one there.
        self.entries.remove_if(key, |_, entry| {
            now >= entry.until || read(&entry.value).is_none()
        });
        None
    }

    /// Keeps `value` until `until` (exclusive); nothing when `until <= now`.
    pub fn insert(&self, key: K, value: V, until: i64, now: i64) {
        if self.max_entries == 0 || until <= now {
            return;
        }
        if self.entries.contains_key(&key) {
            self.entries.insert(key, Timed { until, value });
            return;
        }
        self.make_room(key.clone());
        self.entries.insert(key, Timed { until, value });
    }

    /// Keeps `value` unless a live entry for `key` is there; whether it was kept. For
    /// "seen before?" sets, where two racing inserts must not both win.
    pub fn insert_new(&self, key: K, value: V, until: i64, now: i64) -> bool {
        if self.max_entries == 0 || until <= now {
            return true;
        }
        if !self.entries.contains_key(&key) {
            self.make_room(key.clone());
        }
        match self.entries.entry(key) {
            dashmap::Entry::Occupied(entry) if now < entry.get().until => false,
            dashmap::Entry::Occupied(mut entry) => {
                entry.insert(Timed { until, value });
                true
            }
            dashmap::Entry::Vacant(entry) => {
                entry.insert(Timed { until, value });
                true
            }
        }
    }

    /// Records `coming` as the newest key and, while the map is full, drops the oldest
    /// entries. Keys of entries that already left cost one pop each, and there are at
    /// most as many as were inserted: amortised O(1).
    fn make_room(&self, coming: K) {
        let Ok(mut order) = self.order.lock() else {
            return;
        };
        while self.entries.len() >= self.max_entries {
            let Some(oldest) = order.pop_front() else {
                break;
            };
            self.entries.remove(&oldest);
        }
        // Entries mostly expire in the order they came, so the keys of those that left
        // gather at the front: drop a couple per insert. Should they gather elsewhere,
        // one sweep (rare: once per `max_entries` inserts at most) bounds the queue.
        for _ in 0..2 {
            match order.front() {
                Some(front) if !self.entries.contains_key(front) => {
                    order.pop_front();
                }
                _ => break,
            }
        }
        if order.len() >= self.max_entries.saturating_mul(4) {
            order.retain(|key| self.entries.contains_key(key));
        }
        order.push_back(coming);
    }

    /// Drops every entry whose time is up; a background task calls it so that memory
    /// follows expiry even without inserts.
    pub fn purge_expired(&self, now: i64) {
        self.entries.retain(|_, entry| now < entry.until);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<K: Eq + Hash + Clone, V: Clone, S: BuildHasher + Clone + Default> TtlMap<K, V, S> {
    /// A copy of the live entry for `key`.
    pub fn get(&self, key: &K, now: i64) -> Option<V> {
        self.read(key, now, |value| Some(value.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::TtlMap;

    #[test]
    fn entries_live_until_their_second() {
        let map = TtlMap::<_, _>::new(10);
        map.insert("a", 1, 100, 50);
        assert_eq!(map.get(&"a", 99), Some(1));
        assert_eq!(map.get(&"a", 100), None, "served at its expiry second");
        assert!(map.is_empty(), "an expired entry is removed when read");
    }

    #[test]
    fn an_entry_already_expired_is_not_kept() {
        let map = TtlMap::<_, _>::new(10);
        map.insert("a", 1, 50, 50);
        assert!(map.is_empty());
    }

    #[test]
    fn a_refused_entry_is_removed() {
        let map = TtlMap::<_, _>::new(10);
        map.insert("a", 1, 100, 0);
        assert_eq!(map.read(&"a", 1, |v| (*v > 1).then_some(*v)), None);
        assert!(map.is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let map = TtlMap::<_, _>::new(0);
        map.insert("a", 1, 100, 0);
        assert!(map.is_empty());
    }

    #[test]
    fn a_full_map_drops_its_oldest_entry() {
        let map = TtlMap::<_, _>::new(4);
        for key in 1..=4 {
            map.insert(key, (), 100, 0);
        }
        map.insert(5, (), 100, 20);
        assert_eq!(map.len(), 4);
        assert!(map.get(&1, 20).is_none(), "the oldest stays");
        for live in [2, 3, 4, 5] {
            assert!(map.get(&live, 20).is_some(), "{live} was evicted");
        }
    }

    #[test]
    fn the_order_queue_stays_bounded_when_entries_expire() {
        let map = TtlMap::<_, _>::new(8);
        for key in 0..10_000 {
            map.insert(key, (), key + 1, key);
            map.purge_expired(key + 1);
        }
        let queued = map
            .order
            .lock()
            .map(|order| order.len())
            .unwrap_or(usize::MAX);
        assert!(queued <= 32, "{queued} keys queued for a map of 8");
    }

    #[test]
    fn a_full_map_of_live_entries_stays_bounded() {
        let map = TtlMap::<_, _>::new(16);
        for key in 0..1000 {
            map.insert(key, (), 100, 0);
            assert!(map.len() <= 16);
        }
        assert!(map.get(&999, 0).is_some(), "the newest entry is kept");
    }

    #[test]
    fn replacing_a_key_in_a_full_map_evicts_nothing() {
        let map = TtlMap::<_, _>::new(2);
        map.insert(1, 'a', 100, 0);
        map.insert(2, 'b', 100, 0);
        map.insert(2, 'c', 100, 0);
        assert_eq!((map.get(&1, 0), map.get(&2, 0)), (Some('a'), Some('c')));
    }

    #[test]
    fn purge_drops_only_expired_entries() {
        let map = TtlMap::<_, _>::new(10);
        map.insert(1, (), 10, 0);
        map.insert(2, (), 20, 0);
        map.purge_expired(10);
        assert_eq!((map.get(&1, 0), map.get(&2, 0)), (None, Some(())));
    }
}
