//! The edge gateway: the trust boundary (`cellctx` edge mode), user -> cell
//! routing through the `cellrouter` table, smooth WRR x RTT across a cell's
//! instances, a breaker per cell, and outcome reports to the failover engine.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cellctx::{CellContext, CellId, PropagateCellContextLayer};
use cellrouter::outlier::{OutlierConfig, OutlierDetector};
use cellrouter::retry::{Attempts, CellAttemptError, FailoverPolicy, IDEMPOTENCY_KEY_HEADER, RETRY_HEADER, RetryBudget, is_idempotent};
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

impl Retrying {
    fn try_new(store: &TableStore, spec: &RetrySpec) -> Result<Self, DemoError> {
        let budget = RetryBudget::try_new(spec.budget_percent / 100.0, spec.min_per_sec, Duration::from_secs(10))
            .map_err(|e| DemoError::Config(format!("retry: {e}")))?;
        if spec.first_byte_ms == 0 {
            return Err(DemoError::Config("retry.first_byte_ms must be > 0".into()));
        }
        Ok(Retrying {
            policy: FailoverPolicy::new(store.clone(), budget).with_max_retries(spec.max_retries),
            first_byte: Duration::from_millis(spec.first_byte_ms),
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            retry_ok: AtomicU64::new(0),
            retry_failed: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            resigned: AtomicU64::new(0),
        })
    }
}

/// The gateway.
pub(crate) struct Gateway {
    store: TableStore,
    /// Who the client is: the verified token, nothing the client states.
    auth: cellctx::auth::EdgeAuth,
    cells: HashMap<CellId, Upstream>,
    reporter: OutcomeReporter,
    retry: Retrying,
    /// The cells' clocks as their refusals of hops signed for the wrong time
    /// tell them (the client layer signs with them).
    skew: cellctx::ClockSkew,
}

/// Retries on the failover cell: the policy (with its shared budget), the
/// first-byte budget of an attempt, and what happened.
#[derive(Debug)]
struct Retrying {
    policy: FailoverPolicy,
    first_byte: Duration,
    /// Requests the gateway received (and forwarded at least once).
    received: AtomicU64,
    /// Attempts sent to cells.
    sent: AtomicU64,
    /// Retries that got a response / that failed too.
    retry_ok: AtomicU64,
    retry_failed: AtomicU64,
    /// Writes a cell answered from its idempotency store.
    replayed: AtomicU64,
    /// Attempts signed again with the cell's clock after the cell refused
    /// the hop's signature for its time.
    resigned: AtomicU64,
}

/// The retry spec of `demo.yaml` (`retry:`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetrySpec {
    /// Retries allowed, in % of the requests (tower's `TpsBudget`).
    pub(crate) budget_percent: f32,
    /// Retries allowed per second whatever the traffic.
    pub(crate) min_per_sec: u32,
    /// An attempt whose response has not started after this long is retried.
    pub(crate) first_byte_ms: u64,
    /// Retries per request.
    pub(crate) max_retries: usize,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec { budget_percent: 20.0, min_per_sec: 10, first_byte_ms: 300, max_retries: 1 }
    }
}

