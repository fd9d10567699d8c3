//! [`CellRouter`]: the routing service.

use std::borrow::Cow;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use cellctx::{CellContext, CellId};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower_service::Service;

use super::future::{Forwarding, ResponseFuture};
use super::forward::ForwardBody;
use super::{BoxError, Config, HOME_HEADER, HOPS_HEADER, MisroutePolicy, PlaintextPolicy, VERSION_HEADER};
use crate::balance::{EndpointSet, UnkeyedPolicy};
use crate::error::ResolveError;
use crate::metrics::Outcome;
use crate::resolve::{TargetKind, resolve_idx};
use crate::table::CompiledTable;

/// The routing service made by [`CellRouterLayer`](super::CellRouterLayer).
///
/// Ready when the inner (local) service is ready; a request that ends up
/// forwarded, redirected or refused does not call the inner service.
#[derive(Debug)]
pub struct CellRouter<S> {
    inner: S,
    routing: Routing,
}

/// The routing decision without a service (made by
/// [`CellRouterLayer::routing`](super::CellRouterLayer::routing)): what
/// [`CellRouter`] decides before it calls the inner service, for a service that
/// fuses routing with other layers. Each value keeps its own view of the table
/// (filled from its second call on); a clone starts cold.
#[derive(Debug)]
pub struct Routing {
    cfg: Arc<Config>,
    /// This instance's view of the table (filled from its second call on).
    cache: Option<Cached>,
    warm: bool,
}

#[derive(Debug)]
struct Cached {
    generation: u64,
    table: Arc<CompiledTable>,
    /// The local cell's index in `table` (`None`: not in the table).
    local: Option<u16>,
}

impl Clone for Routing {
    fn clone(&self) -> Self {
        // The clone starts cold: a service cloned per request never touches the
        // table's reference count.
        Routing { cfg: Arc::clone(&self.cfg), cache: None, warm: false }
    }
}

impl<S: Clone> Clone for CellRouter<S> {
    fn clone(&self) -> Self {
        CellRouter { inner: self.inner.clone(), routing: self.routing.clone() }
    }
}

/// Where [`Routing::route`] sends a request.
#[derive(Debug)]
pub enum Route<B> {
    /// Serve it here: call the local service with `req`, inside the
    /// task-local scope of `ctx` (see [`cellctx::scope`]).
    Local {
        /// The request (its `X-Cell-ID` header corrected when it was stale).
        req: Request<B>,
        /// The context with the chosen cell recorded.
        ctx: Arc<CellContext>,
        /// Whether `ctx` is a new context rather than the one the request
        /// brought (it is in `req`'s extensions then, replacing that one).
        changed: bool,
    },
    /// The layer's own answer: refused (421), redirected (307), no table or no
    /// live endpoint (503), a routing loop (508).
    Answer(Response<Full<Bytes>>),
    /// Forwarded to the key's home cell.
    Forward {
        /// The forward's response.
        fut: Forwarding,
        /// The context the request was forwarded with.
        ctx: Arc<CellContext>,
    },
}

