//! [`CellRouter`]: the routing service.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use cellctx::CellContext;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower_service::Service;

use super::future::ResponseFuture;
use super::{BoxError, Config, FwdBody, HOME_HEADER, HOPS_HEADER, MisroutePolicy, VERSION_HEADER};
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
    cfg: Arc<Config>,
}

impl<S: Clone> Clone for CellRouter<S> {
    fn clone(&self) -> Self {
        CellRouter { inner: self.inner.clone(), cfg: Arc::clone(&self.cfg) }
    }
}

impl<S> CellRouter<S> {
    pub(crate) fn new(inner: S, cfg: Arc<Config>) -> Self {
        CellRouter { inner, cfg }
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

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let cfg = &*self.cfg;
        let ctx: Option<Arc<CellContext>> =
            req.extensions().get::<Arc<CellContext>>().cloned().or_else(cellctx::current);
        let guard = cfg.store.load();
        let Some(table) = guard.as_ref() else {
            cfg.metrics.record(Outcome::Unavailable);
            return ResponseFuture::ready(own(StatusCode::SERVICE_UNAVAILABLE, "no routing table loaded\n".into()));
        };
        let routed = {
            let ctx_key = match &cfg.key {
                super::KeyExtractor::Context => ctx.as_ref().and_then(|c| c.routing_key.as_deref()),
                _ => None,
            };
            let key = match ctx_key {
                Some(k) => Some(std::borrow::Cow::Borrowed(k)),
                None => cfg.key.extract(req.uri(), req.headers()),
            };
            key.map(|key| {
                let region = region_index(cfg, table, &key, ctx.as_deref());
                let owned = if ctx.as_ref().is_some_and(|c| c.routing_key.as_deref() == Some(&*key)) {
                    None
                } else {
                    Some(key.clone().into_owned())
                };
                (resolve_idx(table, region, &key), owned)
            })
        };
        let Some((res, new_key)) = routed else {
            // Unkeyed traffic is served where it lands.
            cfg.metrics.record(Outcome::Local);
            let ctx = ctx.unwrap_or_else(|| Arc::new(CellContext::new()));
            return ResponseFuture::local(cellctx::scope(ctx, self.inner.call(req)));
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
                return ResponseFuture::ready(resp);
            }
        };
        // Record the chosen cell in the context (a new context only when it changes).
        let (ctx, changed) = match ctx {
            Some(c) if c.cell.as_ref() == Some(res.target) && new_key.is_none() => (c, false),
            Some(c) => {
                let mut c = (*c).clone();
                c.cell = Some(res.target.clone());
                if new_key.is_some() {
                    c.routing_key = new_key;
                }
                (Arc::new(c), true)
            }
            None => {
                let mut c = CellContext::new();
                c.cell = Some(res.target.clone());
                c.routing_key = new_key;
                (Arc::new(c), true)
            }
        };
        if *res.target == cfg.local {
            cfg.metrics.record(Outcome::Local);
            // A stale X-Cell-ID header is corrected; an absent one is left to the
            // context (the cellctx client layer writes it on outgoing calls).
            if let Some(h) = req.headers_mut().get_mut(&cfg.names.cell)
                && h.as_bytes() != res.target.as_str().as_bytes()
                && let Some(v) = hv(res.target.as_str())
            {
                *h = v;
            }
            if changed {
                req.extensions_mut().insert(Arc::clone(&ctx));
            }
            return ResponseFuture::local(cellctx::scope(ctx, self.inner.call(req)));
        }
        let hops = req
            .headers()
            .get(&HOPS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
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
            return ResponseFuture::ready(resp);
        }
        let n = target.endpoints.len().max(1);
        let endpoint = target.endpoints.get(cfg.rr.fetch_add(1, Ordering::Relaxed) % n).map(String::as_str).unwrap_or("");
        let pq = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let url = format!("{}{}", endpoint.trim_end_matches('/'), pq);
        if !forward {
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
            return ResponseFuture::ready(resp);
        }
        // Forward, once.
        let Ok(uri) = url.parse::<Uri>() else {
            cfg.metrics.record(Outcome::ForwardError);
            return ResponseFuture::ready(own(StatusCode::BAD_GATEWAY, format!("bad endpoint for cell {}\n", res.target)));
        };
        cfg.metrics.record(Outcome::Forward);
        let (mut parts, body) = req.into_parts();
        parts.uri = uri;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        parts.headers.insert(HOPS_HEADER, HeaderValue::from(hops + 1));
        if cellctx::inject(&ctx, &cfg.names, &mut parts.headers).is_err() {
            // Keep at least the cell and the key when some other field is invalid.
            if let Some(v) = hv(res.target.as_str()) {
                parts.headers.insert(cfg.names.cell.clone(), v);
            }
            if let Some(v) = ctx.routing_key.as_deref().and_then(hv) {
                parts.headers.insert(cfg.names.routing_key.clone(), v);
            }
        }
        parts.extensions = http::Extensions::new();
        let body: FwdBody = body.map_err(Into::into).boxed_unsync();
        let fut = cfg.client.request(Request::from_parts(parts, body));
        ResponseFuture::forward(fut, cfg.metrics.clone())
    }
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
