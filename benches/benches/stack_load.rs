//! stack_load: a load harness on loopback. The same axum handler is served
//! twice in one process, bare and behind the full SDK stack, and driven by the
//! same Rust load generator (hyper HTTP/1.1 client, a fixed number of keep-alive
//! connections, closed loop), bounded in time and in request count.
//!
//! The server runs on its own thread (a current-thread tokio runtime) and the
//! load generator on another, so on a 2-core machine each has a core and no
//! request's latency depends on which worker thread its tasks landed on. The
//! server thread's CPU time is read around every slice
//! (`/proc/thread-self/schedstat`): server CPU per request is the server's cost
//! whatever the client's speed, and its ratio is the throughput a saturated
//! server loses to the stack (the throughput loss reported against the target).
//!
//! The stack, outermost first, as a cell service mounts it:
//! `HandleErrorLayer` (breaker errors -> 503) -> `cellctx::CellContextLayer`
//! (internal trust) -> `cellrouter::CellRouterLayer` (3-cell table, keys homed
//! on the local cell, so every request is served locally) ->
//! `breaker::CircuitBreakerLayer` (default sliding window) -> the handler; and
//! `/healthz` from a `health::HealthHub` with a background probe, mounted
//! beside the routes. A third variant wraps the same stack around the whole
//! `Router` (one service in front of the routing) instead of mounting it on
//! the route with `Router::layer`.
//!
//! Three phases. The first two run `rounds` times in short slices with the
//! variants alternating (the order flips each round so drift of a shared
//! machine hits every variant alike); reported are the ratio of the totals and
//! the median of the per-round ratios (each round's slices ran back to back, so
//! that median is the figure least moved by other load on the machine):
//! - throughput: `conns` connections (default 16): requests/s, server CPU per
//!   request and latency under load (the latency here is mostly queueing);
//! - latency: 1 connection: the per-request round trip of each variant alone;
//! - paired (`latency secs x rounds x variants` long): one connection per
//!   variant, one request to each in turn, so adjacent requests see the same
//!   machine state: the added p50 is the median of the per-step differences to
//!   the bare request (the target's figure; with `STACK_LOAD_ABLATION=1` also
//!   over the ablation's variants).
//!
//! Every response is checked (200, body `hello`; behind the stack also the
//! echoed `X-Request-ID`); any failure fails the run. Without `--bench` (as
//! `cargo test --benches` runs it) it does a short smoke run.
//!
//! `cargo bench -p cell-benches --bench stack_load`; environment overrides:
//! `STACK_LOAD_SECS` (per run, default 1), `STACK_LOAD_LATENCY_SECS` (default 0.5),
//! `STACK_LOAD_WARMUP_SECS` (per variant and phase, default 1),
//! `STACK_LOAD_ROUNDS` (default 10), `STACK_LOAD_CONNS` (default 16),
//! `STACK_LOAD_MAX_REQUESTS` (per run, default 5,000,000), `STACK_LOAD_ABLATION=1`
//! (a third phase at `conns` connections adding the stack's prefixes: cellctx
//! alone, cellctx + cellrouter, to see which layer costs what; and, as a peer
//! layer, tower-http's `PropagateHeaderLayer` echoing the request id; and the
//! floor of the stack's server-side job, hand-written: `support/stack_floor.rs`);
//! `STACK_LOAD_ONLY=bare|echo|cellctx|router|full|wrapped|floor` (profiling aid: that variant
//! alone, one phase, e.g. under callgrind).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/cells.rs"]
mod cells;
#[path = "support/proc_stat.rs"]
mod proc_stat;
#[path = "support/stack_floor.rs"]
mod stack_floor;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::routing::get;
use breaker::{BreakerConfig, CircuitBreakerLayer};
use bytes::Bytes;
use cells::{LOCAL, id, keys, routing_table};
use cellctx::CellContextLayer;
use cellrouter::{CellRouterLayer, MisroutePolicy, TableStore};
use hdrhistogram::Histogram;
use health::{FnProbe, HealthHub, ProbeOutcome, ProbeSpec, Scheduler, ScorePolicy};
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tower::{BoxError, ServiceBuilder};

