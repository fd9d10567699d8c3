//! [`OrSet`]: observed-remove set (add wins over a concurrent remove).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hlc::{Stamp, Timestamp};

/// The tags of one element: live adds and removed adds (tombstones).
///
/// Both lists are sorted and disjoint; decoding restores that invariant.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "OrEntryRaw")]
pub struct OrEntry {
    adds: Vec<Stamp>,
    removes: Vec<Stamp>,
}

#[derive(Deserialize)]
struct OrEntryRaw {
    adds: Vec<Stamp>,
    removes: Vec<Stamp>,
}

impl From<OrEntryRaw> for OrEntry {
    fn from(mut r: OrEntryRaw) -> Self {
        r.adds.sort_unstable();
        r.adds.dedup();
        r.removes.sort_unstable();
        r.removes.dedup();
        r.adds.retain(|a| r.removes.binary_search(a).is_err());
        OrEntry { adds: r.adds, removes: r.removes }
    }
}

impl OrEntry {
    /// Live add tags.
    pub fn adds(&self) -> &[Stamp] {
        &self.adds
    }

    /// Removed add tags (tombstones).
    pub fn removes(&self) -> &[Stamp] {
        &self.removes
    }

    fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.removes.is_empty()
    }

    /// Joins `other` into `self`. Tags at or below `floor` (collected) are
    /// treated as `low` says; tags above it join as usual (removes win).
    fn join(&mut self, other: &OrEntry, floor: Timestamp, low: Low) {
        for r in &other.removes {
            let high = above(r.ts, floor);
            if !high && low == Low::Ignore {
                continue;
            }
            if let Ok(i) = self.adds.binary_search(r) {
                self.adds.remove(i);
            }
            if high && let Err(i) = self.removes.binary_search(r) {
                self.removes.insert(i, *r);
            }
        }
        for a in &other.adds {
            if (above(a.ts, floor) || low == Low::Accept)
                && self.removes.binary_search(a).is_err()
                && let Err(i) = self.adds.binary_search(a)
            {
                self.adds.insert(i, *a);
            }
        }
    }

    /// Drops every tag at or below `floor`, live or removed.
    fn drop_below(&mut self, floor: Timestamp) {
        self.adds.retain(|a| above(a.ts, floor));
        self.removes.retain(|r| above(r.ts, floor));
    }
}

/// How a join treats the other side's tags at or below the collected floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Low {
    /// A delta: a late add is ignored (it was collected), a remove still
    /// retires a live tag this replica holds.
    Delta,
    /// A state with the same floor: its live tags there count too (union).
    Accept,
    /// A state with a lower floor: what it knows there is older than what
    /// this replica knows, and ignored.
    Ignore,
}

/// Whether a tag at `ts` is above the collected floor (everything is, before any GC).
#[inline]
fn above(ts: Timestamp, floor: Timestamp) -> bool {
    floor == Timestamp::ZERO || ts > floor
}

/// The delta an [`OrSet`] mutation returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSetDelta<T> {
    /// Elements and the tags to join.
    pub entries: Vec<(T, OrEntry)>,
}

/// An observed-remove set: every add carries a unique tag (a [`Stamp`]); a
/// remove tombstones only the tags it has observed, so an add concurrent with a
/// remove survives (no lost add). The right choice for comments.
///
/// ```
/// use crdt::{OrSet, SiteId, Stamp, Timestamp};
/// let s = |ms, site| Stamp::new(Timestamp::new(ms, 0), SiteId(site));
/// let mut a = OrSet::new();
/// let mut b = OrSet::new();
/// let add = a.add("hello", s(1, 1));
/// b.apply(&add);
/// let rm = b.remove(&"hello");          // b removes what it saw
/// let again = a.add("hello", s(2, 1));  // concurrently, a adds again
/// a.apply(&rm);
/// b.apply(&again);
/// assert_eq!(a, b);
/// assert!(a.contains(&"hello"));         // the concurrent add survives
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet<T: Ord> {
    entries: BTreeMap<T, OrEntry>,
    floor: Timestamp,
}

impl<T: Ord> Default for OrSet<T> {
    fn default() -> Self {
        OrSet { entries: BTreeMap::new(), floor: Timestamp::ZERO }
    }
}

impl<T: Ord + Clone> OrSet<T> {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `elem` with the unique tag `stamp`; the tags seen so far for `elem`
    /// are retired in the same delta so an element keeps one live tag.
    pub fn add(&mut self, elem: T, stamp: Stamp) -> OrSetDelta<T> {
        let d = self.add_delta(elem, stamp);
        self.apply(&d);
        d
    }

