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
        let prepared = self.config.prepare(&parts.method, &parts.uri, &mut parts.headers);
        let mut req = Request::from_parts(parts, body);
        // Straight from the result into the `Arc` (one move of the context).
        let ctx = match prepared {
            Ok((ctx, identity)) => {
                if let Some(identity) = identity {
                    req.extensions_mut().insert(Arc::new(identity));
                }
                Arc::new(ctx)
            }
            Err(err) => {
                if matches!(err, crate::ContextError::Unauthenticated(_)) {
                    tracing::debug!(%err, "cellctx: unauthenticated request");
                } else {
                    self.config.metrics.header_rejected(&err);
                    tracing::debug!(%err, "cellctx: rejected request");
                }
                let names = &self.config.names;
                let id = req
                    .headers()
                    .get(&names.request_id)
                    .filter(|v| v.to_str().is_ok_and(|s| crate::validate_token(s).is_ok()))
                    .cloned()
                    .unwrap_or_else(|| crate::request_id::generate_token().into_header_value());
                let echo = Some((names.request_id.clone(), id));
                return ResponseFuture::rejected(err, super::body::is_grpc(req.headers()), echo);
            }
        };
        let names = &self.config.names;
        // The value read (or generated) by the extraction: no second lookup, no copy.
        let request_id = ctx.request_id.as_header_value().clone();
        if ctx.raw.request_id_generated {
            req.headers_mut().insert(names.request_id.clone(), request_id.clone());
        }
        let otel = if self.config.otel && ctx.traceparent.is_some() {
            crate::propagation::extract_otel(req.headers())
        } else {
            None
        };
        req.extensions_mut().insert(Arc::clone(&ctx));
        let echo = Some((names.request_id.clone(), request_id));
        let _guard = otel.clone().map(opentelemetry::Context::attach);
        let scoped = Arc::clone(&ctx);
        // One expression, so the inner future is built where it ends up (no moves).
        ResponseFuture::new(crate::scope(ctx, crate::scope::sync_scope(scoped, || self.inner.call(req))), otel, echo)
    }
}
