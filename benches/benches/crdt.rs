//! CRDT merge throughput: two replicas of 10,000 elements each (half of them
//! shared, added concurrently at the other site), merged once per iteration.
//! Throughput counts the 20,000 elements of both replicas. Peers in the same
//! run: the `crdts` crate's `Orswot`, `GSet` and `PNCounter`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use crdt::{Bias, LwwElementSet, OrSet, PnCounter, SiteId, Stamp, Timestamp};
use crdts::{CmRDT, CvRDT, GSet, Orswot, PNCounter};

const N: u64 = 10_000;

fn ranges() -> (std::ops::Range<u64>, std::ops::Range<u64>) {
    (0..N, N / 2..N + N / 2)
}

fn stamp(i: u64, site: u64) -> Stamp {
    Stamp::new(Timestamp::new(1_700_000_000_000 + i, 0), SiteId(site))
}

fn sets(c: &mut Criterion) {
    let (ra, rb) = ranges();
    let mut g = c.benchmark_group("crdt_merge");
    g.throughput(Throughput::Elements(2 * N));
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));

    // ours: OR-set vs crdts::Orswot
    let mut a = OrSet::new();
    for i in ra.clone() {
        a.add(i, stamp(i, 1));
    }
    let mut b = OrSet::new();
    for i in rb.clone() {
        b.add(i, stamp(i, 2));
    }
    g.bench_function("crdt::OrSet", |bch| {
        bch.iter_batched(|| (a.clone(), b.clone()), |(mut a, b)| {
            a.merge(&b);
            a
        }, BatchSize::LargeInput)
    });
    let mut oa: Orswot<u64, u64> = Orswot::new();
    for i in ra.clone() {
        let op = oa.add(i, oa.read_ctx().derive_add_ctx(1));
        oa.apply(op);
    }
    let mut ob: Orswot<u64, u64> = Orswot::new();
    for i in rb.clone() {
        let op = ob.add(i, ob.read_ctx().derive_add_ctx(2));
        ob.apply(op);
    }
    g.bench_function("crdts::Orswot", |bch| {
        bch.iter_batched(|| (oa.clone(), ob.clone()), |(mut a, b)| {
            a.merge(b);
            a
        }, BatchSize::LargeInput)
    });

    // ours: LWW element set vs crdts::GSet (the cheapest set merge there is)
    let mut la = LwwElementSet::new(Bias::AddWins);
    for i in ra.clone() {
        la.add(i, stamp(i, 1));
    }
    let mut lb = LwwElementSet::new(Bias::AddWins);
    for i in rb.clone() {
        lb.add(i, stamp(i, 2));
    }
    g.bench_function("crdt::LwwElementSet", |bch| {
        bch.iter_batched(|| (la.clone(), lb.clone()), |(mut a, b)| {
            a.merge(&b);
            a
        }, BatchSize::LargeInput)
    });
    let mut ga = GSet::new();
    for i in ra.clone() {
        ga.insert(i);
    }
    let mut gb = GSet::new();
    for i in rb.clone() {
        gb.insert(i);
    }
    g.bench_function("crdts::GSet", |bch| {
        bch.iter_batched(|| (ga.clone(), gb.clone()), |(mut a, b)| {
            a.merge(b);
            a
        }, BatchSize::LargeInput)
    });

    // counters with 10,000 sites each
    let mut pa = PnCounter::new();
    for i in ra.clone() {
        pa.increment(SiteId(i), 3);
        pa.decrement(SiteId(i), 1);
    }
    let mut pb = PnCounter::new();
    for i in rb.clone() {
        pb.increment(SiteId(i), 5);
        pb.decrement(SiteId(i), 2);
    }
    g.bench_function("crdt::PnCounter", |bch| {
        bch.iter_batched(|| (pa.clone(), pb.clone()), |(mut a, b)| {
            a.merge(&b);
            a
        }, BatchSize::LargeInput)
    });
    let mut qa: PNCounter<u64> = PNCounter::new();
    for i in ra {
        qa.apply(qa.inc_many(i, 3));
        qa.apply(qa.dec_many(i, 1));
    }
    let mut qb: PNCounter<u64> = PNCounter::new();
    for i in rb {
        qb.apply(qb.inc_many(i, 5));
        qb.apply(qb.dec_many(i, 2));
    }
    g.bench_function("crdts::PNCounter", |bch| {
        bch.iter_batched(|| (qa.clone(), qb.clone()), |(mut a, b)| {
            a.merge(b);
            a
        }, BatchSize::LargeInput)
    });
    g.finish();
}

criterion_group!(benches, sets);
criterion_main!(benches);
