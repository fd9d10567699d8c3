//! gateway_load: the SDK's edge forward path against a bare hyper reverse
//! proxy, in front of the same upstream, driven by a load client in its own
//! process.
//!
//! Four processes, all this binary in a role (`GATEWAY_LOAD_ROLE`):
//! - `upstream`: a hyper HTTP/1.1 server answering `hello` (current-thread runtime);
//! - `bare`: the peer, a bare hyper reverse proxy (current-thread runtime): the
//!   URI rewritten to the upstream, `Host` dropped, the request sent through
//!   hyper-util's pooled legacy client, the bodies streamed both ways;
//! - `ours`: the SDK's forward path (current-thread runtime):
//!   `cellrouter::CellRouterLayer` with the default forwarder
//!   (`cellrouter::default_forwarder`), every request's user (`X-User-ID`)
//!   homed on another cell whose endpoint is the upstream, so each one is
//!   forwarded (context headers and the hop counter written, hop-by-hop
//!   headers stripped); authentication aside;
//! - `client`: a closed-loop HTTP/1.1 load client (hyper, one thread, a fixed
//!   number of keep-alive connections, like `wrk -t1 -cN`), checking every
//!   response (200, body `hello`) and printing requests, errors and latency
//!   percentiles.
//!
//! The orchestrator (no role) starts the upstream and both proxies, then runs
//! `rounds` rounds; each round loads each proxy once for `secs` (the order
//! flips every round) with a fresh client process, and reads the proxy
//! process's CPU time (user + system, `/proc/<pid>/stat`) around it. Reported:
//! requests/s, p50 and p99 latency and proxy CPU per request per variant, and
//! the median of the per-round ratios ours / bare.
//!
//! `cargo bench -p cell-benches --bench gateway_load`; environment overrides:
//! `GATEWAY_LOAD_SECS` (per round and variant, default 3),
//! `GATEWAY_LOAD_ROUNDS` (default 10), `GATEWAY_LOAD_CONNS` (default 32),
//! `GATEWAY_LOAD_WARMUP_SECS` (per variant, default 2). Without `--bench` (as
//! `cargo test --benches` runs it) it does a short smoke run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "support/cells.rs"]
mod cells;

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cellrouter::{Cell, CellRouterLayer, PlaintextPolicy, RoutingTable, TableStore};
use cells::{LOCAL, id};
use hdrhistogram::Histogram;
use http::header::HOST;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::Layer;

const ROLE: &str = "GATEWAY_LOAD_ROLE";
const BODY: &[u8] = b"hello";
const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Binds, prints `addr <addr>` on stdout for the orchestrator, and serves
/// every connection with `serve`.
async fn listen<F, Fut>(serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("addr {}", listener.local_addr().unwrap());
    loop {
        let (stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        tokio::task::spawn_local(serve(stream));
    }
}

fn run_server<F, Fut>(serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let rt = current_thread();
    tokio::task::LocalSet::new().block_on(&rt, listen(serve));
}

fn upstream() {
    run_server(|stream| async move {
        let svc = service_fn(|_req: Request<Incoming>| async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(BODY)))) });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
    });
}

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http
}

/// The peer: a bare hyper reverse proxy.
fn bare(upstream: SocketAddr) {
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new()).build(connector());
    let authority = upstream.to_string();
    run_server(move |stream| {
        let (client, authority) = (client.clone(), authority.clone());
        async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                let uri = Uri::builder().scheme("http").authority(authority.as_str()).path_and_query(pq).build();
                async move {
                    *req.uri_mut() = uri.unwrap();
                    req.headers_mut().remove(HOST);
                    match client.request(req).await {
                        Ok(resp) => Ok(resp.map(|b| b.map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) }).boxed_unsync())),
                        Err(e) => Err(e),
                    }
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
        }
    });
}

/// The table of `ours`: every cell but the local one has the upstream as its endpoint.
fn table(upstream: SocketAddr) -> RoutingTable {
    let cells = ["beijing-1", "shanghai-1", "shenzhen-1"]
        .iter()
        .map(|c| Cell::new(id(c), id("cn"), format!("http://{upstream}")).with_private_link(true))
        .collect();
    RoutingTable::uniform(id("cn"), cells, 16384)
}

