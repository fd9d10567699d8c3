//! gRPC outcomes read where gRPC sends them: the trailers at the end of the
//! body (recorded when the body ends), or the headers of a trailers-only
//! response; through hand-made bodies and through a real tonic server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use breaker::{BreakerConfig, CircuitBreakerLayer, GrpcClassifier, SlidingWindowConfig, State, TokioClock, WaitConfig, WindowConfig};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::advance;
use tower::{BoxError, Layer, ServiceExt, service_fn};

const S: Duration = Duration::from_secs(1);

fn cfg() -> BreakerConfig {
    BreakerConfig::sliding(SlidingWindowConfig {
        window: WindowConfig::Count { size: 10 },
        minimum_calls: 3,
        failure_rate_threshold: Some(50.0),
        wait: WaitConfig::Fixed { wait: 10 * S },
        permitted_calls_in_half_open: 1,
        success_threshold: 1,
        ..Default::default()
    })
}

fn layer() -> CircuitBreakerLayer<breaker::key::Downstream, GrpcClassifier> {
    CircuitBreakerLayer::new("grpc", cfg()).unwrap().with_clock(TokioClock::new()).with_classifier(GrpcClassifier::default())
}

fn trailers(code: &str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", code.parse().unwrap());
    t
}

/// A 200 response with one message and the status code of the request's
/// `x-code` header in its trailers.
type Reply = http_body_util::combinators::BoxBody<Bytes, BoxError>;

fn upstream() -> impl tower::Service<Request<()>, Response = Response<Reply>, Error = BoxError, Future: Send> + Clone {
    service_fn(|req: Request<()>| async move {
        let code = req.headers().get("x-code").map(|v| v.to_str().unwrap().to_owned());
        let body: Reply = match code {
            Some(code) => Full::new(Bytes::from_static(b"\0\0\0\0\0"))
                .map_err(|e| match e {})
                .with_trailers(async move { Some(Ok(trailers(&code))) })
                .boxed(),
            // No trailers at all: the stream ends without a status.
            None => Full::new(Bytes::from_static(b"\0\0\0\0\0")).map_err(|e| match e {}).boxed(),
        };
        Ok::<_, BoxError>(Response::new(body))
    })
}

