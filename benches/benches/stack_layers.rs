//! stack_layers: the load harness's SDK stack (cellctx server layer -> cellrouter
//! layer, served locally -> breaker) around a no-op handler, called directly
//! (no network, no runtime), against the bare no-op handler in the same run.
//! The request is the load harness's (`Host`, `X-User-ID`, `X-Request-ID`) and,
//! as axum hands it to a route's layers, already carries an extension; the
//! handler's response carries a `Content-Type`, as axum's `&'static str` does.
//! It isolates the stack's own per-request cost, which the load harness sees
//! diluted by HTTP and TCP; run it under callgrind for an instruction count.
//! Beside the layer prefixes: the README's mounting (`AnswerErrorsLayer` in
//! front), the fused layer (`cellsdk::CellLayer`) and the hand-written floor
//! of the job (`support/stack_floor.rs`), and as a peer tower-http's
//! request-id trio. `STACK_LAYERS_NO_ID=1` (profiling mode) sends no request
//! id, so that every variant generates one. The handler answers with axum's body,
//! as an axum handler does.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/cells.rs"]
mod cells;
#[path = "support/stack_floor.rs"]
mod stack_floor;

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use breaker::{BreakerConfig, CircuitBreakerLayer};
use bytes::Bytes;
use cells::{LOCAL, id, keys, routing_table};
use cellctx::CellContextLayer;
use cellrouter::{CellRouterLayer, MisroutePolicy, TableStore};
use criterion::{Criterion, black_box, criterion_group, criterion_main};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service, ServiceBuilder, service_fn};

const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

fn store() -> TableStore {
    TableStore::with_table(routing_table()).unwrap()
}

/// Stands for what axum's router inserts before a route's layers run (`MatchedPath`).
#[derive(Clone, Copy)]
struct RouteMarker;

/// Whether the requests come without a request id (`STACK_LAYERS_NO_ID=1` in
/// profiling mode: every layer generates one then, as under `stack_wrk`).
static NO_ID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn request(key: &HeaderValue) -> Request<Empty<Bytes>> {
    let mut req = Request::new(Empty::new());
    let h = req.headers_mut();
    h.insert(http::header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
    h.insert(X_USER_ID, key.clone());
    if !NO_ID.load(std::sync::atomic::Ordering::Relaxed) {
        h.insert(X_REQUEST_ID, HeaderValue::from_static("load-0001"));
    }
    req.extensions_mut().insert(RouteMarker);
    req
}

fn call<S, B>(svc: &mut S, req: Request<B>) -> S::Response
where
    S: Service<Request<B>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    match pin!(svc.call(req)).poll(&mut cx) {
        Poll::Ready(Ok(res)) => res,
        Poll::Ready(Err(_)) => panic!("the handler does not fail"),
        Poll::Pending => panic!("the bench stacks never wait"),
    }
}

