//! [`CellService`]: the fused stack's service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use breaker::key::{Extract, KeyExtractor};
use breaker::{Admission, Fallback, RecordOutcome};
use cellctx::Admitted;
use cellrouter::Route;
use http::{Request, Response};
use tower::BoxError;
use tower_service::Service;

use crate::future::CellFuture;
use crate::layer::Shared;

/// The service [`CellLayer`](crate::CellLayer) makes: never fails (errors are
/// answered as `breaker::AnswerErrorsLayer` answers them).
pub struct CellService<S, K: KeyExtractor, C, F> {
    inner: S,
    shared: Arc<Shared<K, C, F>>,
    /// An error the inner service gave instead of readiness, answered to the next call.
    not_ready: Option<BoxError>,
}

impl<S, K: KeyExtractor, C, F> CellService<S, K, C, F> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<K, C, F>>) -> Self {
        CellService { inner, shared, not_ready: None }
    }

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

impl<S: Clone, K: KeyExtractor, C, F> Clone for CellService<S, K, C, F> {
    fn clone(&self) -> Self {
        // A clone has not been polled ready.
        CellService { inner: self.inner.clone(), shared: Arc::clone(&self.shared), not_ready: None }
    }
}

impl<S: fmt::Debug, K: KeyExtractor + fmt::Debug, C: fmt::Debug, F: fmt::Debug> fmt::Debug for CellService<S, K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellService").field("inner", &self.inner).field("layer", &self.shared).finish()
    }
}

impl<S, K, C, F, ReqB, ResB, ResB2> Service<Request<ReqB>> for CellService<S, K, C, F>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ReqB: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    K: Extract<Request<ReqB>>,
    C: RecordOutcome<Response<ResB>, S::Error, Response = Response<ResB2>> + Clone,
    F: Fallback<Request<ReqB>, Response<ResB>>,
    ResB2: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResB2::Error: Into<BoxError>,
{
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = CellFuture<S::Future, C, F::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        breaker::poll_ready_answering::<S, Request<ReqB>>(&mut self.inner, &mut self.not_ready, cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        if let Some(err) = self.not_ready.take() {
            return CellFuture::answered(breaker::handle_error(err));
        }
        let shared = &*self.shared;
        let (mut parts, body) = req.into_parts();
        let Admitted { ctx, otel, echo } = match shared.ctx.admit(&mut parts) {
            Ok(admitted) => admitted,
            Err(refusal) => return CellFuture::answered((*refusal).into_response::<Body>().map(Body::new)),
        };
        let req = Request::from_parts(parts, body);
        match shared.routing.route_once(req, Some(ctx)) {
            Route::Local { req, ctx, .. } => {
                let classifier = shared.gate.classifier().clone();
                match shared.gate.admit_shared(req) {
                    Admission::Call(req, permit) => {
                        let _guard = otel.clone().map(opentelemetry::Context::attach);
                        let scoped = Arc::clone(&ctx);
                        // One expression, so the inner future is built where it ends up.
                        CellFuture::called(
                            cellctx::scope(ctx, cellctx::sync_scope(scoped, || self.inner.call(req))),
                            permit,
                            classifier,
                            otel,
                            echo,
                        )
                    }
                    Admission::Fallback(fut) => CellFuture::fallback(cellctx::scope(ctx, fut), classifier, otel, echo),
                }
            }
            Route::Answer(res) => CellFuture::own(res.map(Body::new), echo),
            Route::Forward { fut, ctx } => CellFuture::forward(cellctx::scope(ctx, fut), echo),
        }
    }
}
