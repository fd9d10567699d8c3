//! The client layer: writes the current context into outgoing request headers.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::Entry;
use http::{HeaderMap, Request};
use tower_layer::Layer;
use tower_service::Service;

use crate::codec::{encode_fields, extract};
use crate::context::CellContext;
use crate::header_template::{FieldValues, Templates};
use crate::headers::{HeaderNames, TRACEPARENT, TRACESTATE};
use crate::sign::Signer;

/// Injects the cell context into outgoing requests of any
/// `tower::Service<http::Request<B>>` (a hyper-util client, a tonic `Channel`...).
///
/// The context is the request's `Arc<CellContext>` extension when it has one,
/// else [`crate::current`]. Headers the caller set explicitly are kept. The trace
/// headers come from the current OpenTelemetry span through the global
/// propagator when there is one, else from the context as received; a
/// `traceparent` the caller set keeps its `tracestate` company.
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use cellctx::{CellContext, CellId, PropagateCellContextLayer};
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let client = ServiceBuilder::new()
///     .layer(PropagateCellContextLayer::new())
///     .service(service_fn(|req: Request<()>| async move {
///         Ok::<_, Infallible>(Response::new(req.headers()["x-cell-id"].clone()))
///     }));
/// let ctx = Arc::new(CellContext::new().with_cell(CellId::new("eu-1").unwrap()));
/// let res = cellctx::scope(ctx, client.oneshot(Request::new(()))).await.unwrap();
/// assert_eq!(res.body(), "eu-1");
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct PropagateCellContextLayer {
    config: Arc<ClientConfig>,
}

#[derive(Clone, Debug)]
struct ClientConfig {
    names: HeaderNames,
    /// Whether every field has a header name of its own (then an empty
    /// outgoing map is filled without checking for what is already there).
    distinct: bool,
    signer: Option<Signer>,
    /// Downstream clock offsets the signer applies.
    skew: Option<crate::hop::ClockSkew>,
    otel: bool,
    /// Header maps of the field shapes seen first, cloned to fill empty outgoing maps.
    templates: Templates,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let names = HeaderNames::default();
        ClientConfig { distinct: names.all_distinct(), names, signer: None, skew: None, otel: true, templates: Templates::default() }
    }
}

impl PropagateCellContextLayer {
    /// The layer with the default header names.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses other header names.
    pub fn with_header_names(mut self, names: HeaderNames) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.distinct = names.all_distinct();
        config.names = names;
        config.templates = Templates::default();
        self
    }

    /// Signs what is sent (`X-Cell-Sig`, a `v2` signature valid for `ttl`,
    /// whole seconds), for a downstream in [`TrustMode::Edge`](crate::TrustMode::Edge).
    /// The signature covers the headers actually sent, explicit ones included,
    /// and binds the request's method, path and query, request id and hop
    /// count. Keep `ttl` within the verifier's maximum lifetime (30 s by
    /// default), or the downstream refuses it. Costs one HMAC per request.
    pub fn with_signer(mut self, signer: Signer, ttl: Duration) -> Self {
        Arc::make_mut(&mut self.config).signer = Some(signer.with_lifetime(ttl));
        self
    }

    /// Signs each hop with the clock of its downstream as `skew` learned it
    /// (feed it the answers with [`ClockSkew::observe`](crate::ClockSkew::observe)),
    /// so a host whose clock is off still signs hops its downstreams accept.
    pub fn with_clock_skew(mut self, skew: crate::hop::ClockSkew) -> Self {
        Arc::make_mut(&mut self.config).skew = Some(skew);
        self
    }

    /// Whether to write the current OpenTelemetry span's trace context through
    /// the global propagator (default on).
    pub fn with_otel_context(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.config).otel = on;
        self
    }
}

impl<S> Layer<S> for PropagateCellContextLayer {
    type Service = PropagateCellContext<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateCellContext { inner, config: Arc::clone(&self.config) }
    }
}

/// The service [`PropagateCellContextLayer`] makes.
#[derive(Clone, Debug)]
pub struct PropagateCellContext<S> {
    inner: S,
    config: Arc<ClientConfig>,
}

impl<S> PropagateCellContext<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for PropagateCellContext<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let config = &self.config;
        let (mut parts, body) = req.into_parts();
        match parts.extensions.get::<Arc<CellContext>>().cloned() {
            Some(ctx) => config.apply(&ctx, &parts.method, &parts.uri, &mut parts.headers),
            None => crate::scope::with_current(|ctx| {
                if let Some(ctx) = ctx {
                    config.apply(ctx, &parts.method, &parts.uri, &mut parts.headers);
                }
            }),
        }
        self.inner.call(Request::from_parts(parts, body))
    }
}

impl ClientConfig {
    fn apply(&self, ctx: &CellContext, method: &http::Method, uri: &http::Uri, headers: &mut HeaderMap) {
        if self.otel && !headers.contains_key(TRACEPARENT) {
            crate::propagation::inject_current_otel(headers);
        }
        if headers.is_empty() && self.distinct {
            // Nothing to keep in an empty map when no two fields share a name:
            // filled from the template of the fields' shape.
            let mut fields = FieldValues::new();
            encode_fields(ctx, &self.names, |i, _, value| match value {
                Ok(value) => fields.set(i, value),
                Err(err) => tracing::warn!(%err, "cellctx: not propagating an invalid context field"),
            });
            self.templates.fill(&self.names, &mut fields, headers);
        } else {
            let trace_set = headers.contains_key(TRACEPARENT);
            encode_fields(ctx, &self.names, |_, name, value| {
                if trace_set && (name == TRACEPARENT || name == TRACESTATE) {
                    return;
                }
                match value {
                    Ok(value) => {
                        if let Entry::Vacant(slot) = headers.entry(name) {
                            slot.insert(value);
                        }
                    }
                    Err(err) => tracing::warn!(%err, "cellctx: not propagating an invalid context field"),
                }
            });
        }
        if let Some(signer) = &self.signer
            && !headers.contains_key(&self.names.signature)
        {
            match extract(headers, &self.names) {
                Ok(sent) => {
                    let now = match &self.skew {
                        Some(skew) => skew.now_for(uri, cellclock::now()),
                        None => cellclock::now(),
                    };
                    let sig = signer.sign_parts(&sent, method, uri, headers, now);
                    headers.insert(self.names.signature.clone(), sig);
                }
                Err(err) => tracing::warn!(%err, "cellctx: not signing an invalid outgoing context"),
            }
        }
    }
}
