//! Laws: merge is commutative, associative and idempotent for every type (with
//! timestamp ties between sites on purpose), also between replicas that
//! collected tombstones at different watermarks, fresh replicas and replicas
//! restored from older snapshots; any interleaving and duplication of deltas
//! yields the same state; HLC monotonic and drift-bounded; the codec rejects
//! bad input without panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crdt::{
    Bias, Clock, CrdtError, Hlc, LwwDelta, LwwElementSet, OrSet, OrSetDelta, PnCounter, PnDelta, SiteId, Stamp,
    Timestamp, codec,
};
use proptest::prelude::*;

const SITES: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    Add(usize, u8),
    Remove(usize, u8),
    /// Full state sync from one replica to another.
    Sync(usize, usize),
    /// Clock step at a site: 0 makes cross-site timestamp ties likely.
    Tick(usize, u8),
}

/// An operation of the GC laws: a plain [`Op`], or one that moves a replica's floor or history.
#[derive(Debug, Clone)]
enum GcOp {
    Plain(Op),
    /// Collect tombstones at a site at this watermark (ms).
    Gc(usize, u64),
    /// Replace a site's replica with an older snapshot of itself (a restart
    /// from an old save); the index picks which snapshot.
    Restore(usize, usize),
    /// Replace a site's replica with an empty one (a new or wiped replica).
    Fresh(usize),
}

fn gc_op() -> impl Strategy<Value = GcOp> {
    prop_oneof![
        8 => op().prop_map(GcOp::Plain),
        2 => (0..SITES, 0u64..14).prop_map(|(s, w)| GcOp::Gc(s, w)),
        1 => (0..SITES, any::<usize>()).prop_map(|(s, i)| GcOp::Restore(s, i)),
        1 => (0..SITES).prop_map(GcOp::Fresh),
    ]
}

/// What the GC laws need of a set type.
trait Collectable: Clone {
    fn empty() -> Self;
    fn add_at(&mut self, e: u8, st: Stamp);
    fn remove_at(&mut self, e: u8, st: Stamp);
    fn merge_from(&mut self, other: &Self);
    fn collect(&mut self, w: Timestamp);
}

impl Collectable for OrSet<u8> {
    fn empty() -> Self {
        OrSet::new()
    }
    fn add_at(&mut self, e: u8, st: Stamp) {
        self.add(e, st);
    }
    fn remove_at(&mut self, e: u8, _: Stamp) {
        self.remove(&e);
    }
    fn merge_from(&mut self, other: &Self) {
        self.merge(other);
    }
    fn collect(&mut self, w: Timestamp) {
        self.gc(w);
    }
}

impl Collectable for LwwElementSet<u8> {
    fn empty() -> Self {
        LwwElementSet::new(Bias::AddWins)
    }
    fn add_at(&mut self, e: u8, st: Stamp) {
        self.add(e, st);
    }
    fn remove_at(&mut self, e: u8, st: Stamp) {
        self.remove(e, st);
    }
    fn merge_from(&mut self, other: &Self) {
        self.merge(other);
    }
    fn collect(&mut self, w: Timestamp) {
        self.gc(w);
    }
}

