//! [`CircuitBreaker`]: the service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::BoxError;
use tower_service::Service;

use crate::breaker::Breaker;
use crate::classify::RecordOutcome;
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
    /// What every clone shares: one reference count per clone, however many parts.
    parts: Arc<Parts<K, C, F>>,
    /// The last breaker used, against the registry's epoch (warmed when the
    /// layer makes the service, for keys that do not depend on the request).
    cache: Option<(u64, K::Key, Arc<Breaker>)>,
}

/// The parts of a [`CircuitBreaker`] that never change.
struct Parts<K: KeyExtractor, C, F> {
    registry: Arc<Registry<K::Key>>,
    key: K,
    classifier: C,
    fallback: F,
}

impl<S, K: KeyExtractor, C, F> CircuitBreaker<S, K, C, F> {
    pub(crate) fn new(inner: S, registry: Arc<Registry<K::Key>>, key: K, classifier: C, fallback: F) -> Self {
        let cache = warm(&registry, &key);
        CircuitBreaker { inner, parts: Arc::new(Parts { registry, key, classifier, fallback }), cache }
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
        &self.parts.registry
    }
}

/// The breaker of a key that does not depend on the request, looked up now,
/// with the registry epoch it is valid for (`None` when the key depends on the
/// request, or the registry could not make the breaker: calls look it up then).
fn warm<K: KeyExtractor>(registry: &Registry<K::Key>, key: &K) -> Option<(u64, K::Key, Arc<Breaker>)> {
    let k = key.fixed_key()?;
    // Creating the breaker bumps the epoch: the second round finds it made.
    for _ in 0..2 {
        let epoch = registry.epoch();
        let breaker = registry.get_or_create(&k, |k| key.name(k)).ok()?;
        if registry.epoch() == epoch {
            return Some((epoch, k, breaker));
        }
    }
    None
}

impl<S: Clone, K: KeyExtractor, C, F> Clone for CircuitBreaker<S, K, C, F> {
    fn clone(&self) -> Self {
        CircuitBreaker { inner: self.inner.clone(), parts: Arc::clone(&self.parts), cache: self.cache.clone() }
    }
}

impl<S: fmt::Debug, K: KeyExtractor + fmt::Debug, C: fmt::Debug, F: fmt::Debug> fmt::Debug for CircuitBreaker<S, K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("registry", &self.parts.registry)
            .field("key", &self.parts.key)
            .field("classifier", &self.parts.classifier)
            .field("fallback", &self.parts.fallback)
            .finish()
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
        let parts = &*self.parts;
        let key = parts.key.extract(&req);
        let epoch = parts.registry.epoch();
        let cached = matches!(&self.cache, Some((e, k, _)) if *e == epoch && *k == key);
        if !cached {
            match parts.registry.get_or_create(&key, |k| parts.key.name(k)) {
                Ok(b) => self.cache = Some((epoch, key, b)),
                Err(e) => {
                    // Only reachable with a config the registry failed to apply:
                    // fail open rather than fail every call.
                    tracing::warn!(error = %e, "breaker unavailable; calling through");
                    return ResponseFuture::called(self.inner.call(req), None, parts.classifier.clone());
                }
            }
        }
        // Borrowed from the cache: the permit's `Arc` is the only clone per call.
        let Some((_, _, breaker)) = &self.cache else {
            return ResponseFuture::called(self.inner.call(req), None, parts.classifier.clone());
        };
        match breaker.try_acquire() {
            Ok(permit) => ResponseFuture::called(self.inner.call(req), Some(permit), parts.classifier.clone()),
            Err(err) => {
                let retry_after = match err {
                    Error::Open { retry_after } => retry_after,
                    _ => std::time::Duration::ZERO,
                };
                let rejected = Rejected { breaker: Arc::clone(breaker.name_arc()), retry_after };
                // The fallback is shared: a clone answers (as a tower service is cloned to be called).
                ResponseFuture::fallback(parts.fallback.clone().fallback(req, rejected), parts.classifier.clone())
            }
        }
    }
}
