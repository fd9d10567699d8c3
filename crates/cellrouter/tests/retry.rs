//! Retrying on the next cell (`cellrouter::retry`): real sockets that refuse,
//! reset or never answer, compliance-pinned keys, and the budget under a full
//! outage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cellctx::CellId;
use cellrouter::retry::{Attempts, CellAttemptError, FailoverPolicy, IDEMPOTENCY_KEY_HEADER, RetryBudget, RetryReason, classify, next_target};
use cellrouter::{Cell, CellState, Region, RoutingTable, SlotRange, TableStore};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::{BoxError, Service, ServiceExt};

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

/// Two cells of one region: `a` (failover `b`) owns every slot.
fn table(a: &str, b: &str) -> RoutingTable {
    let mut ca = Cell::new(id("a"), id("eu"), a).with_private_link(true);
    ca.failover = vec![id("b")];
    let cb = Cell::new(id("b"), id("eu"), b).with_private_link(true);
    let mut t = RoutingTable::uniform(id("eu"), vec![ca, cb], 64);
    t.slots = vec![SlotRange { region: id("eu"), start: 0, end: 63, cell: id("a") }];
    t
}

/// A cell that answers `served_by=<name>` and counts the requests it read.
async fn good_cell(name: &'static str) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = axum::Router::new().fallback(move || {
        h.fetch_add(1, Ordering::SeqCst);
        async move { format!("served_by={name}") }
    });
    tokio::spawn(async move { axum::serve(l, app).await });
    (format!("http://{addr}"), hits)
}

/// A port nobody listens on (connections refused).
async fn refused() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// A cell that reads the request, then resets the connection (SO_LINGER 0),
/// as a process killed mid-request does; counts the requests it read.
async fn resetting() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            h.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_zero_linger();
            drop(s);
        }
    });
    (format!("http://{addr}"), hits)
}

/// A cell that reads the request and never answers.
async fn silent() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"").await;
            held.push(s);
        }
    });
    format!("http://{addr}")
}

type Req = http::Request<Full<Bytes>>;