/// Runs `ops` over three replicas with GC, restarts from old snapshots and
/// fresh replicas; returns the replicas and every state any of them had.
fn run_gc<S: Collectable>(ops: &[GcOp]) -> (Vec<S>, Vec<S>) {
    let mut reps: Vec<S> = (0..SITES).map(|_| S::empty()).collect();
    let mut history: Vec<Vec<S>> = (0..SITES).map(|_| vec![S::empty()]).collect();
    let mut clocks = Clocks::new();
    for op in ops {
        match op {
            GcOp::Plain(Op::Add(s, e)) => {
                let st = clocks.stamp(*s);
                reps[*s].add_at(*e, st);
            }
            GcOp::Plain(Op::Remove(s, e)) => {
                let st = clocks.stamp(*s);
                reps[*s].remove_at(*e, st);
            }
            GcOp::Plain(Op::Sync(a, b)) => {
                let from = reps[*a].clone();
                reps[*b].merge_from(&from);
            }
            GcOp::Plain(Op::Tick(s, d)) => clocks.tick(*s, *d),
            GcOp::Gc(s, w) => reps[*s].collect(Timestamp::new(*w, 0)),
            GcOp::Restore(s, i) => {
                let h = &history[*s];
                reps[*s] = h[i % h.len()].clone();
            }
            GcOp::Fresh(s) => reps[*s] = S::empty(),
        }
        for s in 0..SITES {
            history[s].push(reps[s].clone());
        }
    }
    (reps, history.into_iter().flatten().collect())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SITES, 0u8..5).prop_map(|(s, e)| Op::Add(s, e)),
        3 => (0..SITES, 0u8..5).prop_map(|(s, e)| Op::Remove(s, e)),
        2 => (0..SITES, 0..SITES).prop_map(|(a, b)| Op::Sync(a, b)),
        2 => (0..SITES, 0u8..2).prop_map(|(s, d)| Op::Tick(s, d)),
    ]
}

/// Per-site clocks that start together, so sites share timestamps (ties).
struct Clocks {
    ms: [u64; SITES],
    logical: [u16; SITES],
}

impl Clocks {
    fn new() -> Self {
        Clocks { ms: [1; SITES], logical: [0; SITES] }
    }
    fn tick(&mut self, s: usize, d: u8) {
        if d > 0 {
            self.ms[s] += u64::from(d);
            self.logical[s] = 0;
        }
    }
    /// A fresh stamp at site `s`; unique per site, often equal in time across sites.
    fn stamp(&mut self, s: usize) -> Stamp {
        let st = Stamp::new(Timestamp::new(self.ms[s], self.logical[s]), SiteId(s as u64 + 1));
        self.logical[s] += 1;
        st
    }
}

/// Runs `ops` over three replicas; returns the replicas and every delta emitted.
fn run_or(ops: &[Op]) -> (Vec<OrSet<u8>>, Vec<OrSetDelta<u8>>) {
    let mut reps: Vec<OrSet<u8>> = (0..SITES).map(|_| OrSet::new()).collect();
    let mut deltas = Vec::new();
    let mut clocks = Clocks::new();
    for op in ops {
        match *op {
            Op::Add(s, e) => {
                let st = clocks.stamp(s);
                deltas.push(reps[s].add(e, st));
            }
            Op::Remove(s, e) => deltas.push(reps[s].remove(&e)),
            Op::Sync(a, b) => {
                let from = reps[a].clone();
                reps[b].merge(&from);
            }
            Op::Tick(s, d) => clocks.tick(s, d),
        }
    }
    (reps, deltas)
}

fn run_lww(ops: &[Op], bias: Bias) -> (Vec<LwwElementSet<u8>>, Vec<LwwDelta<u8>>) {
    let mut reps: Vec<LwwElementSet<u8>> = (0..SITES).map(|_| LwwElementSet::new(bias)).collect();
    let mut deltas = Vec::new();
    let mut clocks = Clocks::new();
    for op in ops {
        match *op {
            Op::Add(s, e) => {
                let st = clocks.stamp(s);
                deltas.push(reps[s].add(e, st));
            }
            Op::Remove(s, e) => {
                let st = clocks.stamp(s);
                deltas.push(reps[s].remove(e, st));
            }
            Op::Sync(a, b) => {
                let from = reps[a].clone();
                reps[b].merge(&from);
            }
            Op::Tick(s, d) => clocks.tick(s, d),
        }
    }
    (reps, deltas)
}