const BODY: &[u8] = b"hello";
const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Debug, Clone)]
struct Opts {
    secs: Duration,
    latency_secs: Duration,
    warm_up: Duration,
    rounds: usize,
    conns: usize,
    max_requests: u64,
    ablation: bool,
}

impl Opts {
    fn from_env(bench: bool) -> Opts {
        fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
        }
        if !bench {
            // Smoke run (`cargo test --benches`): proves the harness works.
            return Opts {
                secs: Duration::from_millis(300),
                latency_secs: Duration::from_millis(200),
                warm_up: Duration::from_millis(100),
                rounds: 1,
                conns: 4,
                max_requests: 20_000,
                ablation: true,
            };
        }
        Opts {
            secs: Duration::from_secs_f64(env("STACK_LOAD_SECS", 1.0)),
            latency_secs: Duration::from_secs_f64(env("STACK_LOAD_LATENCY_SECS", 0.5)),
            warm_up: Duration::from_secs_f64(env("STACK_LOAD_WARMUP_SECS", 1.0)),
            rounds: env("STACK_LOAD_ROUNDS", 10usize).max(1),
            conns: env("STACK_LOAD_CONNS", 16usize).max(1),
            max_requests: env("STACK_LOAD_MAX_REQUESTS", 5_000_000u64).max(1),
            ablation: env("STACK_LOAD_ABLATION", 0u8) != 0,
        }
    }
}

async fn hello() -> &'static str {
    "hello"
}

fn bare_app() -> Router {
    Router::new().route("/hello", get(hello))
}

struct Stack {
    app: Router,
    /// Where the same stack wrapped around the whole `Router` is served (see [`wrap_router`]).
    wrapped: SocketAddr,
    breaker: CircuitBreakerLayer,
    _probes: health::SchedulerHandle,
}

/// Wraps the stack around a whole `Router` (one service in front of the
/// routing, as tower-http's docs mount layers that must see every request),
/// instead of mounting it on each route with `Router::layer`, which re-boxes the
/// route and clones it per request; errors answered by the breaker's
/// `AnswerErrorsLayer` (no per-request clone and boxed future, as axum's
/// `HandleErrorLayer` has).
fn wrap_router(
    app: Router,
    store: TableStore,
    breaker: CircuitBreakerLayer,
) -> impl tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    ServiceBuilder::new()
        .layer(breaker::AnswerErrorsLayer::new())
        .layer(CellContextLayer::internal())
        .layer(CellRouterLayer::new(store, id(LOCAL)).with_policy(MisroutePolicy::Refuse))
        .layer(breaker)
        .service(app)
}

/// The full stack: cellctx -> cellrouter (served locally) -> breaker -> handler,
/// `/healthz` beside it.
async fn stack_app(store: TableStore) -> Stack {
    let hub = HealthHub::try_new(ScorePolicy::default()).unwrap();
    let probe = FnProbe::new(|| async { Ok::<_, std::io::Error>(ProbeOutcome::up()) });
    let mut events = hub.events();
    let probes = Scheduler::try_new(&hub, 4)
        .unwrap()
        .with_probe(ProbeSpec::new(id(LOCAL), "local", probe).with_interval(Duration::from_secs(1)))
        .unwrap()
        .start();
    events.recv().await.unwrap(); // the first probe result made the cell healthy
    let breaker = CircuitBreakerLayer::new("hello", BreakerConfig::default()).unwrap();
    let app = Router::new()
        .route("/hello", get(hello))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|e: BoxError| async move { (StatusCode::SERVICE_UNAVAILABLE, e.to_string()) }))
                .layer(CellContextLayer::internal())
                .layer(CellRouterLayer::new(store.clone(), id(LOCAL)).with_policy(MisroutePolicy::Refuse))
                .layer(breaker.clone()),
        )
        .route_service("/healthz", hub.healthz());
    // `with_state` turns the handler routes into services once (as `axum::serve`
    // does per connection for a bare `Router`), not per request.
    let plain = Router::new().route("/hello", get(hello)).route_service("/healthz", hub.healthz()).with_state(());
    let wrapped = serve_service(wrap_router(plain, store, breaker.clone())).await;
    Stack { app, wrapped, breaker, _probes: probes }
}

