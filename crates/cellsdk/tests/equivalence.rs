//! The fused layer and the separate layers (as the README mounts them:
//! `AnswerErrorsLayer` -> `CellContextLayer` -> `CellRouterLayer` ->
//! `CircuitBreakerLayer` -> the application) give the same answers to the same
//! requests: status, headers, body, and the context the application sees
//! (read from the task-local scope and from the extensions). The corpus:
//! served locally, refused (421), forwarded to another cell (a real HTTP
//! server on loopback), malformed and oversized context headers, unkeyed,
//! stale cell headers, application errors, and a breaker open (forced, and
//! opened by failures); plus a property test over combinations of headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use breaker::{BreakerConfig, CircuitBreakerLayer, SlidingWindowConfig, WindowConfig};
use bytes::Bytes;
use cellctx::{CellContext, CellContextLayer, CellId};
use cellrouter::{Cell, CellRouterLayer, MisroutePolicy, PlaintextPolicy, RoutingTable, TableStore, resolve};
use cellsdk::CellLayer;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt, service_fn};

const LOCAL: &str = "local-1";
const REMOTE: &str = "remote-1";

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

fn table(remote: SocketAddr) -> RoutingTable {
    let cells = vec![
        Cell::new(id(LOCAL), id("eu"), "http://127.0.0.1:9"),
        Cell::new(id(REMOTE), id("eu"), format!("http://{remote}")).with_private_link(true),
    ];
    RoutingTable::uniform(id("eu"), cells, 1024)
}

/// A key homed on `cell`.
fn key_of(store: &TableStore, cell: &str) -> String {
    let table = store.current().unwrap();
    (0..).map(|i| format!("user-{i}")).find(|k| resolve(&table, k).unwrap().target.as_str() == cell).unwrap()
}

/// The other cell: answers with the request's context headers, as it saw them.
async fn remote_cell() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = service_fn(|req: Request<Body>| async move {
        let mut seen = String::from("remote\n");
        let mut names: Vec<_> = req.headers().keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        for name in names {
            if name.starts_with("x-") || name == "traceparent" {
                let v = req.headers()[name.as_str()].to_str().unwrap_or("?");
                seen.push_str(&format!("{name}={}\n", normalize_id(&name, v)));
            }
        }
        Ok::<_, Infallible>(Response::new(Body::from(seen)))
    });
    tokio::spawn(async move { axum::serve(listener, tower::make::Shared::new(app)).await.unwrap() });
    addr
}

/// A generated request id (20 lowercase hex digits) differs from run to run:
/// compared by shape.
fn normalize_id(name: &str, v: &str) -> String {
    if name == "x-request-id" && v.len() == 20 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        "<generated>".into()
    } else {
        v.to_owned()
    }
}

/// The application: `/error` fails, `/fail` answers 500, anything else
/// answers 200 with the context it sees.
async fn app(req: Request<Body>) -> Result<Response<Body>, BoxError> {
    match req.uri().path() {
        "/error" => return Err(std::io::Error::other("the handler failed").into()),
        "/fail" => {
            let mut res = Response::new(Body::from("failed"));
            *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            return Ok(res);
        }
        _ => {}
    }
    let ext = req.extensions().get::<Arc<CellContext>>().cloned();
    let current = cellctx::current();
    let same = match (&ext, &current) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    };
    let describe = |c: Option<&Arc<CellContext>>| match c {
        None => "none".to_owned(),
        Some(c) => format!(
            "cell={:?} request_id={} tenant={:?} user={:?} key={:?} region={:?} traceparent={:?} xid={:?} downgraded={}",
            c.cell().map(CellId::as_str),
            normalize_id("x-request-id", c.request_id.as_str()),
            c.tenant.as_deref(),
            c.auth_user.as_deref(),
            c.routing_key.as_deref(),
            c.region_hint.as_ref().map(ToString::to_string),
            c.traceparent.as_deref(),
            c.xid.as_deref(),
            c.downgraded,
        ),
    };
    let header = |n: &str| req.headers().get(n).map(|v| normalize_id(n, v.to_str().unwrap_or("?")));
    let body = format!(
        "ext: {}\ncurrent: {}\nsame arc: {same}\nx-cell-id: {:?}\nx-request-id: {:?}\n",
        describe(ext.as_ref()),
        describe(current.as_ref()),
        header("x-cell-id"),
        header("x-request-id"),
    );
    let mut res = Response::new(Body::from(body));
    res.headers_mut().insert("x-app", http::HeaderValue::from_static("1"));
    Ok(res)
}