fn run_pn(ops: &[Op]) -> (Vec<PnCounter>, Vec<PnDelta>) {
    let mut reps: Vec<PnCounter> = (0..SITES).map(|_| PnCounter::new()).collect();
    let mut deltas = Vec::new();
    for op in ops {
        match *op {
            Op::Add(s, e) => deltas.push(reps[s].increment(SiteId(s as u64 + 1), u64::from(e))),
            Op::Remove(s, e) => deltas.push(reps[s].decrement(SiteId(s as u64 + 1), u64::from(e))),
            Op::Sync(a, b) => {
                let from = reps[a].clone();
                reps[b].merge(&from);
            }
            Op::Tick(..) => {}
        }
    }
    (reps, deltas)
}

/// A delivery order: every index at least once, shuffled, with duplicates.
fn delivery(n: usize, keys: &[u64], dups: &[usize]) -> Vec<usize> {
    let mut order: Vec<(u64, usize)> = (0..n).map(|i| (keys[i % keys.len()] ^ i as u64, i)).collect();
    if n > 0 {
        for (j, d) in dups.iter().enumerate() {
            order.push((keys[(j * 7) % keys.len()].rotate_left(j as u32), d % n));
        }
    }
    order.sort();
    order.into_iter().map(|(_, i)| i).collect()
}

