//! [`Gate`]: the breaker's admission of one call, shared by
//! [`CircuitBreaker`](crate::CircuitBreaker) and services that fuse the breaker
//! with other layers.

use std::fmt;
use std::sync::Arc;

use crate::breaker::{Breaker, Permit};
use crate::error::Error;
use crate::fallback::{Fallback, Rejected};
use crate::key::{Extract, KeyExtractor};
use crate::registry::Registry;

/// What the breaker decided for one call: call through with a permit (record
/// the outcome into it with the classifier's
/// [`RecordOutcome::record`](crate::RecordOutcome::record)), or answer with the
/// fallback's future without calling the inner service.
#[derive(Debug)]
pub enum Admission<Req, FB> {
    /// Call the inner service; `None` when the breaker is unavailable (a
    /// config the registry failed to apply: calls go through unrecorded).
    Call(Req, Option<Permit>),
    /// The breaker rejected the call: this is the fallback's answer.
    Fallback(FB),
}

/// The admission side of a circuit breaker (made by
/// [`CircuitBreakerLayer::gate`](crate::CircuitBreakerLayer::gate)): looks the
/// call's breaker up (cached against the registry's epoch), takes a permit or
/// asks the fallback. Cloning shares the registry, key, classifier and
/// fallback (one reference count).
pub struct Gate<K: KeyExtractor, C, F> {
    /// What every clone shares: one reference count per clone, however many parts.
    parts: Arc<Parts<K, C, F>>,
    /// The last breaker used, against the registry's epoch (warmed when the
    /// gate is made, for keys that do not depend on the request).
    cache: Option<(u64, K::Key, Arc<Breaker>)>,
}

/// The parts of a [`Gate`] that never change.
struct Parts<K: KeyExtractor, C, F> {
    registry: Arc<Registry<K::Key>>,
    key: K,
    classifier: C,
    fallback: F,
}

impl<K: KeyExtractor, C, F> Gate<K, C, F> {
    pub(crate) fn new(registry: Arc<Registry<K::Key>>, key: K, classifier: C, fallback: F) -> Self {
        let cache = warm(&registry, &key);
        Gate { parts: Arc::new(Parts { registry, key, classifier, fallback }), cache }
    }

    /// The registry of breakers.
    pub fn registry(&self) -> &Arc<Registry<K::Key>> {
        &self.parts.registry
    }

    /// The classifier that records a call's outcome.
    pub fn classifier(&self) -> &C {
        &self.parts.classifier
    }

    /// Admits `req`, or answers it with the fallback when its breaker rejects it.
    #[inline]
    pub fn admit<Req, Res>(&mut self, req: Req) -> Admission<Req, F::Future>
    where
        K: Extract<Req>,
        F: Fallback<Req, Res>,
    {
        let (key, epoch) = self.key_of(&req);
        if !self.cached(epoch, &key) {
            match self.lookup(&key) {
                Some(b) => self.cache = Some((epoch, key, b)),
                None => return Admission::Call(req, None),
            }
        }
        // Borrowed from the cache: the permit's `Arc` is the only clone per call.
        match &self.cache {
            Some((_, _, breaker)) => acquire(&self.parts, breaker, req),
            None => Admission::Call(req, None),
        }
    }

    /// [`admit`](Self::admit) through a shared reference: the cached breaker
    /// when it is still current (a key that does not depend on the request
    /// has it from the start), else a registry lookup for this call only.
    #[inline]
    pub fn admit_shared<Req, Res>(&self, req: Req) -> Admission<Req, F::Future>
    where
        K: Extract<Req>,
        F: Fallback<Req, Res>,
    {
        let (key, epoch) = self.key_of(&req);
        match &self.cache {
            Some((_, _, breaker)) if self.cached(epoch, &key) => acquire(&self.parts, breaker, req),
            _ => match self.lookup(&key) {
                Some(breaker) => acquire(&self.parts, &breaker, req),
                None => Admission::Call(req, None),
            },
        }
    }

    /// The request's key, and the registry's epoch now.
    #[inline]
    fn key_of<Req>(&self, req: &Req) -> (K::Key, u64)
    where
        K: Extract<Req>,
    {
        (self.parts.key.extract(req), self.parts.registry.epoch())
    }

    /// Whether the cached breaker is the one of `key` at `epoch`.
    #[inline]
    fn cached(&self, epoch: u64, key: &K::Key) -> bool {
        matches!(&self.cache, Some((e, k, _)) if *e == epoch && k == key)
    }

    /// The breaker of `key` from the registry; `None` only with a config the
    /// registry failed to apply: calls go through then (fail open rather than
    /// fail every call).
    #[cold]
    fn lookup(&self, key: &K::Key) -> Option<Arc<Breaker>> {
        let parts = &*self.parts;
        match parts.registry.get_or_create(key, |k| parts.key.name(k)) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "breaker unavailable; calling through");
                None
            }
        }
    }
}

/// A permit of `breaker` for `req`, or the fallback's answer.
#[inline]
fn acquire<K: KeyExtractor, C, F, Req, Res>(parts: &Parts<K, C, F>, breaker: &Arc<Breaker>, req: Req) -> Admission<Req, F::Future>
where
    F: Fallback<Req, Res>,
{
    match breaker.try_acquire() {
        Ok(permit) => Admission::Call(req, Some(permit)),
        Err(err) => {
            let retry_after = match err {
                Error::Open { retry_after } => retry_after,
                _ => std::time::Duration::ZERO,
            };
            let rejected = Rejected { breaker: Arc::clone(breaker.name_arc()), retry_after };
            // The fallback is shared: a clone answers (as a tower service is cloned to be called).
            Admission::Fallback(parts.fallback.clone().fallback(req, rejected))
        }
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

impl<K: KeyExtractor, C, F> Clone for Gate<K, C, F> {
    fn clone(&self) -> Self {
        Gate { parts: Arc::clone(&self.parts), cache: self.cache.clone() }
    }
}

impl<K: KeyExtractor + fmt::Debug, C: fmt::Debug, F: fmt::Debug> fmt::Debug for Gate<K, C, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gate")
            .field("registry", &self.parts.registry)
            .field("key", &self.parts.key)
            .field("classifier", &self.parts.classifier)
            .field("fallback", &self.parts.fallback)
            .finish()
    }
}
