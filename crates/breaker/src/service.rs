//! [`CircuitBreaker`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::BoxError;
use tower_service::Service;

use crate::breaker::Breaker;
use crate::classify::Classify;
use crate::error::Error;
use crate::fallback::{Fallback, Rejected};
use crate::future::ResponseFuture;
use crate::key::{Extract, KeyExtractor};
use crate::registry::Registry;

/// Wraps a service with circuit breakers from a [`Registry`]; made by
/// [`crate::CircuitBreakerLayer`].
///
/// Readiness is the inner service's; an open breaker rejects in `call` (with
/// [`Error::Open`], boxed, or the fallback's answer) without calling the inner
/// service, whose readiness stays reserved for the next call.
pub struct CircuitBreaker<S, K: KeyExtractor, C, F> {
    inner: S,
    registry: Arc<Registry<K::Key>>,
    key: K,
    classifier: C,
    fallback: F,
    cache: Option<(u64, K::Key, Arc<Breaker>)>,
}

impl<S, K: KeyExtractor, C, F> CircuitBreaker<S, K, C, F> {
    pub(crate) fn new(inner: S, registry: Arc<Registry<K::Key>>, key: K, classifier: C, fallback: F) -> Self {
        CircuitBreaker { inner, registry, key, classifier, fallback, cache: None }
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
        &self.registry
    }
}

impl<S: Clone, K: KeyExtractor, C: Clone, F: Clone> Clone for CircuitBreaker<S, K, C, F> {
    fn clone(&self) -> Self {
        CircuitBreaker {
            inner: self.inner.clone(),
            registry: Arc::clone(&self.registry),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
            fallback: self.fallback.clone(),
            cache: self.cache.clone(),
        }
    }
}

impl<S: fmt::Debug, K: KeyExtractor + fmt::Debug, C: fmt::Debug, F: fmt::Debug> fmt::Debug for CircuitBreaker<S, K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("registry", &self.registry)
            .field("key", &self.key)
            .field("classifier", &self.classifier)
            .field("fallback", &self.fallback)
            .finish()
    }
}

impl<S, K, C, F, Req> Service<Req> for CircuitBreaker<S, K, C, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Extract<Req>,
    C: Classify<S::Response, S::Error> + Clone,
    F: Fallback<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, F::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.key.extract(&req);
        let epoch = self.registry.epoch();
        let cached = matches!(&self.cache, Some((e, k, _)) if *e == epoch && *k == key);
        if !cached {
            match self.registry.get_or_create(&key, |k| self.key.name(k)) {
                Ok(b) => self.cache = Some((epoch, key, b)),
                Err(e) => {
                    // Only reachable with a config the registry failed to apply:
                    // fail open rather than fail every call.
                    tracing::warn!(error = %e, "breaker unavailable; calling through");
                    return ResponseFuture::called(self.inner.call(req), None, self.classifier.clone());
                }
            }
        }
        // Borrowed from the cache: the permit's `Arc` is the only clone per call.
        let Some((_, _, breaker)) = &self.cache else {
            return ResponseFuture::called(self.inner.call(req), None, self.classifier.clone());
        };
        match breaker.try_acquire() {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), Some(permit), self.classifier.clone()),
            Err(err) => {
                let retry_after = match err {
                    Error::Open { retry_after } => retry_after,
                    _ => std::time::Duration::ZERO,
                };
                let rejected = Rejected { breaker: Arc::clone(breaker.name_arc()), retry_after };
                ResponseFuture::fallback(self.fallback.fallback(req, rejected))
            }
        }
    }
}
