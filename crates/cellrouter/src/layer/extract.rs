//! [`KeyExtractor`]: where the routing layer finds the routing key.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Uri};

type KeyFn = dyn for<'a> Fn(&'a Uri, &'a HeaderMap) -> Option<Cow<'a, str>> + Send + Sync;

/// Where the routing key comes from.
///
/// ```
/// use cellrouter::KeyExtractor;
/// use http::{HeaderMap, Uri};
/// let uri: Uri = "/users/42/orders?tenant=acme".parse().unwrap();
/// let h = HeaderMap::new();
/// assert_eq!(KeyExtractor::path_segment(1).extract(&uri, &h).as_deref(), Some("42"));
/// assert_eq!(KeyExtractor::query("tenant").extract(&uri, &h).as_deref(), Some("acme"));
/// let f = KeyExtractor::from_fn(|uri, _| uri.path().rsplit('/').next().map(Into::into));
/// assert_eq!(f.extract(&uri, &h).as_deref(), Some("orders"));
/// ```
#[derive(Clone, Default)]
pub enum KeyExtractor {
    /// The `routing_key` of the request's [`cellctx::CellContext`] (request
    /// extension, else the task-local scope), else the `X-User-ID` header (the
    /// default).
    #[default]
    Context,
    /// A header's value.
    Header(HeaderName),
    /// The n-th (0-based) segment of the path.
    PathSegment(usize),
    /// A query parameter's value (not percent-decoded).
    Query(Arc<str>),
    /// A closure over the URI and headers.
    Fn(Arc<KeyFn>),
}

impl fmt::Debug for KeyExtractor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyExtractor::Context => f.write_str("Context"),
            KeyExtractor::Header(h) => f.debug_tuple("Header").field(h).finish(),
            KeyExtractor::PathSegment(n) => f.debug_tuple("PathSegment").field(n).finish(),
            KeyExtractor::Query(q) => f.debug_tuple("Query").field(q).finish(),
            KeyExtractor::Fn(_) => f.write_str("Fn(..)"),
        }
    }
}

impl KeyExtractor {
    /// A header.
    pub fn header(name: HeaderName) -> Self {
        KeyExtractor::Header(name)
    }

    /// The n-th path segment (`/users/42` -> segment 1 is `42`).
    pub fn path_segment(n: usize) -> Self {
        KeyExtractor::PathSegment(n)
    }

    /// A query parameter.
    pub fn query(name: &str) -> Self {
        KeyExtractor::Query(Arc::from(name))
    }

    /// A closure.
    pub fn from_fn<F>(f: F) -> Self
    where
        F: for<'a> Fn(&'a Uri, &'a HeaderMap) -> Option<Cow<'a, str>> + Send + Sync + 'static,
    {
        KeyExtractor::Fn(Arc::new(f))
    }

    /// Extracts the key from the URI and headers. [`KeyExtractor::Context`] reads
    /// the `X-User-ID` header here; the layer looks at the context first.
    pub fn extract<'a>(&self, uri: &'a Uri, headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
        let key = match self {
            KeyExtractor::Context => header_str(headers, &cellctx::HeaderNames::default().routing_key).map(Cow::Borrowed),
            KeyExtractor::Header(h) => header_str(headers, h).map(Cow::Borrowed),
            KeyExtractor::PathSegment(n) => uri.path().split('/').filter(|s| !s.is_empty()).nth(*n).map(Cow::Borrowed),
            KeyExtractor::Query(q) => uri
                .query()
                .and_then(|qs| qs.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == &**q).map(|(_, v)| v)))
                .map(Cow::Borrowed),
            KeyExtractor::Fn(f) => f(uri, headers),
        };
        key.filter(|k| !k.is_empty())
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