/// Ablation peer: one tower-http layer that echoes `X-Request-ID`
/// (`PropagateHeaderLayer`): the cost of any layer mounted with `Router::layer`
/// that touches the headers, against which cellctx's own cost can be read.
fn echo_app() -> Router {
    Router::new().route("/hello", get(hello)).layer(tower_http::propagate_header::PropagateHeaderLayer::new(X_REQUEST_ID))
}

/// Ablation: the cellctx server layer alone.
fn ctx_app() -> Router {
    Router::new().route("/hello", get(hello)).layer(CellContextLayer::internal())
}

/// Ablation: cellctx and cellrouter, no breaker, no healthz.
fn ctx_router_app(store: TableStore) -> Router {
    Router::new().route("/hello", get(hello)).layer(
        ServiceBuilder::new()
            .layer(CellContextLayer::internal())
            .layer(CellRouterLayer::new(store, id(LOCAL)).with_policy(MisroutePolicy::Refuse)),
    )
}

/// Ablation: the floor of the stack's server-side job, hand-written around the
/// whole `Router` (see `support/stack_floor.rs`).
fn floor(store: TableStore) -> stack_floor::Floor<Router> {
    stack_floor::Floor::new(bare_app(), store, id(LOCAL))
}

/// The floor variant's name.
const FLOOR: &str = "floor of the stack's job (unchecked)";

/// The server runtime: one thread, a current-thread runtime (set once in `main`).
static SERVER: OnceLock<tokio::runtime::Handle> = OnceLock::new();

fn server() -> &'static tokio::runtime::Handle {
    SERVER.get().expect("the server runtime is started first")
}

/// Starts the server thread and its runtime.
fn start_server_thread() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("stack-load-server".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            tx.send(rt.handle().clone()).unwrap();
            rt.block_on(std::future::pending::<()>());
        })
        .unwrap();
    SERVER.set(rx.recv().unwrap()).unwrap();
}

/// CPU time the server thread has used so far: in all, read from
/// `/proc/thread-self/schedstat` (nanoseconds on the CPU), and split into user
/// and kernel time from `/proc/thread-self/stat` (clock ticks of 10 ms: coarse,
/// read over whole phases). Read on that thread; Linux.
#[derive(Clone, Copy, Default)]
struct CpuSample {
    on_cpu: Duration,
    user: Duration,
    system: Duration,
}

