//! [`Snapshot`]: an immutable view of a service's registered instances, grouped by
//! cell, rebuilt by the watcher on every change and read lock-free by callers.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cellctx::CellId;

use crate::instance::Instance;

/// The instances of one service known at one moment, by etcd key and by cell.
#[derive(Debug, Default)]
pub struct Snapshot {
    version: u64,
    instances: BTreeMap<Arc<str>, Arc<Instance>>,
    cells: HashMap<CellId, CellSet>,
}

/// The serving instances of one cell, with cumulative weights for selection.
#[derive(Debug, Default)]
struct CellSet {
    all: usize,
    serving: Vec<(Arc<str>, Arc<Instance>)>,
    cumulative: Vec<u64>,
    /// A step coprime with the total weight, near its golden section, so that
    /// consecutive counters land far apart on the weight line.
    stride: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn stride(total: u64) -> u64 {
    if total <= 2 {
        return 1;
    }
    let mut k = ((total as f64) * 0.618_033_988_75) as u64;
    k = k.clamp(1, total - 1);
    while gcd(k, total) != 1 {
        k -= 1;
    }
    k
}

impl Snapshot {
    pub(crate) fn build(version: u64, instances: BTreeMap<Arc<str>, Arc<Instance>>) -> Self {
        let mut cells: HashMap<CellId, CellSet> = HashMap::new();
        for (key, inst) in &instances {
            let set = cells.entry(inst.cell.clone()).or_default();
            set.all += 1;
            if inst.is_serving() {
                let total = set.cumulative.last().copied().unwrap_or(0);
                set.cumulative.push(total + u64::from(inst.weight));
                set.serving.push((key.clone(), inst.clone()));
            }
        }
        for set in cells.values_mut() {
            set.stride = stride(set.cumulative.last().copied().unwrap_or(0));
        }
        Snapshot { version, instances, cells }
    }

    /// Increases by one on every change the watcher publishes (0: nothing seen yet).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every known instance (up or draining) by etcd key.
    pub fn instances(&self) -> impl Iterator<Item = (&str, &Instance)> {
        self.instances.iter().map(|(k, v)| (&**k, &**v))
    }

    /// The instance registered at `key`.
    pub fn get(&self, key: &str) -> Option<&Instance> {
        self.instances.get(key).map(|i| &**i)
    }

    /// Number of known instances (up or draining).
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether no instance is known.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// The cells with at least one known instance, sorted.
    pub fn cells(&self) -> Vec<CellId> {
        let mut v: Vec<CellId> = self.cells.keys().cloned().collect();
        v.sort();
        v
    }

    /// Number of known instances (up or draining) in `cell`.
    pub fn count(&self, cell: &CellId) -> usize {
        self.cells.get(cell).map_or(0, |s| s.all)
    }

    /// The total weight of `cell`'s serving instances (0 when it has none): what
    /// a weighted selection across cells (the cell router's) can use.
    pub fn cell_weight(&self, cell: &CellId) -> u64 {
        self.cells.get(cell).and_then(|s| s.cumulative.last().copied()).unwrap_or(0)
    }

    /// The instances of `cell` that take new requests (up, weight above zero).
    pub fn serving(&self, cell: &CellId) -> impl Iterator<Item = (&str, &Instance)> {
        self.cells.get(cell).into_iter().flat_map(|s| s.serving.iter().map(|(k, v)| (&**k, &**v)))
    }

    pub(crate) fn serving_arcs(&self, cell: &CellId) -> &[(Arc<str>, Arc<Instance>)] {
        self.cells.get(cell).map_or(&[], |s| s.serving.as_slice())
    }

    /// A serving instance of `cell`, chosen by weight from `n` (a rotating
    /// counter): `n` is mapped onto the cell's cumulative weight line by a step
    /// coprime with the total weight, so over every run of `total` consecutive
    /// counters each instance is picked exactly `weight` times, interleaved.
    /// `None` when the cell has no serving instance.
    pub fn pick(&self, cell: &CellId, n: u64) -> Option<(&Arc<str>, &Arc<Instance>)> {
        let set = self.cells.get(cell)?;
        let total = *set.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let point = ((u128::from(n % total) * u128::from(set.stride)) % u128::from(total)) as u64;
        let idx = set.cumulative.partition_point(|&c| c <= point);
        set.serving.get(idx).map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::instance::InstanceState;
    use proptest::prelude::*;

    fn inst(cell: &str, port: u16, weight: u32) -> (Arc<str>, Arc<Instance>) {
        let i = Instance::try_new("svc", cell.parse().unwrap(), format!("127.0.0.1:{port}"))
            .unwrap()
            .with_weight(weight);
        (Arc::from(i.key("/r")), Arc::new(i))
    }

    #[test]
    fn groups_by_cell_and_skips_draining_and_zero_weight() {
        let mut m = BTreeMap::new();
        for (k, v) in [inst("a", 1, 1), inst("a", 2, 0), inst("b", 3, 5)] {
            m.insert(k, v);
        }
        let (k, v) = inst("a", 4, 5);
        let mut drained = (*v).clone();
        drained.state = InstanceState::Draining;
        m.insert(k, Arc::new(drained));
        let s = Snapshot::build(7, m);
        let a: CellId = "a".parse().unwrap();
        assert_eq!(s.version(), 7);
        assert_eq!(s.count(&a), 3);
        assert_eq!(s.serving(&a).count(), 1);
        assert_eq!(s.cell_weight(&a), 1);
        assert_eq!(s.cell_weight(&"b".parse().unwrap()), 5);
        assert_eq!(s.cells().len(), 2);
        for n in 0..10 {
            assert_eq!(s.pick(&a, n).unwrap().1.address, "127.0.0.1:1");
        }
        assert!(s.pick(&"zz".parse().unwrap(), 0).is_none());
    }

    #[test]
    fn equal_weights_alternate() {
        let m: BTreeMap<_, _> = [inst("a", 1, 100), inst("a", 2, 100)].into_iter().collect();
        let s = Snapshot::build(1, m);
        let a: CellId = "a".parse().unwrap();
        let picks: Vec<&str> = (0..10).map(|n| s.pick(&a, n).unwrap().1.address.as_str()).collect();
        // interleaved, not 100 in a row to the same instance
        for w in picks.windows(3) {
            assert!(w.contains(&"127.0.0.1:1") && w.contains(&"127.0.0.1:2"), "{picks:?}");
        }
    }

    proptest! {
        /// Over any full turn of the counter, each serving instance is picked
        /// exactly `weight` times.
        #[test]
        fn pick_is_proportional_to_weight(weights in proptest::collection::vec(0u32..20, 1..6), start in 0..u64::MAX / 2) {
            let mut m = BTreeMap::new();
            for (i, w) in weights.iter().enumerate() {
                let (k, v) = inst("c", 1000 + i as u16, *w);
                m.insert(k, v);
            }
            let s = Snapshot::build(1, m);
            let c: CellId = "c".parse().unwrap();
            let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
            let mut hits: HashMap<String, u64> = HashMap::new();
            for n in 0..total {
                let (_, i) = s.pick(&c, start.wrapping_add(n)).unwrap();
                *hits.entry(i.address.clone()).or_default() += 1;
            }
            if total == 0 {
                prop_assert!(s.pick(&c, 0).is_none());
            }
            for (i, w) in weights.iter().enumerate() {
                let got = hits.get(&format!("127.0.0.1:{}", 1000 + i)).copied().unwrap_or(0);
                prop_assert_eq!(got, u64::from(*w));
            }
        }
    }
}
