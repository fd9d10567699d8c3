//! Signed hops: the `v2` signature's wire form, the replay cache and the
//! verifier the server layer runs at the edge.

mod replay;
mod skew;
mod verifier;
mod wire;

pub use skew::{CLOCK_HEADER, ClockSkew, MAX_CORRECTION, clock_value};
pub use verifier::{DEFAULT_MAX_LIFETIME, DEFAULT_REPLAY_CAPACITY, DEFAULT_SKEW, HopVerifier};

use http::{Method, Uri};

/// What a `v2` signature binds of the request besides its context.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestBinding<'a> {
    pub(crate) method: &'a Method,
    /// The path and query (`/` when the URI has none).
    pub(crate) target: &'a str,
    /// The raw hop-count header value, if any.
    pub(crate) hops: Option<&'a [u8]>,
}

impl<'a> RequestBinding<'a> {
    pub(crate) fn new(method: &'a Method, uri: &'a Uri, hops: Option<&'a [u8]>) -> Self {
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        RequestBinding { method, target, hops }
    }
}
