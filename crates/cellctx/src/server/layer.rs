//! [`CellContextLayer`] and its configuration.

use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderMap;
use opentelemetry::metrics::Meter;
use tower_layer::Layer;

use super::service::CellContextService;
use crate::codec::extract_scanned;
use crate::name_scan::NameScan;
use crate::context::CellContext;
use crate::error::ContextError;
use crate::headers::HeaderNames;
use crate::metrics::Metrics;
use crate::sign::SigningKeys;

/// Whether the layer trusts the internal headers a request brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustMode {
    /// Facing clients: the internal headers (cell, tenant, authenticated user,
    /// xid, downgraded) are stripped unless the request carries a valid
    /// signature (`X-Cell-Sig`) under one of the configured keys. The request id,
    /// routing key (`X-User-ID`), region hint, trace headers and baggage are
    /// kept: a client may state them.
    Edge,
    /// Behind the edge, between services: every header is trusted.
    Internal,
}

/// Reads the cell context from request headers into the request extensions
/// (`Arc<CellContext>`) and the task-local scope ([`crate::current`]).
///
/// See the [crate docs](crate) for where it goes and the header rules.
#[derive(Clone, Debug)]
pub struct CellContextLayer {
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) mode: TrustMode,
    pub(crate) names: HeaderNames,
    /// `names` prepared for the extraction's pass over the headers.
    pub(crate) scan: NameScan,
    pub(crate) keys: Option<SigningKeys>,
    pub(crate) metrics: Metrics,
    pub(crate) otel: bool,
}

impl CellContextLayer {
    /// A layer in `mode`, with the default header names, no signing keys (so an
    /// edge strips every internal header) and the global meter.
    pub fn new(mode: TrustMode) -> Self {
        CellContextLayer {
            config: Arc::new(Config {
                mode,
                names: HeaderNames::default(),
                scan: NameScan::new(&HeaderNames::default()),
                keys: None,
                metrics: Metrics::new(&opentelemetry::global::meter("cellctx")),
                otel: true,
            }),
        }
    }

    /// A layer for a service facing clients ([`TrustMode::Edge`]).
    pub fn edge() -> Self {
        Self::new(TrustMode::Edge)
    }

    /// A layer for a service behind the edge ([`TrustMode::Internal`]).
    pub fn internal() -> Self {
        Self::new(TrustMode::Internal)
    }

    /// Uses other header names.
    pub fn with_header_names(mut self, names: HeaderNames) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.scan = NameScan::new(&names);
        config.names = names;
        self
    }

    /// Accepts signed contexts under these keys (in [`TrustMode::Edge`]).
    pub fn with_signing_keys(mut self, keys: SigningKeys) -> Self {
        Arc::make_mut(&mut self.config).keys = Some(keys);
        self
    }

    /// Records the metrics with this meter instead of the global `cellctx` meter.
    pub fn with_meter(mut self, meter: &Meter) -> Self {
        Arc::make_mut(&mut self.config).metrics = Metrics::new(meter);
        self
    }

    /// Whether to make the OpenTelemetry context the request's `traceparent`
    /// carries current while the inner service runs (default on), so spans
    /// started inside continue the caller's trace.
    pub fn with_otel_context(mut self, on: bool) -> Self {
        Arc::make_mut(&mut self.config).otel = on;
        self
    }

    /// The trust mode.
    pub fn mode(&self) -> TrustMode {
        self.config.mode
    }
}

impl<S> Layer<S> for CellContextLayer {
    type Service = CellContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CellContextService::new(inner, Arc::clone(&self.config))
    }
}

impl Config {
    /// Applies the trust boundary to `headers` and reads the context.
    pub(crate) fn prepare(&self, headers: &mut HeaderMap) -> Result<CellContext, ContextError> {
        if self.mode == TrustMode::Internal {
            return extract_scanned(headers, &self.names, Some(&self.scan));
        }
        let Some(sig) = headers.remove(&self.names.signature) else {
            self.strip(headers);
            return extract_scanned(headers, &self.names, Some(&self.scan));
        };
        let mut ctx = extract_scanned(headers, &self.names, Some(&self.scan))?;
        let verdict = match &self.keys {
            Some(keys) => keys.verify_named(&ctx, sig.as_bytes(), SystemTime::now(), &self.names.signature),
            None => Err(ContextError::SignatureMismatch { header: self.names.signature.clone() }),
        };
        if let Err(err) = verdict {
            let reason = if self.keys.is_none() { "no-keys" } else { err.kind() };
            tracing::debug!(%err, reason, "cellctx: refused context signature, stripping internal headers");
            self.metrics.signature_rejected(reason);
            self.strip(headers);
            ctx.set_cell(None);
            ctx.tenant = None;
            ctx.auth_user = None;
            ctx.xid = None;
            ctx.downgraded = false;
        }
        Ok(ctx)
    }

    fn strip(&self, headers: &mut HeaderMap) {
        let mut stripped = false;
        for name in self.names.internal() {
            stripped |= headers.remove(name).is_some();
        }
        if stripped {
            self.metrics.edge_stripped();
        }
    }
}