macro_rules! merge_laws {
    ($a:expr, $b:expr, $c:expr) => {{
        let (a, b, c) = ($a, $b, $c);
        // commutative
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        prop_assert_eq!(&ab, &ba);
        // associative
        let mut ab_c = ab.clone();
        ab_c.merge(&c);
        let mut bc = b.clone();
        bc.merge(&c);
        let mut a_bc = a.clone();
        a_bc.merge(&bc);
        prop_assert_eq!(&ab_c, &a_bc);
        // idempotent
        let mut aa = a.clone();
        aa.merge(&a);
        prop_assert_eq!(&aa, &a);
        ab_c
    }};
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn or_set_laws(ops in prop::collection::vec(op(), 0..40), keys in prop::collection::vec(any::<u64>(), 1..8), dups in prop::collection::vec(0usize..1000, 0..20)) {
        let (reps, deltas) = run_or(&ops);
        let all = merge_laws!(reps[0].clone(), reps[1].clone(), reps[2].clone());
        // deltas in any order, duplicated, give the state of the full merge
        let mut x = OrSet::new();
        for i in delivery(deltas.len(), &keys, &dups) { x.apply(&deltas[i]); }
        prop_assert_eq!(&x, &all);
        let mut y = OrSet::new();
        for d in deltas.iter().rev() { y.apply(d); }
        prop_assert_eq!(&y, &all);
    }

    #[test]
    fn lww_laws(ops in prop::collection::vec(op(), 0..40), remove_wins in any::<bool>(), keys in prop::collection::vec(any::<u64>(), 1..8), dups in prop::collection::vec(0usize..1000, 0..20)) {
        let bias = if remove_wins { Bias::RemoveWins } else { Bias::AddWins };
        let (reps, deltas) = run_lww(&ops, bias);
        let all = merge_laws!(reps[0].clone(), reps[1].clone(), reps[2].clone());
        let mut x = LwwElementSet::new(bias);
        for i in delivery(deltas.len(), &keys, &dups) { x.apply(&deltas[i]); }
        prop_assert_eq!(&x, &all);
    }

    #[test]
    fn pn_counter_laws(ops in prop::collection::vec(op(), 0..40), keys in prop::collection::vec(any::<u64>(), 1..8), dups in prop::collection::vec(0usize..1000, 0..20)) {
        let (reps, deltas) = run_pn(&ops);
        let all = merge_laws!(reps[0].clone(), reps[1].clone(), reps[2].clone());
        let mut x = PnCounter::new();
        for i in delivery(deltas.len(), &keys, &dups) { x.apply(&deltas[i]); }
        prop_assert_eq!(&x, &all);
        // the value is the sum of all increments minus all decrements
        let expect: i64 = ops.iter().map(|o| match *o { Op::Add(_, e) => i64::from(e), Op::Remove(_, e) => -i64::from(e), _ => 0 }).sum();
        prop_assert_eq!(all.value(), expect);
    }

    /// Collecting tombstones below a watermark that every replica has passed
    /// changes no membership, and late duplicates of old deltas cannot resurrect.
    #[test]
    fn gc_keeps_membership(ops in prop::collection::vec(op(), 0..40)) {
        let (_, deltas) = run_or(&ops);
        let mut full = OrSet::new();
        for d in &deltas { full.apply(d); }
        let members: Vec<u8> = full.iter().copied().collect();
        let mut collected = full.clone();
        collected.gc(Timestamp::new(1_000, 0));
        prop_assert_eq!(collected.iter().copied().collect::<Vec<_>>(), members.clone());
        for d in &deltas { collected.apply(d); }
        prop_assert_eq!(collected.iter().copied().collect::<Vec<_>>(), members);
        prop_assert_eq!(collected.tombstones(), 0);
        prop_assert_eq!(collected.stored_tags(), full.stored_tags() - full.tombstones());

        let (_, ldeltas) = run_lww(&ops, Bias::AddWins);
        let mut lfull = LwwElementSet::new(Bias::AddWins);
        for d in &ldeltas { lfull.apply(d); }
        let lmembers: Vec<u8> = lfull.iter().copied().collect();
        let mut lcol = lfull.clone();
        lcol.gc(Timestamp::new(1_000, 0));
        for d in &ldeltas { lcol.apply(d); }
        prop_assert_eq!(lcol.iter().copied().collect::<Vec<_>>(), lmembers.clone());
        prop_assert_eq!(lcol.stored(), lmembers.len());
    }

    /// Merge stays a join (commutative, associative, idempotent) when replicas
    /// collected tombstones at different watermarks, were restored from older
    /// snapshots or started empty: no order of merges resurrects a removed
    /// element in one replica and not in another.
    #[test]
    fn or_set_merge_laws_with_gc_and_restores(ops in prop::collection::vec(gc_op(), 0..60), pick in prop::collection::vec(any::<usize>(), 3)) {
        let (reps, history) = run_gc::<OrSet<u8>>(&ops);
        merge_laws!(reps[0].clone(), reps[1].clone(), reps[2].clone());
        let old = |i: usize| history[pick[i] % history.len()].clone();
        merge_laws!(old(0), reps[1].clone(), old(1));
        merge_laws!(old(2), old(0), reps[2].clone());
    }

    #[test]
    fn lww_merge_laws_with_gc_and_restores(ops in prop::collection::vec(gc_op(), 0..60), pick in prop::collection::vec(any::<usize>(), 3)) {
        let (reps, history) = run_gc::<LwwElementSet<u8>>(&ops);
        merge_laws!(reps[0].clone(), reps[1].clone(), reps[2].clone());
        let old = |i: usize| history[pick[i] % history.len()].clone();
        merge_laws!(old(0), reps[1].clone(), old(1));
        merge_laws!(old(2), old(0), reps[2].clone());
    }

    /// A fresh or restored PN-counter merges like any other (no GC there).
    #[test]
    fn pn_counter_merge_laws_with_restores(ops in prop::collection::vec(op(), 0..40), pick in prop::collection::vec(any::<usize>(), 2)) {
        let (reps, _) = run_pn(&ops);
        let (older, _) = run_pn(&ops[..pick[0] % (ops.len() + 1)]);
        merge_laws!(older[pick[1] % SITES].clone(), reps[1].clone(), PnCounter::new());
        merge_laws!(reps[0].clone(), older[0].clone(), reps[2].clone());
    }

    #[test]
    fn codec_round_trips_and_never_panics(ops in prop::collection::vec(op(), 0..30), junk in prop::collection::vec(any::<u8>(), 0..64)) {
        let (reps, _) = run_or(&ops);
        let bytes = codec::encode(&reps[0]).unwrap();
        prop_assert_eq!(bytes[0], codec::WIRE_VERSION);
        let back: OrSet<u8> = codec::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &reps[0]);
        // every truncation is an error (never a panic)
        for cut in 0..bytes.len() {
            let r: Result<OrSet<u8>, _> = codec::decode(&bytes[..cut]);
            prop_assert!(r.is_err());
        }
        // arbitrary bytes never panic
        let _: Result<OrSet<u8>, _> = codec::decode(&junk);
        let _: Result<PnCounter, _> = codec::decode(&junk);
        let _: Result<LwwElementSet<String>, _> = codec::decode(&junk);
    }

    /// HLC: every timestamp handed out is greater than the previous one; a
    /// remote timestamp is rejected exactly when it is beyond the drift bound,
    /// and the clock never runs further ahead of wall time than that bound.
    #[test]
    fn hlc_monotonic_and_drift_bounded(steps in prop::collection::vec((-5i64..6, any::<bool>(), -3_000i64..3_000, 0u16..4), 1..100)) {
        let clock = Arc::new(Manual(AtomicU64::new(1_000_000)));
        let drift = 1_000u64;
        let hlc = Hlc::try_new(SiteId(1), Duration::from_millis(drift)).unwrap().with_clock(clock.clone());
        let mut last = Timestamp::ZERO;
        let mut max_wall = 0u64;
        for (dt, remote, off, lg) in steps {
            let wall = (clock.0.load(Ordering::SeqCst) as i64 + dt).max(0) as u64;
            clock.0.store(wall, Ordering::SeqCst);
            max_wall = max_wall.max(wall);
            if remote {
                let r = Timestamp::new((wall as i64 + off) as u64, lg);
                match hlc.update(r) {
                    Ok(t) => {
                        prop_assert!(r.physical_ms() <= wall + drift);
                        prop_assert!(t > last && t > r);
                        last = t;
                    }
                    Err(CrdtError::ClockDrift { .. }) => {
                        prop_assert!(r.physical_ms() > wall + drift);
                        prop_assert_eq!(hlc.last(), last);
                    }
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            } else {
                let t = hlc.now();
                prop_assert!(t > last);
                last = t;
            }
            prop_assert!(last.physical_ms() <= max_wall + drift);
        }
    }
}

