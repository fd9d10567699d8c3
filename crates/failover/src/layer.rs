//! [`OutcomeLayer`]: reports every response's outcome (and latency) to the
//! decision engine and, optionally, the SLA tracker.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use cellctx::{CellContext, CellId};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use crate::outcome::OutcomeReporter;
use crate::sla::{Cause, SlaTracker};

#[derive(Debug)]
struct Shared {
    reporter: OutcomeReporter,
    sla: Option<Arc<SlaTracker>>,
    cell: Option<CellId>,
}

/// Reports each response to an [`OutcomeReporter`]: a 5xx answer or an error is
/// a failure, anything else a success. The cell is the request context's cell
/// (`Arc<CellContext>` in the extensions), else the layer's fixed cell; a
/// request with neither is not reported.
#[derive(Debug, Clone)]
pub struct OutcomeLayer {
    shared: Arc<Shared>,
}

impl OutcomeLayer {
    /// Reports to `reporter`.
    pub fn new(reporter: OutcomeReporter) -> Self {
        OutcomeLayer { shared: Arc::new(Shared { reporter, sla: None, cell: None }) }
    }

    /// Also records every request in `sla` (failures blamed on the cell).
    pub fn with_sla(self, sla: Arc<SlaTracker>) -> Self {
        let s = &self.shared;
        OutcomeLayer { shared: Arc::new(Shared { reporter: s.reporter.clone(), sla: Some(sla), cell: s.cell.clone() }) }
    }

    /// Reports requests without a context cell as `cell`'s.
    pub fn with_cell(self, cell: CellId) -> Self {
        let s = &self.shared;
        OutcomeLayer { shared: Arc::new(Shared { reporter: s.reporter.clone(), sla: s.sla.clone(), cell: Some(cell) }) }
    }
}

impl<S> Layer<S> for OutcomeLayer {
    type Service = Outcome<S>;
    fn layer(&self, inner: S) -> Outcome<S> {
        Outcome { inner, shared: self.shared.clone() }
    }
}

/// The service made by [`OutcomeLayer`].
#[derive(Debug, Clone)]
pub struct Outcome<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Outcome<S> {
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

impl<S, B, R> Service<Request<B>> for Outcome<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cell = req.extensions().get::<Arc<CellContext>>().and_then(|c| c.cell().cloned()).or_else(|| self.shared.cell.clone());
        let track = cell.map(|cell| (cell, self.shared.clone(), Instant::now()));
        ResponseFuture { inner: self.inner.call(req), track }
    }
}

pin_project! {
    /// The response future of [`Outcome`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        track: Option<(CellId, Arc<Shared>, Instant)>,
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        if let Some((cell, shared, start)) = this.track.take() {
            let ok = matches!(&res, Ok(r) if !r.status().is_server_error());
            let latency = start.elapsed();
            shared.reporter.report(&cell, ok, latency);
            if let Some(sla) = &shared.sla {
                sla.record(&cell, latency, (!ok).then_some(Cause::Cell));
            }
        }
        Poll::Ready(res)
    }
}