/// What the gateway's retries did (the report's `retries`; the gateway
/// process serves it in its `/admin/status`).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct RetryReport {
    /// Requests received.
    pub(crate) received: u64,
    /// Attempts sent to cells.
    pub(crate) sent: u64,
    /// `sent / received`.
    pub(crate) amplification: f64,
    /// Retries made.
    pub(crate) retried: u64,
    /// Retries answered / failed too.
    pub(crate) succeeded: u64,
    /// Retries that failed too.
    pub(crate) failed: u64,
    /// Retries the budget refused.
    pub(crate) budget_refused: u64,
    /// Retries not made: no other allowed cell.
    pub(crate) no_target: u64,
    /// Retries not made: a write that may have landed, without a key.
    pub(crate) not_idempotent: u64,
    /// Duplicate writes a cell answered from its idempotency store.
    pub(crate) duplicates_suppressed: u64,
    /// Attempts signed again with the cell's clock after the cell refused
    /// the hop's signature for its time (the gateway's clock was off).
    #[serde(default)]
    pub(crate) resigned: u64,
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
        // the cells' clocks as their refusals of hops signed for the wrong time tell them
        let skew = cellctx::ClockSkew::new();
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
                .layer(
                    PropagateCellContextLayer::new()
                        .with_signer(cellctx::Signer::new(hop_key.clone()), HOP_LIFETIME)
                        .with_clock_skew(skew.clone()),
                )
                .service(client.clone())
                .map_err(BoxError::from);
            cells.insert(c.id.clone(), Upstream { endpoints: c.endpoints.clone(), wrr, outliers, svc: BoxCloneSyncService::new(svc) });
        }
        let retry = Retrying::try_new(&store, &RetrySpec::default())?;
        Ok(Gateway { store, auth, cells, reporter, retry, skew })
    }

    /// Retries on the failover cell as `spec` says.
    pub(crate) fn with_retry(mut self, spec: &RetrySpec) -> Result<Self, DemoError> {
        self.retry = Retrying::try_new(&self.store, spec)?;
        Ok(self)
    }

    /// What the retries did so far.
    pub(crate) fn retry_report(&self) -> RetryReport {
        let r = &self.retry;
        let b = r.policy.budget().stats();
        let (received, sent) = (r.received.load(Ordering::Relaxed), r.sent.load(Ordering::Relaxed));
        RetryReport {
            received,
            sent,
            amplification: if received == 0 { 0.0 } else { sent as f64 / received as f64 },
            retried: b.retried,
            succeeded: r.retry_ok.load(Ordering::Relaxed),
            failed: r.retry_failed.load(Ordering::Relaxed),
            budget_refused: b.budget_refused,
            no_target: b.no_target,
            not_idempotent: b.not_idempotent,
            duplicates_suppressed: r.replayed.load(Ordering::Relaxed),
            resigned: r.resigned.load(Ordering::Relaxed),
        }
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

/// One attempt's answer: the cell that served it and its response.
type Served = (CellId, http::Response<hyper::body::Incoming>);

/// An attempt the table cannot place (no allowed cell left): never retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Unroutable(String);

/// One attempt on the cell [`Attempts::target`] names now: an instance by WRR x
/// RTT, the hop signed, the response head within the first-byte budget.
/// Transport failures come back as [`CellAttemptError`] for the retry policy
/// (an open breaker tried nothing: a refusal).
async fn attempt(gw: Arc<Gateway>, req: http::Request<Full<Bytes>>) -> Result<Served, BoxError> {
    let (ctx, attempts) = match (req.extensions().get::<Arc<CellContext>>(), req.extensions().get::<Attempts>()) {
        (Some(c), Some(a)) => (c.clone(), a.clone()),
        _ => return Err(Unroutable("no context".into()).into()),
    };
    let target = {
        let Some(table) = gw.store.current() else { return Err(Unroutable("no routing table".into()).into()) };
        attempts.target(&table).map_err(|e| Unroutable(e.to_string()))?.clone()
    };
    let up = gw.cells.get(&target).ok_or_else(|| Unroutable(format!("unknown cell {target}")))?;
    let refused = |why: &str| CellAttemptError::new(target.clone(), std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why.to_string()));
    let Some(idx) = up.wrr.pick() else { return Err(refused("no instance").into()) };
    let (parts, body) = req.into_parts();
    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let uri = format!("{}{pq}", up.endpoints[idx]).parse::<http::Uri>().map_err(|e| Unroutable(e.to_string()))?;
    let out = || {
        let mut out = http::Request::new(body.clone());
        *out.method_mut() = parts.method.clone();
        *out.uri_mut() = uri.clone();
        for h in [http::header::CONTENT_TYPE, http::header::HeaderName::from_static(IDEMPOTENCY_KEY_HEADER)] {
            if let Some(v) = parts.headers.get(&h) {
                out.headers_mut().insert(h, v.clone());
            }
        }
        if attempts.retries() > 0 {
            // the failover cell serves it before the table has switched
            out.headers_mut().insert(RETRY_HEADER, http::HeaderValue::from_static("1"));
        }
        out
    };
    // the context goes on as signed-off internal headers (client layer), with the chosen cell
    let mut fwd_ctx = (*ctx).clone();
    fwd_ctx.set_cell(Some(target.clone()));
    let fwd_ctx = Arc::new(fwd_ctx);
    gw.retry.sent.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let first_byte = gw.retry.first_byte;
    let send = |req| {
        let call = cellctx::scope(fwd_ctx.clone(), up.svc.clone().oneshot(req));
        async move {
            match tokio::time::timeout(first_byte, call).await {
                Ok(r) => r,
                Err(elapsed) => Err(BoxError::from(elapsed)),
            }
        }
    };
    let mut result = send(out()).await;
    // the cell refused the hop's signature for its time before serving it:
    // signed again with the cell's clock (learned from the refusal), once
    if let Ok(resp) = &result
        && gw.skew.observe(&uri, resp.headers())
    {
        gw.retry.resigned.fetch_add(1, Ordering::Relaxed);
        result = send(out()).await;
    }
    let rtt = started.elapsed();
    if attempts.retries() > 0 {
        let outcome = if result.is_ok() { &gw.retry.retry_ok } else { &gw.retry.retry_failed };
        outcome.fetch_add(1, Ordering::Relaxed);
    }
    match result {
        Ok(resp) => {
            let ok = !resp.status().is_server_error();
            up.wrr.observe_rtt(&idx, rtt);
            up.record(idx, ok);
            gw.reporter.report(&target, ok, rtt);
            Ok((target, resp))
        }
        Err(e) => {
            gw.reporter.report(&target, false, rtt);
            if e.downcast_ref::<breaker::Error>().is_some() {
                // an open breaker sent nothing
                return Err(refused(&e.to_string()).into());
            }
            // the instance was tried and failed
            up.record(idx, false);
            Err(CellAttemptError::new(target, e).into())
        }
    }
}

