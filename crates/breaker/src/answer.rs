//! [`AnswerErrorsLayer`]: a stack's errors answered as axum responses.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::integrations::handle_error;

/// Answers the errors of a stack that holds the breaker as axum responses
/// (what [`handle_error`](crate::handle_error) makes of them: 503 with
/// `Retry-After` when a breaker is open), so axum can serve the stack as it is.
///
/// It does the job of `HandleErrorLayer::new(|e| async { breaker::handle_error(e) })`
/// plus a `map_response` to axum's body, without their per-request costs:
/// axum's `HandleError` clones the inner service and boxes a future for every
/// request; this layer calls the inner service in place (readiness is passed
/// through; a readiness error is answered to the next call) and its future is
/// a named type.
///
/// ```
/// use std::convert::Infallible;
/// use breaker::{AnswerErrorsLayer, BreakerConfig, CircuitBreakerLayer};
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(AnswerErrorsLayer::new())
///     .layer(CircuitBreakerLayer::new("docs", BreakerConfig::default()).unwrap())
///     .service(service_fn(|_req: Request<axum::body::Body>| async {
///         Err::<Response<axum::body::Body>, _>(std::io::Error::other("downstream failed"))
///     }));
/// let res = svc.oneshot(Request::new(axum::body::Body::empty())).await;
/// let res: Result<_, Infallible> = res; // nothing is left for axum to handle
/// assert_eq!(res.unwrap().status(), StatusCode::INTERNAL_SERVER_ERROR);
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AnswerErrorsLayer {
    _priv: (),
}

impl AnswerErrorsLayer {
    /// The layer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for AnswerErrorsLayer {
    type Service = AnswerErrors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnswerErrors { inner, not_ready: None }
    }
}

/// The service [`AnswerErrorsLayer`] makes: never fails, answers errors.
#[derive(Debug)]
pub struct AnswerErrors<S> {
    inner: S,
    /// An error the inner service gave instead of readiness, answered to the next call.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for AnswerErrors<S> {
    fn clone(&self) -> Self {
        // A clone has not been polled ready.
        AnswerErrors { inner: self.inner.clone(), not_ready: None }
    }
}

impl<S> AnswerErrors<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req, B> Service<Req> for AnswerErrors<S>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AnswerErrorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        poll_ready_answering::<S, Req>(&mut self.inner, &mut self.not_ready, cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.not_ready.take() {
            Some(err) => AnswerErrorsFuture { kind: Kind::Failed { err: Some(err) } },
            None => AnswerErrorsFuture { kind: Kind::Inner { fut: self.inner.call(req) } },
        }
    }
}

pin_project! {
    /// Response future of [`AnswerErrors`].
    pub struct AnswerErrorsFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] fut: F },
        Failed { err: Option<BoxError> },
    }
}

impl<F> std::fmt::Debug for AnswerErrorsFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnswerErrorsFuture")
    }
}

impl<F, B, E> Future for AnswerErrorsFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = match self.project().kind.project() {
            KindProj::Inner { fut } => answer(std::task::ready!(fut.poll(cx))),
            KindProj::Failed { err } => match err.take() {
                Some(err) => handle_error(err),
                None => handle_error("the answer of a failed readiness was taken twice".into()),
            },
        };
        Poll::Ready(Ok(answer))
    }
}

/// A stack's result as an axum response: the response with its body as axum's
/// [`Body`] (no new box when it already is one), or the error as
/// [`handle_error`] answers it. What [`AnswerErrors`] does with each result.
#[inline]
pub fn answer<B, E>(result: Result<http::Response<B>, E>) -> Response
where
    E: Into<BoxError>,
    B: http_body::Body<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match result {
        Ok(res) => res.map(Body::new),
        Err(err) => handle_error(err.into()),
    }
}

/// Readiness of a service that answers errors: the inner service's, except
/// that an error it gives instead is kept in `not_ready` (answer it to the
/// next call, e.g. with [`handle_error`]) and counts as ready. What
/// [`AnswerErrors`] does.
#[inline]
pub fn poll_ready_answering<S, Req>(inner: &mut S, not_ready: &mut Option<BoxError>, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    if not_ready.is_some() {
        return Poll::Ready(Ok(()));
    }
    match inner.poll_ready(cx) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
        Poll::Ready(Err(err)) => {
            // Ready to answer the next call with this error.
            *not_ready = Some(err.into());
            Poll::Ready(Ok(()))
        }
        Poll::Pending => Poll::Pending,
    }
}
