//! [`CircuitBreaker`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::BoxError;
use tower_service::Service;

use crate::classify::RecordOutcome;
use crate::fallback::Fallback;
use crate::future::ResponseFuture;
use crate::gate::{Admission, Gate};
use crate::key::{Extract, KeyExtractor};
use crate::registry::Registry;

/// Wraps a service with circuit breakers from a [`Registry`]; made by
/// [`crate::CircuitBreakerLayer`].
///
/// Readiness is the inner service's; an open breaker rejects in `call` (with
/// [`Error`](crate::Error::Open), boxed, or the fallback's answer) without
/// calling the inner service, whose readiness stays reserved for the next call.
pub struct CircuitBreaker<S, K: KeyExtractor, C, F> {
    inner: S,
    /// The admission: registry, key, classifier, fallback and the cached breaker.
    gate: Gate<K, C, F>,
}

impl<S, K: KeyExtractor, C, F> CircuitBreaker<S, K, C, F> {
    pub(crate) fn new(inner: S, gate: Gate<K, C, F>) -> Self {
        CircuitBreaker { inner, gate }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The registry of breakers.
    pub fn registry(&self) -> &Arc<Registry<K::Key>> {
        self.gate.registry()
    }
}

impl<S: Clone, K: KeyExtractor, C, F> Clone for CircuitBreaker<S, K, C, F> {
    fn clone(&self) -> Self {
        CircuitBreaker { inner: self.inner.clone(), gate: self.gate.clone() }
    }
}

impl<S: fmt::Debug, K: KeyExtractor + fmt::Debug, C: fmt::Debug, F: fmt::Debug> fmt::Debug for CircuitBreaker<S, K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker").field("inner", &self.inner).field("gate", &self.gate).finish()
    }
}

impl<S, K, C, F, Req> Service<Req> for CircuitBreaker<S, K, C, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Extract<Req>,
    C: RecordOutcome<S::Response, S::Error> + Clone,
    F: Fallback<Req, S::Response>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, F::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let classifier = self.gate.classifier().clone();
        match self.gate.admit(req) {
            Admission::Call(req, permit) => ResponseFuture::called(self.inner.call(req), permit, classifier),
            Admission::Fallback(fut) => ResponseFuture::fallback(fut, classifier),
        }
    }
}
