//! The in-memory deduplication index: which envelope `eventId`s and event `uuid`s the store holds.
//!
//! Delivery ids and event uuids are random strings. Kept as redb tables, every accepted delivery
//! dirtied one random leaf page per key, and those pages were most of what each durable commit
//! wrote (and waited for). The store keeps the keys in append-only tables instead (`events` holds
//! each uuid, `delivery_keys` each eventId, both in commit order) and this index answers "seen
//! before?" from memory. It is rebuilt from those tables when the store opens, so it always
//! describes exactly what is durable plus what the writer is about to commit; the writer undoes
//! a batch's additions when its commit fails.
//!
//! Keys are held as 128-bit digests (SHA-256, truncated): ~30 bytes an entry instead of the key
//! itself; two different keys share a digest with probability ~2⁻¹²⁸ per pair.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

/// A key's digest.
pub type KeyHash = u128;

/// The digest of a delivery id or event uuid.
pub fn key_hash(key: &str) -> KeyHash {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

/// Seen delivery ids and event uuids (as [`key_hash`]es), each with the seq it was stored under.
#[derive(Debug, Default)]
pub struct Seen {
    deliveries: HashMap<KeyHash, u64>,
    events: HashMap<KeyHash, u64>,
}

impl Seen {
    /// Records delivery id `key` → `seq` unless it is known; returns the known seq.
    pub fn add_delivery(&mut self, key: KeyHash, seq: u64) -> Option<u64> {
        add(&mut self.deliveries, key, seq)
    }

    /// Records event uuid `key` → `seq` unless it is known; returns the known seq.
    pub fn add_event(&mut self, key: KeyHash, seq: u64) -> Option<u64> {
        add(&mut self.events, key, seq)
    }

    /// Whether event uuid `key` is known.
    pub fn has_event(&self, key: KeyHash) -> bool {
        self.events.contains_key(&key)
    }

    /// Forgets delivery ids and event uuids (pruned, or their commit failed).
    pub fn remove(&mut self, deliveries: &[KeyHash], events: &[KeyHash]) {
        for k in deliveries {
            self.deliveries.remove(k);
        }
        for k in events {
            self.events.remove(k);
        }
    }

    /// (delivery ids, event uuids) held.
    pub fn len(&self) -> (usize, usize) {
        (self.deliveries.len(), self.events.len())
    }
}

fn add(map: &mut HashMap<KeyHash, u64>, key: KeyHash, seq: u64) -> Option<u64> {
    match map.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
        std::collections::hash_map::Entry::Vacant(e) => {
            e.insert(seq);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_keys_keep_their_first_seq() {
        let mut s = Seen::default();
        let u1 = key_hash("u1");
        assert_ne!(u1, key_hash("u2"));
        assert_eq!(s.add_event(u1, 1), None);
        assert_eq!(s.add_event(u1, 2), Some(1));
        assert_eq!(s.add_delivery(u1, 7), None, "ids and uuids are separate");
        s.remove(&[], &[u1]);
        assert_eq!(s.add_event(u1, 3), None, "a forgotten uuid is new again");
        assert_eq!(s.add_delivery(u1, 8), Some(7));
        assert_eq!(s.len(), (1, 1));
    }
}
