//! Degradation over HTTP (per-method fallback, `X-Downgraded`, the context's
//! flag), the seed's YAML, axum and tonic adapters, metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use breaker::fallback::unavailable;
use breaker::{
    BreakerConfig, BreakersConfig, CircuitBreakerLayer, Error, MethodFallback, Mode, Policy, SlidingWindowConfig, State,
    TokioClock, WaitConfig, WindowConfig,
};
use cellctx::CellContext;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::time::advance;
use tower::{BoxError, Layer, ServiceExt, service_fn};

const SEED: &str = r#"
circuitbreaker:
  user-svc:
    enabled: true
    errorPercent: 50
    minRequests: 4
    timeoutMs: 800
    sleepWindowMs: 5000
  order-svc:
    enabled: false
    errorPercent: 30
    minRequests: 10
    timeoutMs: 1000
    sleepWindowMs: 10000
"#;

fn failing_after(threshold: u16) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone {
    service_fn(move |req: Request<Body>| async move {
        let code: u16 = req.headers().get("x-status").map(|v| v.to_str().unwrap().parse().unwrap()).unwrap_or(threshold);
        let mut r = Response::new(Body::from("live"));
        *r.status_mut() = StatusCode::from_u16(code).unwrap();
        Ok::<_, BoxError>(r)
    })
}

fn req(method: Method, status: u16) -> Request<Body> {
    let mut r = Request::builder().method(method).uri("/users/1").header("x-status", status).body(Body::empty()).unwrap();
    let ctx = CellContext::new().with_tenant("acme").unwrap();
    r.extensions_mut().insert(Arc::new(ctx));
    r
}

async fn text(res: Response<Body>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn per_method_fallback_marks_the_response_and_the_context() {
    let cfg = BreakerConfig::sliding(SlidingWindowConfig {
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 3,
        wait: WaitConfig::Fixed { wait: Duration::from_secs(7) },
        ..Default::default()
    });
    let cache = service_fn(|req: Request<Body>| async move {
        // The fallback sees the downgraded context in the extension and as
        // the task-local current context, and the rejection.
        let ext = req.extensions().get::<Arc<CellContext>>().unwrap();
        let cur = cellctx::current().unwrap();
        let rejected = req.extensions().get::<breaker::Rejected>().unwrap();
        let body = format!(
            "cached tenant={} ext={} cur={} by={}",
            ext.tenant.as_deref().unwrap(),
            ext.downgraded,
            cur.downgraded,
            rejected.breaker
        );
        Ok::<_, BoxError>(Response::new(Body::from(body)))
    });
    let fallback = MethodFallback::new().on(Method::GET, cache).on(Method::POST, unavailable());
    let layer = CircuitBreakerLayer::new("user-svc", cfg).unwrap().with_clock(TokioClock::new()).with_fallback(fallback);
    let svc = layer.layer(failing_after(200));

    let res = svc.clone().oneshot(req(Method::GET, 200)).await.unwrap();
    assert_eq!(text(res).await, "live");
    for _ in 0..2 {
        let res = svc.clone().oneshot(req(Method::POST, 503)).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().get("x-downgraded").is_none(), "a live 503 is not a downgrade");
    }
    assert_eq!(layer.registry().by_name("user-svc").unwrap().state(), State::Open);

    let res = svc.clone().oneshot(req(Method::GET, 200)).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-downgraded"], "true");
    assert_eq!(text(res).await, "cached tenant=acme ext=true cur=true by=user-svc");

    advance(Duration::from_secs(2)).await;
    let res = svc.clone().oneshot(req(Method::POST, 200)).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["x-downgraded"], "true");
    assert_eq!(res.headers()["retry-after"], "5");

    // No fallback for DELETE: the typed error.
    let err = svc.clone().oneshot(req(Method::DELETE, 200)).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Error>().unwrap().retry_after(), Some(Duration::from_secs(5)));
}

