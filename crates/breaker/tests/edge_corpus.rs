//! The whole edge stack (context with authentication, routing, per-route
//! breakers, metrics) under a seeded hostile corpus: forged internal headers,
//! forged and replayed signatures, stolen and made-up credentials, oversized
//! and non-UTF-8 values, repeated headers, hop counts, region hints and
//! 100,000 distinct paths. Nothing panics, no handler sees a client-chosen
//! cell, tenant or user, and the breaker registry and every metric's attribute
//! sets stay under their caps.
#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use breaker::key::ByRoute;
use breaker::{AnswerErrorsLayer, BreakerConfig, CircuitBreakerLayer, SlidingWindowConfig, TokioClock, WaitConfig, WindowConfig};
use cellctx::auth::{EdgeAuth, Identity, RequestHead};
use cellctx::{AuthFailure, CellContextLayer, CellId};
use cellrouter::{Cell, CellRouterLayer, MisroutePolicy, RoutingTable, TableStore};
use http::{HeaderValue, Request};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tower::{ServiceBuilder, ServiceExt};

const SEED: u64 = 0x00ED_6E5E_ED00;
const REQUESTS: usize = 12_000;
const PATHS: usize = 100_000;
const MAX_BREAKERS: usize = 64;

/// The only credentials that exist: API key -> (user, tenant).
const KEYS: &[(&str, &str, &str)] = &[("key-alice-7f3a", "alice", "acme"), ("key-bob-91c2", "bob", "globex")];

/// What a handler saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    user: Option<String>,
    tenant: Option<String>,
    cell: Option<String>,
}

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

/// API keys in `Authorization: ApiKey <key>`; an unknown key is refused, no key is anonymous.
fn api_keys(head: &RequestHead<'_>) -> Result<Option<Identity>, AuthFailure> {
    let mut values = head.headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(v) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(AuthFailure::Malformed);
    }
    let key = v.to_str().ok().and_then(|s| s.strip_prefix("ApiKey ")).ok_or(AuthFailure::Malformed)?;
    let (_, user, tenant) = KEYS.iter().find(|(k, _, _)| *k == key).ok_or(AuthFailure::UnknownKey)?;
    Ok(Some(Identity::try_new(user).unwrap().with_tenant(tenant).unwrap()))
}

fn metric_attribute_sets(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> Vec<(String, BTreeSet<String>)> {
    provider.force_flush().unwrap();
    let mut out: Vec<(String, BTreeSet<String>)> = Vec::new();
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                let mut sets = BTreeSet::new();
                let mut add = |attrs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    let mut kv: Vec<String> = attrs.map(|kv| format!("{}={}", kv.key, kv.value)).collect();
                    kv.sort();
                    sets.insert(kv.join(","));
                };
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(s)) => s.data_points().for_each(|dp| add(&mut dp.attributes())),
                    AggregatedMetrics::I64(MetricData::Sum(s)) => s.data_points().for_each(|dp| add(&mut dp.attributes())),
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => g.data_points().for_each(|dp| add(&mut dp.attributes())),
                    AggregatedMetrics::I64(MetricData::Gauge(g)) => g.data_points().for_each(|dp| add(&mut dp.attributes())),
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => g.data_points().for_each(|dp| add(&mut dp.attributes())),
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => h.data_points().for_each(|dp| add(&mut dp.attributes())),
                    _ => {}
                }
                match out.iter_mut().find(|(n, _)| n == m.name()) {
                    Some((_, all)) => all.extend(sets),
                    None => out.push((m.name().to_string(), sets)),
                }
            }
        }
    }
    out
}

/// Whether an attribute set holds a raw path (`/posts/<digits>`, `/p<digits>`)
/// or a forged header value rather than a template or a fixed name.
fn carries_request_data(set: &str) -> bool {
    let b = set.as_bytes();
    let raw_path = |prefix: &str| set.match_indices(prefix).any(|(i, _)| b.get(i + prefix.len()).is_some_and(u8::is_ascii_digit));
    raw_path("/posts/") || raw_path("/p") || set.contains("xxxx") || set.contains("alice") || set.contains("bob")
}

