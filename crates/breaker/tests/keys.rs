//! Bounded breaker keys: route templates and standard methods rather than raw
//! request values, a hard cap on the registry with one overflow breaker, and
//! open breakers that a flood of new keys cannot evict.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use breaker::key::{ByMethod, ByRoute, KeyFn, MethodKey};
use breaker::{BreakerConfig, CircuitBreakerLayer, Error, ManualClock, SlidingWindowConfig, State, TokioClock, WaitConfig, WindowConfig};
use http::{Method, Request, Response, StatusCode};
use proptest::prelude::*;
use tokio::time::advance;
use tower::{BoxError, Layer, ServiceExt, service_fn};

const S: Duration = Duration::from_secs(1);

fn cfg() -> BreakerConfig {
    BreakerConfig::sliding(SlidingWindowConfig {
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 4,
        failure_rate_threshold: Some(50.0),
        wait: WaitConfig::Fixed { wait: 3600 * S },
        ..Default::default()
    })
}

/// 500 for paths starting with `/fail`, 200 otherwise.
fn upstream() -> impl tower::Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone {
    service_fn(|req: Request<()>| async move {
        let mut r = Response::new(());
        if req.uri().path().starts_with("/fail") {
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        }
        Ok::<_, BoxError>(r)
    })
}

fn get(path: &str) -> Request<()> {
    Request::get(path).body(()).unwrap()
}

/// Keys on the raw path: what a user-supplied key function may do.
fn raw_path() -> KeyFn<fn(&Request<()>) -> String, String> {
    KeyFn::new(|req: &Request<()>| req.uri().path().to_owned())
}

#[tokio::test(start_paused = true)]
async fn raw_paths_never_become_route_keys() {
    let layer = CircuitBreakerLayer::new("api", cfg()).unwrap().with_clock(TokioClock::new()).with_key(ByRoute::new("api"));
    let svc = layer.layer(upstream());
    for i in 0..100_000 {
        svc.clone().oneshot(get(&format!("/users/{i}"))).await.unwrap();
    }
    let reg = layer.registry();
    assert_eq!(reg.len(), 1, "every unmatched request shares one breaker");
    let b = reg.by_name("api:unmatched").unwrap();
    assert_eq!(b.snapshot().calls, 10, "a count window of 10 holds the last 10 of them");
    assert!(reg.overflow().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_new_keys_stays_under_the_cap_and_goes_to_the_overflow_breaker() {
    let layer = CircuitBreakerLayer::new("api", cfg())
        .unwrap()
        .with_clock(TokioClock::new())
        .with_key(raw_path())
        .with_max_breakers(16);
    let svc = layer.layer(upstream());
    for i in 0..100_000 {
        svc.clone().oneshot(get(&format!("/p/{i}"))).await.unwrap();
        if i % 10_000 == 0 {
            advance(S).await;
        }
    }
    let reg = layer.registry();
    assert_eq!(reg.len(), 16);
    assert_eq!(reg.max_breakers(), 16);
    let overflow = reg.overflow().expect("the overflow breaker was made");
    assert_eq!(overflow.name(), "overflow");
    assert!(reg.by_name("/p/0").is_some(), "the first keys kept their breakers");
    assert!(reg.by_name("/p/16").is_none(), "later keys got none of their own");
    assert_eq!(reg.breakers().len(), 17);
    // The overflow breaker counts the later keys' calls: failures on new keys
    // open it (and only it).
    for i in 0..10 {
        let _ = svc.clone().oneshot(get(&format!("/fail/{i}"))).await;
    }
    assert_eq!(overflow.state(), State::Open);
    let err = svc.clone().oneshot(get("/fail/new")).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<Error>(), Some(Error::Open { .. })));
    assert_eq!(reg.by_name("/p/0").unwrap().state(), State::Closed);
    svc.clone().oneshot(get("/p/0")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_survives_a_flood_and_stays_open() {
    let layer = CircuitBreakerLayer::new("api", cfg())
        .unwrap()
        .with_clock(TokioClock::new())
        .with_key(raw_path())
        .with_max_breakers(4)
        .with_idle_timeout(60 * S);
    let svc = layer.layer(upstream());
    for _ in 0..4 {
        svc.clone().oneshot(get("/fail")).await.unwrap();
    }
    let reg = layer.registry();
    let open = reg.by_name("/fail").unwrap();
    assert_eq!(open.state(), State::Open);
    // Idle for longer than the idle timeout, still within its wait in open.
    advance(120 * S).await;
    for i in 0..100_000 {
        svc.clone().oneshot(get(&format!("/p/{i}"))).await.unwrap();
    }
    assert!(reg.len() <= 4);
    let after = reg.by_name("/fail").expect("the open breaker was not evicted");
    assert!(Arc::ptr_eq(&open, &after), "the very same breaker, not a fresh one");
    assert_eq!(after.state(), State::Open);
    let err = svc.clone().oneshot(get("/fail")).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<Error>(), Some(Error::Open { .. })));
    assert_eq!(reg.evict_idle(), 0, "idle eviction spares it too");
    assert!(reg.by_name("/fail").is_some());
}