#[test]
fn seed_yaml_parses_into_breakers() {
    let cfg = BreakersConfig::from_yaml(SEED).unwrap();
    let user = cfg.for_name("user-svc");
    assert_eq!(user.mode, Mode::Normal);
    let Policy::SlidingWindow(s) = &user.policy else { panic!("sliding expected") };
    assert_eq!(s.failure_rate_threshold, Some(50.0));
    assert_eq!(s.minimum_calls, 4);
    assert_eq!(s.slow_call_duration, Duration::from_millis(800));
    assert!(s.slow_call_is_failure);
    assert_eq!(s.wait, WaitConfig::Fixed { wait: Duration::from_millis(5000) });
    assert_eq!(cfg.for_name("order-svc").mode, Mode::Disabled);
    // Unknown names get the default.
    assert_eq!(cfg.for_name("other"), &BreakerConfig::default());
    // Bad seed values are errors.
    let bad = SEED.replace("errorPercent: 50", "errorPercent: 0");
    assert!(matches!(BreakersConfig::from_yaml(&bad), Err(Error::InvalidConfig { .. })));
    let typo = SEED.replace("minRequests: 4", "minRequest: 4");
    assert!(matches!(BreakersConfig::from_yaml(&typo), Err(Error::Parse(_))));
    // The native form round-trips through YAML and JSON.
    let yaml = serde_yaml::to_string(&cfg).unwrap();
    assert_eq!(BreakersConfig::from_yaml(&yaml).unwrap(), cfg);
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(BreakersConfig::from_json(&json).unwrap(), cfg);
}

#[tokio::test(start_paused = true)]
async fn seed_yaml_applied_slow_calls_over_timeout_are_failures() {
    let cfg = BreakersConfig::from_yaml(SEED).unwrap();
    let layer = CircuitBreakerLayer::from_config("user-svc", cfg).unwrap().with_clock(TokioClock::new());
    let svc = layer.layer(service_fn(|req: Request<Body>| async move {
        let ms: u64 = req.headers()["x-delay"].to_str().unwrap().parse().unwrap();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, BoxError>(Response::new(Body::empty()))
    }));
    let call = |ms: u64| svc.clone().oneshot(Request::builder().header("x-delay", ms).body(Body::empty()).unwrap());
    call(100).await.unwrap();
    call(100).await.unwrap();
    call(900).await.unwrap();
    let b = layer.registry().by_name("user-svc").unwrap();
    assert_eq!(b.state(), State::Closed);
    call(850).await.unwrap();
    // 2 of 4 over timeoutMs = errorPercent 50: open, for sleepWindowMs.
    assert_eq!(b.state(), State::Open);
    let err = call(1).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Error>().unwrap().retry_after(), Some(Duration::from_millis(5000)));
    advance(Duration::from_millis(5000)).await;
    call(10).await.unwrap();
    assert_eq!(b.state(), State::Closed, "one trial success closes (seed: 1 permit)");

    // The disabled seed entry passes everything.
    let cfg = BreakersConfig::from_yaml(SEED).unwrap();
    let layer = CircuitBreakerLayer::from_config("order-svc", cfg).unwrap().with_clock(TokioClock::new());
    let svc = layer.layer(failing_after(500));
    for _ in 0..20 {
        assert_eq!(svc.clone().oneshot(Request::new(Body::empty())).await.unwrap().status(), 500);
    }
    assert_eq!(layer.registry().by_name("order-svc").unwrap().state(), State::Disabled);
}

#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn axum_router_answers_503_with_retry_after() {
    use axum::Router;
    use axum::error_handling::HandleErrorLayer;
    use axum::routing::get;
    use tower::ServiceBuilder;

    let cfg = BreakerConfig::sliding(SlidingWindowConfig {
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 1,
        consecutive_failures: Some(1),
        wait: WaitConfig::Fixed { wait: Duration::from_millis(2500) },
        ..Default::default()
    });
    let layer = CircuitBreakerLayer::new("axum", cfg).unwrap().with_clock(TokioClock::new());
    let app = Router::new().route("/", get(|| async { StatusCode::INTERNAL_SERVER_ERROR })).layer(
        ServiceBuilder::new().layer(HandleErrorLayer::new(|e: BoxError| async move { breaker::handle_error(e) })).layer(layer),
    );
    let res = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let res = app.clone().oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "3");
    assert_eq!(text(res).await, "circuit breaker open");
}