/// A hostile header value: forged, oversized, non-UTF-8 or odd.
fn nasty(rng: &mut StdRng) -> HeaderValue {
    match rng.random_range(0..6) {
        0 => HeaderValue::from_static("b"),
        1 => HeaderValue::from_str(&"x".repeat(rng.random_range(100..9_000))).unwrap(),
        2 => HeaderValue::from_bytes(&[0xff, 0xfe, b'a', 0x80]).unwrap(),
        3 => HeaderValue::from_static("alice"),
        4 => HeaderValue::from_str(&format!("u{}", rng.random::<u32>())).unwrap(),
        _ => HeaderValue::from_static(""),
    }
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hostile_corpus_against_the_edge_stack() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    // cellrouter reads the global provider
    opentelemetry::global::set_meter_provider(provider.clone());

    // two cells: "a" serves here; keys of "b" are refused (421), never served
    let table = RoutingTable::uniform(
        id("eu"),
        vec![Cell::new(id("a"), id("eu"), "http://127.0.0.1:1"), Cell::new(id("b"), id("eu"), "http://127.0.0.1:2")],
        1024,
    );
    let store = TableStore::with_table(table).unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = {
        let seen = seen.clone();
        move || {
            let seen = seen.clone();
            async move {
                let ctx = cellctx::current();
                let s = Seen {
                    user: ctx.as_ref().and_then(|c| c.routing_key.as_deref().map(String::from)),
                    tenant: ctx.as_ref().and_then(|c| c.tenant.as_deref().map(String::from)),
                    cell: ctx.as_ref().and_then(|c| c.cell().map(|c| c.to_string())),
                };
                seen.lock().unwrap().push(s);
                "ok"
            }
        }
    };
    let breakers = CircuitBreakerLayer::new(
        "edge",
        BreakerConfig::sliding(SlidingWindowConfig {
            window: WindowConfig::Count { size: 10 },
            minimum_calls: 5,
            failure_rate_threshold: Some(50.0),
            wait: WaitConfig::Fixed { wait: Duration::from_secs(30) },
            ..Default::default()
        }),
    )
    .unwrap()
    .with_clock(TokioClock::new())
    .with_meter(provider.meter("breaker"))
    .with_key(ByRoute::new("edge"))
    .with_max_breakers(MAX_BREAKERS);
    let app = Router::new()
        .route("/posts/{id}", get(record.clone()))
        .route("/posts/{id}/like", post(record.clone()))
        .fallback(record)
        .layer(ServiceBuilder::new().layer(AnswerErrorsLayer::new()).layer(breakers.clone()));
    let svc = ServiceBuilder::new()
        .layer(
            CellContextLayer::edge()
                // public reads: anonymous GETs of posts carry no user
                .with_authentication(EdgeAuth::new(api_keys).with_anonymous(
                    cellctx::auth::AnonymousRoutes::new().with(cellctx::auth::AnonymousRoute::prefix(Some(http::Method::GET), "/posts/").unwrap()),
                ))
                .with_meter(&provider.meter("cellctx")),
        )
        .layer(CellRouterLayer::new(store, id("a")).with_policy(MisroutePolicy::Refuse))
        .service(app);

    let mut rng = StdRng::seed_from_u64(SEED);
    let (mut served, mut refused) = (0usize, 0usize);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for i in 0..REQUESTS.max(PATHS) {
        // the first PATHS requests each take a distinct path; the corpus goes on for REQUESTS
        let path = match rng.random_range(0..4) {
            0 => format!("/posts/{i}"),
            1 => format!("/posts/{i}/like"),
            _ => format!("/p{i}/{}", rng.random::<u16>()),
        };
        let method = if path.ends_with("/like") { "POST" } else { ["GET", "PATCH", "BREW", "DELETE"][rng.random_range(0..4)] };
        let mut b = Request::builder().method(method).uri(&path);
        // the credential: a real key, a made-up one, a stolen header form, or none
        let cred = rng.random_range(0..5);
        let expected = match cred {
            0 | 1 => {
                let (k, user, tenant) = KEYS[cred];
                b = b.header("authorization", format!("ApiKey {k}"));
                Some((user, tenant))
            }
            2 => {
                b = b.header("authorization", format!("ApiKey key-{}", rng.random::<u32>()));
                None
            }
            3 => {
                b = b.header("authorization", "ApiKey key-alice-7f3a").header("authorization", "ApiKey key-bob-91c2");
                None
            }
            _ => None,
        };
        // forged internal headers (every request), some repeated, oversized or non-UTF-8
        let hostile = rng.random_bool(0.3);
        for name in ["x-user-id", "x-tenant-id", "x-auth-user", "x-cell-id", "x-cell-hops", "x-region-hint", "x-cell-sig", "x-xid"] {
            if hostile {
                for _ in 0..rng.random_range(0..3) {
                    b = b.header(name, nasty(&mut rng));
                }
            } else if rng.random_bool(0.5) {
                // well-formed forgeries: the values a client would choose to be served elsewhere
                let v = ["b", "alice", "mallory", "acme", "7"][rng.random_range(0..5)];
                b = if name == "x-region-hint" { b.header(name, format!("{v};src=gps")) } else { b.header(name, v) };
            }
        }
        if rng.random_bool(0.2) {
            b = b.header("x-cell-sig", "v2;iat=1700000000;exp=4102444800;sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
            b = b.header("x-cell-hops", "99");
        }
        let req = b.body(Body::empty()).unwrap();
        let before = seen.lock().unwrap().len();
        let resp = svc.clone().oneshot(req).await.unwrap();
        let after: Vec<Seen> = seen.lock().unwrap()[before..].to_vec();
        *statuses.entry(resp.status().as_u16()).or_default() += 1;
        match (cred, after.as_slice()) {
            // a bad credential never reaches a handler
            (2 | 3, s) => {
                assert!(s.is_empty(), "request {i}: a bad credential was served: {s:?}");
                assert!(matches!(resp.status().as_u16(), 400 | 401 | 431), "request {i}: {}", resp.status());
                refused += 1;
            }
            (_, []) => refused += 1,
            (_, [s]) => {
                served += 1;
                // what the handler saw is the verified identity, or nobody; never a stated one
                let (user, tenant) = expected.map_or((None, None), |(u, t)| (Some(u.to_string()), Some(t.to_string())));
                assert_eq!(s.user, user, "request {i}: the handler saw a user the client chose");
                assert_eq!(s.tenant, tenant, "request {i}: the handler saw a tenant the client chose");
                assert!(matches!(s.cell.as_deref(), None | Some("a")), "request {i}: served under a cell the client chose: {:?}", s.cell);
            }
            (_, many) => panic!("request {i} reached {} handlers", many.len()),
        }
    }
    assert!(served > 10_000 && refused > 10_000, "served {served}, refused {refused}: the corpus exercises both ({statuses:?})");

    // the breaker registry stays under its cap: one breaker per route template (+ unmatched)
    let reg = breakers.registry();
    assert!(reg.len() <= MAX_BREAKERS, "{} breakers", reg.len());
    let names: BTreeSet<String> = reg.breakers().iter().map(|b| b.name().to_owned()).collect();
    assert!(names.iter().all(|n| ["edge:/posts/{id}", "edge:/posts/{id}/like", "edge:unmatched", "edge:overflow"].contains(&n.as_str())), "{names:?}");

    // every metric's attribute sets stay few, whatever the corpus sent
    let sets = metric_attribute_sets(&provider, &exporter);
    assert!(!sets.is_empty());
    for (metric, s) in &sets {
        assert!(s.len() <= MAX_BREAKERS, "{metric}: {} attribute sets, e.g. {:?}", s.len(), s.iter().take(5).collect::<Vec<_>>());
        for set in s {
            assert!(set.len() < 200, "{metric}: an attribute set carries request data: {set:.200}");
            assert!(!carries_request_data(set), "{metric}: request data in attributes: {set:.200}");
        }
    }
}