async fn forward(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let Some(ctx) = req.extensions().get::<Arc<CellContext>>().cloned() else {
        return answer(StatusCode::INTERNAL_SERVER_ERROR, "no cell context".into());
    };
    let Some(key) = ctx.routing_key.clone() else {
        return answer(StatusCode::UNAUTHORIZED, "a user token is required".into());
    };
    let region = match gw.store.current() {
        Some(t) => ctx.region_hint.as_ref().map(|h| h.region.clone()).unwrap_or_else(|| t.table().default_region.clone()),
        None => return answer(StatusCode::SERVICE_UNAVAILABLE, "no routing table".into()),
    };
    let (mut parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return answer(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // a write is named by the client's key, else by the request id, so the
    // cell that gets it twice applies it once
    if !is_idempotent(&parts.method) && !parts.headers.contains_key(IDEMPOTENCY_KEY_HEADER) {
        parts.headers.insert(IDEMPOTENCY_KEY_HEADER, ctx.request_id.as_header_value().clone());
    }
    let mut out = http::Request::from_parts(parts, Full::new(body));
    out.extensions_mut().clear();
    out.extensions_mut().insert(ctx);
    out.extensions_mut().insert(Attempts::new(region, key.to_string()));
    gw.retry.received.fetch_add(1, Ordering::Relaxed);
    let this = gw.clone();
    let svc = tower::retry::Retry::new(gw.retry.policy.clone(), tower::service_fn(move |r| attempt(this.clone(), r)));
    match svc.oneshot(out).await {
        Ok((cell, resp)) => {
            if resp.headers().contains_key(failover::idempotency::REPLAYED_HEADER) {
                gw.retry.replayed.fetch_add(1, Ordering::Relaxed);
            }
            let (mut p, b) = resp.into_parts();
            if let Ok(v) = http::HeaderValue::from_str(cell.as_str()) {
                // a replayed answer comes from the cell's store, without its header
                if !p.headers.contains_key(crate::cell::http::SERVED_BY) {
                    p.headers.insert(crate::cell::http::SERVED_BY, v.clone());
                }
                p.headers.insert("x-route-cell", v);
            }
            Response::from_parts(p, Body::new(b))
        }
        Err(e) => {
            let status = match e.downcast_ref::<CellAttemptError>() {
                Some(a) if a.source.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                Some(_) => StatusCode::BAD_GATEWAY,
                None => StatusCode::SERVICE_UNAVAILABLE,
            };
            answer(status, e.to_string())
        }
    }
}
