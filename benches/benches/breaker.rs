//! Breaker overhead in the closed state around a ready no-op service, against
//! `tower-resilience`'s circuit breaker, `recloser`, `failsafe` and tower's
//! bare service, all in one run. Also counts allocations per call.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::alloc::System;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use breaker::{Breaker, BreakerConfig, CircuitBreakerLayer, CoarseClock, ErrorsAreFailures, Outcome};
use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A ready no-op service.
#[derive(Clone, Copy)]
struct Noop;

impl Service<u64> for Noop {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = Ready<Result<u64, Self::Error>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// poll_ready + call + poll to completion, with a no-op waker.
#[inline]
fn drive<S: Service<u64>>(svc: &mut S, req: u64) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    if !matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))) {
        return false;
    }
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

/// Like [`drive`], re-polling until ready (for services whose future may
/// wait on an async lock under contention).
fn drive_spin<S: Service<u64>>(svc: &mut S, req: u64) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => break,
            Poll::Ready(Err(_)) => return false,
            Poll::Pending => std::hint::spin_loop(),
        }
    }
    let mut fut = pin!(svc.call(req));
    loop {
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(r) => return r.is_ok(),
            Poll::Pending => std::hint::spin_loop(),
        }
    }
}

fn ours_core() -> Arc<Breaker> {
    Breaker::standalone("bench", &BreakerConfig::default(), Arc::new(CoarseClock::global())).unwrap().0
}

type OursSvc = breaker::CircuitBreaker<Noop, breaker::key::Downstream, ErrorsAreFailures, breaker::NoFallback>;

fn ours_layer() -> OursSvc {
    CircuitBreakerLayer::new("bench", BreakerConfig::default())
        .unwrap()
        .with_classifier(ErrorsAreFailures)
        .layer(Noop)
}

fn tower_resilience() -> tower_resilience::circuitbreaker::CircuitBreaker<Noop, tower_resilience::circuitbreaker::DefaultClassifier> {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder().build().unwrap().layer(Noop)
}

fn allocs_per_call(name: &str, mut f: impl FnMut()) {
    for _ in 0..1000 {
        f();
    }
    let region = Region::new(GLOBAL);
    for _ in 0..10_000 {
        f();
    }
    println!("allocations per call, {name}: {:.2}", region.change().allocations as f64 / 10_000.0);
}

fn report_allocations() {
    let b = ours_core();
    allocs_per_call("breaker admit+record", || b.try_acquire_ref().unwrap().record(Outcome::Success));
    allocs_per_call("breaker admit+record (Arc permit)", || b.try_acquire().unwrap().record(Outcome::Success));
    let mut s = ours_layer();
    allocs_per_call("breaker layer", || assert!(drive(&mut s, 1)));
    let mut t = tower_resilience();
    allocs_per_call("tower-resilience layer", || assert!(drive(&mut t, 1)));
    let r = recloser::Recloser::default();
    allocs_per_call("recloser", || r.call(|| Ok::<u64, ()>(1)).map(drop).unwrap());
    let f = failsafe::Config::new().build();
    allocs_per_call("failsafe", || f.call(|| Ok::<u64, ()>(1)).map(drop).unwrap());
}

fn uncontended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    report_allocations();

    let mut g = c.benchmark_group("breaker/admit_record");
    let b = ours_core();
    g.bench_function("breaker", |x| x.iter(|| b.try_acquire_ref().unwrap().record(black_box(Outcome::Success))));
    g.bench_function("breaker_arc_permit", |x| x.iter(|| b.try_acquire().unwrap().record(black_box(Outcome::Success))));
    let r = recloser::Recloser::default();
    g.bench_function("recloser", |x| x.iter(|| r.call(|| Ok::<u64, ()>(black_box(1))).is_ok()));
    let f = failsafe::Config::new().build();
    g.bench_function("failsafe", |x| x.iter(|| f.call(|| Ok::<u64, ()>(black_box(1))).is_ok()));
    g.finish();

    let mut g = c.benchmark_group("breaker/layer");
    let mut bare = Noop;
    g.bench_function("tower_bare", |x| x.iter(|| drive(&mut bare, black_box(1))));
    let mut ours = ours_layer();
    g.bench_function("breaker", |x| x.iter(|| drive(&mut ours, black_box(1))));
    let mut tr = tower_resilience();
    g.bench_function("tower_resilience", |x| x.iter(|| drive(&mut tr, black_box(1))));
    g.finish();
}

/// Runs `per_thread` on 2 threads at once, `iters` times each; returns the
/// wall time (per call per thread, as criterion divides by `iters`).
fn two_threads<T: Clone + Send>(iters: u64, shared: &T, per_thread: impl Fn(&mut T) + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let mut mine = shared.clone();
            let (barrier, per_thread) = (&barrier, &per_thread);
            s.spawn(move || {
                barrier.wait();
                for _ in 0..iters {
                    per_thread(&mut mine);
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn contended(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let handle = rt.handle().clone();
    let mut g = c.benchmark_group("breaker/two_threads_one_breaker");
    let b = ours_core();
    g.bench_function("breaker_admit_record", |x| {
        x.iter_custom(|n| two_threads(n, &b, |b| b.try_acquire_ref().unwrap().record(black_box(Outcome::Success))))
    });
    g.bench_function("breaker_admit_record_arc_permit", |x| {
        x.iter_custom(|n| two_threads(n, &b, |b| b.try_acquire().unwrap().record(black_box(Outcome::Success))))
    });
    let r = Arc::new(recloser::Recloser::default());
    g.bench_function("recloser", |x| x.iter_custom(|n| two_threads(n, &r, |r| assert!(r.call(|| Ok::<u64, ()>(black_box(1))).is_ok()))));
    let f = failsafe::Config::new().build();
    g.bench_function("failsafe", |x| x.iter_custom(|n| two_threads(n, &f, |f| assert!(f.call(|| Ok::<u64, ()>(black_box(1))).is_ok()))));
    g.bench_function("tower_bare", |x| x.iter_custom(|n| two_threads(n, &Noop, |s| assert!(drive(s, black_box(1))))));
    let ours = ours_layer();
    g.bench_function("breaker_layer", |x| x.iter_custom(|n| two_threads(n, &ours, |s| assert!(drive(s, black_box(1))))));
    let tr = tower_resilience();
    g.bench_function("tower_resilience", |x| {
        x.iter_custom(|n| {
            two_threads(n, &tr, |s| {
                let _g = handle.enter();
                assert!(drive_spin(s, black_box(1)))
            })
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_secs(1)).sample_size(20)
}

criterion_group! { name = benches; config = config(); targets = uncontended, contended }
criterion_main!(benches);
