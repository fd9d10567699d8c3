//! [`CellContextService`]: the service the server layer makes.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Config;

/// Reads the cell context from each request (see [`CellContextLayer`](super::CellContextLayer)).
#[derive(Clone, Debug)]
pub struct CellContextService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> CellContextService<S> {
    pub(crate) fn new(inner: S, config: Arc<Config>) -> Self {
        CellContextService { inner, config }
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CellContextService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let admitted = self.config.admit(&mut parts);
        let req = Request::from_parts(parts, body);
        match admitted {
            Ok(super::Admitted { ctx, otel, echo }) => {
                let _guard = otel.clone().map(opentelemetry::Context::attach);
                let scoped = Arc::clone(&ctx);
                // One expression, so the inner future is built where it ends up (no moves).
                ResponseFuture::new(crate::scope(ctx, crate::scope::sync_scope(scoped, || self.inner.call(req))), otel, echo)
            }
            Err(refusal) => ResponseFuture::rejected(refusal),
        }
    }
}
