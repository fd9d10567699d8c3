//! The SDK's request stack for an axum service as **one** tower layer.
//!
//! [`CellLayer`] does in one service what the separate layers do mounted
//! outermost first, as the workspace README shows them:
//! `breaker::AnswerErrorsLayer` -> `cellctx::CellContextLayer` ->
//! `cellrouter::CellRouterLayer` -> `breaker::CircuitBreakerLayer` -> the
//! application. The same requests get the same responses, headers and
//! context; the work is the separate layers' own code, reached through
//! [`cellctx::CellContextLayer::admit`], [`cellrouter::Routing::route_once`]
//! (the decision `CellRouter` makes), [`breaker::Gate::admit_shared`] (the
//! admission `CircuitBreaker` makes) and [`breaker::answer`], without what
//! stacking them costs per request: one clone of the service (one reference
//! count) instead of one per layer, one response future instead of four nested
//! ones, one task-local scope, the context inserted into the extensions once,
//! the response's body boxed never (an axum body passes through as it is).
//!
//! ```
//! use axum::{Router, routing::get};
//! use breaker::{BreakerConfig, CircuitBreakerLayer};
//! use cellctx::{CellContextLayer, CellId};
//! use cellrouter::{Cell, CellRouterLayer, MisroutePolicy, RoutingTable, TableStore};
//! use cellsdk::CellLayer;
//! use tower::{Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let id = |s: &str| CellId::new(s).unwrap();
//! let table = RoutingTable::uniform(id("eu"), vec![Cell::new(id("eu-1"), id("eu"), "https://eu-1.example")], 64);
//! let store = TableStore::with_table(table).unwrap();
//! let layer = CellLayer::new(
//!     CellContextLayer::internal(),
//!     CellRouterLayer::new(store, id("eu-1")).with_policy(MisroutePolicy::Refuse),
//!     CircuitBreakerLayer::new("hello", BreakerConfig::default()).unwrap(),
//! );
//! let app = Router::new().route("/hello", get(|| async { "hello" }));
//! let svc = layer.layer(app);
//! // axum::serve(listener, tower::make::Shared::new(svc)).await?;
//! let req = http::Request::get("/hello").header("x-user-id", "user-1").body(axum::body::Body::empty()).unwrap();
//! let res = svc.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! assert!(res.headers().contains_key("x-request-id"), "the request id is echoed");
//! # }
//! ```
//!
//! # Where it goes
//!
//! Around the whole axum `Router` (one service in front of the routing), as
//! the separate layers go: `layer.layer(router)`, served with
//! `tower::make::Shared`. Readiness is the application's; an error it gives
//! instead of readiness is answered to the next call (as
//! `breaker::AnswerErrorsLayer` does). The separate layers stay for a service
//! that wants only some of them.
//!
//! # Metrics
//!
//! The separate layers' instruments, recorded the same way: `cellctx.*`
//! (meter `cellctx`), `cellrouter.requests` (meter `cellrouter`) and
//! `breaker.*` (the breaker layer's meter); see each crate's docs.

mod future;
mod layer;
mod service;

pub use future::CellFuture;
pub use layer::CellLayer;
pub use service::CellService;