/// The SDK's forward path.
fn ours(upstream: SocketAddr) {
    let rt = current_thread();
    let _guard = rt.enter();
    let store = TableStore::with_table(table(upstream)).unwrap();
    let local = tower::service_fn(|_req: Request<Incoming>| async {
        let mut r = Response::new(Full::new(Bytes::from_static(b"served locally")));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        Ok::<_, Infallible>(r)
    });
    let svc = CellRouterLayer::new(store, id(LOCAL)).with_plaintext(PlaintextPolicy::Always).layer(local);
    drop(_guard);
    tokio::task::LocalSet::new().block_on(
        &rt,
        listen(move |stream| {
            let svc = TowerToHyperService::new(svc.clone());
            async move {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            }
        }),
    );
}

/// Users homed on another cell than the local one.
fn remote_keys(n: usize) -> Vec<String> {
    let store = TableStore::with_table(cells::routing_table()).unwrap();
    cells::keys(&store, false, n).into_iter().map(|v| v.to_str().unwrap().to_string()).collect()
}

/// The load client: prints `result <requests> <errors> <p50 µs> <p99 µs> <secs>`.
fn client() {
    let target: SocketAddr = std::env::var("GATEWAY_LOAD_TARGET").unwrap().parse().unwrap();
    let conns: usize = env("GATEWAY_LOAD_CONNS", 32);
    let secs: f64 = env("GATEWAY_LOAD_CLIENT_SECS", 3.0);
    let keys: Vec<HeaderValue> = remote_keys(256).iter().map(|k| HeaderValue::from_str(k).unwrap()).collect();
    let rt = current_thread();
    let local = tokio::task::LocalSet::new();
    let (n, errors, hist, elapsed) = local.block_on(&rt, async move {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..conns {
            let keys = keys.clone();
            tasks.push(tokio::task::spawn_local(async move {
                let stream = TcpStream::connect(target).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
                tokio::task::spawn_local(async move {
                    let _ = conn.await;
                });
                let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                let (mut n, mut errors) = (0u64, 0u64);
                let mut i = c;
                while Instant::now() < deadline {
                    let mut req = Request::get("/hello").body(Empty::<Bytes>::new()).unwrap();
                    req.headers_mut().insert(HOST, HeaderValue::from_static("gateway"));
                    req.headers_mut().insert(X_USER_ID, keys[i % keys.len()].clone());
                    i += 1;
                    let t = Instant::now();
                    let ok = match sender.send_request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                            status == StatusCode::OK && body.is_ok_and(|b| b.as_ref() == BODY)
                        }
                        Err(_) => false,
                    };
                    hist.record(t.elapsed().as_micros().max(1) as u64).unwrap();
                    n += 1;
                    if !ok {
                        errors += 1;
                    }
                    if sender.ready().await.is_err() {
                        break;
                    }
                }
                (n, errors, hist)
            }));
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let (mut n, mut errors) = (0, 0);
        for t in tasks {
            let (a, b, h) = t.await.unwrap();
            n += a;
            errors += b;
            hist.add(h).unwrap();
        }
        (n, errors, hist, started.elapsed())
    });
    println!("result {n} {errors} {} {} {}", hist.value_at_quantile(0.5), hist.value_at_quantile(0.99), elapsed.as_secs_f64());
}

/// A child process of this binary in `role`; returns it and the address it printed.
fn spawn(role: &str, upstream: Option<SocketAddr>) -> (Child, SocketAddr) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, role).stdout(Stdio::piped()).stderr(Stdio::inherit());
    if let Some(u) = upstream {
        cmd.env("GATEWAY_LOAD_UPSTREAM", u.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("addr ").unwrap_or_else(|| panic!("{role}: no address: {line:?}")).parse().unwrap();
    (child, addr)
}

/// User + system CPU time of process `pid`.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux
    Duration::from_millis(ticks * 10)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us: f64,
}