#[tokio::test(start_paused = true)]
async fn a_flood_does_not_evict_live_closed_breakers() {
    let layer = CircuitBreakerLayer::new("api", cfg())
        .unwrap()
        .with_clock(TokioClock::new())
        .with_key(raw_path())
        .with_max_breakers(2)
        .with_idle_timeout(60 * S);
    let svc = layer.layer(upstream());
    // One failure: closed, counting towards opening.
    svc.clone().oneshot(get("/fail-once")).await.unwrap();
    let warm = layer.registry().by_name("/fail-once").unwrap();
    for i in 0..1_000 {
        svc.clone().oneshot(get(&format!("/p/{i}"))).await.unwrap();
    }
    let after = layer.registry().by_name("/fail-once").expect("still there");
    assert!(Arc::ptr_eq(&warm, &after));
    assert_eq!(after.snapshot().failures, 1, "its window was not reset");
}

#[tokio::test(start_paused = true)]
async fn idle_closed_breakers_make_room_for_new_keys() {
    let layer = CircuitBreakerLayer::new("api", cfg())
        .unwrap()
        .with_clock(TokioClock::new())
        .with_key(raw_path())
        .with_max_breakers(2)
        .with_idle_timeout(60 * S);
    let svc = layer.layer(upstream());
    svc.clone().oneshot(get("/a")).await.unwrap();
    svc.clone().oneshot(get("/b")).await.unwrap();
    svc.clone().oneshot(get("/c")).await.unwrap();
    let reg = layer.registry();
    assert!(reg.by_name("/c").is_none(), "full, nothing idle: /c shares the overflow breaker");
    assert_eq!(reg.overflow().unwrap().snapshot().calls, 1);
    advance(30 * S).await;
    svc.clone().oneshot(get("/b")).await.unwrap();
    advance(31 * S).await;
    // /a is idle (61 s), /b is not (31 s).
    svc.clone().oneshot(get("/c")).await.unwrap();
    assert!(reg.by_name("/a").is_none());
    assert!(reg.by_name("/b").is_some() && reg.by_name("/c").is_some());
    advance(61 * S).await;
    assert_eq!(reg.evict_idle(), 2);
    assert!(reg.is_empty());
}

#[tokio::test(start_paused = true)]
async fn methods_outside_the_standard_set_share_one_breaker() {
    let layer = CircuitBreakerLayer::new("api", cfg()).unwrap().with_clock(TokioClock::new()).with_key(ByMethod::new("api"));
    let svc = layer.layer(upstream());
    for i in 0..1_000 {
        let m = Method::from_bytes(format!("M{i}").as_bytes()).unwrap();
        svc.clone().oneshot(Request::builder().method(m).uri("/").body(()).unwrap()).await.unwrap();
    }
    svc.clone().oneshot(get("/")).await.unwrap();
    svc.clone().oneshot(Request::post("/").body(()).unwrap()).await.unwrap();
    let reg = layer.registry();
    let names: BTreeSet<String> = reg.breakers().iter().map(|b| b.name().to_owned()).collect();
    assert_eq!(names, ["api:GET", "api:POST", "api:other"].map(String::from).into_iter().collect());
    assert_eq!(reg.by_name("api:other").unwrap().snapshot().calls, 10);
    assert!(Arc::ptr_eq(&reg.get(&MethodKey::Other).unwrap(), &reg.by_name("api:other").unwrap()));
    assert_eq!(reg.get(&MethodKey::Standard(Method::GET)).unwrap().name(), "api:GET");
}

#[tokio::test(start_paused = true)]
async fn grpc_requests_key_on_their_method_path() {
    let layer = CircuitBreakerLayer::new("api", cfg()).unwrap().with_clock(TokioClock::new()).with_key(ByRoute::new("api"));
    let svc = layer.layer(upstream());
    let grpc = |path: &str| Request::post(path).header("content-type", "application/grpc+proto").body(()).unwrap();
    svc.clone().oneshot(grpc("/users.v1.Users/Get")).await.unwrap();
    svc.clone().oneshot(grpc("/users.v1.Users/Get")).await.unwrap();
    for forged in ["/a/b/c", "/x", "/users.v1.Users/Get%20", "//Get"] {
        svc.clone().oneshot(grpc(forged)).await.unwrap();
    }
    // Not gRPC: the path is not a key.
    svc.clone().oneshot(get("/users.v1.Users/List")).await.unwrap();
    let names: BTreeSet<String> = layer.registry().breakers().iter().map(|b| b.name().to_owned()).collect();
    assert_eq!(names, ["api:/users.v1.Users/Get", "api:unmatched"].map(String::from).into_iter().collect());
    assert_eq!(layer.registry().by_name("api:/users.v1.Users/Get").unwrap().snapshot().calls, 2);
}