impl CpuSample {
    fn since(self, earlier: CpuSample) -> CpuSample {
        CpuSample {
            on_cpu: self.on_cpu.saturating_sub(earlier.on_cpu),
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

async fn server_cpu() -> CpuSample {
    server()
        .spawn(async {
            let stat = std::fs::read_to_string("/proc/thread-self/schedstat").expect("/proc/thread-self/schedstat (Linux)");
            let ns: u64 = stat.split_whitespace().next().and_then(|v| v.parse().ok()).expect("schedstat: ns on cpu");
            let (user, system) = proc_stat::user_system("/proc/thread-self/stat");
            CpuSample { on_cpu: Duration::from_nanos(ns), user, system }
        })
        .await
        .unwrap()
}

/// Serves `app` on the server thread (axum's own make-service, which turns the
/// routes into services once per connection).
async fn serve(app: Router) -> SocketAddr {
    server()
        .spawn(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            addr
        })
        .await
        .unwrap()
}

/// Serves any axum-compatible service on the server thread (cloned per connection).
async fn serve_service<S>(svc: S) -> SocketAddr
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    server()
        .spawn(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, tower::make::Shared::new(svc)).await.unwrap() });
            addr
        })
        .await
        .unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn connect(addr: SocketAddr) -> Sender {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

fn request(path: &str, addr: SocketAddr, key: &HeaderValue, rid: &HeaderValue) -> Request<Empty<Bytes>> {
    let mut req = Request::get(path).body(Empty::new()).unwrap();
    let h = req.headers_mut();
    h.insert(http::header::HOST, HeaderValue::from_str(&addr.to_string()).unwrap());
    h.insert(X_USER_ID, key.clone());
    h.insert(X_REQUEST_ID, rid.clone());
    req
}

/// The request ids the load generator cycles through.
fn request_ids() -> Vec<HeaderValue> {
    (0..1024).map(|i| HeaderValue::from_str(&format!("load-{i:04}")).unwrap()).collect()
}

/// One `/hello` request on `sender`: its latency (send -> full body, ns) and
/// whether the answer is right (200, the body, and the echoed request id when
/// `check_echo`).
async fn timed_hello(sender: &mut Sender, addr: SocketAddr, key: &HeaderValue, rid: &HeaderValue, check_echo: bool) -> (u64, bool) {
    let req = request("/hello", addr, key, rid);
    sender.ready().await.unwrap();
    let t = Instant::now();
    let resp = sender.send_request(req).await.unwrap();
    let ok = resp.status() == StatusCode::OK && (!check_echo || resp.headers().get(X_REQUEST_ID) == Some(rid));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (t.elapsed().as_nanos() as u64, ok && body.as_ref() == BODY)
}

/// One request outside the measurement; returns status, the echoed request id and the body.
async fn probe(addr: SocketAddr, path: &str, key: &HeaderValue) -> (StatusCode, Option<HeaderValue>, Bytes) {
    let mut s = connect(addr).await;
    let rid = HeaderValue::from_static("probe-1");
    s.ready().await.unwrap();
    let resp = s.send_request(request(path, addr, key, &rid)).await.unwrap();
    let status = resp.status();
    let echo = resp.headers().get(X_REQUEST_ID).cloned();
    (status, echo, resp.into_body().collect().await.unwrap().to_bytes())
}

/// One server under load.
#[derive(Clone, Copy, Debug)]
struct Variant {
    name: &'static str,
    addr: SocketAddr,
    /// cellctx is in the path: the request id must be echoed.
    echo: bool,
}

struct RunResult {
    requests: u64,
    /// Server thread CPU time spent during the run.
    server_cpu: CpuSample,
    errors: u64,
    elapsed: Duration,
    hist: Histogram<u64>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap()
}

/// One closed-loop run: `conns` connections, each sending its next request when
/// the previous response's body is in, until `time` has passed or `max`
/// requests have been started. Latency: send -> full body, in ns.
async fn run(addr: SocketAddr, conns: usize, time: Duration, max: u64, keys: Arc<Vec<HeaderValue>>, check_echo: bool) -> RunResult {
    let mut senders = Vec::with_capacity(conns);
    for _ in 0..conns {
        senders.push(connect(addr).await);
    }
    let started = Arc::new(AtomicU64::new(0));
    let rids = Arc::new(request_ids());
    let cpu0 = server_cpu().await;
    let t0 = Instant::now();
    let deadline = t0 + time;
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(c, mut sender)| {
            let (started, keys, rids) = (started.clone(), keys.clone(), rids.clone());
            tokio::spawn(async move {
                let mut hist = new_hist();
                let (mut n, mut errors) = (0u64, 0u64);
                let mut i = c * 131;
                while started.fetch_add(1, Ordering::Relaxed) < max && Instant::now() < deadline {
                    i = i.wrapping_add(1);
                    let (ns, ok) = timed_hello(&mut sender, addr, &keys[i % keys.len()], &rids[i % rids.len()], check_echo).await;
                    hist.saturating_record(ns);
                    n += 1;
                    if !ok {
                        errors += 1;
                    }
                }
                (n, errors, hist)
            })
        })
        .collect();
    let mut out = RunResult { requests: 0, server_cpu: CpuSample::default(), errors: 0, elapsed: Duration::ZERO, hist: new_hist() };
    for t in tasks {
        let (n, e, h) = t.await.unwrap();
        out.requests += n;
        out.errors += e;
        out.hist.add(&h).unwrap();
    }
    out.elapsed = t0.elapsed();
    out.server_cpu = server_cpu().await.since(cpu0);
    out
}

#[derive(Default)]
struct Totals {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    hist: Option<Histogram<u64>>,
    per_round: Vec<f64>,
    server_cpu: Duration,
    /// Server user and kernel time (tick-counted).
    server_user: Duration,
    server_system: Duration,
    /// Server CPU ns per request, per round.
    cpu_per_round: Vec<f64>,
}