/// The gateway's forward: the cell from [`Attempts::target`], its endpoint,
/// the response's head within `first_byte`; failures name the cell.
fn forwarder(store: TableStore, first_byte: Duration) -> impl Service<Req, Response = String, Error = BoxError, Future: Send> + Clone {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    tower::service_fn(move |mut req: Req| {
        let (store, client) = (store.clone(), client.clone());
        async move {
            let table = store.current().unwrap();
            let attempts = req.extensions().get::<Attempts>().unwrap().clone();
            let cell = attempts.target(&table)?.clone();
            let base = &table.cell(&cell).unwrap().endpoints[0];
            *req.uri_mut() = format!("{base}/").parse().unwrap();
            let resp = match tokio::time::timeout(first_byte, client.request(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => return Err(CellAttemptError::new(cell, e).into()),
                Err(e) => return Err(CellAttemptError::new(cell, e).into()),
            };
            let body = resp.into_body().collect().await.map_err(|e| CellAttemptError::new(cell.clone(), e))?.to_bytes();
            Ok::<_, BoxError>(String::from_utf8_lossy(&body).into_owned())
        }
    })
}

fn request(method: http::Method, idempotency_key: Option<&str>) -> Req {
    let mut req = http::Request::builder().method(method).uri("http://gateway/").body(Full::new(Bytes::from_static(b"x"))).unwrap();
    if let Some(k) = idempotency_key {
        req.headers_mut().insert(IDEMPOTENCY_KEY_HEADER, k.parse().unwrap());
    }
    req.extensions_mut().insert(Attempts::new(id("eu"), "user-1"));
    req
}

fn budget() -> RetryBudget {
    RetryBudget::try_new(0.2, 10, Duration::from_secs(10)).unwrap()
}

#[tokio::test]
async fn a_refused_connection_is_retried_on_the_failover_cell_even_for_a_write() {
    let (b, b_hits) = good_cell("b").await;
    let store = TableStore::with_table(table(&refused().await, &b)).unwrap();
    let policy = FailoverPolicy::new(store.clone(), budget());
    let svc = tower::retry::Retry::new(policy.clone(), forwarder(store, Duration::from_secs(2)));
    // a POST without key: the request never left, so it is safe anywhere
    let body = svc.oneshot(request(http::Method::POST, None)).await.unwrap();
    assert_eq!(body, "served_by=b");
    assert_eq!(b_hits.load(Ordering::SeqCst), 1);
    assert_eq!(policy.budget().stats().retried, 1);
}

#[tokio::test]
async fn a_reset_connection_is_retried_for_reads_and_keyed_writes_only() {
    let (a, a_hits) = resetting().await;
    let (b, b_hits) = good_cell("b").await;
    let store = TableStore::with_table(table(&a, &b)).unwrap();
    let policy = FailoverPolicy::new(store.clone(), budget());
    let svc = tower::retry::Retry::new(policy.clone(), forwarder(store, Duration::from_secs(2)));

    let read = svc.clone().oneshot(request(http::Method::GET, None)).await.unwrap();
    assert_eq!(read, "served_by=b");
    let keyed = svc.clone().oneshot(request(http::Method::POST, Some("k-1"))).await.unwrap();
    assert_eq!(keyed, "served_by=b");
    // a write that may have landed and has no key: the error reaches the caller
    let err = svc.oneshot(request(http::Method::POST, None)).await.unwrap_err();
    let failed = err.downcast_ref::<CellAttemptError>().expect("the attempt's error");
    assert_eq!(failed.cell, id("a"));
    assert_eq!(classify(failed.source.as_ref()), Some(RetryReason::Reset));
    assert_eq!(a_hits.load(Ordering::SeqCst), 3);
    assert_eq!(b_hits.load(Ordering::SeqCst), 2);
    let stats = policy.budget().stats();
    assert_eq!((stats.retried, stats.not_idempotent), (2, 1));
}

#[tokio::test]
async fn a_response_that_never_starts_is_retried_after_the_first_byte_budget() {
    let (b, _) = good_cell("b").await;
    let store = TableStore::with_table(table(&silent().await, &b)).unwrap();
    let policy = FailoverPolicy::new(store.clone(), budget());
    let svc = tower::retry::Retry::new(policy.clone(), forwarder(store, Duration::from_millis(200)));
    let started = std::time::Instant::now();
    let body = svc.oneshot(request(http::Method::GET, None)).await.unwrap();
    assert_eq!(body, "served_by=b");
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn no_retry_when_the_table_names_no_other_cell() {
    let store = TableStore::with_table(table(&refused().await, &refused().await)).unwrap();
    let mut t = store.current().unwrap().table().clone();
    t.version += 1;
    t.cells[1].state = CellState::Down;
    store.store(t).unwrap();
    let policy = FailoverPolicy::new(store.clone(), budget());
    let svc = tower::retry::Retry::new(policy.clone(), forwarder(store, Duration::from_secs(1)));
    let err = svc.oneshot(request(http::Method::GET, None)).await.unwrap_err();
    assert_eq!(err.downcast_ref::<CellAttemptError>().unwrap().cell, id("a"));
    assert_eq!(policy.budget().stats().no_target, 1);
}

/// Two pinned regions (`cn-north` may use `cn-east` only) and a free one:
/// `cn-east-1` fails over to `us-1` (fine for its own unpinned keys),
/// but the pinned key skips `us-1` and, when `cn-east-1` is down, gets nothing.
#[test]
fn a_pinned_user_is_never_retried_outside_its_allowed_regions() {
    let mut regions = vec![Region::new(id("cn-north")), Region::new(id("cn-east")), Region::new(id("us"))];
    regions[0].compliance = vec!["pipl".into()];
    regions[0].allowed_regions = vec![id("cn-east")];
    let mut home = Cell::new(id("cn-north-1"), id("cn-north"), "http://10.0.0.1:1");
    home.failover = vec![id("cn-east-1")];
    let mut east = Cell::new(id("cn-east-1"), id("cn-east"), "http://10.0.0.2:1");
    east.failover = vec![id("us-1")];
    let us = Cell::new(id("us-1"), id("us"), "http://10.0.0.3:1");
    let slots = vec![
        SlotRange { region: id("cn-north"), start: 0, end: 63, cell: id("cn-north-1") },
        SlotRange { region: id("cn-east"), start: 0, end: 63, cell: id("cn-east-1") },
        SlotRange { region: id("us"), start: 0, end: 63, cell: id("us-1") },
    ];
    let t = RoutingTable {
        version: 1,
        slot_count: 64,
        default_region: id("us"),
        regions,
        cells: vec![home, east, us],
        slots,
        migrations: Vec::new(),
    };
    let store = TableStore::with_table(t.clone()).unwrap();
    let compiled = store.current().unwrap();
    // the home failed: next is the allowed failover
    assert_eq!(next_target(&compiled, &id("cn-north"), "u", &[id("cn-north-1")]).unwrap(), &id("cn-east-1"));
    // both allowed cells failed: nothing, although us-1 is up (and an
    // unpinned key of cn-east would go there)
    let err = next_target(&compiled, &id("cn-north"), "u", &[id("cn-north-1"), id("cn-east-1")]).unwrap_err();
    assert!(matches!(err, cellrouter::ResolveError::NoTarget { pinned: true, .. }), "{err:?}");
    assert_eq!(next_target(&compiled, &id("cn-east"), "u", &[id("cn-east-1")]).unwrap(), &id("us-1"));
    // and the policy makes no retry for it
    let mut policy = FailoverPolicy::new(store, budget()).with_max_retries(2);
    let mut req = http::Request::new(Full::new(Bytes::new()));
    req.extensions_mut().insert(Attempts { tried: vec![id("cn-north-1")], ..Attempts::new(id("cn-north"), "u") });
    let mut result: Result<(), BoxError> = Err(CellAttemptError::new(
        id("cn-east-1"),
        std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
    )
    .into());
    assert!(tower::retry::Policy::retry(&mut policy, &mut req, &mut result).is_none());
    assert_eq!(policy.budget().stats().no_target, 1);
}

/// Every cell refuses: of 1000 requests, the budget (20 %, no floor) lets
/// about 200 be retried, never more.
#[tokio::test(start_paused = true)]
async fn the_budget_caps_retries_under_a_full_outage() {
    let store = TableStore::with_table(table("http://127.0.0.1:1", "http://127.0.0.1:2")).unwrap();
    let budget = RetryBudget::try_new(0.2, 0, Duration::from_secs(10)).unwrap();
    let policy = FailoverPolicy::new(store.clone(), budget.clone());
    let sent: Arc<std::sync::Mutex<HashMap<CellId, usize>>> = Arc::default();
    let s = sent.clone();
    let inner = tower::service_fn(move |req: Req| {
        let (store, s) = (store.clone(), s.clone());
        async move {
            let cell = req.extensions().get::<Attempts>().unwrap().target(&store.current().unwrap())?.clone();
            *s.lock().unwrap().entry(cell.clone()).or_default() += 1;
            Err::<(), BoxError>(
                CellAttemptError::new(cell, std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).into(),
            )
        }
    });
    let mut svc = tower::retry::Retry::new(policy, inner);
    for _ in 0..1000 {
        let _ = svc.ready().await.unwrap().call(request(http::Method::GET, None)).await;
    }
    let stats = budget.stats();
    let sent = sent.lock().unwrap();
    assert_eq!(sent[&id("a")], 1000);
    assert_eq!(sent[&id("b")] as u64, stats.retried);
    assert!((190..=200).contains(&stats.retried), "{stats:?}");
    assert_eq!(stats.retried + stats.budget_refused, 1000);
}

#[test]
fn invalid_budgets_are_errors() {
    assert!(RetryBudget::try_new(0.2, 10, Duration::from_millis(500)).is_err());
    assert!(RetryBudget::try_new(-1.0, 10, Duration::from_secs(10)).is_err());
    assert!(RetryBudget::try_new(0.2, 10, Duration::from_secs(10)).is_ok());
}

/// A failover cell serves a retried request before the table has switched
/// (the home died a moment ago), when its routing layer allows it; a cell
/// that is not in the home's failover list still refuses.
#[tokio::test]
async fn the_failover_cell_serves_a_retry_before_the_table_switched() {
    use cellrouter::retry::RETRY_HEADER;
    use cellrouter::{CellRouterLayer, MisroutePolicy};
    let mut t = table("http://127.0.0.1:1", "http://127.0.0.1:2");
    t.cells.push(Cell::new(id("c"), id("eu"), "http://127.0.0.1:3"));
    let store = TableStore::with_table(t).unwrap();
    let send = |local: &str, allow: bool, retry: bool| {
        let layer = CellRouterLayer::new(store.clone(), id(local)).with_policy(MisroutePolicy::Refuse).with_failover_retries(allow);
        let svc = tower::ServiceBuilder::new().layer(layer).service_fn(|_req: http::Request<Full<Bytes>>| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"served"))))
        });
        let mut req = http::Request::builder().header("x-user-id", "user-1");
        if retry {
            req = req.header(RETRY_HEADER, "1");
        }
        svc.oneshot(req.body(Full::new(Bytes::new())).unwrap())
    };
    let status = |r: Result<http::Response<_>, _>| r.unwrap().status();
    assert_eq!(status(send("b", true, true).await), http::StatusCode::OK);
    assert_eq!(status(send("b", true, false).await), http::StatusCode::MISDIRECTED_REQUEST, "not a retry");
    assert_eq!(status(send("b", false, true).await), http::StatusCode::MISDIRECTED_REQUEST, "not allowed by the layer");
    assert_eq!(status(send("c", true, true).await), http::StatusCode::MISDIRECTED_REQUEST, "not a failover target of a");
}
