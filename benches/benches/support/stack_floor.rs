//! The floor of the full stack's server-side job in the load harness: only what
//! no implementation of it can skip, with nothing checked, in one hand-written
//! service around the `Router`: the routing key and request id found and handed
//! to the handler by value in the request's extensions, the key's cell looked up
//! in the routing table (refused with 421 when it is not this cell), and the
//! request id echoed on the response. Left out, although the stack does them:
//! every value check but UTF-8, the other context fields, the `Arc` and the
//! task-local scope, the breaker's admission and outcome recording, metrics.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::future::RouteFuture;
use cellctx::CellId;
use cellrouter::TableStore;
use http::{HeaderValue, StatusCode};

use super::{X_REQUEST_ID, X_USER_ID};

/// What the floor hands to the handler (by value, no `Arc`).
#[derive(Clone, Debug)]
pub(crate) struct Carried {
    pub(crate) routing_key: Option<HeaderValue>,
    pub(crate) request_id: Option<HeaderValue>,
}

/// The floor service (see the module docs).
#[derive(Clone)]
pub(crate) struct Floor {
    pub(crate) inner: axum::Router,
    pub(crate) store: TableStore,
    pub(crate) local: CellId,
}

impl tower::Service<Request> for Floor {
    type Response = Response;
    type Error = Infallible;
    type Future = FloorFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request) -> FloorFuture {
        let h = req.headers();
        let carried = Carried { routing_key: h.get(X_USER_ID).cloned(), request_id: h.get(X_REQUEST_ID).cloned() };
        if let Some(key) = carried.routing_key.as_ref().and_then(|k| k.to_str().ok()) {
            let table = self.store.load();
            let here = table.as_ref().and_then(|t| cellrouter::resolve(t, key).ok()).is_some_and(|r| *r.target == self.local);
            if !here {
                return FloorFuture::Refused;
            }
        }
        let request_id = carried.request_id.clone();
        req.extensions_mut().insert(carried);
        FloorFuture::Inner { inner: self.inner.call(req), request_id }
    }
}

/// The floor's response future: the router's, with the request id echoed.
/// Not boxed (a floor allocates nothing it can avoid); the refusal is the rare path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum FloorFuture {
    Inner { inner: RouteFuture<Infallible>, request_id: Option<HeaderValue> },
    Refused,
}

impl Future for FloorFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            FloorFuture::Inner { inner, request_id } => {
                let Ok(mut res) = std::task::ready!(Pin::new(inner).poll(cx));
                if let Some(id) = request_id.take() {
                    res.headers_mut().insert(X_REQUEST_ID, id);
                }
                Poll::Ready(Ok(res))
            }
            FloorFuture::Refused => Poll::Ready(Ok(StatusCode::MISDIRECTED_REQUEST.into_response())),
        }
    }
}
