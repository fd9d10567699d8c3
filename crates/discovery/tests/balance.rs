//! Discovered instances behind real axum servers on loopback: tower's p2c
//! balancer over one cell, and the cell-aware client with failover.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use bytes::Bytes;
use cellctx::{CellContext, CellId};
use discovery::{CellClient, Instance, Registration, RegistrationConfig, Watcher, WatcherConfig};
use etcd_client::{Client, ConnectOptions};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::load::{CompleteOnResponse, Constant, PeakEwmaDiscover};
use tower::{BoxError, Service, ServiceExt};

const WAIT: Duration = Duration::from_secs(20);

type Req = http::Request<Full<Bytes>>;

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn cell(s: &str) -> CellId {
    s.parse().unwrap()
}

/// One axum server: answers `<label>|<x-cell-id>|<x-request-id>|<x-in-scope>`
/// and counts its requests.
struct Server {
    addr: String,
    hits: Arc<AtomicUsize>,
}

async fn server(label: &str) -> Server {
    let hits = Arc::new(AtomicUsize::new(0));
    let state = (label.to_string(), hits.clone());
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|State((label, hits)): State<(String, Arc<AtomicUsize>)>, headers: HeaderMap| async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
                format!("{label}|{}|{}|{}", h("x-cell-id"), h("x-request-id"), h("x-in-scope"))
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server { addr, hits }
}

/// The endpoint service for one instance: sends the request to its address and
/// tells the server whether `cellctx::current()` was set around the call.
fn endpoint(
    http: HttpClient<HttpConnector, Full<Bytes>>,
    inst: &Instance,
) -> impl Service<Req, Response = String, Error = BoxError, Future: Send> + Clone + Send + use<> {
    let addr = inst.address.clone();
    tower::service_fn(move |mut req: Req| {
        let http = http.clone();
        let uri = format!("http://{addr}{}", req.uri().path());
        async move {
            *req.uri_mut() = uri.parse()?;
            if let Some(ctx) = cellctx::current() {
                req.headers_mut().insert("x-in-scope", ctx.request_id.parse()?);
            }
            let resp = http.request(req).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>(String::from_utf8(body.to_vec())?)
        }
    })
}

fn get() -> Req {
    http::Request::get("/").body(Full::new(Bytes::new())).unwrap()
}

struct Fixture {
    _etcd: testkit::EtcdServer,
    client: Client,
    service: String,
    watcher: Watcher,
    http: HttpClient<HttpConnector, Full<Bytes>>,
    config: RegistrationConfig,
}

async fn fixture() -> Fixture {
    let etcd = testkit::EtcdServer::start();
    let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
    let client = Client::connect([etcd.endpoint()], Some(opts)).await.unwrap();
    let service = testkit::unique("api");
    let watcher = Watcher::start(
        client.clone(),
        &service,
        WatcherConfig::new().with_progress_interval(Duration::from_millis(300)),
    )
    .unwrap();
    watcher.synced(WAIT).await.unwrap();
    let config = RegistrationConfig::new().with_ttl(Duration::from_secs(3)).with_grace(Duration::from_secs(2));
    let http = HttpClient::builder(TokioExecutor::new()).build_http();
    Fixture { _etcd: etcd, client, service, watcher, http, config }
}

impl Fixture {
    async fn register(&self, c: &str, s: &Server) -> Registration {
        let inst = Instance::try_new(&self.service, cell(c), &s.addr).unwrap();
        Registration::register(self.client.clone(), inst, self.config.clone()).await.unwrap()
    }