#[tokio::test(start_paused = true)]
async fn breaker_metric_attributes_stay_bounded_by_the_cap() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let layer = CircuitBreakerLayer::new("api", cfg())
        .unwrap()
        .with_clock(TokioClock::new())
        .with_meter(provider.meter("breaker"))
        .with_key(raw_path())
        .with_max_breakers(8);
    let svc = layer.layer(upstream());
    for i in 0..5_000 {
        svc.clone().oneshot(get(&format!("/fail/{i}"))).await.unwrap_or_else(|_| Response::new(()));
    }
    provider.force_flush().unwrap();
    let mut values = BTreeSet::new();
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                let mut add = |attrs: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                    for kv in attrs {
                        if kv.key.as_str() == "breaker" {
                            values.insert(kv.value.to_string());
                        }
                    }
                };
                match m.data() {
                    AggregatedMetrics::U64(MetricData::Sum(sum)) => sum.data_points().for_each(|dp| add(&mut dp.attributes())),
                    AggregatedMetrics::I64(MetricData::Gauge(g)) => g.data_points().for_each(|dp| add(&mut dp.attributes())),
                    _ => {}
                }
            }
        }
    }
    assert!(values.contains("overflow"));
    assert!(values.len() <= 9, "{} breaker names: {values:?}", values.len());
}

#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn axum_matched_path_keys_on_the_route_template() {
    use axum::Router;
    use axum::body::Body;
    use axum::routing::get as route_get;
    use breaker::AnswerErrorsLayer;

    let layer = CircuitBreakerLayer::new("api", cfg()).unwrap().with_clock(TokioClock::new()).with_key(ByRoute::new("api"));
    let app = Router::new()
        .route("/users/{id}", route_get(|| async { "user" }))
        .route("/health", route_get(|| async { "ok" }))
        .route_layer(tower::ServiceBuilder::new().layer(AnswerErrorsLayer::new()).layer(layer.clone()));
    for i in 0..1_000 {
        let res = app.clone().oneshot(Request::get(format!("/users/{i}")).body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    app.clone().oneshot(Request::get("/health").body(Body::empty()).unwrap()).await.unwrap();
    let res = app.clone().oneshot(Request::get("/nope/1").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let names: BTreeSet<String> = layer.registry().breakers().iter().map(|b| b.name().to_owned()).collect();
    assert_eq!(names, ["api:/health", "api:/users/{id}"].map(String::from).into_iter().collect());
    assert_eq!(layer.registry().by_name("api:/users/{id}").unwrap().snapshot().calls, 10);
}

proptest! {
    /// Whatever keys arrive, in whatever order, the registry never holds more
    /// than its cap of keyed breakers, and every call lands on some breaker.
    #[test]
    fn the_registry_never_exceeds_its_cap(cap in 1usize..8, keys in proptest::collection::vec(0u16..64, 1..200), idle_ms in 1u64..100) {
        let clock = ManualClock::new();
        let layer = CircuitBreakerLayer::new("api", cfg())
            .unwrap()
            .with_clock(clock.clone())
            .with_key(KeyFn::new(|k: &u16| *k))
            .with_classifier(breaker::ErrorsAreFailures)
            .with_max_breakers(cap)
            .with_idle_timeout(Duration::from_millis(idle_ms));
        let svc = layer.layer(service_fn(|_: u16| async { Ok::<_, BoxError>(()) }));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for k in &keys {
            rt.block_on(svc.clone().oneshot(*k)).unwrap();
            clock.advance(Duration::from_millis(7));
            prop_assert!(layer.registry().len() <= cap);
        }
        let counted: u64 = layer.registry().breakers().iter().map(|b| b.snapshot().calls).sum();
        prop_assert!(counted >= 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_breaker_forced_open_by_hand_is_never_evicted_one_at_rest_is() {
    let layer = CircuitBreakerLayer::new("api", cfg())
        .unwrap()
        .with_clock(TokioClock::new())
        .with_key(raw_path())
        .with_max_breakers(2)
        .with_idle_timeout(60 * S);
    let svc = layer.layer(upstream());
    svc.clone().oneshot(get("/forced")).await.unwrap();
    svc.clone().oneshot(get("/quiet")).await.unwrap();
    let reg = layer.registry();
    let forced = reg.by_name("/forced").unwrap();
    forced.force_open();
    advance(120 * S).await;
    assert_eq!(reg.evict_idle(), 1, "only the idle closed breaker goes");
    assert!(reg.by_name("/quiet").is_none());
    assert!(Arc::ptr_eq(&reg.by_name("/forced").unwrap(), &forced));
    assert_eq!(forced.state(), State::ForcedOpen);
    let err = svc.clone().oneshot(get("/forced")).await.unwrap_err();
    assert!(matches!(err.downcast_ref::<Error>(), Some(Error::Open { .. })));
}