fn breaker_config() -> BreakerConfig {
    BreakerConfig::sliding(SlidingWindowConfig {
        window: WindowConfig::Count { size: 4 },
        minimum_calls: 4,
        failure_rate_threshold: Some(50.0),
        ..Default::default()
    })
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Internal,
    Edge,
}

impl Mode {
    fn ctx(self) -> CellContextLayer {
        match self {
            Mode::Internal => CellContextLayer::internal(),
            Mode::Edge => CellContextLayer::edge(),
        }
    }
}

type Svc = tower::util::BoxCloneService<Request<Body>, axum::response::Response, Infallible>;

/// Both mountings, each with its own breaker (same config).
struct Pair {
    separate: Svc,
    fused: Svc,
    separate_breaker: CircuitBreakerLayer,
    fused_breaker: CircuitBreakerLayer,
}

fn router(store: &TableStore, policy: MisroutePolicy) -> CellRouterLayer {
    CellRouterLayer::new(store.clone(), id(LOCAL)).with_policy(policy).with_plaintext(PlaintextPolicy::Always)
}

fn pair(store: &TableStore, policy: MisroutePolicy, mode: Mode) -> Pair {
    let separate_breaker = CircuitBreakerLayer::new("app", breaker_config()).unwrap();
    let fused_breaker = CircuitBreakerLayer::new("app", breaker_config()).unwrap();
    let separate = ServiceBuilder::new()
        .layer(breaker::AnswerErrorsLayer::new())
        .layer(mode.ctx())
        .layer(router(store, policy))
        .layer(separate_breaker.clone())
        .service(service_fn(app));
    let fused = CellLayer::new(mode.ctx(), router(store, policy), fused_breaker.clone()).layer(service_fn(app));
    Pair { separate: Svc::new(separate), fused: Svc::new(fused), separate_breaker, fused_breaker }
}

/// What a response is compared by: status, headers (sorted; the generated
/// request id by shape, hyper's `date` left out) and body.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

async fn answer(svc: &mut Svc, req: Request<Body>) -> Answer {
    let res = svc.ready().await.unwrap().call(req).await.unwrap();
    let status = res.status().as_u16();
    let mut headers: Vec<_> = res
        .headers()
        .iter()
        .filter(|(k, _)| *k != http::header::DATE)
        .map(|(k, v)| (k.as_str().to_owned(), normalize_id(k.as_str(), v.to_str().unwrap_or("?"))))
        .collect();
    headers.sort();
    let body: Bytes = res.into_body().collect().await.unwrap().to_bytes();
    Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// One request, as a list of headers (so both mountings get the same one).
#[derive(Clone, Debug)]
struct Req {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Req {
    fn new(path: &'static str, headers: &[(&'static str, &str)]) -> Self {
        Req { path, headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect() }
    }

    fn build(&self) -> Request<Body> {
        let mut b = Request::get(self.path);
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        b.body(Body::empty()).unwrap()
    }
}

/// Sends `req` through both and asserts the same answer; returns it.
async fn same(p: &mut Pair, req: &Req) -> Answer {
    let a = answer(&mut p.separate, req.build()).await;
    let b = answer(&mut p.fused, req.build()).await;
    assert_eq!(a, b, "separate layers vs fused layer differ on {req:?}");
    a
}

struct World {
    store: TableStore,
    local_key: String,
    remote_key: String,
}

async fn world() -> World {
    let remote = remote_cell().await;
    let store = TableStore::with_table(table(remote)).unwrap();
    let local_key = key_of(&store, LOCAL);
    let remote_key = key_of(&store, REMOTE);
    World { store, local_key, remote_key }
}

