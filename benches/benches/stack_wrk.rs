//! stack_wrk: the SDK stack measured from outside, as a user would. `wrk` (its
//! own process: 1 thread, 32 connections, HTTP/1.1 keep-alive on loopback)
//! drives the same axum handler (`GET /hello` -> `hello`) served by one server
//! process per variant, each a 1-worker tokio runtime (`worker_threads(1)`):
//! - bare axum;
//! - peer: tower-http's request-id trio (`SetRequestIdLayer::x_request_id` with
//!   `MakeRequestUuid`, uuid v4 with `fast-rng`; `PropagateRequestIdLayer`;
//!   `PropagateHeaderLayer` echoing `X-User-ID`);
//! - the SDK's separate layers as the README mounts them (`AnswerErrorsLayer`,
//!   `CellContextLayer::internal`, `CellRouterLayer` served locally,
//!   `CircuitBreakerLayer`);
//! - the fused layer (`cellsdk::CellLayer`, same configuration);
//! - the floor of the stack's job, hand-written (`support/stack_floor.rs`).
//!
//! Every layered variant wraps the whole `Router` and is served with
//! `tower::make::Shared` (bare axum serves its `Router` itself). Each request
//! carries `X-User-ID` (a key homed on the served cell) and no request id, so
//! every variant but bare generates one. Before the rounds each server is
//! checked: 200 and `hello`, the request id echoed, and for the SDK variants
//! a key homed on another cell refused (421).
//!
//! Rounds are interleaved (every variant once per round, the order reversed
//! every other round) after a warm-up per variant. Per run: requests/s and the
//! latency percentiles as wrk reports them, and the server's CPU per request:
//! user + system time of the server process (`/proc/<pid>/stat`, clock ticks
//! of 10 ms) over the run, divided by the requests wrk completed. Reported:
//! per variant the medians over rounds, and against the trio (and bare) the
//! median of the per-round ratios. Any non-2xx answer or socket error fails
//! the run.
//!
//! `cargo bench -p cell-benches --bench stack_wrk`; environment:
//! `STACK_WRK_ROUNDS` (default 10), `STACK_WRK_SECS` (per run, default 5),
//! `STACK_WRK_WARMUP_SECS` (default 2), `STACK_WRK_CONNS` (default 32),
//! `STACK_WRK_ONLY=bare,trio,...` (a subset; the ratios need `trio`), `WRK`
//! (the wrk binary, default `wrk`). Without `--bench` (as `cargo test
//! --benches` runs it) one short round. Needs `wrk` (`apt-get install wrk`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/cells.rs"]
mod cells;
#[path = "support/proc_stat.rs"]
mod proc_stat;
#[path = "support/stack_floor.rs"]
mod stack_floor;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use breaker::{BreakerConfig, CircuitBreakerLayer};
use cells::{LOCAL, id, keys, routing_table};
use cellctx::CellContextLayer;
use cellrouter::{CellRouterLayer, MisroutePolicy, TableStore};
use http::HeaderName;
use tower::{Layer, ServiceBuilder};
use tower_http::propagate_header::PropagateHeaderLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

const VARIANTS: [&str; 5] = ["bare", "trio", "separate", "fused", "floor"];

fn describe(v: &str) -> &'static str {
    match v {
        "bare" => "bare axum",
        "trio" => "peer: tower-http trio (SetRequestId uuid v4 fast-rng + PropagateRequestId + PropagateHeader)",
        "separate" => "SDK separate layers (README mounting)",
        "fused" => "**SDK fused layer (`cellsdk::CellLayer`)**",
        "floor" => "floor of the stack's job (hand-written, unchecked)",
        _ => "?",
    }
}

// ---------------------------------------------------------------- server side

async fn hello() -> &'static str {
    "hello"
}

fn app() -> Router {
    Router::new().route("/hello", get(hello))
}

fn store() -> TableStore {
    TableStore::with_table(routing_table()).unwrap()
}

fn router_layer(store: TableStore) -> CellRouterLayer {
    CellRouterLayer::new(store, id(LOCAL)).with_policy(MisroutePolicy::Refuse)
}

fn breaker_layer() -> CircuitBreakerLayer {
    CircuitBreakerLayer::new("hello", BreakerConfig::default()).unwrap()
}

