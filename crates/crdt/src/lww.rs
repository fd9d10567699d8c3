//! [`LwwElementSet`]: last-writer-wins element set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hlc::{Stamp, Timestamp};

/// What an [`LwwElementSet`] decides when an add and a remove carry the same timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bias {
    /// The element stays in the set.
    AddWins,
    /// The element leaves the set.
    RemoveWins,
}

/// Latest add and latest remove of one element. `None` sorts before any stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LwwEntry {
    /// Latest add, by (timestamp, site).
    pub add: Option<Stamp>,
    /// Latest remove, by (timestamp, site).
    pub remove: Option<Stamp>,
}

impl LwwEntry {
    #[inline]
    fn join(&mut self, other: &LwwEntry) {
        if other.add > self.add {
            self.add = other.add;
        }
        if other.remove > self.remove {
            self.remove = other.remove;
        }
    }

    #[inline]
    fn present(&self, bias: Bias) -> bool {
        match (self.add, self.remove) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(a), Some(r)) => match a.ts.cmp(&r.ts) {
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal => bias == Bias::AddWins,
            },
        }
    }

    /// The stamps above `floor` (all of them before any collection).
    fn above(&self, floor: Timestamp) -> LwwEntry {
        let keep = |s: Option<Stamp>| s.filter(|s| floor == Timestamp::ZERO || s.ts > floor);
        LwwEntry { add: keep(self.add), remove: keep(self.remove) }
    }

    fn newest(&self) -> Timestamp {
        self.add.max(self.remove).map(|s| s.ts).unwrap_or(Timestamp::ZERO)
    }
}

/// The delta an [`LwwElementSet`] mutation returns: entries to join into other replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwDelta<T> {
    /// Elements and their stamps.
    pub entries: Vec<(T, LwwEntry)>,
}

/// A last-writer-wins element set.
///
/// Each element keeps its latest add and latest remove stamp; stamps are ordered
/// by timestamp, then site id, so joining is a per-field maximum (commutative,
/// associative, idempotent). An element is in the set when its add is newer than
/// its remove; when both carry the same timestamp the [`Bias`] chosen at
/// construction decides.
///
/// LWW loses a concurrent add that is older than a remove ("lost add"); use
/// [`OrSet`](crate::OrSet) when every add must survive concurrent removes (comments).
///
/// ```
/// use crdt::{Bias, LwwElementSet, SiteId, Stamp, Timestamp};
/// let s = |ms, site| Stamp::new(Timestamp::new(ms, 0), SiteId(site));
/// let mut a = LwwElementSet::new(Bias::AddWins);
/// let mut b = LwwElementSet::new(Bias::AddWins);
/// let d1 = a.add("alice", s(10, 1));
/// let d2 = b.remove("alice", s(10, 2)); // same timestamp: add wins
/// a.apply(&d2);
/// b.apply(&d1);
/// assert_eq!(a, b);
/// assert!(a.contains(&"alice"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwElementSet<T: Ord> {
    bias: Bias,
    entries: BTreeMap<T, LwwEntry>,
    floor: Timestamp,
}

impl<T: Ord + Clone> LwwElementSet<T> {
    /// An empty set with the given tie bias.
    pub fn new(bias: Bias) -> Self {
        LwwElementSet { bias, entries: BTreeMap::new(), floor: Timestamp::ZERO }
    }

    /// The tie bias.
    pub fn bias(&self) -> Bias {
        self.bias
    }

    /// Adds `elem` at `stamp` and returns the delta for other replicas.
    pub fn add(&mut self, elem: T, stamp: Stamp) -> LwwDelta<T> {
        let e = LwwEntry { add: Some(stamp), remove: None };
        self.join_entry(&elem, &e);
        LwwDelta { entries: vec![(elem, e)] }
    }

    /// Removes `elem` at `stamp` and returns the delta for other replicas.
    pub fn remove(&mut self, elem: T, stamp: Stamp) -> LwwDelta<T> {
        let e = LwwEntry { add: None, remove: Some(stamp) };
        self.join_entry(&elem, &e);
        LwwDelta { entries: vec![(elem, e)] }
    }

    /// Whether `elem` is in the set.
    pub fn contains(&self, elem: &T) -> bool {
        self.entries.get(elem).is_some_and(|e| e.present(self.bias))
    }

    /// The elements in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.entries.iter().filter(|(_, e)| e.present(self.bias)).map(|(k, _)| k)
    }

    /// Number of elements in the set.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether the set has no elements.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }

    /// Number of stored entries, tombstones included (what [`gc`](Self::gc) bounds).
    pub fn stored(&self) -> usize {
        self.entries.len()
    }

    /// Number of stored entries of removed elements (what [`gc`](Self::gc) collects).
    pub fn tombstones(&self) -> usize {
        self.entries.values().filter(|e| !e.present(self.bias)).count()
    }

    /// Joins a delta.
    pub fn apply(&mut self, delta: &LwwDelta<T>) {
        for (k, e) in &delta.entries {
            self.join_entry(k, e);
        }
    }

    /// Joins another replica's full state (the bias of `self` is kept).
    ///
    /// A join on (floor, stamps): the higher floor (the watermark tombstones
    /// were collected at, carried in the state) wins, and stamps at or below
    /// it count only from the replicas that collected at that floor; stamps
    /// above it join by maximum. A replica that is behind (restored from an
    /// older snapshot, fresh) cannot resurrect a collected element, and merge
    /// stays commutative, associative and idempotent.
    pub fn merge(&mut self, other: &Self) {
        if other.floor > self.floor {
            self.floor = other.floor;
            let floor = self.floor;
            self.entries.retain(|_, e| {
                *e = e.above(floor);
                e.add.is_some() || e.remove.is_some()
            });
        }
        let same = other.floor == self.floor;
        for (k, e) in &other.entries {
            let e = if same { *e } else { e.above(self.floor) };
            if e.add.is_none() && e.remove.is_none() {
                continue;
            }
            match self.entries.get_mut(k) {
                Some(cur) => cur.join(&e),
                None => {
                    self.entries.insert(k.clone(), e);
                }
            }
        }
    }

    #[inline]
    fn join_entry(&mut self, k: &T, e: &LwwEntry) {
        if let Some(cur) = self.entries.get_mut(k) {
            cur.join(e);
        } else if e.newest() > self.floor || self.floor == Timestamp::ZERO {
            self.entries.insert(k.clone(), *e);
        }
    }

    /// Drops tombstones (removed elements) whose stamps are all at or below
    /// `watermark`, and from then on ignores entries for unknown elements at or
    /// below it.
    ///
    /// Safe only when `watermark` is at or below every cell's acknowledged HLC
    /// watermark (see [`Watermarks`](crate::Watermarks)): then no older write is
    /// still in flight. Returns the number of entries dropped.
    pub fn gc(&mut self, watermark: Timestamp) -> usize {
        if watermark > self.floor {
            self.floor = watermark;
        }
        let bias = self.bias;
        let before = self.entries.len();
        self.entries.retain(|_, e| e.present(bias) || e.newest() > watermark);
        before - self.entries.len()
    }
}
