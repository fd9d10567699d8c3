//! [`CellLayer`]: the fused stack's layer.

use std::fmt;
use std::sync::Arc;

use breaker::key::{Downstream, KeyExtractor};
use breaker::{CircuitBreakerLayer, Gate, HttpClassifier, NoFallback};
use cellctx::CellContextLayer;
use cellrouter::{CellRouterLayer, Routing};
use tower_layer::Layer;

use crate::service::CellService;

/// The cell context, the routing decision and the breaker's admission as one
/// layer (see the [crate docs](crate)). Cheap to clone: every service it makes
/// shares one set of parts.
pub struct CellLayer<K: KeyExtractor = Downstream, C = HttpClassifier, F = NoFallback> {
    shared: Arc<Shared<K, C, F>>,
}

/// What every service of one [`CellLayer`] shares (one reference count).
pub(crate) struct Shared<K: KeyExtractor, C, F> {
    pub(crate) ctx: CellContextLayer,
    pub(crate) routing: Routing,
    pub(crate) gate: Gate<K, C, F>,
}

impl<K: KeyExtractor, C: Clone, F: Clone> CellLayer<K, C, F> {
    /// The fused stack of these three layers, configured as they would be to
    /// be stacked: `ctx` outermost, then `router`, then `breaker` (whose
    /// registry, key, classifier and fallback the fused layer shares).
    pub fn new(ctx: CellContextLayer, router: CellRouterLayer, breaker: CircuitBreakerLayer<K, C, F>) -> Self {
        CellLayer { shared: Arc::new(Shared { ctx, routing: router.routing(), gate: breaker.gate() }) }
    }
}

impl<K: KeyExtractor, C, F> CellLayer<K, C, F> {
    /// The breakers' registry (shared with the breaker layer given to [`new`](Self::new)).
    pub fn registry(&self) -> &Arc<breaker::Registry<K::Key>> {
        self.shared.gate.registry()
    }
}

impl<K: KeyExtractor, C, F> Clone for CellLayer<K, C, F> {
    fn clone(&self) -> Self {
        CellLayer { shared: Arc::clone(&self.shared) }
    }
}

impl<K: KeyExtractor + fmt::Debug, C: fmt::Debug, F: fmt::Debug> fmt::Debug for CellLayer<K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl<K: KeyExtractor + fmt::Debug, C: fmt::Debug, F: fmt::Debug> fmt::Debug for Shared<K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CellLayer").field("ctx", &self.ctx).field("routing", &self.routing).field("gate", &self.gate).finish()
    }
}

impl<S, K: KeyExtractor, C, F> Layer<S> for CellLayer<K, C, F> {
    type Service = CellService<S, K, C, F>;

    fn layer(&self, inner: S) -> Self::Service {
        CellService::new(inner, Arc::clone(&self.shared))
    }
}