    fn serving(&self, c: &str) -> usize {
        self.watcher.snapshot().serving(&cell(c)).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p2c_spreads_load_and_removed_instance_gets_nothing() {
    let f = fixture().await;
    let servers = [server("a1").await, server("a2").await, server("a3").await];
    let other_cell = server("b1").await;
    let mut regs = Vec::new();
    for s in &servers {
        regs.push(f.register("a", s).await);
    }
    let _b = f.register("b", &other_cell).await;
    wait_until("3 instances in cell a", || f.serving("a") == 3 && f.serving("b") == 1).await;

    let http = f.http.clone();
    let discover = f.watcher.discover(cell("a"), move |i: &Instance| Constant::new(endpoint(http.clone(), i), 0usize));
    let mut balance: Balance<_, Req> = Balance::new(discover);
    for _ in 0..300 {
        let body = balance.ready().await.unwrap().call(get()).await.unwrap();
        assert!(body.starts_with('a'), "{body}");
    }
    let hits: Vec<usize> = servers.iter().map(|s| s.hits.load(Ordering::SeqCst)).collect();
    assert_eq!(hits.iter().sum::<usize>(), 300);
    assert!(hits.iter().all(|&h| h >= 40), "load spreads over the cell: {hits:?}");
    assert_eq!(other_cell.hits.load(Ordering::SeqCst), 0, "no request leaves the cell");

    // a1 shuts down gracefully: once it is draining it gets no new request.
    let a1 = regs.remove(0);
    let a1_key = a1.key().to_string();
    let shutdown = tokio::spawn(a1.shutdown());
    wait_until("a1 draining", || f.serving("a") == 2).await;
    assert!(f.watcher.snapshot().get(&a1_key).is_some(), "still registered during the grace period");
    // the balancer applies the removal on its next poll_ready
    let before = servers[0].hits.load(Ordering::SeqCst);
    for _ in 0..150 {
        balance.ready().await.unwrap().call(get()).await.unwrap();
    }
    assert_eq!(servers[0].hits.load(Ordering::SeqCst), before, "a draining instance gets no new request");
    assert!(servers[1].hits.load(Ordering::SeqCst) + servers[2].hits.load(Ordering::SeqCst) == 450 - before);
    shutdown.await.unwrap().unwrap();
    wait_until("a1 removed", || f.watcher.snapshot().get(&a1_key).is_none()).await;

    // PeakEwma endpoints over the same discovery: the two left share the load.
    let http = f.http.clone();
    let discover = PeakEwmaDiscover::new(
        f.watcher.discover(cell("a"), move |i: &Instance| endpoint(http.clone(), i)),
        Duration::from_millis(1),
        Duration::from_secs(1),
        CompleteOnResponse::default(),
    );
    let mut ewma: Balance<_, Req> = Balance::new(discover);
    let before: Vec<usize> = servers.iter().map(|s| s.hits.load(Ordering::SeqCst)).collect();
    for _ in 0..60 {
        ewma.ready().await.unwrap().call(get()).await.unwrap();
    }
    let after: Vec<usize> = servers.iter().map(|s| s.hits.load(Ordering::SeqCst)).collect();
    assert_eq!(after[0], before[0], "the removed instance gets nothing");
    assert_eq!(after[1] + after[2] - before[1] - before[2], 60);
}

/// Calls `svc` inside a `cellctx` scope, as a handler behind the server layer does.
async fn in_scope<S>(ctx: &Arc<CellContext>, svc: &mut S, req: Req) -> Result<S::Response, S::Error>
where
    S: Service<Req>,
{
    cellctx::scope(ctx.clone(), async { svc.ready().await?.call(req).await }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cell_client_routes_by_cell_fails_over_and_propagates() {
    let f = fixture().await;
    let (a1, a2, b1) = (server("a1").await, server("a2").await, server("b1").await);
    let _ra1 = f.register("a", &a1).await;
    let _ra2 = f.register("a", &a2).await;
    let rb1 = f.register("b", &b1).await;
    wait_until("instances", || f.serving("a") == 2 && f.serving("b") == 1).await;

    let http = f.http.clone();
    let failover = |c: &CellId| match c.as_str() {
        "a" => vec![cell("b")],
        "b" => vec![cell("zz"), cell("a")],
        _ => vec![],
    };
    let mut client = CellClient::new(f.watcher.clone(), move |i: &Instance| endpoint(http.clone(), i)).with_failover(failover);

    // the cell from the request's extension; headers and scope propagated
    let ctx = Arc::new(CellContext::new().with_cell(cell("a")).with_request_id("req-1").unwrap());
    let mut seen = Vec::new();
    for _ in 0..10 {
        let mut req = get();
        req.extensions_mut().insert(ctx.clone());
        let body = client.ready().await.unwrap().call(req).await.unwrap();
        let (label, rest) = body.split_once('|').unwrap();
        assert_eq!(rest, "a|req-1|req-1", "{body}");
        seen.push(label.to_string());
    }
    assert!(seen.contains(&"a1".to_string()) && seen.contains(&"a2".to_string()), "{seen:?}");
    assert_eq!(b1.hits.load(Ordering::SeqCst), 0);

    // the cell from the task-local scope
    let ctx_b = Arc::new(CellContext::new().with_cell(cell("b")).with_request_id("req-2").unwrap());
    let body = in_scope(&ctx_b, &mut client, get()).await.unwrap();
    assert_eq!(body, "b1|b|req-2|req-2");

    // an existing header is left alone
    let mut req = get();
    req.headers_mut().insert("x-request-id", "from-caller".parse().unwrap());
    let body = in_scope(&ctx_b, &mut client, req).await.unwrap();
    assert_eq!(body, "b1|b|from-caller|req-2");

    // no cell at all, and a cell with no instance and no failover
    let err = client.ready().await.unwrap().call(get()).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<discovery::Error>(), Some(discovery::Error::NoCell)), "{err}");
    let ctx_zz = Arc::new(CellContext::new().with_cell(cell("zz")));
    let err = in_scope(&ctx_zz, &mut client, get()).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<discovery::Error>(), Some(discovery::Error::NoInstance { .. })), "{err}");

    // cell b's only instance drains: its requests fail over to cell a, still
    // carrying their own cell
    let shutdown = tokio::spawn(rb1.shutdown());
    wait_until("b1 draining", || f.serving("b") == 0).await;
    assert_eq!(client.route(&cell("b")).unwrap().cell, cell("a"));
    let b_hits = b1.hits.load(Ordering::SeqCst);
    for _ in 0..6 {
        let body = in_scope(&ctx_b, &mut client, get()).await.unwrap();
        assert!(body.starts_with("a1|b|req-2|") || body.starts_with("a2|b|req-2|"), "{body}");
    }
    assert_eq!(b1.hits.load(Ordering::SeqCst), b_hits);
    shutdown.await.unwrap().unwrap();
}
