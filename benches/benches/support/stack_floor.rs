//! The floor of the SDK stack's server-side job (what `cellsdk::CellLayer`
//! does, and the separate layers): only what no implementation of it can
//! skip, with nothing checked, in one hand-written service around the
//! application: the routing key and request id found (the request id generated
//! and written into the request when absent, 16 hex digits from a counter) and
//! handed to the handler by value in the request's extensions; the key's cell
//! looked up in the routing table (refused with 421 when it is not this cell);
//! a breaker's admission (one flag read, one counter added) and the outcome
//! recorded (one counter added for a 5xx); the request id echoed on the
//! response. Left out, although the stack does them: every value check but
//! UTF-8, the other context fields, the `Arc` and the task-local scope, the
//! breaker's window, clock and metrics, the other metrics.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};

use cellctx::CellId;
use cellrouter::TableStore;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};

const X_USER_ID: HeaderName = HeaderName::from_static("x-user-id");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// What the floor hands to the handler (by value, no `Arc`).
#[derive(Clone, Debug)]
pub(crate) struct Carried {
    pub(crate) routing_key: Option<HeaderValue>,
    pub(crate) request_id: HeaderValue,
}

/// The floor's breaker: admission is a flag, outcomes are counters.
#[derive(Debug, Default)]
pub(crate) struct FloorGate {
    pub(crate) open: AtomicBool,
    pub(crate) calls: AtomicU64,
    pub(crate) failures: AtomicU64,
}

/// The floor service (see the module docs). Cloned per request as axum
/// clones services: nothing but the inner service and two copies.
#[derive(Clone)]
pub(crate) struct Floor<S> {
    pub(crate) inner: S,
    pub(crate) store: TableStore,
    pub(crate) local: CellId,
    pub(crate) gate: &'static FloorGate,
}

impl<S> Floor<S> {
    pub(crate) fn new(inner: S, store: TableStore, local: CellId) -> Self {
        Floor { inner, store, local, gate: Box::leak(Box::default()) }
    }
}

/// A request id: 16 hex digits of a process-wide counter.
fn next_id() -> HeaderValue {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex digits")
}

impl<S, ReqB, ResB> tower::Service<Request<ReqB>> for Floor<S>
where
    S: tower::Service<Request<ReqB>, Response = Response<ResB>, Error = Infallible>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = Infallible;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let h = req.headers();
        let routing_key = h.get(X_USER_ID).cloned();
        let request_id = match h.get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = next_id();
                req.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        if let Some(key) = routing_key.as_ref().and_then(|k| k.to_str().ok()) {
            let table = self.store.load();
            let here = table.as_ref().and_then(|t| cellrouter::resolve(t, key).ok()).is_some_and(|r| *r.target == self.local);
            if !here {
                return FloorFuture::Refused;
            }
        }
        if self.gate.open.load(Ordering::Relaxed) {
            return FloorFuture::Open;
        }
        self.gate.calls.fetch_add(1, Ordering::Relaxed);
        let echo = request_id.clone();
        req.extensions_mut().insert(Carried { routing_key, request_id });
        FloorFuture::Inner { inner: self.inner.call(req), request_id: Some(echo), gate: self.gate }
    }
}

pin_project_lite::pin_project! {
    /// The floor's response future: the application's, with the outcome counted
    /// and the request id echoed. Not boxed (a floor allocates nothing it can
    /// avoid); the refusals are the rare paths.
    #[project = FloorProj]
    pub(crate) enum FloorFuture<F> {
        Inner { #[pin] inner: F, request_id: Option<HeaderValue>, gate: &'static FloorGate },
        Refused,
        Open,
    }
}

impl<F, ResB> Future for FloorFuture<F>
where
    F: Future<Output = Result<Response<ResB>, Infallible>>,
    ResB: Default,
{
    type Output = Result<Response<ResB>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let status = |s: StatusCode| {
            let mut res = Response::new(ResB::default());
            *res.status_mut() = s;
            Poll::Ready(Ok(res))
        };
        match self.project() {
            FloorProj::Inner { inner, request_id, gate } => {
                let Ok(mut res) = std::task::ready!(inner.poll(cx));
                if res.status().is_server_error() {
                    gate.failures.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(id) = request_id.take() {
                    res.headers_mut().insert(X_REQUEST_ID, id);
                }
                Poll::Ready(Ok(res))
            }
            FloorProj::Refused => status(StatusCode::MISDIRECTED_REQUEST),
            FloorProj::Open => status(StatusCode::SERVICE_UNAVAILABLE),
        }
    }
}
