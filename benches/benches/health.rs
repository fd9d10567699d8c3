//! health: serving `/healthz?cell=ID` from cached results (no I/O, no lock on
//! the request path), healthy (200 `ok`) and unhealthy (503 with the
//! pre-rendered JSON), against two peers in the same run: a naive handler that
//! serializes the same cell's `CellHealth` with serde_json per request, and a
//! static `service_fn` answering `ok` (the floor any handler costs).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use cellctx::CellId;
use criterion::{BatchSize, Criterion, black_box, criterion_group, criterion_main};
use health::{FnProbe, HealthBody, HealthHub, ProbeOutcome, ProbeSpec, Scheduler};
use http::{Request, Response, StatusCode};
use tower::{Service, service_fn};

const CELLS: usize = 8;
const PROBES: usize = 5;

/// Polls a future that is ready at once.
fn ready<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(fut).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the bench handlers never wait"),
    }
}

fn call<S>(svc: &mut S, req: Request<()>) -> Response<HealthBody>
where
    S: Service<Request<()>, Response = Response<HealthBody>, Error = Infallible>,
{
    ready(svc.call(req)).unwrap()
}

/// A hub with 8 cells × 5 probes that have all reported; cell `cell-7` is down.
fn hub() -> (HealthHub, Scheduler) {
    let hub = HealthHub::default();
    let mut s = Scheduler::try_new(&hub, 16).unwrap();
    for c in 0..CELLS {
        let up = Arc::new(AtomicBool::new(c != CELLS - 1));
        for p in 0..PROBES {
            let up = up.clone();
            let probe = FnProbe::new(move || {
                let up = up.load(Ordering::Relaxed);
                async move {
                    if up {
                        Ok(ProbeOutcome::up().with_hit_ratio(0.99))
                    } else {
                        Err("connect 10.0.0.7:3306: connection refused")
                    }
                }
            });
            let cell: CellId = format!("cell-{c}").parse().unwrap();
            s.add(ProbeSpec::new(cell, format!("dep-{p}"), probe).with_interval(Duration::from_secs(3600)).with_jitter(Duration::ZERO)).unwrap();
        }
    }
    (hub, s)
}

fn req(uri: &'static str) -> impl Fn() -> Request<()> {
    move || Request::get(uri).body(()).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (hub, scheduler) = hub();
    let running = rt.block_on(async move {
        let mut rx = hub.subscribe();
        let running = scheduler.start();
        loop {
            let done = rx.borrow_and_update().cells().all(|c| c.probes.iter().all(|p| p.runs > 0));
            if done {
                break;
            }
            rx.changed().await.unwrap();
        }
        (hub, running)
    });
    let (hub, _running) = running;

    let mut healthz = hub.healthz();
    assert_eq!(call(&mut healthz, req("/healthz?cell=cell-3")()).status(), StatusCode::OK);
    assert_eq!(call(&mut healthz, req("/healthz?cell=cell-7")()).status(), StatusCode::SERVICE_UNAVAILABLE);

    // Peer 1: serialize the cell's health per request (what a handler without a cache does).
    let naive_hub = hub.clone();
    let mut naive = service_fn(move |req: Request<()>| {
        let cell: Option<CellId> =
            req.uri().query().and_then(|q| q.strip_prefix("cell=")).and_then(|s| s.parse().ok());
        let resp = match cell.and_then(|c| naive_hub.cell(&c)) {
            Some(h) if h.healthy => Response::new(HealthBody::from("ok")),
            Some(h) => {
                let mut r = Response::new(HealthBody::from(serde_json::to_vec(&*h).unwrap()));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r
            }
            None => {
                let mut r = Response::new(HealthBody::from("bad cell"));
                *r.status_mut() = StatusCode::BAD_REQUEST;
                r
            }
        };
        std::future::ready(Ok::<_, Infallible>(resp))
    });
    assert_eq!(call(&mut naive, req("/healthz?cell=cell-7")()).status(), StatusCode::SERVICE_UNAVAILABLE);
    // Peer 2: the floor.
    let mut floor =
        service_fn(|_req: Request<()>| std::future::ready(Ok::<_, Infallible>(Response::new(HealthBody::from("ok")))));

    let mut g = c.benchmark_group("health_healthz");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    g.bench_function("health/healthz_healthy", |b| {
        b.iter_batched(req("/healthz?cell=cell-3"), |r| black_box(call(&mut healthz, r)), BatchSize::SmallInput)
    });
    g.bench_function("health/healthz_unhealthy_503_json", |b| {
        b.iter_batched(req("/healthz?cell=cell-7"), |r| black_box(call(&mut healthz, r)), BatchSize::SmallInput)
    });
    g.bench_function("health/healthz_bad_cell_400", |b| {
        b.iter_batched(req("/healthz?cell=Nope!"), |r| black_box(call(&mut healthz, r)), BatchSize::SmallInput)
    });
    g.bench_function("peer/naive_serialize_healthy", |b| {
        b.iter_batched(req("/healthz?cell=cell-3"), |r| black_box(call(&mut naive, r)), BatchSize::SmallInput)
    });
    g.bench_function("peer/naive_serialize_unhealthy", |b| {
        b.iter_batched(req("/healthz?cell=cell-7"), |r| black_box(call(&mut naive, r)), BatchSize::SmallInput)
    });
    g.bench_function("peer/static_ok_service_fn", |b| {
        b.iter_batched(req("/healthz?cell=cell-3"), |r| black_box(call(&mut floor, r)), BatchSize::SmallInput)
    });
    g.finish();
    drop(rt);
}

criterion_group!(benches, bench);
criterion_main!(benches);
