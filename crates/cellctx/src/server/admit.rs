//! The server layer's work on one request's head ([`CellContextLayer::admit`]),
//! shared by [`CellContextService`](super::CellContextService) and services
//! that fuse the layer with others.

use std::sync::Arc;

use http::request::Parts;
use http::{HeaderName, HeaderValue, Response};

use super::body::{ResponseBody, is_grpc, problem_response};
use super::layer::{CellContextLayer, Config};
use crate::context::CellContext;
use crate::error::ContextError;

/// A request whose context was read: the context (already in the request's
/// extensions as `Arc<CellContext>`), the OpenTelemetry context its
/// `traceparent` carries (when the layer makes it current), and the request id
/// to echo on the response.
#[derive(Debug)]
pub struct Admitted {
    /// The request's context (the extensions hold a clone of this `Arc`).
    pub ctx: Arc<CellContext>,
    /// The OpenTelemetry context to make current while the request runs.
    pub otel: Option<opentelemetry::Context>,
    /// The request id header and value to echo on the response (inserted only
    /// when the response has none).
    pub echo: (HeaderName, HeaderValue),
}

/// A request refused by the layer (malformed or oversized context headers, a
/// failed authentication): answer it with [`Refusal::into_response`]. Boxed
/// where it is returned: the rare path carries the allocation.
#[derive(Debug)]
pub struct Refusal {
    error: ContextError,
    grpc: bool,
    echo: (HeaderName, HeaderValue),
}

impl Refusal {
    /// Why the request was refused.
    pub fn error(&self) -> &ContextError {
        &self.error
    }

    /// The answer: HTTP 400/401/431 with an RFC 9457 problem document naming
    /// the header (gRPC: a trailers-only status), with the request id echoed.
    pub fn into_response<B>(self) -> Response<ResponseBody<B>> {
        let mut res = problem_response(&self.error, self.grpc);
        let (name, value) = self.echo;
        res.headers_mut().insert(name, value);
        res
    }
}

impl CellContextLayer {
    /// Does the layer's work on a request's head: applies the trust boundary,
    /// reads the context (generating a request id when absent, and writing it
    /// into the headers then), and puts it into the extensions. What the
    /// layer's service does before calling the inner service; the caller
    /// makes the context current (see [`crate::scope`]) and echoes the
    /// request id.
    pub fn admit(&self, parts: &mut Parts) -> Result<Admitted, Box<Refusal>> {
        self.config().admit(parts)
    }
}

impl Config {
    /// See [`CellContextLayer::admit`].
    #[inline]
    pub(crate) fn admit(&self, parts: &mut Parts) -> Result<Admitted, Box<Refusal>> {
        let ctx = match self.prepare(&parts.method, &parts.uri, &mut parts.headers) {
            // Straight from the result into the `Arc` (one move of the context).
            Ok((ctx, identity)) => {
                if let Some(identity) = identity {
                    parts.extensions.insert(Arc::new(identity));
                }
                Arc::new(ctx)
            }
            Err(err) => return Err(self.refuse(err, parts)),
        };
        let names = &self.names;
        // The value read (or generated) by the extraction: no second lookup, no copy.
        let request_id = ctx.request_id.as_header_value().clone();
        if ctx.raw.request_id_generated {
            parts.headers.insert(names.request_id.clone(), request_id.clone());
        }
        let otel = if self.otel && ctx.traceparent.is_some() { crate::propagation::extract_otel(&parts.headers) } else { None };
        parts.extensions.insert(Arc::clone(&ctx));
        Ok(Admitted { ctx, otel, echo: (names.request_id.clone(), request_id) })
    }

    #[cold]
    fn refuse(&self, err: ContextError, parts: &Parts) -> Box<Refusal> {
        if matches!(err, ContextError::Unauthenticated(_)) {
            tracing::debug!(%err, "cellctx: unauthenticated request");
        } else {
            self.metrics.header_rejected(&err);
            tracing::debug!(%err, "cellctx: rejected request");
        }
        let names = &self.names;
        let id = parts
            .headers
            .get(&names.request_id)
            .filter(|v| v.to_str().is_ok_and(|s| crate::validate_token(s).is_ok()))
            .cloned()
            .unwrap_or_else(|| crate::request_id::generate_token().into_header_value());
        Box::new(Refusal { grpc: is_grpc(&parts.headers), error: err, echo: (names.request_id.clone(), id) })
    }
}
