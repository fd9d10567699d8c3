//! Test support: token issuers with fixed keys, and an edge stack whose
//! handler records what it saw.
#![allow(dead_code, unused_imports, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use cellctx::auth::Identity;
use cellctx::{CellContext, CellContextLayer};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt, service_fn};

#[cfg(feature = "jwt")]
mod tokens;
#[cfg(feature = "jwt")]
pub use tokens::*;

/// What the handler saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub ctx: Arc<CellContext>,
    pub identity: Option<Arc<Identity>>,
    pub headers: HeaderMap,
}

/// The answer of the stack, with what the handler saw if it was called.
#[derive(Debug)]
pub struct Outcome {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub seen: Option<Seen>,
}

/// Runs `req` through `layer` around a handler that records what it saw.
pub async fn run(layer: &CellContextLayer, req: Request<()>) -> Outcome {
    let svc = ServiceBuilder::new().layer(layer.clone()).service(service_fn(|req: Request<()>| async move {
        let seen = Seen {
            ctx: req.extensions().get::<Arc<CellContext>>().cloned().unwrap(),
            identity: req.extensions().get::<Arc<Identity>>().cloned(),
            headers: req.headers().clone(),
        };
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        res.extensions_mut().insert(seen);
        Ok::<_, Infallible>(res)
    }));
    let res = svc.oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Outcome {
        status: parts.status,
        seen: parts.extensions.get::<Seen>().cloned(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}