fn with_code(code: &str) -> Request<()> {
    Request::builder().header("x-code", code).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_failure_in_the_trailers_opens_the_breaker() {
    let layer = layer();
    let svc = layer.layer(upstream());
    let b = layer.registry().by_name("grpc").unwrap();
    for _ in 0..3 {
        let res = svc.clone().oneshot(with_code("14")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.body().is_pending(), "the headers decide nothing");
        let calls = b.snapshot().calls;
        let collected = res.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "14", "trailers pass through");
        assert_eq!(b.snapshot().calls, calls + 1, "recorded when the body ended");
    }
    assert_eq!(b.snapshot().failures, 3);
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_in_the_trailers_closes_a_half_open_breaker() {
    let layer = layer();
    let svc = layer.layer(upstream());
    for _ in 0..3 {
        svc.clone().oneshot(with_code("13")).await.unwrap().into_body().collect().await.unwrap();
    }
    let b = layer.registry().by_name("grpc").unwrap();
    assert_eq!(b.state(), State::Open);
    advance(11 * S).await;
    assert_eq!(b.state(), State::HalfOpen);
    let res = svc.clone().oneshot(with_code("0")).await.unwrap();
    assert_eq!(b.state(), State::HalfOpen, "still on trial until the trailers");
    res.into_body().collect().await.unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_codes_and_missing_trailers() {
    let layer = layer();
    let svc = layer.layer(upstream());
    let b = layer.registry().by_name("grpc").unwrap();
    // NOT_FOUND in the trailers: ignored.
    svc.clone().oneshot(with_code("5")).await.unwrap().into_body().collect().await.unwrap();
    assert_eq!(b.snapshot().calls, 0);
    // A body that ends without trailers carries no status: a failure.
    svc.clone().oneshot(Request::new(())).await.unwrap().into_body().collect().await.unwrap();
    assert_eq!((b.snapshot().calls, b.snapshot().failures), (1, 1));
    // An unreadable status counts as UNKNOWN, a failure.
    svc.clone().oneshot(with_code("fourteen")).await.unwrap().into_body().collect().await.unwrap();
    assert_eq!(b.snapshot().failures, 2);
}

#[tokio::test(start_paused = true)]
async fn a_body_dropped_before_its_end_counts_nothing_and_frees_the_trial() {
    let layer = layer();
    let svc = layer.layer(upstream());
    for _ in 0..3 {
        svc.clone().oneshot(with_code("14")).await.unwrap().into_body().collect().await.unwrap();
    }
    let b = layer.registry().by_name("grpc").unwrap();
    advance(11 * S).await;
    assert_eq!(b.state(), State::HalfOpen);
    let res = svc.clone().oneshot(with_code("0")).await.unwrap();
    assert_eq!(b.half_open_in_flight(), 1);
    let before = b.snapshot();
    drop(res);
    assert_eq!(b.half_open_in_flight(), 0, "the trial permit came back");
    assert_eq!(b.snapshot(), before, "a cancellation counts nothing");
    assert_eq!(b.state(), State::HalfOpen);
    // The freed trial admits the next call, whose success closes the breaker.
    svc.clone().oneshot(with_code("0")).await.unwrap().into_body().collect().await.unwrap();
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn trailers_only_and_http_statuses_decide_from_the_headers() {
    let layer = layer();
    let svc = layer.layer(service_fn(|req: Request<()>| async move {
        let mut r = Response::new(Empty::<Bytes>::new());
        if let Some(code) = req.headers().get("x-code") {
            r.headers_mut().insert("grpc-status", code.clone());
        }
        if let Some(status) = req.headers().get("x-http") {
            *r.status_mut() = StatusCode::from_bytes(status.as_bytes()).unwrap();
        }
        Ok::<_, BoxError>(r)
    }));
    let b = layer.registry().by_name("grpc").unwrap();
    // Trailers-only UNAVAILABLE: decided before the body is read.
    let res = svc.clone().oneshot(with_code("14")).await.unwrap();
    assert!(!res.body().is_pending());
    assert_eq!(b.snapshot().failures, 1);
    // HTTP 404 without a status is UNIMPLEMENTED: ignored; 503 is UNAVAILABLE.
    let http = |s: &str| Request::builder().header("x-http", s).body(()).unwrap();
    svc.clone().oneshot(http("404")).await.unwrap();
    assert_eq!(b.snapshot().calls, 1);
    svc.clone().oneshot(http("503")).await.unwrap();
    assert_eq!(b.snapshot().failures, 2);
    svc.clone().oneshot(with_code("0")).await.unwrap();
    assert_eq!((b.snapshot().calls, b.snapshot().failures), (3, 2));
}

#[cfg(feature = "tonic")]
mod tonic_server {
    use std::pin::Pin;

    use tokio_stream::Stream;
    use tonic::server::{Grpc, ServerStreamingService, UnaryService};
    use tonic::{Status, body::Body};
    use tonic_prost::ProstCodec;

    use super::*;

    /// `Status::unavailable` at once: tonic answers trailers-only.
    #[derive(Clone)]
    struct Unary;

    impl UnaryService<()> for Unary {
        type Response = ();
        type Future = std::future::Ready<Result<tonic::Response<()>, Status>>;
        fn call(&mut self, _: tonic::Request<()>) -> Self::Future {
            std::future::ready(Err(Status::unavailable("down for maintenance")))
        }
    }

    /// One message, then `Status::unavailable`: tonic sends it in the trailers.
    #[derive(Clone)]
    struct Streaming;

    type Messages = Pin<Box<dyn Stream<Item = Result<(), Status>> + Send>>;

    impl ServerStreamingService<()> for Streaming {
        type Response = ();
        type ResponseStream = Messages;
        type Future = std::future::Ready<Result<tonic::Response<Messages>, Status>>;
        fn call(&mut self, _: tonic::Request<()>) -> Self::Future {
            let s: Messages = Box::pin(tokio_stream::iter([Ok(()), Err(Status::unavailable("went away"))]));
            std::future::ready(Ok(tonic::Response::new(s)))
        }
    }

    /// A tonic server for `/test.Svc/Unary` and `/test.Svc/Stream`.
    async fn serve(req: Request<Full<Bytes>>) -> Result<Response<Body>, BoxError> {
        let mut grpc = Grpc::new(ProstCodec::<(), ()>::default());
        Ok(match req.uri().path() {
            "/test.Svc/Unary" => grpc.unary(Unary, req).await,
            _ => grpc.server_streaming(Streaming, req).await,
        })
    }

    fn call(path: &str) -> Request<Full<Bytes>> {
        // One empty message: flag 0, length 0.
        Request::post(path)
            .header("content-type", "application/grpc")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn tonic_unavailable_in_the_trailers_opens_the_breaker() {
        let layer = layer();
        let svc = layer.layer(service_fn(serve));
        let b = layer.registry().by_name("grpc").unwrap();
        for i in 0..3 {
            let res = svc.clone().oneshot(call("/test.Svc/Stream")).await.unwrap();
            assert_eq!(b.snapshot().calls, i, "nothing recorded before the body ends");
            let collected = res.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
        }
        assert_eq!(b.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn tonic_unavailable_trailers_only_opens_the_breaker() {
        let layer = layer();
        let svc = layer.layer(service_fn(serve));
        let b = layer.registry().by_name("grpc").unwrap();
        for _ in 0..3 {
            let res = svc.clone().oneshot(call("/test.Svc/Unary")).await.unwrap();
            assert_eq!(res.headers()["grpc-status"], "14", "tonic answered trailers-only");
        }
        assert_eq!(b.state(), State::Open);
        let err = svc.clone().oneshot(call("/test.Svc/Unary")).await.unwrap_err();
        let status: tonic::Status = match err.downcast::<breaker::Error>() {
            Ok(e) => (*e).into(),
            Err(e) => panic!("not a breaker error: {e}"),
        };
        assert_eq!(status.code(), tonic::Code::Unavailable);
    }
}

mod laws {
    use breaker::Outcome;
    use proptest::prelude::*;

    use super::*;

    /// What one call with `code` counted as: (calls, failures) of the window.
    fn counted(code: &str, trailers_only: bool) -> (u64, u64) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let layer = layer();
            let code = code.to_owned();
            let svc = layer.layer(service_fn(move |_req: Request<()>| {
                let code = code.clone();
                async move {
                    let body: Reply = if trailers_only {
                        Empty::<Bytes>::new().map_err(|e| match e {}).boxed()
                    } else {
                        let t = trailers(&code);
                        Full::new(Bytes::from_static(b"\0\0\0\0\0")).map_err(|e| match e {}).with_trailers(async move { Some(Ok(t)) }).boxed()
                    };
                    let mut res = Response::new(body);
                    if trailers_only {
                        res.headers_mut().insert("grpc-status", code.parse().unwrap());
                    }
                    Ok::<_, BoxError>(res)
                }
            }));
            svc.oneshot(Request::new(())).await.unwrap().into_body().collect().await.unwrap();
            let s = layer.registry().by_name("grpc").unwrap().snapshot();
            (s.calls, s.failures)
        })
    }

    proptest! {
        /// A status counts the same whether it comes in the trailers or in
        /// the headers of a trailers-only response, and as the classifier's
        /// rule for that code says.
        #[test]
        fn trailers_and_trailers_only_agree(code in 0u32..40) {
            let text = code.to_string();
            let expected = match GrpcClassifier::default().classify_code(code) {
                Outcome::Success => (1, 0),
                Outcome::Failure => (1, 1),
                Outcome::Ignored => (0, 0),
            };
            prop_assert_eq!(counted(&text, false), expected);
            prop_assert_eq!(counted(&text, true), expected);
        }
    }
}