#[cfg(feature = "tonic")]
#[test]
fn tonic_status_is_unavailable() {
    let status: tonic::Status = Error::Open { retry_after: Duration::from_millis(1200) }.into();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
    let status: tonic::Status = Error::InvalidConfig { field: "k", reason: "x".into() }.into();
    assert_eq!(status.code(), tonic::Code::Internal);
}

#[tokio::test(start_paused = true)]
async fn grpc_classifier_counts_unavailable_not_not_found() {
    let cfg = BreakerConfig::sliding(SlidingWindowConfig {
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 3,
        ..Default::default()
    });
    let layer =
        CircuitBreakerLayer::new("grpc", cfg).unwrap().with_clock(TokioClock::new()).with_classifier(breaker::GrpcClassifier::default());
    let svc = layer.layer(service_fn(|req: Request<Body>| async move {
        let mut r = Response::new(Body::empty());
        r.headers_mut().insert("grpc-status", req.headers()["x-grpc"].clone());
        Ok::<_, BoxError>(r)
    }));
    let call = |code: &'static str| svc.clone().oneshot(Request::builder().header("x-grpc", code).body(Body::empty()).unwrap());
    for _ in 0..5 {
        call("5").await.unwrap(); // NOT_FOUND: ignored
    }
    let b = layer.registry().by_name("grpc").unwrap();
    assert_eq!(b.snapshot().calls, 0);
    for _ in 0..3 {
        call("14").await.unwrap(); // UNAVAILABLE
    }
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_outcomes_rejections_and_transitions() {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder().with_reader(PeriodicReader::builder(exporter.clone()).build()).build();
    let cfg = BreakerConfig::sliding(SlidingWindowConfig {
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 2,
        ..Default::default()
    });
    let layer =
        CircuitBreakerLayer::new("m", cfg).unwrap().with_clock(TokioClock::new()).with_meter(provider.meter("breaker"));
    let svc = layer.layer(failing_after(500));
    let mut r = req(Method::GET, 404);
    r.extensions_mut().clear();
    svc.clone().oneshot(r).await.unwrap();
    for _ in 0..2 {
        svc.clone().oneshot(Request::new(Body::empty())).await.unwrap();
    }
    svc.clone().oneshot(Request::new(Body::empty())).await.unwrap_err();
    provider.force_flush().unwrap();
    let all = exporter.get_finished_metrics().unwrap();
    let last = all.last().unwrap();
    let mut seen = std::collections::BTreeMap::new();
    for sm in last.scope_metrics() {
        for m in sm.metrics() {
            match m.data() {
                AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                    for dp in sum.data_points() {
                        let attrs: Vec<String> =
                            dp.attributes().filter(|kv| kv.key.as_str() != "breaker").map(|kv| kv.value.to_string()).collect();
                        seen.insert(format!("{} {}", m.name(), attrs.join(",")), dp.value() as i64);
                    }
                }
                AggregatedMetrics::I64(MetricData::Gauge(g)) => {
                    for dp in g.data_points() {
                        seen.insert(m.name().to_string(), dp.value());
                    }
                }
                _ => {}
            }
        }
    }
    assert_eq!(seen.get("breaker.calls ignored"), Some(&1));
    assert_eq!(seen.get("breaker.calls failure"), Some(&2));
    assert_eq!(seen.get("breaker.rejected "), Some(&1));
    assert_eq!(seen.get("breaker.transitions closed,open"), Some(&1));
    assert_eq!(seen.get("breaker.state"), Some(&1));
}