async fn serve_with<S>(listener: tokio::net::TcpListener, svc: S)
where
    S: tower::Service<axum::extract::Request, Response = axum::response::Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    axum::serve(listener, tower::make::Shared::new(svc)).await.unwrap()
}

/// Server mode (`STACK_WRK_SERVE=<variant>`): prints `port=<port>`, serves
/// until stdin closes.
fn serve(variant: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("port={}", listener.local_addr().unwrap().port());
        std::io::stdout().flush().unwrap();
        // Stop when the parent goes away (stdin closes).
        std::thread::spawn(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            std::process::exit(0);
        });
        let plain = app().with_state(());
        match variant {
            "bare" => axum::serve(listener, app()).await.unwrap(),
            "trio" => {
                let svc = ServiceBuilder::new()
                    .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                    .layer(PropagateRequestIdLayer::x_request_id())
                    .layer(PropagateHeaderLayer::new(HeaderName::from_static("x-user-id")))
                    .service(plain);
                serve_with(listener, svc).await
            }
            "separate" => {
                let svc = ServiceBuilder::new()
                    .layer(breaker::AnswerErrorsLayer::new())
                    .layer(CellContextLayer::internal())
                    .layer(router_layer(store()))
                    .layer(breaker_layer())
                    .service(plain);
                serve_with(listener, svc).await
            }
            "fused" => {
                let svc = cellsdk::CellLayer::new(CellContextLayer::internal(), router_layer(store()), breaker_layer()).layer(plain);
                serve_with(listener, svc).await
            }
            "floor" => serve_with(listener, stack_floor::Floor::new(plain, store(), id(LOCAL))).await,
            other => panic!("unknown variant {other}"),
        }
    });
}

// ---------------------------------------------------------------- driver side

struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(name: &'static str) -> Server {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .env("STACK_WRK_SERVE", name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().strip_prefix("port=").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{name}: no port in {line:?}"));
        Server { name, child, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    /// User + system CPU time of the server process so far.
    fn cpu(&self) -> Duration {
        let (user, system) = proc_stat::user_system(&format!("/proc/{}/stat", self.child.id()));
        user + system
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection: status, headers, body.
fn get_once(addr: SocketAddr, key: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /hello HTTP/1.1\r\nHost: {addr}\r\nX-User-ID: {key}\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// Each server does its job: `hello`, the request id echoed, other cells' keys refused.
fn check(server: &Server, local_key: &str, foreign_key: &str) {
    let (status, head, body) = get_once(server.addr, local_key);
    assert_eq!((status, body.as_str()), (200, "hello"), "{}: {head}", server.name);
    if server.name != "bare" {
        assert!(head.contains("\r\nx-request-id: "), "{}: the request id is echoed: {head}", server.name);
    }
    if matches!(server.name, "separate" | "fused" | "floor") {
        let (status, _, _) = get_once(server.addr, foreign_key);
        assert_eq!(status, 421, "{}: a key homed on another cell is refused", server.name);
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Run {
    requests: u64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
}

/// `12.34us`, `1.20ms`, `2.00s` -> µs.
fn wrk_time_us(s: &str) -> f64 {
    let (num, mult) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1_000.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1_000_000.0)
    } else {
        (s, f64::NAN)
    };
    num.parse::<f64>().map_or(f64::NAN, |n| n * mult)
}

fn wrk(server: &Server, secs: u64, conns: usize, key: &str) -> Run {
    let bin = std::env::var("WRK").unwrap_or_else(|_| "wrk".into());
    let before = server.cpu();
    let out = Command::new(&bin)
        .args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "--latency", "-H", &format!("X-User-ID: {key}")])
        .arg(format!("http://{}/hello", server.addr))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} ({e}): install wrk (`apt-get install wrk`) or set WRK"));
    let cpu = server.cpu().saturating_sub(before);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{bin} failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("Non-2xx"), "{}: non-2xx answers under load:\n{text}", server.name);
    assert!(!text.contains("Socket errors"), "{}: socket errors under load:\n{text}", server.name);
    let mut run = Run::default();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["50%", t] => run.p50_us = wrk_time_us(t),
            ["99%", t] => run.p99_us = wrk_time_us(t),
            ["Requests/sec:", r] => run.rps = r.parse().unwrap_or(f64::NAN),
            [n, "requests", "in", ..] => run.requests = n.parse().unwrap_or(0),
            _ => {}
        }
    }
    assert!(run.requests > 0, "{}: no requests completed:\n{text}", server.name);
    run.cpu_us = cpu.as_secs_f64() * 1e6 / run.requests as f64;
    run
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if let Ok(variant) = std::env::var("STACK_WRK_SERVE") {
        serve(&variant);
        return;
    }
    let bench = std::env::args().any(|a| a == "--bench");
    let rounds: usize = if bench { env("STACK_WRK_ROUNDS", 10usize).max(1) } else { 1 };
    // Whole seconds: wrk's `-d`.
    let secs: u64 = if bench { env("STACK_WRK_SECS", 5u64).max(1) } else { 1 };
    let warm_up: u64 = if bench { env("STACK_WRK_WARMUP_SECS", 2u64).max(1) } else { 1 };
    let conns: usize = env("STACK_WRK_CONNS", 32usize).max(1);
    let only = std::env::var("STACK_WRK_ONLY").ok();
    let names: Vec<&'static str> =
        VARIANTS.iter().copied().filter(|v| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == *v))).collect();

    let store = store();
    let local_key = keys(&store, true, 1).remove(0);
    let foreign_key = keys(&store, false, 1).remove(0);
    let (local_key, foreign_key) = (local_key.to_str().unwrap(), foreign_key.to_str().unwrap());
    let servers: Vec<Server> = names.iter().map(|n| Server::start(n)).collect();
    for s in &servers {
        check(s, local_key, foreign_key);
    }
    eprintln!(
        "stack_wrk: wrk -t1 -c{conns}, {rounds} interleaved rounds of {secs} s (+{warm_up} s warm-up per variant); servers: 1-worker tokio runtimes, one process each"
    );
    for s in &servers {
        wrk(s, warm_up, conns, local_key);
    }
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..servers.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let r = wrk(&servers[i], secs, conns, local_key);
            eprintln!(
                "  round {round} {:<8}: {:>8.0} req/s, server CPU {:.2} µs/req, p50 {:.0} µs, p99 {:.0} µs",
                servers[i].name, r.rps, r.cpu_us, r.p50_us, r.p99_us
            );
            runs[i].push(r);
        }
    }

    let idx = |n: &str| names.iter().position(|x| *x == n);
    let ratio = |i: usize, base: Option<usize>, f: fn(&Run) -> f64| {
        base.map_or(f64::NAN, |b| median(runs[i].iter().zip(&runs[b]).map(|(r, b)| f(r) / f(b)).collect()))
    };
    let (trio, bare) = (idx("trio"), idx("bare"));
    println!();
    println!(
        "| variant | req/s (median) | server CPU µs/req (median) | p50 µs | p99 µs | req/s vs trio (median of per-round ratios) | CPU/req vs trio | req/s vs bare |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, n) in names.iter().enumerate() {
        let m = |f: fn(&Run) -> f64| median(runs[i].iter().map(f).collect());
        println!(
            "| {} | {:.0} | {:.2} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} |",
            describe(n),
            m(|r| r.rps),
            m(|r| r.cpu_us),
            m(|r| r.p50_us),
            m(|r| r.p99_us),
            ratio(i, trio, |r| r.rps),
            ratio(i, trio, |r| r.cpu_us),
            ratio(i, bare, |r| r.rps),
        );
    }
    if let (Some(t), Some(f)) = (trio, idx("fused")) {
        let (rps, cpu) = (ratio(f, Some(t), |r| r.rps), ratio(f, Some(t), |r| r.cpu_us));
        println!();
        println!(
            "target, fused vs trio: req/s ratio {rps:.3} (>= 1.0: {}), CPU/request ratio {cpu:.3} (<= 1.0: {})",
            if rps >= 1.0 { "met" } else { "MISSED" },
            if cpu <= 1.0 { "met" } else { "MISSED" }
        );
    }
    if let (Some(t), Some(s)) = (trio, idx("separate")) {
        let rps = ratio(s, Some(t), |r| r.rps);
        println!("target, separate layers vs trio: req/s ratio {rps:.3} (>= 0.9: {})", if rps >= 0.9 { "met" } else { "MISSED" });
    }
    if let (Some(t), Some(f)) = (trio, idx("floor")) {
        println!(
            "floor vs trio: req/s ratio {:.3}, CPU/request ratio {:.3}",
            ratio(f, Some(t), |r| r.rps),
            ratio(f, Some(t), |r| r.cpu_us)
        );
    }
}