#[tokio::test]
async fn corpus_gets_the_same_answers() {
    let w = world().await;
    let (lk, rk) = (w.local_key.as_str(), w.remote_key.as_str());
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let long = "t".repeat(200);
    let corpus = [
        // served here
        Req::new("/hello", &[("x-user-id", lk)]),
        Req::new("/hello", &[("x-user-id", lk), ("x-request-id", "req-1")]),
        Req::new("/hello", &[("x-user-id", lk), ("x-request-id", "req-2"), ("x-tenant-id", "acme"), ("traceparent", tp)]),
        Req::new("/hello", &[("x-user-id", lk), ("x-cell-id", REMOTE), ("x-request-id", "stale-cell")]),
        Req::new("/hello", &[("x-user-id", lk), ("x-cell-id", LOCAL)]),
        Req::new("/hello", &[]),
        Req::new("/hello", &[("x-request-id", "unkeyed")]),
        // another cell's key
        Req::new("/hello", &[("x-user-id", rk), ("x-request-id", "req-3")]),
        Req::new("/hello", &[("x-user-id", rk)]),
        Req::new("/hello", &[("x-user-id", rk), ("x-cell-hops", "1"), ("x-request-id", "looped")]),
        // malformed and oversized
        Req::new("/hello", &[("x-user-id", "bad key")]),
        Req::new("/hello", &[("x-user-id", lk), ("x-cell-id", "Not_A_Cell")]),
        Req::new("/hello", &[("x-user-id", lk), ("x-request-id", "bad id")]),
        Req::new("/hello", &[("x-user-id", lk), ("x-tenant-id", long.as_str())]),
        Req::new("/hello", &[("x-user-id", lk), ("traceparent", "00-zz-01")]),
        Req::new("/hello", &[("x-user-id", lk), ("content-type", "application/grpc"), ("x-cell-id", "BAD")]),
        // the application's own failures
        Req::new("/fail", &[("x-user-id", lk), ("x-request-id", "req-4")]),
        Req::new("/error", &[("x-user-id", lk), ("x-request-id", "req-5")]),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for policy in [MisroutePolicy::Refuse, MisroutePolicy::Forward, MisroutePolicy::Redirect] {
        for mode in [Mode::Internal, Mode::Edge] {
            for req in &corpus {
                // A fresh pair per request: the failures do not add up to an open breaker here.
                let mut p = pair(&w.store, policy, mode);
                let a = same(&mut p, req).await;
                seen.insert(a.status);
            }
        }
    }
    // The corpus reaches every kind of answer.
    for status in [200, 307, 400, 421, 431, 500, 508] {
        assert!(seen.contains(&status), "no {status} in the corpus: {seen:?}");
    }
    // Forwarded: the other cell answered (its body names it) with the context headers.
    let mut p = pair(&w.store, MisroutePolicy::Forward, Mode::Internal);
    let a = same(&mut p, &Req::new("/hello", &[("x-user-id", rk), ("x-request-id", "fwd-1")])).await;
    assert_eq!(a.status, 200);
    assert!(a.body.starts_with("remote\n"), "{}", a.body);
    assert!(a.body.contains("x-cell-hops=1\n") && a.body.contains(&format!("x-cell-id={REMOTE}\n")), "{}", a.body);
    assert!(a.headers.contains(&("x-request-id".into(), "fwd-1".into())), "{:?}", a.headers);
    // Served here: the application saw the same context in the scope and the extensions.
    let a = same(&mut p, &Req::new("/hello", &[("x-user-id", lk), ("x-cell-id", REMOTE), ("x-request-id", "r")])).await;
    assert!(a.body.contains("same arc: true"), "{}", a.body);
    assert!(a.body.contains(&format!("cell=Some(\"{LOCAL}\")")), "{}", a.body);
    assert!(a.body.contains(&format!("x-cell-id: Some(\"{LOCAL}\")")), "the stale cell header is corrected: {}", a.body);
}

#[tokio::test]
async fn breaker_open_gets_the_same_answer() {
    let w = world().await;
    let lk = w.local_key.as_str();
    let mut p = pair(&w.store, MisroutePolicy::Refuse, Mode::Internal);
    let ok = Req::new("/hello", &[("x-user-id", lk), ("x-request-id", "ok")]);
    assert_eq!(same(&mut p, &ok).await.status, 200);
    // Opened by failures: 4 calls, half of them failed (count window of 4).
    for path in ["/fail", "/error", "/hello", "/hello"] {
        same(&mut p, &Req::new(path, &[("x-user-id", lk)])).await;
    }
    let a = same(&mut p, &ok).await;
    assert_eq!(a.status, 503, "{a:?}");
    assert!(a.headers.iter().any(|(k, _)| k == "retry-after"), "{a:?}");
    for layer in [&p.separate_breaker, &p.fused_breaker] {
        assert_eq!(layer.registry().by_name("app").unwrap().state(), breaker::State::Open);
    }
    // Another cell's key is still refused by the router, before the breaker.
    assert_eq!(same(&mut p, &Req::new("/hello", &[("x-user-id", w.remote_key.as_str())])).await.status, 421);

    // Forced open.
    let mut p = pair(&w.store, MisroutePolicy::Refuse, Mode::Internal);
    for layer in [&p.separate_breaker, &p.fused_breaker] {
        layer.registry().by_name("app").expect("made with the service").force_open();
    }
    let a = same(&mut p, &ok).await;
    assert_eq!(a.status, 503, "{a:?}");
}

/// Readiness errors are answered to the next call, as `AnswerErrorsLayer` answers them.
#[tokio::test]
async fn readiness_error_gets_the_same_answer() {
    let w = world().await;
    let failing = || {
        tower::service_fn(|_req: Request<Body>| async { Ok::<Response<Body>, BoxError>(Response::new(Body::empty())) })
            .map_err(|e: BoxError| e)
    };
    #[derive(Clone)]
    struct NotReady<S>(S);
    impl<S: Service<Request<Body>, Error = BoxError>> Service<Request<Body>> for NotReady<S> {
        type Response = S::Response;
        type Error = BoxError;
        type Future = S::Future;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
            std::task::Poll::Ready(Err("not ready".into()))
        }
        fn call(&mut self, req: Request<Body>) -> S::Future {
            self.0.call(req)
        }
    }
    let store = &w.store;
    let mut separate = Svc::new(
        ServiceBuilder::new()
            .layer(breaker::AnswerErrorsLayer::new())
            .layer(CellContextLayer::internal())
            .layer(router(store, MisroutePolicy::Refuse))
            .layer(CircuitBreakerLayer::new("app", breaker_config()).unwrap())
            .service(NotReady(failing())),
    );
    let mut fused = Svc::new(
        CellLayer::new(
            CellContextLayer::internal(),
            router(store, MisroutePolicy::Refuse),
            CircuitBreakerLayer::new("app", breaker_config()).unwrap(),
        )
        .layer(NotReady(failing())),
    );
    let req = Req::new("/hello", &[("x-user-id", w.local_key.as_str())]);
    let a = answer(&mut separate, req.build()).await;
    let b = answer(&mut fused, req.build()).await;
    assert_eq!(a, b);
    assert_eq!(a.status, 500);
}

