//! idgen against `uuid::Uuid::now_v7()`, `snowflake_me` (lock-free CAS) and
//! `rs-snowflake` (`&mut self`, shared behind a `Mutex` for two threads).
//!
//! A snowflake layout has a ceiling: the seed layout issues at most 1,024 ids
//! per ms per worker (~977 ns/id once saturated), Twitter-style layouts 4,096
//! (~244 ns/id). A tight loop on one generator measures the ceiling, not the
//! generator, so three groups:
//!
//! - `idgen/uncontended`: per-id cost under the ceiling. Each snowflake rotates
//!   over 1,024 generators (distinct worker ids, same code path: clock read +
//!   CAS), 512 ids each, so even at ~8 ns/id no generator exceeds ~130 ids/ms
//!   and none waits (with 128 generators a fast one hit the seed ceiling).
//! - `idgen/saturated`: one generator, tight loop: the layout's ceiling.
//! - `idgen/contended_2t`: two threads on one shared generator, ids/s.
//!
//! `idgen_*` use the default clock (`SystemClock`: the process-wide coarse
//! clock, one atomic load, refreshed every 100 µs by a shared thread, with a
//! direct read when a millisecond is used up); `*_direct` read the monotonic
//! clock directly for every id (`SystemClock::direct()`, the previous default);
//! `*_cached_clock` wrap it in a private `idgen::CachedClock`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime};
use idgen::{CachedClock, Clock, Generator, Layout, SystemClock};
use snowflake::SnowflakeIdGenerator;
use snowflake_me::Snowflake;

const ROTATE: usize = 1024;
const BURST: u64 = 512;

fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock::new())
}

fn direct() -> Arc<dyn Clock> {
    Arc::new(SystemClock::new().direct())
}

fn cached() -> Arc<dyn Clock> {
    Arc::new(CachedClock::start(system()).unwrap())
}

fn one(layout: Layout, clock: Arc<dyn Clock>) -> Generator {
    Generator::builder(layout, 0, 0).with_clock(clock).build().unwrap()
}

fn ours(layout: Layout, n: usize, clock: Arc<dyn Clock>) -> Vec<Generator> {
    let workers = layout.max_worker() as usize + 1;
    (0..n)
        .map(|i| {
            Generator::builder(layout, (i / workers) as u32, (i % workers) as u32)
                .with_clock(Arc::clone(&clock))
                .build()
                .unwrap()
        })
        .collect()
}

fn snowflake_me(n: usize) -> Vec<Snowflake> {
    (0..n)
        .map(|i| {
            let machine = move || Ok((i % 32) as u16);
            let dc = move || Ok((i / 32) as u16);
            Snowflake::builder().machine_id(&machine).data_center_id(&dc).finalize().unwrap()
        })
        .collect()
}

fn rs_snowflake(n: usize) -> Vec<SnowflakeIdGenerator> {
    (0..n).map(|i| SnowflakeIdGenerator::new((i / 32) as i32, (i % 32) as i32)).collect()
}

/// Runs `iters` ids in bursts of 512, moving to the next generator after each.
fn rotate<G>(gens: &mut [G], iters: u64, mut one: impl FnMut(&mut G) -> u64) -> Duration {
    let start = Instant::now();
    let mut left = iters;
    let mut k = 0;
    while left > 0 {
        let n = left.min(BURST);
        let g = &mut gens[k % gens.len()];
        for _ in 0..n {
            black_box(one(g));
        }
        left -= n;
        k += 1;
    }
    start.elapsed()
}

fn uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("idgen/uncontended");
    configure(&mut group);
    for (name, layout, clock) in [
        ("idgen_seed", Layout::seed(), system()),
        ("idgen_twitter", Layout::twitter(), system()),
        ("idgen_seed_direct", Layout::seed(), direct()),
        ("idgen_seed_cached_clock", Layout::seed(), cached()),
    ] {
        let mut gens = ours(layout, ROTATE, clock);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| rotate(&mut gens, iters, |g| g.next_id().unwrap().get()))
        });
    }
    let mut sme = snowflake_me(ROTATE);
    group.bench_function("snowflake_me", |b| {
        b.iter_custom(|iters| rotate(&mut sme, iters, |g| g.next_id().unwrap().int64() as u64))
    });
    let mut rss = rs_snowflake(ROTATE);
    group.bench_function("rs_snowflake", |b| {
        b.iter_custom(|iters| rotate(&mut rss, iters, |g| g.real_time_generate() as u64))
    });
    group.bench_function("uuid_now_v7", |b| b.iter(|| black_box(uuid::Uuid::now_v7())));
    group.finish();
}

fn saturated(c: &mut Criterion) {
    let mut group = c.benchmark_group("idgen/saturated");
    configure(&mut group);
    for (name, layout, clock) in [
        ("idgen_seed", Layout::seed(), system()),
        ("idgen_twitter", Layout::twitter(), system()),
        ("idgen_seed_direct", Layout::seed(), direct()),
    ] {
        let g = one(layout, clock);
        group.bench_function(name, |b| b.iter(|| black_box(g.next_id().unwrap())));
    }
    let sme = snowflake_me(1).pop().unwrap();
    group.bench_function("snowflake_me", |b| b.iter(|| black_box(sme.next_id().unwrap())));
    let mut rss = SnowflakeIdGenerator::new(0, 0);
    group.bench_function("rs_snowflake", |b| b.iter(|| black_box(rss.real_time_generate())));
    group.bench_function("uuid_now_v7", |b| b.iter(|| black_box(uuid::Uuid::now_v7())));
    group.finish();
}

/// Two threads, `iters / 2` ids each, on one shared generator.
fn two_threads(iters: u64, one: impl Fn() -> u64 + Sync) -> Duration {
    let per = iters.div_ceil(2);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..per {
                    black_box(one());
                }
            });
        }
    });
    start.elapsed()
}

fn contended(c: &mut Criterion) {
    let mut group = c.benchmark_group("idgen/contended_2t");
    configure(&mut group);
    for (name, layout, clock) in [
        ("idgen_seed", Layout::seed(), system()),
        ("idgen_twitter", Layout::twitter(), system()),
        ("idgen_seed_direct", Layout::seed(), direct()),
    ] {
        let g = one(layout, clock);
        group.bench_function(name, |b| b.iter_custom(|n| two_threads(n, || g.next_id().unwrap().get())));
    }
    let sme = snowflake_me(1).pop().unwrap();
    group.bench_function("snowflake_me", |b| {
        b.iter_custom(|n| two_threads(n, || sme.next_id().unwrap().int64() as u64))
    });
    let rss = Mutex::new(SnowflakeIdGenerator::new(0, 0));
    group.bench_function("rs_snowflake_mutex", |b| {
        b.iter_custom(|n| two_threads(n, || rss.lock().unwrap().real_time_generate() as u64))
    });
    group.bench_function("uuid_now_v7", |b| {
        b.iter_custom(|n| two_threads(n, || uuid::Uuid::now_v7().as_u64_pair().1))
    });
    group.finish();
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
}

criterion_group!(benches, uncontended, saturated, contended);
criterion_main!(benches);
