//! [`CellRouterLayer`]: the server-side routing layer.

mod body;
mod extract;
mod forward;
mod future;
mod service;

pub use body::{BoxError, RouterBody};
pub use forward::{DEFAULT_FORWARD_TIMEOUT, ForwardBody, Forwarder, client_forwarder, default_forwarder, forwarder};
pub use extract::KeyExtractor;
pub use future::{Forwarding, ResponseFuture};
pub use service::{CellRouter, Route, Routing};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cellctx::{CellId, HeaderNames};
use http::HeaderName;
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tower_layer::Layer;

use crate::balance::{Balancer, UnkeyedPolicy};
use crate::metrics::RequestMetrics;
use crate::store::TableStore;

/// Hop counter header: how many times the request was forwarded between cells.
pub const HOPS_HEADER: HeaderName = HeaderName::from_static("x-cell-hops");
/// Response header naming the cell that owns the key (421, 307, 503).
pub const HOME_HEADER: HeaderName = HeaderName::from_static("x-cell-home");
/// Response header with the routing table version the answer was based on.
pub const VERSION_HEADER: HeaderName = HeaderName::from_static("x-cell-table-version");

/// What to do with a request whose key belongs to another cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MisroutePolicy {
    /// Forward it to the home cell's gateway, at most once (hop counter; a
    /// request that would be forwarded a second time is answered 508).
    #[default]
    Forward,
    /// Answer 307 with `Location` on the home cell's gateway and the table
    /// version in `X-Cell-Table-Version`.
    Redirect,
    /// Answer 421 Misdirected Request naming the home cell (`X-Cell-Home`).
    Refuse,
}

#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) store: TableStore,
    pub(crate) local: CellId,
    pub(crate) policy: MisroutePolicy,
    pub(crate) key: KeyExtractor,
    pub(crate) names: HeaderNames,
    pub(crate) max_hops: u32,
    pub(crate) id_layout: Option<idgen::Layout>,
    pub(crate) hint_region: bool,
    pub(crate) forwarder: Forwarder,
    pub(crate) plaintext: PlaintextPolicy,
    pub(crate) metrics: RequestMetrics,
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) unkeyed: UnkeyedPolicy,
    pub(crate) forward_timeout: Option<Duration>,
    pub(crate) failover_retries: bool,
}

/// Routes each request to its key's home cell (see the [crate docs](crate)).
///
/// Place it after the `cellctx` server layer (so the context is in the request
/// extensions) and before the application's handlers.
#[derive(Debug, Clone)]
pub struct CellRouterLayer {
    store: TableStore,
    local: CellId,
    policy: MisroutePolicy,
    key: KeyExtractor,
    names: HeaderNames,
    max_hops: u32,
    id_layout: Option<idgen::Layout>,
    hint_region: bool,
    forwarder: Option<Forwarder>,
    plaintext: PlaintextPolicy,
    balancer: Arc<Balancer>,
    unkeyed: UnkeyedPolicy,
    forward_timeout: Option<Duration>,
    failover_retries: bool,
}

/// Whether a request may cross to another cell over plain HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlaintextPolicy {
    /// Only to cells the table marks [`private_link`](crate::table::Cell::private_link)
    /// (the default): any other `http://` endpoint is a forward error (502,
    /// metric outcome `forward_error`); use `https://` endpoints there.
    #[default]
    PrivateLinksOnly,
    /// To any cell (every link between cells is trusted: a private network, or
    /// a mesh that encrypts it).
    Always,
}

impl CellRouterLayer {
    /// A layer for the cell `local`, reading tables from `store`; forwards
    /// misrouted requests by default.
    pub fn new(store: TableStore, local: CellId) -> Self {
        CellRouterLayer {
            store,
            local,
            policy: MisroutePolicy::Forward,
            key: KeyExtractor::Context,
            names: HeaderNames::default(),
            max_hops: 1,
            id_layout: None,
            hint_region: false,
            forwarder: None,
            plaintext: PlaintextPolicy::PrivateLinksOnly,
            balancer: Arc::new(Balancer::new()),
            unkeyed: UnkeyedPolicy::Local,
            forward_timeout: Some(DEFAULT_FORWARD_TIMEOUT),
            failover_retries: false,
        }
    }

    /// Serves a request the gateway retried here
    /// ([`RETRY_HEADER`](crate::retry::RETRY_HEADER)) when this cell is a
    /// failover target of the key's home cell and its region may hold the
    /// key's data, although the table in force still names another cell (the
    /// home failed before the switch reached the table). Default off. Only
    /// behind a trust boundary that builds the hops itself (a client cannot
    /// set the header).
    pub fn with_failover_retries(mut self, on: bool) -> Self {
        self.failover_retries = on;
        self
    }

