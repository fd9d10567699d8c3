//! `/livez`, `/readyz` and `/healthz?cell=ID` as tower services.
//!
//! They answer from the hub's latest snapshot: one atomic load, one map lookup,
//! a clone of a pre-rendered body. No I/O, no lock, no serialization.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use cellctx::CellId;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tower_service::Service;

use crate::cell::Rendered;
use crate::error::HealthError;
use crate::hub::HealthHub;

/// The response body of every handler.
pub type HealthBody = Full<Bytes>;

const TEXT: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const JSON: HeaderValue = HeaderValue::from_static("application/json");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

fn respond(status: StatusCode, content_type: HeaderValue, body: Bytes) -> Response<HealthBody> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, content_type);
    resp.headers_mut().insert(CACHE_CONTROL, NO_STORE);
    resp
}

fn ok() -> Response<HealthBody> {
    respond(StatusCode::OK, TEXT, Bytes::from_static(b"ok"))
}

fn from_rendered(r: &Rendered) -> Response<HealthBody> {
    if r.healthy { ok() } else { respond(StatusCode::SERVICE_UNAVAILABLE, JSON, r.body.clone()) }
}

fn bad_request(e: &HealthError) -> Response<HealthBody> {
    respond(StatusCode::BAD_REQUEST, TEXT, Bytes::from(e.to_string()))
}

/// `/livez`: 200 `ok` while the process can answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Livez {
    _priv: (),
}

impl Livez {
    /// The service.
    pub fn new() -> Self {
        Livez { _priv: () }
    }
}

impl<B> Service<Request<B>> for Livez {
    type Response = Response<HealthBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        ready(Ok(ok()))
    }
}

/// `/readyz`: 200 `ok` when every cell is healthy, else 503 with a JSON body
/// `{"healthy":false,"cells":[...]}` listing each cell's probes and score.
#[derive(Debug, Clone)]
pub struct Readyz {
    hub: HealthHub,
}

impl Readyz {
    /// The service reading `hub`.
    pub fn new(hub: HealthHub) -> Self {
        Readyz { hub }
    }
}

impl<B> Service<Request<B>> for Readyz {
    type Response = Response<HealthBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<B>) -> Self::Future {
        ready(Ok(from_rendered(&self.hub.load().all)))
    }
}

/// `/healthz?cell=ID`: 200 `ok` when the cell is healthy, else 503 with the
/// cell's JSON ([`CellHealth`](crate::CellHealth): score and each probe's
/// status, latency, water level and backlog). Without `cell` it answers like
/// `/readyz`. A malformed or unknown cell id is a 400.
#[derive(Debug, Clone)]
pub struct Healthz {
    hub: HealthHub,
}

impl Healthz {
    /// The service reading `hub`.
    pub fn new(hub: HealthHub) -> Self {
        Healthz { hub }
    }

    /// The answer for a request URI's query string.
    pub fn answer(&self, query: Option<&str>) -> Response<HealthBody> {
        let snap = self.hub.load();
        let cell = query.and_then(|q| q.split('&').find(|kv| *kv == "cell" || kv.starts_with("cell=")));
        let Some(kv) = cell else {
            return from_rendered(&snap.all);
        };
        let id = kv.strip_prefix("cell=").unwrap_or("");
        if let Some(r) = snap.rendered.get(id) {
            return from_rendered(r);
        }
        match CellId::new(id) {
            Ok(_) => bad_request(&HealthError::UnknownCell(id.to_string())),
            Err(_) => bad_request(&HealthError::MalformedCell(id.to_string())),
        }
    }
}

impl<B> Service<Request<B>> for Healthz {
    type Response = Response<HealthBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(self.answer(req.uri().query())))
    }
}
