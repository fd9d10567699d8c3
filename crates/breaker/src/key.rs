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

    /// The name of the registry's overflow breaker, which every new key
    /// shares once the registry is full (see [`crate::Registry`]); default
    /// [`OVERFLOW`].
    fn overflow_name(&self) -> String {
        OVERFLOW.to_owned()
    }
}

/// The default name of the overflow breaker.
pub const OVERFLOW: &str = "overflow";

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

/// The key of requests no route matched ([`ByRoute`]).
pub const UNMATCHED: &str = "unmatched";
/// The key of methods outside the standard set ([`ByMethod`]).
pub const OTHER: &str = "other";

/// Whether `method` is one of the nine standard methods (RFC 9110 and PATCH).
pub fn is_standard_method(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::POST
            | Method::PUT
            | Method::DELETE
            | Method::CONNECT
            | Method::OPTIONS
            | Method::TRACE
            | Method::PATCH
    )
}

/// The key of [`ByMethod`]: a standard method, or the one key every other
/// method shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MethodKey {
    /// One of the nine standard methods ([`is_standard_method`]).
    Standard(Method),
    /// Any other method.
    Other,
}

impl MethodKey {
    /// The key of `method`.
    pub fn of(method: &Method) -> Self {
        if is_standard_method(method) { MethodKey::Standard(method.clone()) } else { MethodKey::Other }
    }
}

impl fmt::Display for MethodKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MethodKey::Standard(m) => f.write_str(m.as_str()),
            MethodKey::Other => f.write_str(OTHER),
        }
    }
}

/// One breaker per HTTP method, named `<downstream>:<METHOD>`. Methods
/// outside the standard set ([`is_standard_method`]) share one breaker,
/// `<downstream>:other` ([`MethodKey::Other`]), so a client cannot mint keys
/// by inventing methods.
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
    type Key = MethodKey;
    fn name(&self, key: &MethodKey) -> String {
        format!("{}:{key}", self.prefix)
    }

    fn overflow_name(&self) -> String {
        format!("{}:{OVERFLOW}", self.prefix)
    }
}

impl<B> Extract<Request<B>> for ByMethod {
    fn extract(&self, req: &Request<B>) -> MethodKey {
        MethodKey::of(req.method())
    }
}

/// One breaker per route template, named `<downstream>:<template>`: never per
/// raw path, which the client chooses.
///
/// The template comes from, in order:
///
/// 1. axum's [`MatchedPath`](axum::extract::MatchedPath) in the request's
///    extensions (feature `axum`), e.g. `/users/{id}`: put the layer where the
///    router has matched (`Router::route_layer`, or a layer on the route);
/// 2. a gRPC request's (`content-type: application/grpc...`) method path,
///    `/pkg.Service/Method`, bounded by the service definition (a client's
///    generated code calls only those); a path not of that shape counts as
///    unmatched;
/// 3. otherwise the one shared key [`UNMATCHED`].
///
/// The registry's cap and overflow breaker still bound what a forged gRPC
/// path can create on the server side.
#[derive(Debug, Clone)]
pub struct ByRoute {
    prefix: Arc<str>,
}

impl ByRoute {
    /// Breakers named `<downstream>:<template>`.
    pub fn new(downstream: &str) -> Self {
        ByRoute { prefix: Arc::from(downstream) }
    }
}

impl KeyExtractor for ByRoute {
    type Key = String;
    fn name(&self, key: &String) -> String {
        format!("{}:{}", self.prefix, key)
    }

    fn overflow_name(&self) -> String {
        format!("{}:{OVERFLOW}", self.prefix)
    }
}

impl<B> Extract<Request<B>> for ByRoute {
    fn extract(&self, req: &Request<B>) -> String {
        route_template(req).to_owned()
    }
}

/// The route template of `req` as [`ByRoute`] reads it (see there).
pub fn route_template<B>(req: &Request<B>) -> &str {
    #[cfg(feature = "axum")]
    if let Some(matched) = req.extensions().get::<axum::extract::MatchedPath>() {
        return matched.as_str();
    }
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc && is_grpc_method_path(req.uri().path()) {
        return req.uri().path();
    }
    UNMATCHED
}

/// Whether `path` has the shape of a gRPC method path, `/pkg.Service/Method`
/// (two non-empty segments of identifier characters and dots).
fn is_grpc_method_path(path: &str) -> bool {
    let ident = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) => ident(service) && ident(method) && !method.contains('.'),
        None => false,
    }
}

/// A key from a closure; the breaker's name is the key's `Display`.
///
/// Prefer keys from a bounded set: a key computed from raw request values
/// (a path, a header) lets clients mint keys, which only the registry's cap
/// and its overflow breaker then bound (see [`crate::Registry`]).
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
