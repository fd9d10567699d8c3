//! [`CellContextLayer`] and its configuration.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Uri};
use opentelemetry::metrics::Meter;
use tower_layer::Layer;

use super::service::CellContextService;
use crate::codec::extract_scanned;
use crate::name_scan::NameScan;
use crate::context::CellContext;
use crate::error::ContextError;
use crate::headers::HeaderNames;
use crate::metrics::Metrics;
use crate::auth::{AuthMetrics, EdgeAuth, Identity, RequestHead};
use crate::hop::{HopVerifier, RequestBinding};
use crate::sign::SigningKeys;

/// Whether the layer trusts the internal headers a request brings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrustMode {
    /// Facing clients: the internal headers (cell, tenant, authenticated user,
    /// xid, downgraded), the hop counter (`X-Cell-Hops`) and the routing key
    /// (`X-User-ID`) are stripped unless the request carries a valid signed hop
    /// (`X-Cell-Sig`); the user, routing key and tenant then come from the
    /// verified identity ([`CellContextLayer::with_authentication`]) only. The
    /// request id, region hint (see [`Identity`] for when it is dropped),
    /// trace headers and baggage are kept: a client may state them.
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
    pub(crate) verifier: Option<HopVerifier>,
    pub(crate) auth: Option<EdgeAuth>,
    pub(crate) client_routing_key: bool,
    pub(crate) forward_credential: bool,
    pub(crate) metrics: Metrics,
    pub(crate) auth_metrics: AuthMetrics,
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
                verifier: None,
                auth: None,
                client_routing_key: false,
                forward_credential: false,
                metrics: Metrics::new(&opentelemetry::global::meter("cellctx")),
                auth_metrics: AuthMetrics::new(&opentelemetry::global::meter("cellctx")),
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

    /// Accepts signed hops under these keys (in [`TrustMode::Edge`]), with the
    /// default [`HopVerifier`] policy (30 s maximum lifetime, 5 s skew, replay
    /// cache of 100,000, `v1` refused).
    pub fn with_signing_keys(self, keys: SigningKeys) -> Self {
        self.with_hop_verifier(HopVerifier::new(keys))
    }

    /// Accepts signed hops as `verifier` says (in [`TrustMode::Edge`]). Every
    /// service this layer makes shares the verifier's replay cache.
    pub fn with_hop_verifier(mut self, verifier: HopVerifier) -> Self {
        Arc::make_mut(&mut self.config).verifier = Some(verifier);
        self
    }

    /// Authenticates unsigned requests at the edge (in [`TrustMode::Edge`]).
    ///
    /// After the client's identity headers are stripped, the request's
    /// credential is verified: the [`Identity`] sets `X-Auth-User` and
    /// `X-User-ID` (both the user), `X-Tenant-ID` (the tenant, or none) and,
    /// for a user with a registered home region or pinned by compliance, the
    /// region hint (`<home>;src=gps`, or none: the client's hint is dropped).
    /// The headers are rewritten too, so whatever reads them inside sees the
    /// same; the identity is a request extension `Arc<Identity>`. A missing
    /// credential on a route that is not anonymous, or any credential that does
    /// not verify, is answered `401 Unauthorized` with
    /// `WWW-Authenticate: Bearer error="invalid_token"` (gRPC:
    /// `grpc-status: 16`), and the inner service is not called. After a
    /// successful verification `Authorization` is removed from the request
    /// (as Envoy's `jwt_authn` does unless `forward` is set; see
    /// [`with_forward_credential`](Self::with_forward_credential)). A request
    /// with a valid signed hop is not authenticated again: its signer vouches
    /// for the context.
    pub fn with_authentication(mut self, auth: EdgeAuth) -> Self {
        Arc::make_mut(&mut self.config).auth = Some(auth);
        self
    }

    /// Keeps `Authorization` on the request after it verified (default off).
    pub fn with_forward_credential(mut self, forward: bool) -> Self {
        Arc::make_mut(&mut self.config).forward_credential = forward;
        self
    }

    /// Without authentication, keeps the client's `X-User-ID` as the routing
    /// key (default off: an edge strips it). **Lets every client pick the cell
    /// that serves it**: only for an edge behind a proxy that already
    /// authenticated the request and set the header, or for demos. Ignored
    /// when [`with_authentication`](Self::with_authentication) is set.
    pub fn with_client_routing_key(mut self, keep: bool) -> Self {
        Arc::make_mut(&mut self.config).client_routing_key = keep;
        self
    }

    /// Records the metrics with this meter instead of the global `cellctx` meter.
    pub fn with_meter(mut self, meter: &Meter) -> Self {
        let config = Arc::make_mut(&mut self.config);
        config.metrics = Metrics::new(meter);
        config.auth_metrics = AuthMetrics::new(meter);
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

    /// The header names the layer reads and writes.
    pub fn header_names(&self) -> &HeaderNames {
        &self.config.names
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
}

impl<S> Layer<S> for CellContextLayer {
    type Service = CellContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CellContextService::new(inner, Arc::clone(&self.config))
    }
}