    /// Sets what happens to misrouted requests.
    pub fn with_policy(mut self, policy: MisroutePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets where the routing key comes from.
    pub fn with_key(mut self, key: KeyExtractor) -> Self {
        self.key = key;
        self
    }

    /// Sets the context header names used when forwarding.
    pub fn with_header_names(mut self, names: HeaderNames) -> Self {
        self.names = names;
        self
    }

    /// Reads the key's home region from its idgen datacenter bits: a key that is
    /// a decimal id of `layout` is routed in the region whose `datacenter`
    /// matches (see [`crate::table::Region::datacenter`]).
    pub fn with_id_layout(mut self, layout: idgen::Layout) -> Self {
        self.id_layout = Some(layout);
        self
    }

    /// Routes keys without an id-carried region in the region of the context's
    /// region hint (new users placed by GPS > phone > IP), when the table has it.
    pub fn with_hint_region(mut self, on: bool) -> Self {
        self.hint_region = on;
        self
    }

    /// Sets the HTTP client used to forward (a shorthand for
    /// [`with_forwarder`](Self::with_forwarder) with [`client_forwarder`]).
    pub fn with_client(mut self, client: Client<HttpConnector, UnsyncBoxBody<Bytes, BoxError>>) -> Self {
        self.forwarder = Some(client_forwarder(client));
        self
    }

    /// Sets the service that carries forwarded requests to other cells
    /// (default: [`default_forwarder`]). Wrap it to add what the hop needs:
    /// TLS with client certificates (a hyper-util client over a rustls
    /// connector), the hop signature, retries, limits. The layer's forward
    /// timeout still bounds each forward from outside.
    ///
    /// ```
    /// use cellrouter::{CellRouterLayer, TableStore, default_forwarder};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let fwd = tower::ServiceBuilder::new()
    ///     .concurrency_limit(256) // at most 256 forwards in flight per layer
    ///     .service(default_forwarder());
    /// let layer = CellRouterLayer::new(TableStore::new(), cellrouter::CellId::new("eu-1").unwrap())
    ///     .with_forwarder(fwd)
    ///     .with_forward_timeout(Duration::from_secs(2));
    /// # let _ = layer; }
    /// ```
    pub fn with_forwarder<S, B>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<ForwardBody>, Response = http::Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.forwarder = Some(forwarder(svc));
        self
    }

    /// Sets whether requests may cross to other cells over plain HTTP
    /// (default [`PlaintextPolicy::PrivateLinksOnly`]).
    pub fn with_plaintext(mut self, policy: PlaintextPolicy) -> Self {
        self.plaintext = policy;
        self
    }

    /// Shares `balancer` (endpoint and cell weights, RTT averages, failed
    /// endpoints) with this layer; by default each layer has its own.
    pub fn with_balancer(mut self, balancer: Arc<Balancer>) -> Self {
        self.balancer = balancer;
        self
    }

    /// The weighted selection state of this layer and its services: mark an
    /// endpoint failed there ([`Balancer::set_endpoint_failed`]), read weights.
    pub fn balancer(&self) -> &Arc<Balancer> {
        &self.balancer
    }

    /// Sets what happens to requests without a routing key (default
    /// [`UnkeyedPolicy::Local`]: served where they land).
    pub fn with_unkeyed(mut self, policy: UnkeyedPolicy) -> Self {
        self.unkeyed = policy;
        self
    }

    /// Bounds the time to the response headers of a forwarded request; on expiry
    /// the layer answers 504 Gateway Timeout (metric outcome `forward_timeout`).
    /// Default: [`DEFAULT_FORWARD_TIMEOUT`].
    pub fn with_forward_timeout(mut self, timeout: Duration) -> Self {
        self.forward_timeout = Some(timeout);
        self
    }

    /// Removes the forward timeout (the forwarder's own bounds only).
    pub fn without_forward_timeout(mut self) -> Self {
        self.forward_timeout = None;
        self
    }

    fn config(&self) -> Config {
        let forwarder = self.forwarder.clone().unwrap_or_else(default_forwarder);
        Config {
            store: self.store.clone(),
            local: self.local.clone(),
            policy: self.policy,
            key: self.key.clone(),
            names: self.names.clone(),
            max_hops: self.max_hops,
            id_layout: self.id_layout,
            hint_region: self.hint_region,
            forwarder,
            plaintext: self.plaintext,
            metrics: RequestMetrics::new(),
            balancer: Arc::clone(&self.balancer),
            unkeyed: self.unkeyed,
            forward_timeout: self.forward_timeout,
            failover_retries: self.failover_retries,
        }
    }
}

impl CellRouterLayer {
    /// The routing decision of this layer's services without a service: for
    /// a service that fuses routing with other layers (see [`Routing::route`]).
    pub fn routing(&self) -> Routing {
        Routing::new(Arc::new(self.config()))
    }
}

impl<S> Layer<S> for CellRouterLayer {
    type Service = CellRouter<S>;
    fn layer(&self, inner: S) -> CellRouter<S> {
        CellRouter::new(inner, Arc::new(self.config()))
    }
}
