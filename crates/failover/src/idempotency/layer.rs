//! [`IdempotencyLayer`]: answers a duplicate write with the response stored
//! for its key instead of applying it again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use cellrouter::retry::{IDEMPOTENCY_KEY_HEADER, is_idempotent};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use sqlx::AnyConnection;
use tower_layer::Layer;
use tower_service::Service;

use super::store::{IdempotencyStore, StoredResponse};
use crate::error::Error;

/// Header set on a response replayed from the store.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The body of an [`Idempotency`] response: the handler's own, or a stored
/// or buffered one.
pub type IdempotentBody<B> = Either<B, Full<Bytes>>;

/// The key of the write being handled, in the request's extensions for the
/// handler: record it in the write's transaction with
/// [`record_in`](Self::record_in) (atomic); otherwise the layer records the
/// response after the handler.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    key: Arc<str>,
    recorded: Arc<AtomicBool>,
}

impl IdempotencyKey {
    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Records `resp` for this key on `conn` (the write's transaction) in
    /// `store`; the layer then stores nothing more.
    pub async fn record_in(&self, store: &IdempotencyStore, conn: &mut AnyConnection, resp: &StoredResponse) -> Result<(), Error> {
        store.record_in(conn, &self.key, resp).await?;
        self.recorded.store(true, Ordering::Release);
        Ok(())
    }
}

/// Deduplicates writes (methods that are not idempotent: `POST`, `PATCH`)
/// that carry an `Idempotency-Key` header, against an
/// [`IdempotencyStore`] in the cell's database:
///
/// - a key already stored: the stored response, with `idempotent-replayed:
///   true`; the handler does not run;
/// - a new key: the handler runs with an [`IdempotencyKey`] in the request's
///   extensions; a response below 500 is stored unless the handler did it in
///   its transaction; a 5xx is not (a retry may apply the write);
/// - the store unreachable: 503, the handler does not run (nothing applied).
///
/// Other requests pass through untouched. Mount it in each cell, around the
/// write handlers, after `cellctx` and `cellrouter`'s layers.
#[derive(Debug, Clone)]
pub struct IdempotencyLayer {
    store: IdempotencyStore,
}

impl IdempotencyLayer {
    /// Deduplicates against `store`.
    pub fn new(store: IdempotencyStore) -> Self {
        IdempotencyLayer { store }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotency<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Idempotency { inner, store: self.store.clone() }
    }
}

/// The service of [`IdempotencyLayer`].
#[derive(Debug, Clone)]
pub struct Idempotency<S> {
    inner: S,
    store: IdempotencyStore,
}

impl<S> Idempotency<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutable.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The future of [`Idempotency`]: a store look-up, the handler, the
/// response stored.
pub struct ResponseFuture<T> {
    inner: BoxFuture<T>,
}

impl<T> std::fmt::Debug for ResponseFuture<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<T> Future for ResponseFuture<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        self.inner.as_mut().poll(cx)
    }
}

fn replay<B>(r: StoredResponse) -> Response<IdempotentBody<B>> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(r.body))));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    if let Some(ct) = r.content_type.and_then(|c| HeaderValue::from_str(&c).ok()) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    resp.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    resp
}

fn unavailable<B>(e: &Error) -> Response<IdempotentBody<B>> {
    tracing::warn!(error = %e, "idempotency store unavailable; write refused");
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(b"idempotency store unavailable\n"))));
    *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    resp
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + 'static,
    ResB::Error: std::fmt::Display,
{
    type Response = Response<IdempotentBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        // the ready service serves this call; a fresh clone takes its place
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let key = (!is_idempotent(req.method()))
            .then(|| req.headers().get(IDEMPOTENCY_KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned))
            .flatten();
        let Some(key) = key else {
            let fut = inner.call(req);
            return ResponseFuture { inner: Box::pin(async move { fut.await.map(|r| r.map(Either::Left)) }) };
        };
        let store = self.store.clone();
        ResponseFuture {
            inner: Box::pin(async move {
                match store.lookup(&key).await {
                    Ok(Some(stored)) => {
                        store.count_replay();
                        tracing::debug!(key, "duplicate write answered from the idempotency store");
                        return Ok(replay(stored));
                    }
                    Ok(None) => {}
                    Err(e) => return Ok(unavailable(&e)),
                }
                let handle = IdempotencyKey { key: key.as_str().into(), recorded: Arc::new(AtomicBool::new(false)) };
                req.extensions_mut().insert(handle.clone());
                let resp = inner.call(req).await?;
                if resp.status().is_server_error() || handle.recorded.load(Ordering::Acquire) {
                    return Ok(resp.map(Either::Left));
                }
                let (parts, body) = resp.into_parts();
                let bytes = match body.collect().await {
                    Ok(c) => c.to_bytes(),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "response body failed; not stored");
                        let mut r = Response::new(Either::Right(Full::new(Bytes::new())));
                        *r.status_mut() = StatusCode::BAD_GATEWAY;
                        return Ok(r);
                    }
                };
                let stored = StoredResponse {
                    status: parts.status.as_u16(),
                    content_type: parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned),
                    body: bytes.to_vec(),
                };
                if let Err(e) = store.record(&key, &stored).await {
                    tracing::warn!(key, error = %e, "response not stored for its idempotency key");
                }
                Ok(Response::from_parts(parts, Either::Right(Full::new(bytes))))
            }),
        }
    }
}
