//! [`ResponseFuture`] of the routing layer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use cellctx::CellContext;
use http::Response;
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;

use super::body::RouterBody;

/// A forwarded request: the forwarded response, or the layer's own answer
/// (502, 504). Boxed: forwarding does I/O anyway, and the local path's future
/// stays small.
type ForwardFuture =
    Pin<Box<dyn Future<Output = Result<Response<super::forward::ForwardBody>, Response<Full<Bytes>>>> + Send>>;

/// A request forwarded to its home cell ([`Route::Forward`](super::Route::Forward)):
/// resolves to the home cell's response, or to the layer's own answer when
/// the forward failed (502) or timed out (504).
pub struct Forwarding(pub(crate) ForwardFuture);

impl std::fmt::Debug for Forwarding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forwarding")
    }
}

impl Future for Forwarding {
    type Output = Result<Response<super::forward::ForwardBody>, Response<Full<Bytes>>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}

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
        // Served locally, inside a task-local scope of the (updated) context.
        Local { #[pin] fut: TaskLocalFuture<Arc<CellContext>, F> },
        // Served locally, already inside the scope of the same context.
        Scoped { #[pin] fut: F },
        Forward { fut: Forwarding },
        Ready { resp: Option<Box<Response<Full<Bytes>>>> },
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self.state {
            State::Local { .. } => "Local",
            State::Scoped { .. } => "Scoped",
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
    pub(crate) fn scoped(fut: F) -> Self {
        ResponseFuture { state: State::Scoped { fut } }
    }
    pub(crate) fn forward(fut: Forwarding) -> Self {
        ResponseFuture { state: State::Forward { fut } }
    }
    pub(crate) fn ready(resp: Response<Full<Bytes>>) -> Self {
        ResponseFuture { state: State::Ready { resp: Some(Box::new(resp)) } }
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
            StateProj::Scoped { fut } => fut.poll(cx).map_ok(|r| r.map(RouterBody::inner)),
            StateProj::Forward { fut } => match Pin::new(fut).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(r)) => Poll::Ready(Ok(r.map(RouterBody::forwarded))),
                Poll::Ready(Err(r)) => Poll::Ready(Ok(r.map(RouterBody::own_full))),
            },
            StateProj::Ready { resp } => match resp.take() {
                Some(r) => Poll::Ready(Ok((*r).map(RouterBody::own_full))),
                None => Poll::Pending,
            },
        }
    }
}