impl Config {
    /// Applies the trust boundary to the request and reads the context, with the
    /// verified identity when the edge authenticated the request.
    pub(crate) fn prepare(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &mut HeaderMap,
    ) -> Result<(CellContext, Option<Identity>), ContextError> {
        if self.mode == TrustMode::Internal {
            return extract_scanned(headers, &self.names, Some(&self.scan)).map(|ctx| (ctx, None));
        }
        let sig_header = &self.names.signature;
        let repeated = headers.get_all(sig_header).iter().nth(1).is_some();
        if let Some(sig) = headers.remove(sig_header) {
            let verdict: Result<(), ContextError> = match &self.verifier {
                Some(_) if repeated => Err(ContextError::SignatureMalformed { header: sig_header.clone() }),
                Some(verifier) => {
                    // A context that does not even parse was not signed by a peer:
                    // the signature is refused and the request goes on stripped,
                    // as an unsigned one would (a bogus signature does not turn
                    // headers the edge strips into a 400).
                    match extract_scanned(headers, &self.names, Some(&self.scan)) {
                        Ok(ctx) => {
                            let hops = headers.get(verifier.hops_header()).map(HeaderValue::as_bytes);
                            let binding = RequestBinding::new(method, uri, hops);
                            match verifier.verify_bound(&ctx, &binding, sig.as_bytes(), sig_header) {
                                Ok(()) => return Ok((ctx, None)),
                                Err(err) => Err(err),
                            }
                        }
                        Err(_) => Err(ContextError::SignatureMismatch { header: sig_header.clone() }),
                    }
                }
                None => Err(ContextError::SignatureMismatch { header: sig_header.clone() }),
            };
            if let Err(err) = verdict {
                let reason = if self.verifier.is_none() { "no-keys" } else { err.kind() };
                tracing::debug!(%err, reason, "cellctx: refused context signature, stripping internal headers");
                self.metrics.signature_rejected(reason);
            }
        }
        let identity = match &self.auth {
            Some(auth) => auth.authenticate(&RequestHead::new(method, uri, headers)).map_err(|failure| {
                self.auth_metrics.rejected(&failure);
                ContextError::Unauthenticated(failure)
            })?,
            None => None,
        };
        self.strip(headers);
        if let Some(id) = &identity {
            self.write_identity(id, headers);
        }
        extract_scanned(headers, &self.names, Some(&self.scan)).map(|ctx| (ctx, identity))
    }

    /// Removes what a client may not state at the edge.
    fn strip(&self, headers: &mut HeaderMap) {
        let mut stripped = false;
        for name in self.names.internal() {
            stripped |= headers.remove(name).is_some();
        }
        stripped |= headers.remove(&crate::headers::HOPS).is_some();
        if let Some(v) = &self.verifier {
            stripped |= headers.remove(v.hops_header()).is_some();
        }
        if self.auth.is_some() || !self.client_routing_key {
            stripped |= headers.remove(&self.names.routing_key).is_some();
        }
        if stripped {
            self.metrics.edge_stripped();
        }
    }

    /// Writes the verified identity where the context is read from.
    fn write_identity(&self, id: &Identity, headers: &mut HeaderMap) {
        let names = &self.names;
        headers.insert(names.auth_user.clone(), id.user.as_header_value().clone());
        headers.insert(names.routing_key.clone(), id.user.as_header_value().clone());
        if let Some(t) = &id.tenant {
            headers.insert(names.tenant.clone(), t.as_header_value().clone());
        }
        if id.home_region.is_some() || id.region_pinned {
            headers.remove(&names.region_hint);
            let home = id.home_region.as_ref().and_then(|r| HeaderValue::try_from(format!("{r};src=gps")).ok());
            if let Some(home) = home {
                headers.insert(names.region_hint.clone(), home);
            }
        }
        if !self.forward_credential {
            headers.remove(http::header::AUTHORIZATION);
        }
    }
}