impl<S> CellRouter<S> {
    pub(crate) fn new(inner: S, cfg: Arc<Config>) -> Self {
        CellRouter { inner, routing: Routing::new(cfg) }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutable.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the router, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn own(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn hv(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

/// The key's region index in `table`.
fn region_index(cfg: &Config, table: &CompiledTable, key: &str, ctx: Option<&CellContext>) -> u16 {
    if let Some(layout) = &cfg.id_layout
        && let Ok(id) = key.parse::<u64>()
        && let Ok(parts) = layout.try_decode(id)
        && let Some(&r) = table.c.datacenters.get(&parts.datacenter)
    {
        return r;
    }
    if cfg.hint_region
        && let Some(hint) = ctx.and_then(|c| c.region_hint.as_ref())
        && let Some(&r) = table.c.region_idx.get(&hint.region)
    {
        return r;
    }
    table.c.default_region
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CellRouter<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
{
    type Response = Response<super::RouterBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let ctx: Option<Arc<CellContext>> =
            req.extensions().get::<Arc<CellContext>>().cloned().or_else(cellctx::current);
        match self.routing.route(req, ctx) {
            Route::Local { req, ctx, changed } => serve_local(&mut self.inner, req, ctx, changed),
            Route::Answer(resp) => ResponseFuture::ready(resp),
            Route::Forward { fut, .. } => ResponseFuture::forward(fut),
        }
    }
}

impl Routing {
    pub(crate) fn new(cfg: Arc<Config>) -> Self {
        Routing { cfg, cache: None, warm: false }
    }

    /// Decides where `req` goes: served here, answered by the layer, or
    /// forwarded. `ctx` is the request's context (the one the cellctx server
    /// layer put in its extensions); the chosen cell is recorded in it.
    pub fn route<ReqB>(&mut self, req: Request<ReqB>, ctx: Option<Arc<CellContext>>) -> Route<ReqB>
    where
        ReqB: Body<Data = Bytes> + Send + 'static,
        ReqB::Error: Into<BoxError>,
    {
        let cfg = &*self.cfg;
        // The table: this instance's cache when it is current (one atomic load),
        // else an `ArcSwap` load. The cache is filled from the second call of an
        // instance on, so services cloned per request (axum) never pay for it.
        let generation = cfg.store.generation();
        if self.warm && self.cache.as_ref().is_none_or(|c| c.generation != generation) {
            self.cache = cfg.store.current().map(|table| Cached { generation, local: table.cell_index(&cfg.local), table });
        }
        match &self.cache {
            Some(c) if c.generation == generation => decide(cfg, &c.table, Some(c.local), req, ctx),
            _ => {
                self.warm = true;
                match cfg.store.load().as_ref() {
                    Some(t) => decide(cfg, t, None, req, ctx),
                    None => no_table(cfg),
                }
            }
        }
    }

    /// [`route`](Self::route) through a shared reference: the table is loaded
    /// from the store for this call (what a service cloned per request, as
    /// axum and hyper clone them, does anyway), never cached.
    pub fn route_once<ReqB>(&self, req: Request<ReqB>, ctx: Option<Arc<CellContext>>) -> Route<ReqB>
    where
        ReqB: Body<Data = Bytes> + Send + 'static,
        ReqB::Error: Into<BoxError>,
    {
        let cfg = &*self.cfg;
        match cfg.store.load().as_ref() {
            Some(t) => decide(cfg, t, None, req, ctx),
            None => no_table(cfg),
        }
    }
}

#[cold]
fn no_table<B>(cfg: &Config) -> Route<B> {
    cfg.metrics.record(Outcome::Unavailable);
    Route::Answer(own(StatusCode::SERVICE_UNAVAILABLE, "no routing table loaded\n".into()))
}

/// The decision against `table` (`local`: the local cell's index in it, when known).
#[inline]
fn decide<ReqB>(
    cfg: &Config,
    table: &CompiledTable,
    local: Option<Option<u16>>,
    mut req: Request<ReqB>,
    ctx: Option<Arc<CellContext>>,
) -> Route<ReqB>
where
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
{
        let routed = {
            let ctx_key = match &cfg.key {
                super::KeyExtractor::Context => ctx.as_ref().and_then(|c| c.routing_key.as_deref()),
                _ => None,
            };
            let (key, from_ctx) = match ctx_key {
                Some(k) => (Some(Cow::Borrowed(k)), true),
                None => (cfg.key.extract(req.uri(), req.headers()), false),
            };
            key.map(|key| {
                let region = region_index(cfg, table, &key, ctx.as_deref());
                let owned = if from_ctx || ctx.as_ref().is_some_and(|c| c.routing_key.as_deref() == Some(&*key)) {
                    None
                } else {
                    Some(key.clone().into_owned())
                };
                (resolve_idx(table, region, &key), owned)
            })
        };
        // A context without a cell was read from a request without a cell
        // header (the cellctx layer reads it, or strips it at the edge): the
        // header needs no correcting then, and no lookup.
        let may_have_cell_header = ctx.as_ref().is_none_or(|c| c.cell().is_some());
        let Some((res, new_key)) = routed else {
            let hops = hops_of(req.headers());
            return unkeyed(cfg, req, ctx, table, local, hops);
        };
        let res = match res {
            Ok(r) => r,
            Err(e) => {
                cfg.metrics.record(Outcome::Unavailable);
                let mut resp = own(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"));
                if let ResolveError::NoTarget { home, .. } = &e
                    && let Some(v) = hv(home.as_str())
                {
                    resp.headers_mut().insert(HOME_HEADER, v);
                }
                resp.headers_mut().insert(VERSION_HEADER, HeaderValue::from(table.version()));
                return Route::Answer(resp);
            }
        };
        // Record the chosen cell in the context (a new context only when it changes).
        let (ctx, changed) = with_cell(ctx, res.target, new_key);
        let is_local = match local {
            Some(l) => l == Some(res.target_idx),
            None => *res.target == cfg.local,
        } || (cfg.failover_retries
            && req.headers().contains_key(crate::retry::RETRY_HEADER)
            && crate::retry::may_serve_retry(table, &res, &cfg.local));
        if is_local {
            cfg.metrics.record(Outcome::Local);
            // A stale X-Cell-ID header is corrected; an absent one is left to the
            // context (the cellctx client layer writes it on outgoing calls).
            if may_have_cell_header
                && let Some(h) = req.headers_mut().get_mut(&cfg.names.cell)
                && h.as_bytes() != res.target.as_str().as_bytes()
                && let Some(v) = hv(res.target.as_str())
            {
                *h = v;
            }
            return local_route(req, ctx, changed);
        }
        let hops = hops_of(req.headers());
        let target = res.target_cell();
        let version = HeaderValue::from(table.version());
        let forward = res.kind == TargetKind::Migrating || cfg.policy == MisroutePolicy::Forward;
        if forward && hops >= cfg.max_hops {
            cfg.metrics.record(Outcome::Loop);
            tracing::warn!(target = %res.target, hops, "routing loop: request already forwarded");
            let mut resp = own(
                StatusCode::LOOP_DETECTED,
                format!("routing loop: key belongs to cell {} but the request was already forwarded {hops} time(s)\n", res.target),
            );
            resp.headers_mut().insert(VERSION_HEADER, version);
            return Route::Answer(resp);
        }
        let (set, endpoint) = cfg.balancer.pick_endpoint_in(table, target);
        let Some(endpoint) = endpoint else {
            return no_endpoint(cfg, &target.id, version);
        };
        if !forward {
            let url = join(&endpoint, &req);
            let (status, outcome, text) = match cfg.policy {
                MisroutePolicy::Redirect => (StatusCode::TEMPORARY_REDIRECT, Outcome::Redirect, format!("see {url}\n")),
                _ => (
                    StatusCode::MISDIRECTED_REQUEST,
                    Outcome::Refuse,
                    format!("misdirected request: the key belongs to cell {}\n", res.target),
                ),
            };
            cfg.metrics.record(outcome);
            let mut resp = own(status, text);
            let h = resp.headers_mut();
            if status == StatusCode::TEMPORARY_REDIRECT
                && let Some(v) = hv(&url)
            {
                h.insert(header::LOCATION, v);
            }
            if let Some(v) = hv(res.target.as_str()) {
                h.insert(HOME_HEADER, v);
            }
            h.insert(VERSION_HEADER, version);
            return Route::Answer(resp);
        }
        forward_to(cfg, req, ctx, target, Feedback { set, endpoint }, hops)
}

/// Serves locally: inside a task-local scope of `ctx`, unless the request is
/// already running inside the scope of this very context (the cellctx server
/// layer opens one), which saves a scope per poll.
#[inline]
fn serve_local<S, ReqB, ResB>(inner: &mut S, req: Request<ReqB>, ctx: Arc<CellContext>, changed: bool) -> ResponseFuture<S::Future>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    if !changed && cellctx::with_current(|c| c.is_some_and(|c| std::ptr::eq(c, &*ctx))) {
        return ResponseFuture::scoped(inner.call(req));
    }
    ResponseFuture::local(cellctx::scope(ctx, inner.call(req)))
}

/// Serve `req` here, with `ctx` in its extensions when it is a new context.
#[inline]
fn local_route<B>(mut req: Request<B>, ctx: Arc<CellContext>, changed: bool) -> Route<B> {
    if changed {
        req.extensions_mut().insert(Arc::clone(&ctx));
    }
    Route::Local { req, ctx, changed }
}

/// `ctx` with its cell set to `cell` (and its routing key to `new_key`, when
/// given); the flag says whether it is a new context. The cell is recorded in
/// the shared context itself ([`CellContext::route_to`]) when it can be: no
/// copy, and the request keeps running in the scope the cellctx layer opened.
#[inline]
fn with_cell(ctx: Option<Arc<CellContext>>, cell: &CellId, new_key: Option<String>) -> (Arc<CellContext>, bool) {
    match ctx {
        Some(c) if new_key.is_none() && c.route_to(cell) => (c, false),
        Some(c) => {
            let mut c = (*c).clone();
            c.set_cell(Some(cell.clone()));
            if new_key.is_some() {
                c.routing_key = new_key.and_then(|k| cellctx::Token::try_from(k).ok());
            }
            (Arc::new(c), true)
        }
        None => {
            let mut c = CellContext::new();
            c.set_cell(Some(cell.clone()));
            c.routing_key = new_key.and_then(|k| cellctx::Token::try_from(k).ok());
            (Arc::new(c), true)
        }
    }
}

fn hops_of(h: &HeaderMap) -> u32 {
    h.get(&HOPS_HEADER).and_then(|v| v.to_str().ok()).and_then(|s| s.parse::<u32>().ok()).unwrap_or(0)
}

/// A request without a routing key, per [`UnkeyedPolicy`].
fn unkeyed<ReqB>(
        cfg: &Config,
        req: Request<ReqB>,
        ctx: Option<Arc<CellContext>>,
        table: &CompiledTable,
        local: Option<Option<u16>>,
        hops: u32,
    ) -> Route<ReqB>
    where
        ReqB: Body<Data = Bytes> + Send + 'static,
        ReqB::Error: Into<BoxError>,
    {
        let scope = match cfg.unkeyed {
            UnkeyedPolicy::Local => None,
            UnkeyedPolicy::Weighted => {
                let local_idx = match local {
                    Some(l) => l,
                    None => table.cell_index(&cfg.local),
                };
                let r = match local_idx {
                    Some(i) => table.cell_region_index(i),
                    None => table.c.default_region,
                };
                Some(Some(&table.region_at(r).name))
            }
            UnkeyedPolicy::WeightedGlobal => Some(None),
        };
        let picked = match scope {
            Some(scope) if hops < cfg.max_hops => cfg.balancer.pick_cell(table, scope).filter(|c| *c != cfg.local),
            _ => None,
        };
        let target = picked.as_ref().and_then(|c| table.cell(c));
        let Some(target) = target else {
            // Served where it lands.
            cfg.metrics.record(Outcome::Local);
            let ctx = ctx.unwrap_or_else(|| Arc::new(CellContext::new()));
            return Route::Local { req, ctx, changed: false };
        };
        let (set, endpoint) = cfg.balancer.pick_endpoint_in(table, target);
        let Some(endpoint) = endpoint else {
            return no_endpoint(cfg, &target.id, HeaderValue::from(table.version()));
        };
        let (ctx, _) = with_cell(ctx, &target.id, None);
        forward_to(cfg, req, ctx, target, Feedback { set, endpoint }, hops)
}

/// Where RTT samples of a forwarded request go.
struct Feedback {
    set: Arc<EndpointSet>,
    endpoint: Arc<str>,
}

fn no_endpoint<B>(cfg: &Config, cell: &CellId, version: HeaderValue) -> Route<B> {
    cfg.metrics.record(Outcome::Unavailable);
    let mut resp = own(StatusCode::SERVICE_UNAVAILABLE, format!("cell {cell} has no live endpoint\n"));
    if let Some(v) = hv(cell.as_str()) {
        resp.headers_mut().insert(HOME_HEADER, v);
    }
    resp.headers_mut().insert(VERSION_HEADER, version);
    Route::Answer(resp)
}

fn join<B>(endpoint: &str, req: &Request<B>) -> String {
    let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{}{}", endpoint.trim_end_matches('/'), pq)
}

/// Forwards `req` to `endpoint` of cell `cell` (once: the hop counter goes up),
/// propagating `ctx`; feeds the response time back into the weights.
fn forward_to<ReqB>(
    cfg: &Config,
    req: Request<ReqB>,
    ctx: Arc<CellContext>,
    target: &crate::table::Cell,
    fb: Feedback,
    hops: u32,
) -> Route<ReqB>
where
    ReqB: Body<Data = Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
{
    let cell = &target.id;
    let url = join(&fb.endpoint, &req);
    let Ok(uri) = url.parse::<Uri>() else {
        cfg.metrics.record(Outcome::ForwardError);
        return Route::Answer(own(StatusCode::BAD_GATEWAY, format!("bad endpoint for cell {cell}\n")));
    };
    if uri.scheme() != Some(&http::uri::Scheme::HTTPS) && cfg.plaintext == PlaintextPolicy::PrivateLinksOnly && !target.private_link {
        cfg.metrics.record(Outcome::ForwardError);
        tracing::warn!(%cell, endpoint = %fb.endpoint, "refused to forward over plain HTTP: the table does not mark the cell's link private");
        return Route::Answer(own(
            StatusCode::BAD_GATEWAY,
            format!("cell {cell}: plain HTTP refused on a link the table does not mark private (use an https endpoint)\n"),
        ));
    }
    cfg.metrics.record(Outcome::Forward);
    let (mut parts, body) = req.into_parts();
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    parts.headers.insert(HOPS_HEADER, HeaderValue::from(hops + 1));
    if cellctx::inject(&ctx, &cfg.names, &mut parts.headers).is_err() {
        // Keep at least the cell and the key when some other field is invalid.
        if let Some(v) = hv(cell.as_str()) {
            parts.headers.insert(cfg.names.cell.clone(), v);
        }
        if let Some(v) = ctx.routing_key.as_deref().and_then(hv) {
            parts.headers.insert(cfg.names.routing_key.clone(), v);
        }
    }
    parts.extensions = http::Extensions::new();
    let body: ForwardBody = body.map_err(Into::into).boxed_unsync();
    let mut forwarder = cfg.forwarder.clone();
    let req = Request::from_parts(parts, body);
    let fut = async move {
        // honest readiness: a wrapped forwarder (a concurrency limit) may make us wait
        std::future::poll_fn(|cx| forwarder.poll_ready(cx)).await?;
        forwarder.call(req).await
    };
    let timeout = cfg.forward_timeout;
    let metrics = cfg.metrics.clone();
    let balancer = Arc::clone(&cfg.balancer);
    let cell = cell.clone();
    let fut = Forwarding(Box::pin(async move {
        let started = Instant::now();
        let res = match timeout {
            Some(d) => match tokio::time::timeout(d, fut).await {
                Ok(r) => r,
                Err(_) => {
                    metrics.record(Outcome::ForwardTimeout);
                    tracing::warn!(%cell, endpoint = %fb.endpoint, timeout = ?d, "forwarding to the home cell timed out");
                    // A timeout counts as an RTT sample of the whole bound.
                    fb.set.wrr.observe_rtt(&fb.endpoint, d);
                    balancer.observe_cell_rtt(&cell, d);
                    let mut r = own(StatusCode::GATEWAY_TIMEOUT, format!("cell {cell} did not answer within {d:?}\n"));
                    if let Some(v) = hv(cell.as_str()) {
                        r.headers_mut().insert(HOME_HEADER, v);
                    }
                    return Err(r);
                }
            },
            None => fut.await,
        };
        match res {
            Ok(resp) => {
                let rtt = started.elapsed();
                fb.set.wrr.observe_rtt(&fb.endpoint, rtt);
                balancer.observe_cell_rtt(&cell, rtt);
                Ok(resp)
            }
            Err(e) => {
                metrics.record(Outcome::ForwardError);
                tracing::warn!(error = %e, %cell, endpoint = %fb.endpoint, "forwarding to the home cell failed");
                Err(own(StatusCode::BAD_GATEWAY, "home cell unreachable\n".to_string()))
            }
        }
    }));
    Route::Forward { fut, ctx }
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let extra: Vec<header::HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|s| header::HeaderName::from_bytes(s.trim().as_bytes()).ok())
        .collect();
    for n in extra.iter().chain(HOP_BY_HOP.iter()) {
        h.remove(n);
    }
}