    /// The delta [`add`](Self::add) would return, without applying it (for
    /// write-ahead flows such as the outbox: apply it after the commit).
    pub fn add_delta(&self, elem: T, stamp: Stamp) -> OrSetDelta<T> {
        let mut removes = self.entries.get(&elem).map(|e| e.adds.clone()).unwrap_or_default();
        removes.retain(|r| *r != stamp);
        OrSetDelta { entries: vec![(elem, OrEntry { adds: vec![stamp], removes })] }
    }

    /// Removes `elem` (the tags observed here); an empty delta when absent.
    pub fn remove(&mut self, elem: &T) -> OrSetDelta<T> {
        let d = self.remove_delta(elem);
        self.apply(&d);
        d
    }

    /// The delta [`remove`](Self::remove) would return, without applying it.
    pub fn remove_delta(&self, elem: &T) -> OrSetDelta<T> {
        match self.entries.get(elem) {
            Some(e) if !e.adds.is_empty() => OrSetDelta {
                entries: vec![(elem.clone(), OrEntry { adds: Vec::new(), removes: e.adds.clone() })],
            },
            _ => OrSetDelta { entries: Vec::new() },
        }
    }

    /// Whether `elem` is in the set.
    pub fn contains(&self, elem: &T) -> bool {
        self.entries.get(elem).is_some_and(|e| !e.adds.is_empty())
    }

    /// The elements in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.entries.iter().filter(|(_, e)| !e.adds.is_empty()).map(|(k, _)| k)
    }

    /// Number of elements in the set.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the set has no elements.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Number of stored tags, tombstones included (what [`gc`](Self::gc) bounds).
    pub fn stored_tags(&self) -> usize {
        self.entries.values().map(|e| e.adds.len() + e.removes.len()).sum()
    }

    /// Number of stored tombstones (what [`gc`](Self::gc) collects).
    pub fn tombstones(&self) -> usize {
        self.entries.values().map(|e| e.removes.len()).sum()
    }

    /// Joins a delta.
    pub fn apply(&mut self, delta: &OrSetDelta<T>) {
        for (k, e) in &delta.entries {
            self.join_entry(k, e, Low::Delta);
        }
    }

    /// Joins another replica's full state.
    ///
    /// The floor (the watermark tombstones were collected at) travels in the
    /// state, and the merge is a join on (floor, tags): the higher floor
    /// wins, and at or below it only the replicas that collected at that
    /// floor say which tags are live (they have seen every write there);
    /// above it tags join as usual. So merging with a replica that is behind
    /// (restored from an older snapshot, fresh, or not yet collected) can
    /// neither resurrect a collected remove nor drop a live tag, and merge
    /// stays commutative, associative and idempotent.
    pub fn merge(&mut self, other: &Self) {
        if other.floor > self.floor {
            self.floor = other.floor;
            let floor = self.floor;
            self.entries.retain(|_, e| {
                e.drop_below(floor);
                !e.is_empty()
            });
        }
        let low = if other.floor == self.floor { Low::Accept } else { Low::Ignore };
        for (k, e) in &other.entries {
            self.join_entry(k, e, low);
        }
    }

    #[inline]
    fn join_entry(&mut self, k: &T, e: &OrEntry, low: Low) {
        if let Some(cur) = self.entries.get_mut(k) {
            if cur != e {
                cur.join(e, self.floor, low);
                if cur.is_empty() {
                    self.entries.remove(k);
                }
            }
        } else {
            let mut fresh = OrEntry::default();
            fresh.join(e, self.floor, low);
            if !fresh.is_empty() {
                self.entries.insert(k.clone(), fresh);
            }
        }
    }

    /// Drops tombstones at or below `watermark`, and from then on ignores add
    /// tags at or below it that this replica does not hold.
    ///
    /// Safe only when `watermark` is at or below every cell's acknowledged HLC
    /// watermark (see [`Watermarks`](crate::Watermarks)). Returns the number of
    /// tags dropped.
    pub fn gc(&mut self, watermark: Timestamp) -> usize {
        if watermark > self.floor {
            self.floor = watermark;
        }
        let mut dropped = 0;
        self.entries.retain(|_, e| {
            let before = e.removes.len();
            e.removes.retain(|r| above(r.ts, watermark));
            dropped += before - e.removes.len();
            !e.is_empty()
        });
        dropped
    }
}
