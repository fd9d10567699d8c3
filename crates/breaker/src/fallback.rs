//! Degradation: what an open breaker answers instead of an error.
//!
//! [`NoFallback`] (the default) fails the call with [`Error::Open`].
//! [`MethodFallback`] picks a fallback service by HTTP method; its responses
//! carry `X-Downgraded: true`, and the request it sees has its
//! `Arc<CellContext>` extension replaced by a copy with `downgraded = true`
//! (the copy is also the task-local [`cellctx::current`] while it runs). The
//! rejection ([`Rejected`]) is in the request extensions too.

use std::fmt;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use cellctx::CellContext;
use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::BoxError;
use tower::util::{BoxCloneSyncService, Oneshot, ServiceExt};

use crate::error::Error;

/// The `X-Downgraded` header.
pub static X_DOWNGRADED: HeaderName = HeaderName::from_static("x-downgraded");

/// Why a call was not forwarded; given to fallbacks (and put in the request
/// extensions by [`MethodFallback`]).
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The breaker that rejected the call.
    pub breaker: Arc<str>,
    /// The retry hint.
    pub retry_after: Duration,
}

/// Answers a call the breaker rejected.
pub trait Fallback<Req, Res>: Clone {
    /// The answer's future.
    type Future: Future<Output = Result<Res, BoxError>>;
    /// Answers `req`, rejected as `rejected`.
    fn fallback(&mut self, req: Req, rejected: Rejected) -> Self::Future;
}

/// No degradation: a rejected call fails with [`Error::Open`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFallback;

impl<Req, Res> Fallback<Req, Res> for NoFallback {
    type Future = Ready<Result<Res, BoxError>>;
    fn fallback(&mut self, _: Req, rejected: Rejected) -> Self::Future {
        ready(Err(Box::new(Error::Open { retry_after: rejected.retry_after })))
    }
}

/// A boxed fallback service.
pub type FallbackService<ReqB, ResB> = BoxCloneSyncService<Request<ReqB>, Response<ResB>, BoxError>;

/// Fallback services by HTTP method, with an optional default; methods
/// without one fail with [`Error::Open`].
///
/// ```
/// use breaker::fallback::{MethodFallback, unavailable};
/// use http::{Method, Request, Response};
/// use tower::service_fn;
///
/// let fb: MethodFallback<String, String> = MethodFallback::new()
///     .on(Method::GET, service_fn(|_req: Request<String>| async {
///         Ok::<_, tower::BoxError>(Response::new("cached".to_string()))
///     }))
///     .on(Method::POST, unavailable());
/// ```
pub struct MethodFallback<ReqB, ResB> {
    routes: Vec<(Method, FallbackService<ReqB, ResB>)>,
    otherwise: Option<FallbackService<ReqB, ResB>>,
}

impl<ReqB, ResB> Clone for MethodFallback<ReqB, ResB> {
    fn clone(&self) -> Self {
        MethodFallback { routes: self.routes.clone(), otherwise: self.otherwise.clone() }
    }
}

impl<ReqB, ResB> fmt::Debug for MethodFallback<ReqB, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MethodFallback")
            .field("methods", &self.routes.iter().map(|(m, _)| m.as_str()).collect::<Vec<_>>())
            .field("otherwise", &self.otherwise.is_some())
            .finish()
    }
}

impl<ReqB, ResB> Default for MethodFallback<ReqB, ResB> {
    fn default() -> Self {
        MethodFallback { routes: Vec::new(), otherwise: None }
    }
}

impl<ReqB: 'static, ResB: 'static> MethodFallback<ReqB, ResB> {
    /// No fallbacks yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves rejected `method` calls with `svc`.
    pub fn on<S>(mut self, method: Method, svc: S) -> Self
    where
        S: tower::Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        let svc = BoxCloneSyncService::new(svc.map_err(Into::into));
        self.routes.retain(|(m, _)| *m != method);
        self.routes.push((method, svc));
        self
    }

    /// Serves rejected calls of every other method with `svc`.
    pub fn otherwise<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        self.otherwise = Some(BoxCloneSyncService::new(svc.map_err(Into::into)));
        self
    }
}

/// A fallback service answering `503 Service Unavailable` with `Retry-After`
/// (whole seconds, rounded up) and an empty body.
pub fn unavailable<ReqB, ResB>() -> FallbackService<ReqB, ResB>
where
    ReqB: Send + 'static,
    ResB: Default + Send + 'static,
{
    BoxCloneSyncService::new(tower::service_fn(|req: Request<ReqB>| {
        let secs = req.extensions().get::<Rejected>().map(|r| retry_secs(r.retry_after)).unwrap_or(1);
        let mut res = Response::new(ResB::default());
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        res.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        ready(Ok::<_, BoxError>(res))
    }))
}

/// `d` in whole seconds, rounded up, at least 1.
pub(crate) fn retry_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

type Call<ReqB, ResB> = Oneshot<FallbackService<ReqB, ResB>, Request<ReqB>>;

pin_project! {
    /// The future of a [`MethodFallback`] answer.
    pub struct FallbackFuture<ReqB, ResB> {
        #[pin]
        inner: FbInner<ReqB, ResB>,
    }
}

pin_project! {
    #[project = FbProj]
    enum FbInner<ReqB, ResB> {
        Scoped { #[pin] fut: TaskLocalFuture<Arc<CellContext>, Call<ReqB, ResB>> },
        Plain { #[pin] fut: Call<ReqB, ResB> },
        Reject { retry_after: Duration },
    }
}

impl<ReqB, ResB> fmt::Debug for FallbackFuture<ReqB, ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FallbackFuture")
    }
}

impl<ReqB, ResB> Future for FallbackFuture<ReqB, ResB> {
    type Output = Result<Response<ResB>, BoxError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let res = match self.project().inner.project() {
            FbProj::Scoped { fut } => fut.poll(cx),
            FbProj::Plain { fut } => fut.poll(cx),
            FbProj::Reject { retry_after } => return Poll::Ready(Err(Box::new(Error::Open { retry_after: *retry_after }))),
        };
        res.map_ok(|mut res| {
            res.headers_mut().insert(X_DOWNGRADED.clone(), HeaderValue::from_static("true"));
            res
        })
    }
}

/// Marks the request's context downgraded; returns the new context.
pub(crate) fn mark_downgraded<B>(req: &mut Request<B>) -> Option<Arc<CellContext>> {
    let base = req.extensions().get::<Arc<CellContext>>().cloned().or_else(cellctx::current)?;
    let mut ctx = (*base).clone();
    ctx.downgraded = true;
    let ctx = Arc::new(ctx);
    req.extensions_mut().insert(Arc::clone(&ctx));
    Some(ctx)
}

impl<ReqB: 'static, ResB: 'static> Fallback<Request<ReqB>, Response<ResB>> for MethodFallback<ReqB, ResB> {
    type Future = FallbackFuture<ReqB, ResB>;

    fn fallback(&mut self, mut req: Request<ReqB>, rejected: Rejected) -> Self::Future {
        let svc = self.routes.iter().find(|(m, _)| m == req.method()).map(|(_, s)| s).or(self.otherwise.as_ref());
        let Some(svc) = svc.cloned() else {
            return FallbackFuture { inner: FbInner::Reject { retry_after: rejected.retry_after } };
        };
        let ctx = mark_downgraded(&mut req);
        req.extensions_mut().insert(rejected);
        let call = svc.oneshot(req);
        let inner = match ctx {
            Some(ctx) => FbInner::Scoped { fut: cellctx::scope(ctx, call) },
            None => FbInner::Plain { fut: call },
        };
        FallbackFuture { inner }
    }
}