fn stack(c: &mut Criterion) {
    let store = store();
    let key = keys(&store, true, 1).remove(0);
    let handler = || {
        service_fn(|_req: Request<Empty<Bytes>>| async {
            let mut res = Response::new(axum::body::Body::from(Bytes::from_static(b"hello")));
            res.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
            Ok::<_, Infallible>(res)
        })
    };
    let mut bare = handler();
    let mut full = ServiceBuilder::new()
        .layer(CellContextLayer::internal())
        .layer(CellRouterLayer::new(store.clone(), id(LOCAL)).with_policy(MisroutePolicy::Refuse))
        .layer(CircuitBreakerLayer::new("hello", BreakerConfig::default()).unwrap())
        .service(handler());
    let mut ctx_only = ServiceBuilder::new().layer(CellContextLayer::internal()).service(handler());
    let mut ctx_router = ServiceBuilder::new()
        .layer(CellContextLayer::internal())
        .layer(CellRouterLayer::new(store.clone(), id(LOCAL)).with_policy(MisroutePolicy::Refuse))
        .service(handler());
    let mut separate = ServiceBuilder::new()
        .layer(breaker::AnswerErrorsLayer::new())
        .layer(CellContextLayer::internal())
        .layer(CellRouterLayer::new(store.clone(), id(LOCAL)).with_policy(MisroutePolicy::Refuse))
        .layer(CircuitBreakerLayer::new("hello", BreakerConfig::default()).unwrap())
        .service(handler());
    let mut fused = cellsdk::CellLayer::new(
        CellContextLayer::internal(),
        CellRouterLayer::new(store.clone(), id(LOCAL)).with_policy(MisroutePolicy::Refuse),
        CircuitBreakerLayer::new("hello", BreakerConfig::default()).unwrap(),
    )
    .layer(handler());
    let mut floor = stack_floor::Floor::new(handler(), store.clone(), id(LOCAL));
    // Peer: tower-http's request-id trio (uuid v4, `fast-rng`) echoing `X-User-ID` too.
    let mut trio = ServiceBuilder::new()
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(tower_http::request_id::MakeRequestUuid))
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::propagate_header::PropagateHeaderLayer::new(X_USER_ID))
        .service(handler());
    // The stacks are in the path: the request id is echoed.
    assert_eq!(call(&mut full, request(&key)).headers()[&X_REQUEST_ID], "load-0001");
    assert_eq!(call(&mut separate, request(&key)).headers()[&X_REQUEST_ID], "load-0001");
    assert_eq!(call(&mut fused, request(&key)).headers()[&X_REQUEST_ID], "load-0001");
    assert_eq!(call(&mut floor, request(&key)).headers()[&X_REQUEST_ID], "load-0001");
    assert_eq!(call(&mut trio, request(&key)).headers()[&X_REQUEST_ID], "load-0001");

    // Profiling mode: `STACK_LAYERS_PROFILE=<variant> STACK_LAYERS_N=<n>` runs n
    // calls of one variant and exits, for callgrind (instructions / n, minus n = 0).
    if let Ok(variant) = std::env::var("STACK_LAYERS_PROFILE") {
        NO_ID.store(std::env::var("STACK_LAYERS_NO_ID").is_ok_and(|v| v == "1"), std::sync::atomic::Ordering::Relaxed);
        let n: usize = std::env::var("STACK_LAYERS_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        for _ in 0..n {
            match variant.as_str() {
                "bare" => drop(black_box(call(&mut bare, black_box(request(&key))))),
                "cellctx" => drop(black_box(call(&mut ctx_only, black_box(request(&key))))),
                "router" => drop(black_box(call(&mut ctx_router, black_box(request(&key))))),
                "separate" => drop(black_box(call(&mut separate, black_box(request(&key))))),
                "fused" => drop(black_box(call(&mut fused, black_box(request(&key))))),
                "floor" => drop(black_box(call(&mut floor, black_box(request(&key))))),
                "trio" => drop(black_box(call(&mut trio, black_box(request(&key))))),
                _ => drop(black_box(call(&mut full, black_box(request(&key))))),
            }
        }
        std::process::exit(0);
    }
    let mut g = c.benchmark_group("stack/one request");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2)).sample_size(30);
    g.bench_function("bare handler", |b| b.iter(|| black_box(call(&mut bare, black_box(request(&key))))));
    g.bench_function("cellctx", |b| b.iter(|| black_box(call(&mut ctx_only, black_box(request(&key))))));
    g.bench_function("cellctx + cellrouter", |b| b.iter(|| black_box(call(&mut ctx_router, black_box(request(&key))))));
    g.bench_function("cellctx + cellrouter + breaker", |b| b.iter(|| black_box(call(&mut full, black_box(request(&key))))));
    g.bench_function("separate layers (README mounting)", |b| b.iter(|| black_box(call(&mut separate, black_box(request(&key))))));
    g.bench_function("fused layer", |b| b.iter(|| black_box(call(&mut fused, black_box(request(&key))))));
    g.bench_function("tower-http trio", |b| b.iter(|| black_box(call(&mut trio, black_box(request(&key))))));
    g.bench_function("floor", |b| b.iter(|| black_box(call(&mut floor, black_box(request(&key))))));
    g.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
