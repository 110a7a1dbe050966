//! The cleaner's key → latest-offset map (Kafka's `SkimpyOffsetMap`), with a hard bound on
//! the memory it takes.
//!
//! Invariant: every entry names the offset of a record with that key that the cleaning pass
//! keeps (the newest one mapped so far), so dropping records below an entry's offset never
//! drops the latest value of a key. Kafka stores MD5 digests of keys; this map stores the keys
//! themselves, so two keys can never collide (which would drop a live record). A key costs
//! its length plus a fixed overhead against the budget.

use std::collections::HashMap;

use bytes::Bytes;
use strom_format::Offset;

/// Bytes charged per entry on top of the key: the `HashMap` slot, the `Bytes` handle and the
/// offset, rounded up.
const ENTRY_OVERHEAD: usize = 64;

/// Keys mapped to the offset of their newest record seen so far, within a memory budget.
#[derive(Debug)]
pub(crate) struct OffsetMap {
    map: HashMap<Bytes, i64>,
    used: usize,
    budget: usize,
}

impl OffsetMap {
    /// An empty map that refuses new keys once they would take more than `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
        OffsetMap { map: HashMap::new(), used: 0, budget }
    }

    /// Maps `key` to `offset` (offsets are fed in increasing order). `false` when the key is new
    /// and the budget is spent: the map is then unchanged.
    pub(crate) fn insert(&mut self, key: &Bytes, offset: Offset) -> bool {
        if let Some(latest) = self.map.get_mut(key) {
            *latest = (*latest).max(offset.get());
            return true;
        }
        let cost = key.len().saturating_add(ENTRY_OVERHEAD);
        if self.used.saturating_add(cost) > self.budget {
            return false;
        }
        self.used += cost;
        // A copy, so the map never pins a whole read buffer in memory.
        self.map.insert(Bytes::copy_from_slice(key), offset.get());
        true
    }

    /// The newest offset mapped for `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Offset> {
        self.map.get(key).map(|&o| Offset::new(o))
    }

    /// Number of keys mapped.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_offset_and_respects_the_budget() {
        let mut map = OffsetMap::new(2 * (ENTRY_OVERHEAD + 1));
        let (a, b, c) =
            (Bytes::from_static(b"a"), Bytes::from_static(b"b"), Bytes::from_static(b"c"));
        assert!(map.insert(&a, Offset::new(1)));
        assert!(map.insert(&b, Offset::new(2)));
        assert!(map.insert(&a, Offset::new(3)), "a known key never costs more");
        assert!(!map.insert(&c, Offset::new(4)), "a third key is over budget");
        assert_eq!(map.get(b"a"), Some(Offset::new(3)));
        assert_eq!(map.get(b"c"), None);
        assert_eq!(map.len(), 2);
    }
}