fn header_value() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some(String::new())),
        "[a-z0-9-]{1,12}".prop_map(Some),
        "[ -~]{0,20}".prop_map(Some),
        Just(Some("x".repeat(129))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// Any mix of context headers gets the same answer from both mountings.
    #[test]
    fn any_headers_get_the_same_answer(
        key in prop_oneof![Just(0u8), Just(1), Just(2), Just(3)],
        request_id in header_value(),
        cell in prop_oneof![Just(None), Just(Some(LOCAL.to_owned())), Just(Some(REMOTE.to_owned())), header_value()],
        tenant in header_value(),
        hops in prop_oneof![Just(None), Just(Some("0".to_owned())), Just(Some("1".to_owned())), Just(Some("x".to_owned()))],
        traceparent in prop_oneof![Just(None), Just(Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned())), header_value()],
        path in prop_oneof![Just("/hello"), Just("/fail"), Just("/error")],
        policy in prop_oneof![Just(MisroutePolicy::Refuse), Just(MisroutePolicy::Forward), Just(MisroutePolicy::Redirect)],
        edge in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let w = world().await;
            let key = match key {
                0 => None,
                1 => Some(w.local_key.clone()),
                2 => Some(w.remote_key.clone()),
                _ => Some("bad key".to_owned()),
            };
            let mut headers = Vec::new();
            for (name, v) in [("x-user-id", key), ("x-request-id", request_id), ("x-cell-id", cell), ("x-tenant-id", tenant), ("x-cell-hops", hops), ("traceparent", traceparent)] {
                if let Some(v) = v.filter(|v| http::HeaderValue::from_str(v).is_ok()) {
                    headers.push((name, v));
                }
            }
            let req = Req { path, headers };
            let mut p = pair(&w.store, policy, if edge { Mode::Edge } else { Mode::Internal });
            same(&mut p, &req).await;
        });
    }
}