/// One load of `target` for `secs` by a fresh client process, with the CPU of `pid` around it.
fn load(target: SocketAddr, pid: u32, conns: usize, secs: f64) -> Sample {
    let cpu0 = cpu_of(pid);
    let out = Command::new(std::env::current_exe().unwrap())
        .env(ROLE, "client")
        .env("GATEWAY_LOAD_TARGET", target.to_string())
        .env("GATEWAY_LOAD_CONNS", conns.to_string())
        .env("GATEWAY_LOAD_CLIENT_SECS", secs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let cpu = cpu_of(pid) - cpu0;
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find_map(|l| l.strip_prefix("result ")).unwrap_or_else(|| panic!("client said {text:?}"));
    let f: Vec<f64> = line.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let (n, errors) = (f[0], f[1]);
    assert!(n > 0.0 && errors == 0.0, "{errors} failed responses of {n} from {target}");
    Sample { rps: n / f[4], p50_us: f[2], p99_us: f[3], cpu_us: cpu.as_secs_f64() * 1e6 / n }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

fn orchestrate(bench: bool) {
    let (secs, rounds, conns, warm_up) = if bench {
        (env("GATEWAY_LOAD_SECS", 3.0), env("GATEWAY_LOAD_ROUNDS", 10usize).max(1), env("GATEWAY_LOAD_CONNS", 32usize), env("GATEWAY_LOAD_WARMUP_SECS", 2.0))
    } else {
        (0.3, 1, 4, 0.2)
    };
    let (mut up, up_addr) = spawn("upstream", None);
    let (mut bare, bare_addr) = spawn("bare", Some(up_addr));
    let (mut ours, ours_addr) = spawn("ours", Some(up_addr));
    let variants = [("bare hyper proxy", bare_addr, bare.id()), ("cellrouter forward", ours_addr, ours.id())];
    println!("gateway_load: {rounds} rounds of {secs} s per variant, {conns} connections, upstream {up_addr}");
    for (_, addr, pid) in variants {
        load(addr, pid, conns, warm_up);
    }
    let mut samples: Vec<[Sample; 2]> = Vec::new();
    for r in 0..rounds {
        let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut s = [Sample { rps: 0.0, p50_us: 0.0, p99_us: 0.0, cpu_us: 0.0 }; 2];
        for i in order {
            let (_, addr, pid) = variants[i];
            s[i] = load(addr, pid, conns, secs);
        }
        println!(
            "round {r:>2}: bare {:>7.0} req/s p50 {:>5.0} µs p99 {:>6.0} µs cpu {:>5.1} µs/req | ours {:>7.0} req/s p50 {:>5.0} µs p99 {:>6.0} µs cpu {:>5.1} µs/req",
            s[0].rps, s[0].p50_us, s[0].p99_us, s[0].cpu_us, s[1].rps, s[1].p50_us, s[1].p99_us, s[1].cpu_us
        );
        samples.push(s);
    }
    let med = |f: fn(&Sample) -> f64, i: usize| median(samples.iter().map(|s| f(&s[i])).collect());
    let ratio = |f: fn(&Sample) -> f64| median(samples.iter().map(|s| f(&s[1]) / f(&s[0])).collect());
    println!("\n| variant | req/s | p50 µs | p99 µs | proxy CPU µs/req |");
    println!("|---|---|---|---|---|");
    for (i, (name, _, _)) in variants.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.0} | {:.0} | {:.1} |",
            med(|s| s.rps, i),
            med(|s| s.p50_us, i),
            med(|s| s.p99_us, i),
            med(|s| s.cpu_us, i)
        );
    }
    println!(
        "| median per-round ratio ours / bare | {:.3} | {:.3} | {:.3} | {:.3} |",
        ratio(|s| s.rps),
        ratio(|s| s.p50_us),
        ratio(|s| s.p99_us),
        ratio(|s| s.cpu_us)
    );
    println!("targets: req/s ratio >= 0.9, p99 ratio <= 1.2");
    for c in [&mut ours, &mut bare, &mut up] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn main() {
    let upstream_addr = || -> SocketAddr { std::env::var("GATEWAY_LOAD_UPSTREAM").unwrap().parse().unwrap() };
    match std::env::var(ROLE).as_deref() {
        Ok("upstream") => upstream(),
        Ok("bare") => bare(upstream_addr()),
        Ok("ours") => ours(upstream_addr()),
        Ok("client") => client(),
        _ => orchestrate(std::env::args().any(|a| a == "--bench")),
    }
}
