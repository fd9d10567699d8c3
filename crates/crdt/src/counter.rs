//! [`PnCounter`]: a counter that goes up and down.

use serde::{Deserialize, Serialize};

use crate::hlc::SiteId;

/// One site's totals: increments and decrements ever made there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PnEntry {
    /// The site.
    pub site: SiteId,
    /// Total increments.
    pub p: u64,
    /// Total decrements.
    pub n: u64,
}

/// The delta a [`PnCounter`] mutation returns: the site's new totals (joining
/// takes the maximum, so applying it twice changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnDelta {
    /// Totals to join.
    pub entries: Vec<PnEntry>,
}

/// A positive-negative counter (like counts): per site, a grow-only total of
/// increments and one of decrements; the value is their difference.
///
/// ```
/// use crdt::{PnCounter, SiteId};
/// let mut a = PnCounter::new();
/// let mut b = PnCounter::new();
/// let d1 = a.increment(SiteId(1), 3);
/// let d2 = b.decrement(SiteId(2), 1);
/// a.apply(&d2);
/// b.apply(&d1);
/// b.apply(&d1); // duplicates are harmless
/// assert_eq!(a, b);
/// assert_eq!(a.value(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "PnRaw")]
pub struct PnCounter {
    entries: Vec<PnEntry>,
}

#[derive(Deserialize)]
struct PnRaw {
    entries: Vec<PnEntry>,
}

impl From<PnRaw> for PnCounter {
    fn from(r: PnRaw) -> Self {
        let mut c = PnCounter::new();
        for e in &r.entries {
            c.join_entry(e);
        }
        c
    }
}

impl PnCounter {
    /// A zero counter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `by` at `site`.
    pub fn increment(&mut self, site: SiteId, by: u64) -> PnDelta {
        let e = self.slot(site);
        e.p = e.p.saturating_add(by);
        PnDelta { entries: vec![*e] }
    }

    /// Subtracts `by` at `site`.
    pub fn decrement(&mut self, site: SiteId, by: u64) -> PnDelta {
        let e = self.slot(site);
        e.n = e.n.saturating_add(by);
        PnDelta { entries: vec![*e] }
    }

    /// Adds a signed amount at `site`.
    pub fn add(&mut self, site: SiteId, by: i64) -> PnDelta {
        let d = self.add_delta(site, by);
        self.apply(&d);
        d
    }

    /// The delta [`add`](Self::add) would return, without applying it (for
    /// write-ahead flows such as the outbox: apply it after the commit).
    pub fn add_delta(&self, site: SiteId, by: i64) -> PnDelta {
        let mut e = match self.entries.binary_search_by_key(&site, |e| e.site) {
            Ok(i) => self.entries[i],
            Err(_) => PnEntry { site, p: 0, n: 0 },
        };
        if by >= 0 {
            e.p = e.p.saturating_add(by.unsigned_abs());
        } else {
            e.n = e.n.saturating_add(by.unsigned_abs());
        }
        PnDelta { entries: vec![e] }
    }

    /// The value: all increments minus all decrements (saturating at the `i64` range).
    pub fn value(&self) -> i64 {
        let (p, n) = self
            .entries
            .iter()
            .fold((0u128, 0u128), |(p, n), e| (p + u128::from(e.p), n + u128::from(e.n)));
        let v = p as i128 - n as i128;
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Per-site totals, sorted by site.
    pub fn entries(&self) -> &[PnEntry] {
        &self.entries
    }

    /// Joins a delta.
    pub fn apply(&mut self, delta: &PnDelta) {
        for e in &delta.entries {
            self.join_entry(e);
        }
    }

    /// Joins another replica's full state (a linear merge of two sorted lists).
    pub fn merge(&mut self, other: &Self) {
        if other.entries.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.entries.len().max(other.entries.len()));
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.entries, &other.entries);
        while i < a.len() && j < b.len() {
            let (x, y) = (a[i], b[j]);
            match x.site.cmp(&y.site) {
                std::cmp::Ordering::Less => {
                    out.push(x);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    out.push(y);
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    out.push(PnEntry { site: x.site, p: x.p.max(y.p), n: x.n.max(y.n) });
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        self.entries = out;
    }

    fn slot(&mut self, site: SiteId) -> &mut PnEntry {
        let i = match self.entries.binary_search_by_key(&site, |e| e.site) {
            Ok(i) => i,
            Err(i) => {
                self.entries.insert(i, PnEntry { site, p: 0, n: 0 });
                i
            }
        };
        &mut self.entries[i]
    }

    fn join_entry(&mut self, e: &PnEntry) {
        let s = self.slot(e.site);
        s.p = s.p.max(e.p);
        s.n = s.n.max(e.n);
    }
}