#[derive(Debug)]
struct Manual(AtomicU64);
impl Clock for Manual {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[test]
fn lww_bias_decides_equal_timestamps_and_site_breaks_add_ties() {
    let t = Timestamp::new(5, 0);
    for (bias, present) in [(Bias::AddWins, true), (Bias::RemoveWins, false)] {
        let mut s = LwwElementSet::new(bias);
        s.add("x", Stamp::new(t, SiteId(1)));
        s.remove("x", Stamp::new(t, SiteId(2)));
        assert_eq!(s.contains(&"x"), present, "{bias:?}");
    }
    // a later timestamp wins whatever the site
    let mut s = LwwElementSet::new(Bias::RemoveWins);
    s.remove("x", Stamp::new(Timestamp::new(4, 0), SiteId(9)));
    s.add("x", Stamp::new(Timestamp::new(5, 0), SiteId(1)));
    assert!(s.contains(&"x"));
}

#[test]
fn or_set_keeps_concurrent_add_that_lww_loses() {
    let st = |ms, site| Stamp::new(Timestamp::new(ms, 0), SiteId(site));
    // OR-set: b removes what it saw; a re-adds concurrently (older clock): kept
    let mut a = OrSet::new();
    let mut b = OrSet::new();
    b.apply(&a.add("c1", st(1, 1)));
    let rm = b.remove(&"c1");
    let again = a.add("c1", st(2, 1));
    a.apply(&rm);
    b.apply(&again);
    assert!(a.contains(&"c1") && b.contains(&"c1"));
    // LWW with the same story but the remove stamped later: the add is lost
    let mut l = LwwElementSet::new(Bias::AddWins);
    l.add("c1", st(2, 1));
    l.remove("c1", st(3, 2));
    assert!(!l.contains(&"c1"));
}

#[test]
fn codec_rejects_unknown_version_and_empty() {
    let mut bytes = codec::encode(&PnCounter::new()).unwrap();
    bytes[0] = 9;
    assert!(matches!(codec::decode::<PnCounter>(&bytes), Err(CrdtError::UnknownVersion(9))));
    assert!(matches!(codec::decode::<PnCounter>(&[]), Err(CrdtError::Empty)));
    let mut ok = codec::encode(&PnCounter::new()).unwrap();
    ok.push(0);
    assert!(matches!(codec::decode::<PnCounter>(&ok), Err(CrdtError::Corrupt(_))));
}

#[test]
fn decoding_restores_invariants_of_unsorted_input() {
    // a PnCounter whose wire entries are unsorted and duplicated decodes normalised
    #[derive(serde::Serialize)]
    struct Raw {
        entries: Vec<crdt::PnEntry>,
    }
    let e = |s, p, n| crdt::PnEntry { site: SiteId(s), p, n };
    let bytes = codec::encode(&Raw { entries: vec![e(2, 1, 0), e(1, 5, 1), e(2, 3, 0)] }).unwrap();
    let c: PnCounter = codec::decode(&bytes).unwrap();
    assert_eq!(c.entries(), &[e(1, 5, 1), e(2, 3, 0)]);
    assert_eq!(c.value(), 7);
}

#[test]
fn watermarks_gate_collection() {
    let cells: Vec<cellctx::CellId> = ["a", "b", "c"].iter().map(|c| c.parse().unwrap()).collect();
    let mut w = crdt::Watermarks::new(cells.clone());
    assert!(w.ack(&cells[0], Timestamp::new(50, 0)));
    assert!(w.ack(&cells[1], Timestamp::new(40, 0)));
    assert_eq!(w.global(), None);
    assert!(w.ack(&cells[2], Timestamp::new(60, 0)));
    assert_eq!(w.global(), Some(Timestamp::new(40, 0)));
    assert!(!w.ack(&"zz".parse().unwrap(), Timestamp::new(99, 0)));
    // watermarks never move back
    w.ack(&cells[1], Timestamp::new(10, 0));
    assert_eq!(w.global(), Some(Timestamp::new(40, 0)));

    let st = |ms, site| Stamp::new(Timestamp::new(ms, 0), SiteId(site));
    let mut s = OrSet::new();
    s.add("old", st(10, 1));
    s.remove(&"old");
    s.add("new", st(45, 1));
    s.remove(&"new");
    assert_eq!(s.stored_tags(), 2);
    assert_eq!(s.gc(w.global().unwrap()), 1);
    assert_eq!(s.stored_tags(), 1);
}

/// Regression: a replica restored from a snapshot taken before a remove (and
/// below the watermark another replica collected at) used to bring the
/// removed element back when it merged the collected state, and not when the
/// collected state merged it.
#[test]
fn a_restored_replica_below_the_watermark_cannot_resurrect() {
    let st = |ms, site| Stamp::new(Timestamp::new(ms, 0), SiteId(site));
    let mut a = OrSet::new();
    a.add("x", st(1, 1));
    let old = a.clone();
    a.remove(&"x");
    a.gc(Timestamp::new(5, 0));
    let mut restored = old.clone();
    restored.merge(&a);
    let mut collected = a.clone();
    collected.merge(&old);
    assert_eq!(restored, collected);
    assert!(!restored.contains(&"x"));

    let mut l = LwwElementSet::new(Bias::AddWins);
    l.add("x", st(1, 1));
    let lold = l.clone();
    l.remove("x", st(2, 1));
    l.gc(Timestamp::new(5, 0));
    let mut lr = lold.clone();
    lr.merge(&l);
    let mut lc = l.clone();
    lc.merge(&lold);
    assert_eq!(lr, lc);
    assert!(!lr.contains(&"x"));
}
