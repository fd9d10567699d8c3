//! [`ReplayCache`]: the signatures seen within their lifetime, bounded.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sign::SIG_LEN;

const SHARDS: usize = 16;

/// One shard: MAC -> until when it is remembered (unix seconds).
type Shard = Mutex<HashMap<[u8; SIG_LEN], u64>>;

/// Why a signature could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Seen before, and its entry has not expired.
    Replayed,
    /// The shard is full of live entries.
    Full,
}

/// A bounded set of MACs, each kept until its signature expires.
///
/// Sharded by the MAC's first byte (an HMAC output: uniform), each shard a map
/// behind its own lock holding at most `capacity / 16` entries (at least one).
/// When a shard is full it first drops its expired entries; if it is still full
/// the new signature is refused: forgetting a live entry would let its
/// signature be replayed.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    shards: Box<[Shard]>,
    per_shard: usize,
}

impl ReplayCache {
    pub(crate) fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS).max(1);
        ReplayCache { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), per_shard }
    }

    /// Records `mac`, live until `until` (unix seconds), at time `now`.
    pub(crate) fn record(&self, mac: &[u8; SIG_LEN], until: u64, now: u64) -> Result<(), Refusal> {
        let shard = &self.shards[usize::from(mac[0]) % SHARDS];
        // A poisoned lock only means another thread panicked mid-update of a
        // plain map; its entries are still sound.
        let mut map = shard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.get(mac).is_some_and(|&live_until| live_until >= now) {
            return Err(Refusal::Replayed);
        }
        if map.len() >= self.per_shard && !map.contains_key(mac) {
            map.retain(|_, &mut u| u >= now);
            if map.len() >= self.per_shard {
                return Err(Refusal::Full);
            }
        }
        map.insert(*mac, until);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(first: u8, n: u8) -> [u8; SIG_LEN] {
        let mut m = [0u8; SIG_LEN];
        m[0] = first;
        m[1] = n;
        m
    }

    #[test]
    fn a_live_entry_is_a_replay_an_expired_one_is_not() {
        let c = ReplayCache::new(64);
        assert_eq!(c.record(&mac(0, 1), 100, 50), Ok(()));
        assert_eq!(c.record(&mac(0, 1), 100, 100), Err(Refusal::Replayed));
        assert_eq!(c.record(&mac(0, 1), 200, 101), Ok(()), "expired entries are forgotten");
    }

    #[test]
    fn full_refuses_until_entries_expire() {
        let c = ReplayCache::new(SHARDS * 2); // two per shard
        assert_eq!(c.record(&mac(3, 1), 100, 0), Ok(()));
        assert_eq!(c.record(&mac(3, 2), 100, 0), Ok(()));
        assert_eq!(c.record(&mac(3, 3), 100, 0), Err(Refusal::Full));
        assert_eq!(c.record(&mac(3, 1), 100, 0), Err(Refusal::Replayed), "still remembered");
        assert_eq!(c.record(&mac(4, 3), 100, 0), Ok(()), "other shards unaffected");
        assert_eq!(c.record(&mac(3, 3), 200, 101), Ok(()), "room once the others expired");
        assert_eq!(c.len(), 2);
    }
}
