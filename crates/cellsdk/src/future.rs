//! [`CellFuture`]: the fused stack's response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use breaker::{Permit, RecordOutcome};
use cellctx::CellContext;
use cellrouter::Forwarding;
use http::{HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::BoxError;

pin_project! {
    /// Response future of [`CellService`](crate::CellService): the application's
    /// call inside the context's scope (its outcome recorded into the breaker's
    /// permit), the breaker's fallback, a forward to another cell, or an answer
    /// of the stack's own (a refused context, a refused route, an error); with
    /// the request id echoed where the separate layers echo it.
    pub struct CellFuture<F, C, FB> {
        #[pin]
        state: State<F, C, FB>,
        otel: Option<opentelemetry::Context>,
        echo: Option<(HeaderName, HeaderValue)>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C, FB> {
        Called { #[pin] fut: TaskLocalFuture<Arc<CellContext>, F>, permit: Option<Permit>, classifier: C },
        Fallback { #[pin] fut: TaskLocalFuture<Arc<CellContext>, FB>, classifier: C },
        Forward { #[pin] fut: TaskLocalFuture<Arc<CellContext>, Forwarding> },
        Answered { res: Option<Response> },
    }
}

impl<F, C, FB> CellFuture<F, C, FB> {
    pub(crate) fn called(
        fut: TaskLocalFuture<Arc<CellContext>, F>,
        permit: Option<Permit>,
        classifier: C,
        otel: Option<opentelemetry::Context>,
        echo: (HeaderName, HeaderValue),
    ) -> Self {
        CellFuture { state: State::Called { fut, permit, classifier }, otel, echo: Some(echo) }
    }

    pub(crate) fn fallback(
        fut: TaskLocalFuture<Arc<CellContext>, FB>,
        classifier: C,
        otel: Option<opentelemetry::Context>,
        echo: (HeaderName, HeaderValue),
    ) -> Self {
        CellFuture { state: State::Fallback { fut, classifier }, otel, echo: Some(echo) }
    }

    pub(crate) fn forward(fut: TaskLocalFuture<Arc<CellContext>, Forwarding>, echo: (HeaderName, HeaderValue)) -> Self {
        CellFuture { state: State::Forward { fut }, otel: None, echo: Some(echo) }
    }

    /// The stack's own answer, the request id echoed on it.
    pub(crate) fn own(res: Response, echo: (HeaderName, HeaderValue)) -> Self {
        CellFuture { state: State::Answered { res: Some(res) }, otel: None, echo: Some(echo) }
    }

    /// An answer as it is (a refused context carries its echo already; an
    /// error's answer carries none, as with the separate layers).
    pub(crate) fn answered(res: Response) -> Self {
        CellFuture { state: State::Answered { res: Some(res) }, otel: None, echo: None }
    }
}

impl<F, C, FB> fmt::Debug for CellFuture<F, C, FB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Fallback { .. } => "fallback",
            State::Forward { .. } => "forward",
            State::Answered { .. } => "answered",
        };
        f.debug_struct("CellFuture").field("state", &state).finish()
    }
}

impl<F, C, FB, ResB, E, ResB2> Future for CellFuture<F, C, FB>
where
    F: Future<Output = Result<http::Response<ResB>, E>>,
    E: Into<BoxError>,
    C: RecordOutcome<http::Response<ResB>, E, Response = http::Response<ResB2>>,
    FB: Future<Output = Result<http::Response<ResB>, BoxError>>,
    ResB2: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResB2::Error: Into<BoxError>,
{
    type Output = Result<Response, std::convert::Infallible>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // An error's answer is not echoed: the separate layers answer errors
        // outside the context layer.
        let (answer, echoed) = match this.state.project() {
            StateProj::Called { fut, permit, classifier } => {
                let res = {
                    let _guard = this.otel.clone().map(opentelemetry::Context::attach);
                    std::task::ready!(fut.poll(cx))
                };
                let res = classifier.record(res, permit.take());
                let ok = res.is_ok();
                (breaker::answer(res), ok)
            }
            StateProj::Fallback { fut, classifier } => {
                let res = {
                    let _guard = this.otel.clone().map(opentelemetry::Context::attach);
                    std::task::ready!(fut.poll(cx))
                };
                let ok = res.is_ok();
                (breaker::answer(res.map(|r| classifier.pass(r))), ok)
            }
            StateProj::Forward { fut } => match std::task::ready!(fut.poll(cx)) {
                Ok(res) => (res.map(Body::new), true),
                Err(res) => (res.map(Body::new), true),
            },
            StateProj::Answered { res } => match res.take() {
                Some(res) => (res, true),
                None => return Poll::Pending,
            },
        };
        let echo_with = if echoed { this.echo.take() } else { None };
        Poll::Ready(Ok(echo(answer, echo_with)))
    }
}

/// Echoes the request id on a response that has none.
#[inline]
fn echo(mut res: Response, echo: Option<(HeaderName, HeaderValue)>) -> Response {
    if let Some((name, value)) = echo {
        res.headers_mut().entry(name).or_insert(value);
    }
    res
}
