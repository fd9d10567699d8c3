//! `AnswerErrorsLayer`: a stack holding the breaker, served by axum as it is.
#![cfg(feature = "axum")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use breaker::{AnswerErrorsLayer, BreakerConfig, CircuitBreakerLayer, Mode};
use http::{Request, Response, StatusCode, header::RETRY_AFTER};
use http_body_util::BodyExt;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt, service_fn};

async fn text(res: Response<Body>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

/// Answers `201 made`, and fails on `/fail`.
fn backend() -> impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone {
    service_fn(|req: Request<Body>| async move {
        match req.uri().path() {
            "/fail" => Err::<Response<Body>, BoxError>("backend failed".into()),
            _ => Ok(Response::builder().status(StatusCode::CREATED).body(Body::from("made")).unwrap()),
        }
    })
}

#[tokio::test]
async fn responses_pass_errors_are_answered_and_an_open_breaker_is_503() {
    let layer = CircuitBreakerLayer::new("answer", BreakerConfig::default()).unwrap();
    let svc = ServiceBuilder::new().layer(AnswerErrorsLayer::new()).layer(layer.clone()).service(backend());

    let res: Result<Response<Body>, Infallible> = svc.clone().oneshot(Request::get("/ok").body(Body::empty()).unwrap()).await;
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(text(res).await, "made");

    let res = svc.clone().oneshot(Request::get("/fail").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(text(res).await, "backend failed");

    layer.registry().by_name("answer").unwrap().set_mode(Mode::ForcedOpen);
    let res = svc.oneshot(Request::get("/ok").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(res.headers().contains_key(RETRY_AFTER), "{:?}", res.headers());
}

/// Fails its first readiness check, then is ready.
#[derive(Clone)]
struct FlakyReady {
    failed: Arc<AtomicBool>,
}

impl Service<Request<Body>> for FlakyReady {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<Body>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.failed.swap(true, Ordering::SeqCst) { Poll::Ready(Ok(())) } else { Poll::Ready(Err("not ready".into())) }
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        std::future::ready(Ok(Response::new(Body::from("served"))))
    }
}

#[tokio::test]
async fn a_readiness_error_answers_the_next_call_and_only_that_one() {
    let mut svc = tower::Layer::layer(&AnswerErrorsLayer::new(), FlakyReady { failed: Arc::default() });
    let res = svc.ready().await.unwrap().call(Request::new(Body::empty())).await.unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(text(res).await, "not ready");
    let res = svc.ready().await.unwrap().call(Request::new(Body::empty())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "served");
}
