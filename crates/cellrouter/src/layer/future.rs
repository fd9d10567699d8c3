//! [`ResponseFuture`] of the routing layer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use cellctx::CellContext;
use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;

use super::body::RouterBody;
use crate::metrics::{Outcome, RequestMetrics};

pin_project! {
    /// Response future of [`CellRouter`](super::CellRouter).
    #[project = Proj]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Local { #[pin] fut: TaskLocalFuture<Arc<CellContext>, F> },
        Forward { #[pin] fut: hyper_util::client::legacy::ResponseFuture, metrics: RequestMetrics },
        Ready { resp: Option<Response<http_body_util::Full<bytes::Bytes>>> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.state {
            State::Local { .. } => "Local",
            State::Forward { .. } => "Forward",
            State::Ready { .. } => "Ready",
        };
        f.debug_struct("ResponseFuture").field("state", &s).finish()
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn local(fut: TaskLocalFuture<Arc<CellContext>, F>) -> Self {
        ResponseFuture { state: State::Local { fut } }
    }
    pub(crate) fn forward(fut: hyper_util::client::legacy::ResponseFuture, metrics: RequestMetrics) -> Self {
        ResponseFuture { state: State::Forward { fut, metrics } }
    }
    pub(crate) fn ready(resp: Response<http_body_util::Full<bytes::Bytes>>) -> Self {
        ResponseFuture { state: State::Ready { resp: Some(resp) } }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<RouterBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Local { fut } => fut.poll(cx).map_ok(|r| r.map(RouterBody::inner)),
            StateProj::Forward { fut, metrics } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(r)) => Poll::Ready(Ok(r.map(RouterBody::forwarded))),
                Poll::Ready(Err(e)) => {
                    metrics.record(Outcome::ForwardError);
                    tracing::warn!(error = %e, "forwarding to the home cell failed");
                    let mut resp = Response::new(RouterBody::own("home cell unreachable\n"));
                    *resp.status_mut() = StatusCode::BAD_GATEWAY;
                    Poll::Ready(Ok(resp))
                }
            },
            StateProj::Ready { resp } => match resp.take() {
                Some(r) => Poll::Ready(Ok(r.map(RouterBody::own_full))),
                None => Poll::Pending,
            },
        }
    }
}
