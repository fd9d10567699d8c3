//! The cell's HTTP API (axum) and the gRPC service merged into it, behind the
//! `cellctx` server layer and the `cellrouter` layer wrapped around them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use failover::idempotency::{IdempotencyKey, IdempotencyLayer};
use cellrouter::{CellRouterLayer, MisroutePolicy, TableStore};

use super::grpc::{PostsService, pb};
use super::posts::Posts;

/// Response header naming the cell that served the request.
pub(crate) const SERVED_BY: &str = "x-served-by";

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) posts: Posts,
    pub(crate) store: TableStore,
    pub(crate) started_ms: u64,
}

fn served(cell: &str, resp: impl IntoResponse) -> Response {
    let mut r = resp.into_response();
    if let Ok(v) = http::HeaderValue::from_str(cell) {
        r.headers_mut().insert(SERVED_BY, v);
    }
    r
}

fn fail(cell: &str, e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "write failed");
    served(cell, (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// The posts API serves only requests whose user came with a signed hop from
/// the gateway (the context layer strips a user anyone else states): 403 else.
fn unsigned(cell: &str) -> Option<Response> {
    let signed = cellctx::current().is_some_and(|c| c.routing_key.is_some());
    // with the clock the hop verifier reads: a gateway whose clock is off
    // signs its next hops with it (`cellctx::ClockSkew`)
    (!signed).then(|| {
        let mut r = served(cell, (StatusCode::FORBIDDEN, "a signed hop from the gateway is required\n"));
        r.headers_mut().insert(&cellctx::CLOCK_HEADER, cellctx::clock_value());
        r
    })
}

async fn like(State(s): State<Arc<AppState>>, Path(p): Path<String>, key: Option<Extension<IdempotencyKey>>) -> Response {
    let cell = s.posts.cell.to_string();
    if let Some(r) = unsigned(&cell) {
        return r;
    }
    match s.posts.like(&p, key.as_ref().map(|k| &k.0)).await {
        Ok(w) => served(&cell, Json(w)),
        Err(e) => fail(&cell, e),
    }
}

async fn comment(
    State(s): State<Arc<AppState>>,
    Path(p): Path<String>,
    key: Option<Extension<IdempotencyKey>>,
    body: String,
) -> Response {
    let cell = s.posts.cell.to_string();
    if let Some(r) = unsigned(&cell) {
        return r;
    }
    match s.posts.comment(&p, &body, key.as_ref().map(|k| &k.0)).await {
        Ok(w) => served(&cell, Json(w)),
        Err(e) => fail(&cell, e),
    }
}

async fn read(State(s): State<Arc<AppState>>, Path(p): Path<String>) -> Response {
    if let Some(r) = unsigned(s.posts.cell.as_str()) {
        return r;
    }
    served(s.posts.cell.as_str(), Json(s.posts.get(&p).await))
}

async fn status(State(s): State<Arc<AppState>>) -> Response {
    // outbox rows not yet relayed, or (binlog mode) rows not yet back from the binlog
    let pending = match (s.posts.storage.outbox.pending_count().await, s.posts.pending_binlog().await) {
        (Ok(outbox), Ok(binlog)) => outbox + binlog,
        _ => -1,
    };
    let stats = s.posts.replica.metrics().stats();
    Json(serde_json::json!({
        "cell": s.posts.cell.as_str(),
        "table_version": s.store.version(),
        "pending_outbox": pending,
        "applied": stats.applied,
        "duplicates": stats.duplicates,
        "started_ms": s.started_ms,
        // the idgen worker id (leased from etcd when the run has it)
        "worker": s.posts.ids.worker(),
    }))
    .into_response()
}

async fn state(State(s): State<Arc<AppState>>) -> Response {
    let (json, digest) = s.posts.state().await;
    Json(serde_json::json!({ "cell": s.posts.cell.as_str(), "digest": digest, "state": json })).into_response()
}

/// The cell's service: routes, gRPC and `/healthz` in one `Router`, wrapped
/// (outermost first) in the context layer and the routing layer, as the README
/// recommends: one service in front of the routing, rather than the layers
/// mounted on every route with `Router::layer`.
pub(crate) fn service(
    app: Arc<AppState>,
    hub: &health::HealthHub,
    hop_keys: cellctx::SigningKeys,
) -> Result<
    impl tower::Service<axum::extract::Request, Response = Response, Error = std::convert::Infallible, Future: Send>
    + Clone
    + Send
    + 'static,
    crate::error::DemoError,
> {
    let grpc = tonic::service::Routes::new(pb::posts_server::PostsServer::new(PostsService { posts: app.posts.clone() }))
        .into_axum_router();
    let local = app.posts.cell.clone();
    let store = app.store.clone();
    let metrics = crate::telemetry::cell_http_layer(local.as_str())?;
    let idempotency = IdempotencyLayer::new(app.posts.storage.idempotency.clone());
    let routes = Router::new()
        .route("/posts/{post}/like", post(like))
        .route("/posts/{post}/comments", post(comment))
        .route("/posts/{post}", get(read))
        .route("/admin/status", get(status))
        .route("/admin/state", get(state))
        .with_state(app)
        // a write whose key was applied here gets its first answer back
        .layer(idempotency)
        .merge(grpc)
        .merge(crate::telemetry::router())
        .merge(crate::clock_admin::router())
        .route_service("/healthz", hub.healthz())
        // after routing, so `http.route` is the matched template
        .layer(metrics);
    Ok(tower::ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        // a context only from the gateway's signed hops: anything else is stripped
        .layer(cellctx::CellContextLayer::edge().with_signing_keys(hop_keys))
        // keyed requests whose home is another cell are refused (421) rather
        // than served here: the gateway routes them, this is the safety net
        .layer(
            CellRouterLayer::new(store, local)
                .with_policy(MisroutePolicy::Refuse)
                .with_hint_region(true)
                // the gateway's retry on this failover cell, before the table switched
                .with_failover_retries(true),
        )
        .service(routes))
}
