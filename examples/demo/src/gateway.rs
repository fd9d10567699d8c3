//! The edge gateway: the trust boundary (`cellctx` edge mode), user -> cell
//! routing through the `cellrouter` table, smooth WRR x RTT across a cell's
//! instances, a breaker per cell, and outcome reports to the failover engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cellctx::{CellContext, CellId, PropagateCellContextLayer};
use cellrouter::outlier::{OutlierConfig, OutlierDetector};
use cellrouter::{SmoothWrr, TableStore};
use failover::OutcomeReporter;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use crate::error::DemoError;

/// How long a signed hop to a cell is valid.
const HOP_LIFETIME: Duration = Duration::from_secs(10);

/// The plain HTTP client the demo uses everywhere.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new client (HTTP/1, pooled).
pub(crate) fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_millis(200)));
    Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(5)).build(connector)
}

/// GETs `url` and parses JSON, within `timeout`.
pub(crate) async fn get_json(client: &HttpClient, url: &str, timeout: Duration) -> Result<serde_json::Value, DemoError> {
    let req = http::Request::get(url).body(Full::new(Bytes::new())).map_err(|e| DemoError::Other(e.to_string()))?;
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| DemoError::Other(format!("{url}: timeout")))?
        .map_err(|e| DemoError::Other(format!("{url}: {e}")))?;
    let body = tokio::time::timeout(timeout, resp.into_body().collect())
        .await
        .map_err(|_| DemoError::Other(format!("{url}: timeout")))?
        .map_err(|e| DemoError::Other(format!("{url}: {e}")))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| DemoError::Other(format!("{url}: {e}")))
}

type Downstream = BoxCloneSyncService<http::Request<Full<Bytes>>, http::Response<hyper::body::Incoming>, BoxError>;

/// One cell as the gateway sees it.
struct Upstream {
    endpoints: Vec<String>,
    wrr: Arc<SmoothWrr<usize>>,
    /// Passive outlier detection over the instances (indexes into `endpoints`);
    /// an ejected instance is marked failed in `wrr` until its ejection ends.
    outliers: Arc<OutlierDetector<usize>>,
    svc: Downstream,
}

impl Upstream {
    /// Records one outcome of instance `idx`; an ejection takes it out of the WRR.
    fn record(&self, idx: usize, ok: bool) {
        if let Some(e) = self.outliers.record(idx, ok) {
            tracing::warn!(endpoint = %self.endpoints[idx], times = e.times, "instance ejected (outlier detection)");
            self.wrr.set_failed(&idx, true);
        }
    }
}

/// Puts ejected instances back into the WRR as their ejections end.
async fn reinstate(wrr: std::sync::Weak<SmoothWrr<usize>>, outliers: std::sync::Weak<OutlierDetector<usize>>) {
    loop {
        let (Some(wrr), Some(outliers)) = (wrr.upgrade(), outliers.upgrade()) else { return };
        for idx in outliers.reinstate_expired() {
            wrr.set_failed(&idx, false);
        }
        let next = outliers.next_expiry().unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_millis(250));
        drop((wrr, outliers));
        tokio::time::sleep_until(next.min(tokio::time::Instant::now() + Duration::from_millis(250))).await;
    }
}

/// The gateway.
pub(crate) struct Gateway {
    store: TableStore,
    /// Who the client is: the verified token, nothing the client states.
    auth: cellctx::auth::EdgeAuth,
    cells: HashMap<CellId, Upstream>,
    reporter: OutcomeReporter,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("cells", &self.cells.len()).finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over the cells of `store`'s table, with a breaker per cell.
    pub(crate) fn try_new(
        store: TableStore,
        breakers: breaker::BreakersConfig,
        outlier: OutlierConfig,
        reporter: OutcomeReporter,
        timeout: Duration,
        auth: cellctx::auth::EdgeAuth,
        hop_key: cellctx::SigningKey,
    ) -> Result<Self, DemoError> {
        let table = store.current().ok_or_else(|| DemoError::Other("gateway: no routing table".into()))?;
        let client = http_client();
        let mut cells = HashMap::new();
        for c in &table.table().cells {
            let wrr = Arc::new(SmoothWrr::new());
            for i in 0..c.endpoints.len() {
                wrr.insert(i, f64::from(c.weight));
            }
            let outliers = Arc::new(OutlierDetector::new(outlier.clone()));
            outliers.retain(0..c.endpoints.len());
            tokio::spawn(reinstate(Arc::downgrade(&wrr), Arc::downgrade(&outliers)));
            let breaker = breaker::CircuitBreakerLayer::from_config(c.id.as_str(), breakers.clone())
                .map_err(|e| DemoError::Config(format!("breaker: {e}")))?;
            let svc = ServiceBuilder::new()
                .layer(breaker)
                .timeout(timeout)
                // each hop signed, bound to the request (the cells refuse the rest)
                .layer(PropagateCellContextLayer::new().with_signer(cellctx::Signer::new(hop_key.clone()), HOP_LIFETIME))
                .service(client.clone())
                .map_err(BoxError::from);
            cells.insert(c.id.clone(), Upstream { endpoints: c.endpoints.clone(), wrr, outliers, svc: BoxCloneSyncService::new(svc) });
        }
        Ok(Gateway { store, auth, cells, reporter })
    }