impl Totals {
    fn add(&mut self, r: RunResult) {
        self.per_round.push(r.requests as f64 / r.elapsed.as_secs_f64());
        self.cpu_per_round.push(r.server_cpu.on_cpu.as_nanos() as f64 / r.requests.max(1) as f64);
        self.server_cpu += r.server_cpu.on_cpu;
        self.server_user += r.server_cpu.user;
        self.server_system += r.server_cpu.system;
        self.requests += r.requests;
        self.errors += r.errors;
        self.elapsed += r.elapsed;
        match &mut self.hist {
            Some(h) => h.add(&r.hist).unwrap(),
            None => self.hist = Some(r.hist),
        }
    }
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    /// Server CPU per request, µs.
    fn cpu_us(&self) -> f64 {
        self.server_cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
    /// Server user and kernel time per request, µs (tick-counted: coarse).
    fn user_system_us(&self) -> (f64, f64) {
        let n = self.requests.max(1) as f64;
        (self.server_user.as_secs_f64() * 1e6 / n, self.server_system.as_secs_f64() * 1e6 / n)
    }
    fn q_us(&self, q: f64) -> f64 {
        self.hist.as_ref().map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

struct Phase {
    name: &'static str,
    conns: usize,
    /// Per variant, in the order given; the first is the baseline.
    results: Vec<(Variant, Totals)>,
}

impl Phase {
    fn get(&self, i: usize) -> &Totals {
        &self.results[i].1
    }
}

async fn phase(name: &'static str, conns: usize, time: Duration, opts: &Opts, variants: &[Variant], keys: &Arc<Vec<HeaderValue>>) -> Phase {
    let mut p = Phase { name, conns, results: variants.iter().map(|v| (*v, Totals::default())).collect() };
    for v in variants {
        let w = run(v.addr, conns, opts.warm_up, opts.max_requests, keys.clone(), v.echo).await;
        assert_eq!(w.errors, 0, "{}: {} failed responses in the warm-up", v.name, w.errors);
    }
    for round in 0..opts.rounds {
        // Alternate the order so the drift of a shared machine hits every variant.
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if !round.is_multiple_of(2) {
            order.reverse();
        }
        for i in order {
            let v = variants[i];
            let r = run(v.addr, conns, time, opts.max_requests, keys.clone(), v.echo).await;
            eprintln!(
                "  {name} round {round} {:<22}: {:>9} requests in {:.2} s = {:>9.0} req/s",
                v.name,
                r.requests,
                r.elapsed.as_secs_f64(),
                r.requests as f64 / r.elapsed.as_secs_f64()
            );
            p.results[i].1.add(r);
        }
    }
    p
}

/// Paired latency: one connection per variant, all driven by one task that
/// sends one request to each variant in turn (the order flips every step), so
/// adjacent requests of two variants see the same moment of the machine. The
/// added latency of a variant is the median of its differences to the bare
/// request of the same step: on a shared host the separate-slice p50s drift by
/// more than the stack costs, the paired difference does not.
struct Paired {
    hists: Vec<Histogram<u64>>,
    /// Per variant, `latency - bare latency` of each step, ns.
    diffs: Vec<Vec<i64>>,
    steps: u64,
    errors: u64,
}

async fn paired(variants: &[Variant], time: Duration, max: u64, keys: &[HeaderValue]) -> Paired {
    let mut senders = Vec::with_capacity(variants.len());
    for v in variants {
        senders.push(connect(v.addr).await);
    }
    let rids = request_ids();
    let mut out = Paired { hists: variants.iter().map(|_| new_hist()).collect(), diffs: vec![Vec::new(); variants.len()], steps: 0, errors: 0 };
    let mut lat = vec![0u64; variants.len()];
    let deadline = Instant::now() + time;
    while out.steps < max && Instant::now() < deadline {
        let i = out.steps as usize;
        for k in 0..variants.len() {
            let j = if i.is_multiple_of(2) { k } else { variants.len() - 1 - k };
            let v = variants[j];
            let (ns, ok) = timed_hello(&mut senders[j], v.addr, &keys[i % keys.len()], &rids[i % rids.len()], v.echo).await;
            lat[j] = ns;
            if !ok {
                out.errors += 1;
            }
        }
        for (j, &l) in lat.iter().enumerate() {
            out.hists[j].saturating_record(l);
            out.diffs[j].push(l as i64 - lat[0] as i64);
        }
        out.steps += 1;
    }
    out
}

/// The paired phase: a warm-up, then `time` of steps.
async fn paired_phase(variants: &[Variant], opts: &Opts, keys: &[HeaderValue]) -> Paired {
    let w = paired(variants, opts.warm_up, opts.max_requests, keys).await;
    assert_eq!(w.errors, 0, "paired warm-up: {} failed responses", w.errors);
    let time = opts.latency_secs * opts.rounds as u32 * variants.len() as u32;
    paired(variants, time, opts.max_requests, keys).await
}

/// Median of paired differences, µs.
fn median_diff_us(d: &[i64]) -> f64 {
    quantile_diff_us(d, 0.5)
}

/// Quantile `q` of paired differences, µs.
fn quantile_diff_us(d: &[i64], q: f64) -> f64 {
    let mut v = d.to_vec();
    v.sort_unstable();
    match v.len() {
        0 => f64::NAN,
        n => v[((n - 1) as f64 * q).round() as usize] as f64 / 1_000.0,
    }
}

fn print_paired(p: &Paired, variants: &[Variant]) {
    println!();
    println!("paired latency, 1 connection per variant, {} steps (one request to each variant per step):", p.steps);
    println!("| variant | p50 µs | p99 µs | p99.9 µs | added p50 µs (median of paired differences) | differences p25 / p75 µs |");
    println!("|---|---|---|---|---|---|");
    for (j, v) in variants.iter().enumerate() {
        let q = |x: f64| p.hists[j].value_at_quantile(x) as f64 / 1_000.0;
        let d = &p.diffs[j];
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:+.2} | {:+.2} / {:+.2} |",
            v.name,
            q(0.5),
            q(0.99),
            q(0.999),
            median_diff_us(d),
            quantile_diff_us(d, 0.25),
            quantile_diff_us(d, 0.75)
        );
    }
}

fn print_table(phases: &[&Phase]) {
    println!();
    println!("| phase | variant | conns | requests | req/s | vs bare | server CPU µs/req | capacity vs bare | p50 µs | p99 µs | p99.9 µs | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for p in phases {
        let (base, base_cpu) = (p.get(0).rps(), p.get(0).cpu_us());
        for (v, t) in &p.results {
            println!(
                "| {} | {} | {} | {} | {:.0} | {:.3} | {:.2} | {:.3} | {:.1} | {:.1} | {:.1} | {} |",
                p.name,
                v.name,
                p.conns,
                t.requests,
                t.rps(),
                t.rps() / base,
                t.cpu_us(),
                base_cpu / t.cpu_us(),
                t.q_us(0.5),
                t.q_us(0.99),
                t.q_us(0.999),
                t.errors
            );
        }
    }
    println!();
    for p in phases {
        let bare = p.get(0);
        for (v, full) in p.results.iter().skip(1) {
            let ratio = full.rps() / bare.rps();
            let median = median_ratio(bare, full);
            let capacity = median_capacity(bare, full);
            let ((bare_user, bare_kernel), (full_user, full_kernel)) = (bare.user_system_us(), full.user_system_us());
            println!(
                "{} ({} conns), {}: server CPU per request bare {:.2} µs, stack {:.2} µs (+{:.2} µs; user {:.2} -> {:.2} µs, kernel {:.2} -> {:.2} µs): capacity ratio {:.3} of totals, median per-round {:.3} (loss {:.1} %); client-observed req/s ratio {:.3} of totals (loss {:.1} %), median per-round ratio {:.3} (loss {:.1} %); p50 {:+.1} µs, p99 {:+.1} µs, p99.9 {:+.1} µs; per-round req/s bare {:?} stack {:?}",
                p.name,
                p.conns,
                v.name,
                bare.cpu_us(),
                full.cpu_us(),
                full.cpu_us() - bare.cpu_us(),
                bare_user,
                full_user,
                bare_kernel,
                full_kernel,
                bare.cpu_us() / full.cpu_us(),
                capacity,
                (1.0 - capacity) * 100.0,
                ratio,
                (1.0 - ratio) * 100.0,
                median,
                (1.0 - median) * 100.0,
                full.q_us(0.5) - bare.q_us(0.5),
                full.q_us(0.99) - bare.q_us(0.99),
                full.q_us(0.999) - bare.q_us(0.999),
                bare.per_round.iter().map(|r| r.round()).collect::<Vec<_>>(),
                full.per_round.iter().map(|r| r.round()).collect::<Vec<_>>(),
            );
        }
    }
}

/// Median over rounds of `full / bare` requests/s (each round's pair ran back to back).
fn median_ratio(bare: &Totals, full: &Totals) -> f64 {
    median(bare.per_round.iter().zip(&full.per_round).map(|(b, f)| f / b).collect())
}

/// Median over rounds of bare / full server CPU per request: the share of a
/// saturated server's throughput the stack leaves.
fn median_capacity(bare: &Totals, full: &Totals) -> f64 {
    median(bare.cpu_per_round.iter().zip(&full.cpu_per_round).map(|(b, f)| b / f).collect())
}

fn median(mut r: Vec<f64>) -> f64 {
    r.sort_by(f64::total_cmp);
    match r.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => r[n / 2],
        n => (r[n / 2 - 1] + r[n / 2]) / 2.0,
    }
}

