//! Key extractors: which breaker a request belongs to.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::Arc;

use http::{Method, Request};

/// Names the breakers of one key type. See [`Extract`] for the per-request half.
pub trait KeyExtractor: Clone + Send + Sync + 'static {
    /// The registry key.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;
    /// The breaker's name for `key` (used for config lookup, metrics and
    /// events); called once, when the breaker is created.
    fn name(&self, key: &Self::Key) -> String;

    /// The key every request has, when it does not depend on the request
    /// ([`Downstream`]): the layer then looks the breaker up once, when it makes
    /// a service, rather than on every call of a service cloned per request.
    fn fixed_key(&self) -> Option<Self::Key> {
        None
    }
}

/// Extracts the key from a request.
pub trait Extract<Req>: KeyExtractor {
    /// The key of `req`.
    fn extract(&self, req: &Req) -> Self::Key;
}

/// One breaker for the whole wrapped service (one downstream).
#[derive(Debug, Clone)]
pub struct Downstream {
    name: Arc<str>,
}

impl Downstream {
    /// A single breaker named `name` (e.g. `user-svc`).
    pub fn new(name: &str) -> Self {
        Downstream { name: Arc::from(name) }
    }
}

impl KeyExtractor for Downstream {
    type Key = ();
    fn name(&self, _: &()) -> String {
        self.name.to_string()
    }

    fn fixed_key(&self) -> Option<()> {
        Some(())
    }
}

impl<Req> Extract<Req> for Downstream {
    #[inline]
    fn extract(&self, _: &Req) -> Self::Key {}
}

/// One breaker per HTTP method, named `<downstream>:<METHOD>`.
#[derive(Debug, Clone)]
pub struct ByMethod {
    prefix: Arc<str>,
}

impl ByMethod {
    /// Breakers named `<downstream>:GET`, `<downstream>:POST`, ...
    pub fn new(downstream: &str) -> Self {
        ByMethod { prefix: Arc::from(downstream) }
    }
}

impl KeyExtractor for ByMethod {
    type Key = Method;
    fn name(&self, key: &Method) -> String {
        format!("{}:{}", self.prefix, key)
    }
}

impl<B> Extract<Request<B>> for ByMethod {
    fn extract(&self, req: &Request<B>) -> Method {
        req.method().clone()
    }
}

/// One breaker per request path, named `<downstream>:<path>`. The key is the
/// path string (one allocation per call); bound the count with
/// [`crate::CircuitBreakerLayer::with_max_breakers`].
#[derive(Debug, Clone)]
pub struct ByRoute {
    prefix: Arc<str>,
}

impl ByRoute {
    /// Breakers named `<downstream>:<path>`.
    pub fn new(downstream: &str) -> Self {
        ByRoute { prefix: Arc::from(downstream) }
    }
}

impl KeyExtractor for ByRoute {
    type Key = String;
    fn name(&self, key: &String) -> String {
        format!("{}:{}", self.prefix, key)
    }
}

impl<B> Extract<Request<B>> for ByRoute {
    fn extract(&self, req: &Request<B>) -> String {
        req.uri().path().to_owned()
    }
}

/// A key from a closure; the breaker's name is the key's `Display`.
pub struct KeyFn<F, K> {
    f: F,
    _key: PhantomData<fn() -> K>,
}

impl<F, K> KeyFn<F, K> {
    /// Keys from `f`.
    pub fn new(f: F) -> Self {
        KeyFn { f, _key: PhantomData }
    }
}

impl<F: Clone, K> Clone for KeyFn<F, K> {
    fn clone(&self) -> Self {
        KeyFn { f: self.f.clone(), _key: PhantomData }
    }
}

impl<F, K> fmt::Debug for KeyFn<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyFn")
    }
}

impl<F, K> KeyExtractor for KeyFn<F, K>
where
    F: Clone + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + fmt::Display + 'static,
{
    type Key = K;
    fn name(&self, key: &K) -> String {
        key.to_string()
    }
}

impl<F, K, Req> Extract<Req> for KeyFn<F, K>
where
    F: Fn(&Req) -> K + Clone + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + fmt::Display + 'static,
{
    fn extract(&self, req: &Req) -> K {
        (self.f)(req)
    }
}
