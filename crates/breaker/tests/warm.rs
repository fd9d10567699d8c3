//! A breaker whose key does not depend on the request ([`breaker::key::Downstream`])
//! is looked up when the layer makes the service, so services cloned per
//! request (as hyper and axum call them) never look it up again, and still
//! follow the registry when it replaces the breaker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use breaker::{BreakerConfig, BreakersConfig, CircuitBreakerLayer, SlidingWindowConfig, WindowConfig};
use http::{Request, Response};
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

fn backend() -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future: Send> + Clone {
    service_fn(|_req: Request<()>| async { Ok::<_, BoxError>(Response::new(())) })
}

/// Calls a fresh clone of `svc` once (as hyper-util calls a tower service).
async fn call_clone<S>(svc: &S)
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
{
    svc.clone().oneshot(Request::new(())).await.unwrap();
}

fn calls_of(layer: &CircuitBreakerLayer, name: &str) -> u64 {
    layer.registry().by_name(name).unwrap().snapshot().calls
}

#[tokio::test]
async fn the_breaker_exists_once_the_layer_made_a_service_and_clones_record_on_it() {
    let layer = CircuitBreakerLayer::new("users", BreakerConfig::default()).unwrap();
    assert!(layer.registry().is_empty(), "nothing made before the layer is applied");
    let svc = layer.layer(backend());
    assert_eq!(layer.registry().len(), 1, "made with the service");
    let made = layer.registry().by_name("users").unwrap();
    for _ in 0..3 {
        call_clone(&svc).await;
    }
    assert_eq!(calls_of(&layer, "users"), 3);
    assert!(Arc::ptr_eq(&made, &layer.registry().by_name("users").unwrap()), "no second breaker");
}

#[tokio::test]
async fn a_replaced_breaker_is_followed_by_services_warmed_before_the_change() {
    let layer = CircuitBreakerLayer::new("users", BreakerConfig::default()).unwrap();
    let svc = layer.layer(backend());
    call_clone(&svc).await;
    let before = layer.registry().by_name("users").unwrap();
    // Another window shape: the registry replaces the breaker (and bumps its epoch).
    let reshaped = BreakerConfig::sliding(SlidingWindowConfig { window: WindowConfig::Count { size: 7 }, ..Default::default() });
    layer.registry().reconfigure(BreakersConfig::uniform(reshaped)).unwrap();
    let after = layer.registry().by_name("users").unwrap();
    assert!(!Arc::ptr_eq(&before, &after), "the reconfigure replaced the breaker");
    for _ in 0..2 {
        call_clone(&svc).await;
    }
    assert_eq!(after.snapshot().calls, 2, "calls after the change land on the registry's breaker");
    assert_eq!(before.snapshot().calls, 1, "the replaced one saw only the call before");
}