/// The targets, for each stack variant (every variant after the bare one):
/// throughput from the server CPU of the throughput phase, added p50 from the
/// paired phase.
fn print_targets(throughput: &Phase, paired: &Paired) {
    for (i, (v, _)) in throughput.results.iter().enumerate().skip(1) {
        let loss = (1.0 - median_capacity(throughput.get(0), throughput.get(i))) * 100.0;
        let added = median_diff_us(&paired.diffs[i]);
        println!(
            "targets, {}: throughput loss of a saturated server (median per-round server CPU ratio) {:.1} % (<= 3 %: {}); added p50 at 1 connection (median paired difference) {:+.2} µs (<= 1 µs: {})",
            v.name,
            loss,
            if loss <= 3.0 { "met" } else { "MISSED" },
            added,
            if added <= 1.0 { "met" } else { "MISSED" },
        );
    }
}

async fn main_async(opts: Opts) {
    let store = TableStore::with_table(routing_table()).unwrap();
    let local_keys = Arc::new(keys(&store, true, 256));
    let foreign_key = keys(&store, false, 1).remove(0);
    let stack = { let store = store.clone(); server().spawn(stack_app(store)).await.unwrap() };
    let bare = serve(bare_app()).await;
    let stacked = serve(stack.app.clone()).await;
    let wrapped = stack.wrapped;

    // The stack is really in the path: a foreign key is refused by the router,
    // the request id is echoed by cellctx, /healthz answers from the hub.
    let (status, _, _) = probe(stacked, "/hello", &foreign_key).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "a key homed elsewhere is refused by cellrouter");
    let (status, echo, body) = probe(stacked, "/hello", &local_keys[0]).await;
    assert_eq!((status, echo.as_ref().map(HeaderValue::as_bytes), body.as_ref()), (StatusCode::OK, Some(&b"probe-1"[..]), BODY));
    let (status, _, body) = probe(stacked, &format!("/healthz?cell={LOCAL}"), &local_keys[0]).await;
    assert_eq!((status, body.as_ref()), (StatusCode::OK, &b"ok"[..]), "healthz of the local cell");
    for (path, want) in [("/hello".to_owned(), BODY), (format!("/healthz?cell={LOCAL}"), &b"ok"[..])] {
        let (status, _, body) = probe(wrapped, &path, &local_keys[0]).await;
        assert_eq!((status, body.as_ref()), (StatusCode::OK, want), "{path} behind the wrapped stack");
    }
    let (status, _, _) = probe(wrapped, "/hello", &foreign_key).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "the wrapped stack refuses a key homed elsewhere");
    let (status, echo, body) = probe(bare, "/hello", &local_keys[0]).await;
    assert_eq!((status, echo, body.as_ref()), (StatusCode::OK, None, BODY));

    eprintln!(
        "stack_load: server on one thread, load generator on another (current-thread runtimes); HTTP/1.1 keep-alive on loopback; {} x {:?} per variant (+{:?} warm-up)",
        opts.rounds, opts.secs, opts.warm_up
    );
    let bare_v = Variant { name: "bare axum", addr: bare, echo: false };
    let full_v = Variant { name: "full SDK stack", addr: stacked, echo: true };
    let wrapped_v = Variant { name: "full SDK stack around the Router", addr: wrapped, echo: true };
    let variants = [bare_v, full_v, wrapped_v];
    if let Ok(only) = std::env::var("STACK_LOAD_ONLY") {
        // Profiling aid: one variant alone, one phase (e.g. under callgrind or perf).
        let v = match only.as_str() {
            "bare" => bare_v,
            "echo" => Variant { name: "tower-http echo layer", addr: serve(echo_app()).await, echo: true },
            "cellctx" => Variant { name: "cellctx", addr: serve(ctx_app()).await, echo: true },
            "router" => Variant { name: "cellctx + cellrouter", addr: serve(ctx_router_app(store)).await, echo: true },
            "full" => full_v,
            "wrapped" => wrapped_v,
            "floor" => Variant { name: FLOOR, addr: serve_service(floor(store)).await, echo: true },
            other => panic!("STACK_LOAD_ONLY={other}: expected bare, echo, cellctx, router, full, wrapped or floor"),
        };
        let p = phase("only", opts.conns, opts.secs, &opts, &[v], &local_keys).await;
        print_table(&[&p]);
        return;
    }
    let throughput = phase("throughput", opts.conns, opts.secs, &opts, &variants, &local_keys).await;
    let latency = phase("latency", 1, opts.latency_secs, &opts, &variants, &local_keys).await;
    let pairs = paired_phase(&variants, &opts, &local_keys).await;
    assert!(pairs.steps > 0, "paired: no steps completed");
    assert_eq!(pairs.errors, 0, "paired: {} failed responses", pairs.errors);
    let mut phases = vec![throughput, latency];
    let mut ablation_pairs = None;
    if opts.ablation {
        // Which layer costs what: each prefix of the stack, at load.
        let echo = Variant { name: "tower-http echo layer", addr: serve(echo_app()).await, echo: true };
        let ctx = Variant { name: "cellctx", addr: serve(ctx_app()).await, echo: true };
        let router = Variant { name: "cellctx + cellrouter", addr: serve(ctx_router_app(store.clone())).await, echo: true };
        let floor = Variant { name: FLOOR, addr: serve_service(floor(store)).await, echo: true };
        let variants = [bare_v, echo, ctx, router, full_v, wrapped_v, floor];
        phases.push(phase("ablation", std::env::var("STACK_LOAD_ABLATION_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(opts.conns), opts.secs, &opts, &variants, &local_keys).await);
        let pairs = paired_phase(&variants, &opts, &local_keys).await;
        assert_eq!(pairs.errors, 0, "paired ablation: {} failed responses", pairs.errors);
        ablation_pairs = Some((pairs, variants));
    }
    print_table(&phases.iter().collect::<Vec<_>>());
    print_paired(&pairs, &variants);
    if let Some((p, v)) = &ablation_pairs {
        print_paired(p, v);
    }
    print_targets(&phases[0], &pairs);

    for p in &phases {
        for (v, t) in &p.results {
            assert!(t.requests > 0, "{} {}: no requests completed", p.name, v.name);
            assert_eq!(t.errors, 0, "{} {}: {} failed responses", p.name, v.name, t.errors);
        }
    }
    let b = stack.breaker.registry().by_name("hello").expect("the breaker saw the calls");
    assert_eq!(b.state(), breaker::State::Closed, "the breaker stayed closed");
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let opts = Opts::from_env(bench);
    start_server_thread();
    // The load generator: this thread, a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(main_async(opts));
    rt.shutdown_timeout(Duration::from_secs(1));
}
