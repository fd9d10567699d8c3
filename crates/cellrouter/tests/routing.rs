//! The routing layer with three axum cells on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::any;
use bytes::Bytes;
use cellctx::{CellContextLayer, CellId};
use cellrouter::{
    Cell, CellRouterLayer, CellState, KeyExtractor, MisroutePolicy, Region, RoutingTable, SlotRange, TableStore, resolve_in,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

#[derive(Clone)]
struct CellState2 {
    name: &'static str,
    hits: Arc<AtomicUsize>,
}

async fn echo(State(st): State<CellState2>, ext: axum::Extension<Arc<cellctx::CellContext>>, headers: HeaderMap) -> String {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let ctx = cellctx::current().expect("context in scope");
    // The router records its choice in the context the cellctx layer shared: one context, no copy.
    assert!(Arc::ptr_eq(&ctx, &ext.0), "the scope and the extension hold the same context");
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("-").to_string();
    format!(
        "served_by={}\nctx_cell={}\nkey={}\ntenant={}\nrequest_id={}\nhops={}\nx_cell_id={}\n",
        st.name,
        ctx.cell().map(|c| c.as_str()).unwrap_or("-"),
        ctx.routing_key.as_deref().unwrap_or("-"),
        ctx.tenant.as_deref().unwrap_or("-"),
        ctx.request_id,
        h("x-cell-hops"),
        h("x-cell-id"),
    )
}

struct Cluster {
    addrs: HashMap<&'static str, SocketAddr>,
    listeners: HashMap<&'static str, tokio::net::TcpListener>,
}

impl Cluster {
    async fn bind(names: &[&'static str]) -> Self {
        let mut addrs = HashMap::new();
        let mut listeners = HashMap::new();
        for n in names {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.insert(*n, l.local_addr().unwrap());
            listeners.insert(*n, l);
        }
        Cluster { addrs, listeners }
    }

    fn url(&self, n: &str) -> String {
        format!("http://{}", self.addrs[n])
    }

    /// Starts cell `name` with its own store and policy; returns its hit counter.
    fn serve(&mut self, name: &'static str, layer: CellRouterLayer) -> Arc<AtomicUsize> {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route("/{*path}", any(echo))
            .with_state(CellState2 { name, hits: hits.clone() })
            .layer(layer)
            .layer(CellContextLayer::internal());
        let l = self.listeners.remove(name).unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        hits
    }
}

/// A cell on loopback: a private link (plain HTTP allowed).
fn local_cell(name: &str, region: &str, url: String) -> Cell {
    Cell::new(id(name), id(region), url).with_private_link(true)
}

/// Region `eu` (unpinned): cells a, b, c; b fails over to c. Region `gdpr`
/// (pinned, datacenter 1): cell g, failover to nothing; also served by nobody else.
fn table(cl: &Cluster) -> RoutingTable {
    let mut a = local_cell("a", "eu", cl.url("a"));
    a.failover = vec![id("b")];
    let mut b = local_cell("b", "eu", cl.url("b"));
    b.failover = vec![id("c")];
    let c = local_cell("c", "eu", cl.url("c"));
    let g = local_cell("g", "gdpr", cl.url("g"));
    let mut eu = Region::new(id("eu"));
    eu.datacenter = Some(0);
    let mut gdpr = Region::new(id("gdpr"));
    gdpr.compliance = vec!["gdpr".into()];
    gdpr.datacenter = Some(1);
    let sr = |r: &str, s, e, c: &str| SlotRange { region: id(r), start: s, end: e, cell: id(c) };
    RoutingTable {
        version: 1,
        slot_count: 16384,
        default_region: id("eu"),
        regions: vec![eu, gdpr],
        cells: vec![a, b, c, g],
        slots: vec![
            sr("eu", 0, 5460, "a"),
            sr("eu", 5461, 10922, "b"),
            sr("eu", 10923, 16383, "c"),
            sr("gdpr", 0, 16383, "g"),
        ],
        migrations: vec![],
    }
}

fn key_for(t: &RoutingTable, home: &str) -> String {
    let c = t.clone().compile().unwrap();
    (0..100_000)
        .map(|i| format!("user-{i}"))
        .find(|k| resolve_in(&c, &id("eu"), k).unwrap().home.as_str() == home)
        .unwrap()
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: HashMap<String, String>,
    raw: String,
}

async fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = Request::builder().uri(format!("{url}/orders/1"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client.request(req.body(Empty::new()).unwrap()).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let raw = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    let body = raw.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Resp { status, headers, body, raw }
}

#[tokio::test]
async fn local_forward_refuse_redirect_loop_failover_and_compliance() {
    let mut cl = Cluster::bind(&["a", "b", "c", "g", "a-refuse", "a-redirect", "b-stale"]).await;
    let t = table(&cl);
    let store = TableStore::with_table(t.clone()).unwrap();
    let layout = idgen::Layout::seed();
    let layer = |s: &TableStore, cell: &str| CellRouterLayer::new(s.clone(), id(cell)).with_id_layout(layout);
    let hits_a = cl.serve("a", layer(&store, "a"));
    let hits_b = cl.serve("b", layer(&store, "b"));
    let hits_c = cl.serve("c", layer(&store, "c"));
    let hits_g = cl.serve("g", layer(&store, "g"));
    cl.serve("a-refuse", layer(&store, "a").with_policy(MisroutePolicy::Refuse));
    cl.serve("a-redirect", layer(&store, "a").with_policy(MisroutePolicy::Redirect));

    // 1. Local serve: a's key at a.
    let ka = key_for(&t, "a");
    let r = get(&cl.url("a"), &[("x-user-id", &ka)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["served_by"], "a");
    assert_eq!(r.body["ctx_cell"], "a");
    assert_eq!(r.body["x_cell_id"], "-");
    assert_eq!(r.body["hops"], "-");
    // A stale X-Cell-ID from the client is corrected to the serving cell.
    let r = get(&cl.url("a"), &[("x-user-id", &ka), ("x-cell-id", "zz")]).await;
    assert_eq!((r.body["x_cell_id"].as_str(), r.body["ctx_cell"].as_str()), ("a", "a"));
    assert_eq!(hits_a.load(Ordering::SeqCst), 2);

    // 2. Forward once, context intact: b's key at a.
    let kb = key_for(&t, "b");
    let r = get(&cl.url("a"), &[("x-user-id", &kb), ("x-tenant-id", "acme"), ("x-request-id", "req-123")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["served_by"], "b");
    assert_eq!(r.body["ctx_cell"], "b");
    assert_eq!(r.body["key"], kb);
    assert_eq!(r.body["tenant"], "acme");
    assert_eq!(r.body["request_id"], "req-123");
    assert_eq!(r.body["hops"], "1");
    assert_eq!(r.body["x_cell_id"], "b");
    assert_eq!((hits_a.load(Ordering::SeqCst), hits_b.load(Ordering::SeqCst)), (2, 1));

    // Key from a path segment instead of the context.
    let path_layer = CellRouterLayer::new(store.clone(), id("a")).with_key(KeyExtractor::path_segment(1));
    assert!(format!("{path_layer:?}").contains("PathSegment"));

    // 3. 421 naming the home cell; nothing served.
    let r = get(&cl.url("a-refuse"), &[("x-user-id", &kb)]).await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(r.headers["x-cell-home"], "b");
    assert!(r.raw.contains("cell b"), "{}", r.raw);
    // 307 with the home cell's gateway and the table version.
    let r = get(&cl.url("a-redirect"), &[("x-user-id", &kb)]).await;
    assert_eq!(r.status, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(r.headers["location"], format!("{}/orders/1", cl.url("b")).as_str());
    assert_eq!(r.headers["x-cell-table-version"], "1");
    assert_eq!(hits_b.load(Ordering::SeqCst), 1);

    // 4. Loop: b-stale believes b's slots moved to a (newer table of its own);
    // a request forwarded to it is answered 508, never bounced back.
    let mut disagree = t.clone();
    disagree.version = 9;
    for s in disagree.slots.iter_mut().filter(|s| s.cell.as_str() == "b") {
        s.cell = id("a");
    }
    let stale_store = TableStore::with_table(disagree).unwrap();
    cl.serve("b-stale", CellRouterLayer::new(stale_store, id("b")));
    let r = get(&cl.url("b-stale"), &[("x-user-id", &kb), ("x-cell-hops", "1")]).await;
    assert_eq!(r.status, StatusCode::LOOP_DETECTED, "{}", r.raw);
    assert_eq!(hits_a.load(Ordering::SeqCst), 2);

    // 5. Failover: b down (new table) -> its keys go to c, from anywhere.
    let mut down = t.clone();
    down.version = 2;
    down.cell_mut(&id("b")).unwrap().state = CellState::Down;
    store.store(down).unwrap();
    let r = get(&cl.url("a"), &[("x-user-id", &kb)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["served_by"], "c");
    assert_eq!(r.body["ctx_cell"], "c");
    let r = get(&cl.url("b"), &[("x-user-id", &kb)]).await;
    assert_eq!(r.body["served_by"], "c");
    assert_eq!(hits_b.load(Ordering::SeqCst), 1);
    // Health overlay: a reported failed -> a's keys fail over to b (down) then... a's list is [b]: 503.
    store.set_cell_failed(&id("a"), true);
    let r = get(&cl.url("c"), &[("x-user-id", &ka)]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.raw);
    assert_eq!(r.headers["x-cell-home"], "a");
    store.set_cell_failed(&id("a"), false);
    assert_eq!(get(&cl.url("c"), &[("x-user-id", &ka)]).await.body["served_by"], "a");

    // 6. Compliance: an id homed in the pinned region (datacenter 1) is forwarded
    // to g from an eu cell, and refused (503) rather than leaked when g is down.
    let gid = layout
        .encode(&idgen::IdParts { timestamp_ms: 1_700_000_000_000, datacenter: 1, logical: 0, worker: 7, sequence: 1 })
        .unwrap()
        .to_string();
    let r = get(&cl.url("c"), &[("x-user-id", &gid)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["served_by"], "g");
    let before = (hits_a.load(Ordering::SeqCst), hits_b.load(Ordering::SeqCst), hits_c.load(Ordering::SeqCst));
    let mut g_down = store.current().unwrap().table().clone();
    g_down.version = 3;
    g_down.cell_mut(&id("g")).unwrap().state = CellState::Down;
    store.store(g_down).unwrap();
    for cell in ["a", "c", "g"] {
        let r = get(&cl.url(cell), &[("x-user-id", &gid)]).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.raw);
        assert!(r.raw.contains("pinned: true"), "{}", r.raw);
    }
    let after = (hits_a.load(Ordering::SeqCst), hits_b.load(Ordering::SeqCst), hits_c.load(Ordering::SeqCst));
    assert_eq!(before, after, "a pinned user was served outside its region");
    assert_eq!(hits_g.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn migrating_slot_is_forwarded_then_moved() {
    let mut cl = Cluster::bind(&["a", "b", "c", "g"]).await;
    let t = table(&cl);
    let store = TableStore::with_table(t.clone()).unwrap();
    for n in ["a", "b", "c", "g"] {
        cl.serve(n, CellRouterLayer::new(store.clone(), id(n)).with_policy(MisroutePolicy::Refuse));
    }
    let ka = key_for(&t, "a");
    let slot = cellrouter::slot_of(&ka, 16384);
    // ASK: a's slot migrating to b -> a forwards to b even under the Refuse policy.
    let mut mig = t.clone();
    mig.version = 2;
    mig.migrations.push(cellrouter::Migration::new(id("eu"), slot, slot, id("a"), id("b")));
    store.store(mig).unwrap();
    let r = get(&cl.url("a"), &[("x-user-id", &ka)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
    assert_eq!(r.body["served_by"], "b");
    // MOVED: the move is done, b owns the slot; a now gives the permanent answer.
    let mut moved = t.clone();
    moved.version = 3;
    moved.slots = vec![];
    for (s, e, c) in [(0, slot.saturating_sub(1), "a"), (slot, slot, "b"), (slot + 1, 5460, "a")] {
        if s <= e && !(s == 0 && slot == 0 && c == "a") {
            moved.slots.push(SlotRange { region: id("eu"), start: s, end: e, cell: id(c) });
        }
    }
    moved.slots.extend(t.slots.iter().filter(|s| s.cell.as_str() != "a").cloned());
    store.store(moved).unwrap();
    let r = get(&cl.url("a"), &[("x-user-id", &ka)]).await;
    assert_eq!(r.status, StatusCode::MISDIRECTED_REQUEST, "{}", r.raw);
    assert_eq!(r.headers["x-cell-home"], "b");
    assert_eq!(r.headers["x-cell-table-version"], "3");
}

#[tokio::test]
async fn no_table_and_unkeyed_requests() {
    let mut cl = Cluster::bind(&["a", "b", "c", "g"]).await;
    let store = TableStore::new();
    let hits = cl.serve("a", CellRouterLayer::new(store.clone(), id("a")));
    let r = get(&cl.url("a"), &[("x-user-id", "u1")]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    store.store(table(&cl)).unwrap();
    // unkeyed: served where it lands
    let r = get(&cl.url("a"), &[]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["served_by"], "a");
}

/// A server whose handler never answers in time; counts its hits.
async fn slow_server() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/{*path}",
        any(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                "late"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, hits)
}

#[tokio::test]
async fn weighted_endpoints_unkeyed_traffic_and_forward_timeout() {
    let mut cl = Cluster::bind(&["a", "b1", "b2", "a-unkeyed"]).await;
    let (slow_url, slow_hits) = slow_server().await;
    // eu: a; b with two endpoints (b1, b2); s (draining) answers too late.
    let a = local_cell("a", "eu", cl.url("a"));
    let mut b = local_cell("b", "eu", cl.url("b1"));
    b.endpoints.push(cl.url("b2"));
    let mut s = local_cell("s", "eu", slow_url.clone());
    s.state = CellState::Draining;
    let t = RoutingTable::uniform(id("eu"), vec![a, b, s], 16384);
    let store = TableStore::with_table(t.clone()).unwrap();
    let compiled = t.clone().compile().unwrap();
    let keys_of = |home: &str| -> Vec<String> {
        (0..100_000).map(|i| format!("user-{i}")).filter(|k| resolve_in(&compiled, &id("eu"), k).unwrap().home.as_str() == home).take(20).collect()
    };
    let layer_a = CellRouterLayer::new(store.clone(), id("a")).with_forward_timeout(std::time::Duration::from_millis(300));
    let balancer = layer_a.balancer().clone();
    cl.serve("a", layer_a);
    let hits_b1 = cl.serve("b1", CellRouterLayer::new(store.clone(), id("b")));
    let hits_b2 = cl.serve("b2", CellRouterLayer::new(store.clone(), id("b")));

    // One endpoint of the home cell marked failed: it gets no request.
    balancer.set_endpoint_failed(&id("b"), &cl.url("b2"), true);
    let kb = keys_of("b");
    for k in &kb {
        let r = get(&cl.url("a"), &[("x-user-id", k)]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        assert_eq!((r.body["served_by"].as_str(), r.body["ctx_cell"].as_str()), ("b1", "b"));
    }
    assert_eq!((hits_b1.load(Ordering::SeqCst), hits_b2.load(Ordering::SeqCst)), (20, 0));
    // The RTT EWMA was fed from the forwarded responses (b1 only).
    assert!(balancer.endpoint_rtt_ms(&id("b"), &cl.url("b1")).is_some());
    assert_eq!(balancer.endpoint_rtt_ms(&id("b"), &cl.url("b2")), None);
    // Recovered: both endpoints serve again.
    balancer.set_endpoint_failed(&id("b"), &cl.url("b2"), false);
    for k in &kb {
        assert_eq!(get(&cl.url("a"), &[("x-user-id", k)]).await.status, StatusCode::OK);
    }
    assert!(hits_b1.load(Ordering::SeqCst) > 20 && hits_b2.load(Ordering::SeqCst) > 0);

    // Forward timeout: the slow cell's key is answered 504 naming the cell.
    let ks = keys_of("s");
    let started = std::time::Instant::now();
    let r = get(&cl.url("a"), &[("x-user-id", &ks[0])]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.raw);
    assert_eq!(r.headers["x-cell-home"], "s");
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "the 60 s handler was awaited");
    assert_eq!(slow_hits.load(Ordering::SeqCst), 1);

    // Unkeyed traffic under UnkeyedPolicy::Weighted: spread over the active
    // cells a and b (both endpoints), never to the draining cell.
    let hits_au = cl.serve(
        "a-unkeyed",
        CellRouterLayer::new(store.clone(), id("a")).with_unkeyed(cellrouter::UnkeyedPolicy::Weighted),
    );
    let (b1_before, b2_before) = (hits_b1.load(Ordering::SeqCst), hits_b2.load(Ordering::SeqCst));
    let mut served = HashMap::<String, usize>::new();
    for _ in 0..40 {
        let r = get(&cl.url("a-unkeyed"), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.raw);
        *served.entry(r.body["served_by"].clone()).or_default() += 1;
    }
    let (b1, b2) = (hits_b1.load(Ordering::SeqCst) - b1_before, hits_b2.load(Ordering::SeqCst) - b2_before);
    assert_eq!(hits_au.load(Ordering::SeqCst), served.get("a-unkeyed").copied().unwrap_or(0));
    assert!(served.get("a-unkeyed").copied().unwrap_or(0) > 0 && b1 > 0 && b2 > 0, "{served:?}");
    assert_eq!(hits_au.load(Ordering::SeqCst) + b1 + b2, 40);
    assert_eq!(slow_hits.load(Ordering::SeqCst), 1, "the draining cell got unkeyed traffic");
    // A forwarded unkeyed request (hop counter set) is served where it lands.
    let r = get(&cl.url("a-unkeyed"), &[("x-cell-hops", "1")]).await;
    assert_eq!(r.body["served_by"], "a-unkeyed");
}

/// Plain HTTP crosses only to cells whose link the table marks private; the
/// forward is bounded by the default timeout when none is set.
#[tokio::test(start_paused = true)]
async fn plaintext_only_on_private_links_and_a_default_forward_timeout() {
    let mut cl = Cluster::bind(&["a", "b"]).await;
    let blackholed = testkit::FaultProxy::start(cl.addrs["b"]).await.unwrap();
    // b over the public internet (not private), and a private cell p behind a blackholed link
    let a = local_cell("a", "eu", cl.url("a"));
    let b = Cell::new(id("b"), id("eu"), cl.url("b"));
    let p = local_cell("p", "eu", format!("http://{}", blackholed.addr()));
    let t = RoutingTable::uniform(id("eu"), vec![a, b, p], 16384);
    let store = TableStore::with_table(t.clone()).unwrap();
    let hits_b = cl.serve("b", CellRouterLayer::new(store.clone(), id("b")));
    cl.serve("a", CellRouterLayer::new(store.clone(), id("a")));
    let compiled = t.clone().compile().unwrap();
    let key_of = |home: &str| (0..100_000).map(|i| format!("user-{i}")).find(|k| resolve_in(&compiled, &id("eu"), k).unwrap().home.as_str() == home).unwrap();

    // refused before anything is sent: 502, b saw nothing
    let r = get(&cl.url("a"), &[("x-user-id", &key_of("b"))]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.raw);
    assert!(r.raw.contains("plain HTTP refused"), "{}", r.raw);
    assert_eq!(hits_b.load(Ordering::SeqCst), 0);

    // the same forward with every link trusted goes through
    let mut cl2 = Cluster::bind(&["a2"]).await;
    cl2.serve("a2", CellRouterLayer::new(store.clone(), id("a")).with_plaintext(cellrouter::PlaintextPolicy::Always));
    let r = get(&cl2.url("a2"), &[("x-user-id", &key_of("b"))]).await;
    assert_eq!((r.status, r.body["served_by"].as_str()), (StatusCode::OK, "b"), "{}", r.raw);

    // a blackholed private link: 504 once the default timeout has passed (paused clock)
    blackholed.set(testkit::LinkMode::Blackhole);
    let t0 = tokio::time::Instant::now();
    let r = get(&cl.url("a"), &[("x-user-id", &key_of("p"))]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.raw);
    assert!(t0.elapsed() >= cellrouter::DEFAULT_FORWARD_TIMEOUT, "{:?}", t0.elapsed());
    assert_eq!(r.headers.get("x-cell-home").and_then(|v| v.to_str().ok()), Some("p"));
}