    /// The gateway's HTTP service: the edge context layer wrapped around the
    /// whole forwarding router (as the README recommends), so a request the
    /// layer rejects never reaches the router.
    /// HTTP server metrics (`http.server.request.duration` by serving cell)
    /// are taken outermost, so rejected requests count too.
    pub(crate) fn service(
        self: Arc<Self>,
    ) -> Result<
        impl tower::Service<Request, Response = Response, Error = std::convert::Infallible, Future: Send> + Clone + Send + 'static,
        DemoError,
    > {
        let cells = self.cells.keys().map(|c| c.to_string()).collect();
        Ok(ServiceBuilder::new()
            .layer(crate::telemetry::gateway_http_layer(cells)?)
            .map_response(IntoResponse::into_response)
            // the user, and so the cell, come from the verified token only
            .layer(cellctx::CellContextLayer::edge().with_authentication(self.auth.clone()))
            .service(axum::Router::new().fallback(forward).with_state(self)))
    }
}

fn answer(status: StatusCode, msg: String) -> Response {
    (status, msg).into_response()
}

async fn forward(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let Some(ctx) = req.extensions().get::<Arc<CellContext>>().cloned() else {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, "no cell context".into());
    };
    let Some(key) = ctx.routing_key.clone() else {
        return answer(StatusCode::UNAUTHORIZED, "a user token is required".into());
    };
    // user -> cell: the key's slot in its region's map (region from the hint)
    let (target, kind) = {
        let guard = gw.store.load();
        let Some(table) = guard.as_ref() else {
            return answer(StatusCode::SERVICE_UNAVAILABLE, "no routing table".into());
        };
        let region = ctx.region_hint.as_ref().map(|h| h.region.clone()).unwrap_or_else(|| table.table().default_region.clone());
        match cellrouter::resolve_in(table, &region, &key) {
            Ok(r) => (r.target.clone(), r.kind),
            Err(e) => return answer(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    };
    let Some(up) = gw.cells.get(&target) else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, format!("unknown cell {target}"));
    };
    // WRR x RTT across the cell's instances
    let Some(idx) = up.wrr.pick() else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, format!("cell {target}: no instance"));
    };
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return answer(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Ok(uri) = format!("{}{pq}", up.endpoints[idx]).parse::<http::Uri>() else {
        return answer(StatusCode::BAD_GATEWAY, "bad endpoint".into());
    };
    let mut out = http::Request::new(Full::new(body));
    *out.method_mut() = parts.method;
    *out.uri_mut() = uri;
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
        out.headers_mut().insert(http::header::CONTENT_TYPE, ct.clone());
    }
    // the context goes on as signed-off internal headers (client layer), with the chosen cell
    let mut fwd_ctx = (*ctx).clone();
    fwd_ctx.set_cell(Some(target.clone()));
    let started = Instant::now();
    let result = cellctx::scope(Arc::new(fwd_ctx), up.svc.clone().oneshot(out)).await;
    let rtt = started.elapsed();
    match result {
        Ok(resp) => {
            let ok = !resp.status().is_server_error();
            up.wrr.observe_rtt(&idx, rtt);
            up.record(idx, ok);
            gw.reporter.report(&target, ok, rtt);
            let (mut p, b) = resp.into_parts();
            if let Ok(v) = http::HeaderValue::from_str(&format!("{kind:?}")) {
                p.headers.insert("x-route-kind", v);
            }
            Response::from_parts(p, Body::new(b))
        }
        Err(e) => {
            gw.reporter.report(&target, false, rtt);
            let open = e.downcast_ref::<breaker::Error>().is_some();
            if !open {
                // the instance was tried and failed (an open breaker tried nothing)
                up.record(idx, false);
            }
            let status = if open { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::BAD_GATEWAY };
            answer(status, format!("cell {target}: {e}"))
        }
    }
}
