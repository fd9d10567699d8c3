//! The request's cell context, carried on every hop: read from HTTP/gRPC
//! headers by a server layer, made current for the request's future, written
//! back into outgoing HTTP/gRPC requests by a client layer and into Kafka
//! message headers by a carrier, with a trust boundary at the edge.
//!
//! ```
//! use std::convert::Infallible;
//! use cellctx::{CellContextLayer, PropagateCellContextLayer};
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // What the handler calls downstream: a client wrapped in the client layer
//! // (here a stand-in echoing the headers it would send).
//! let downstream = ServiceBuilder::new()
//!     .layer(PropagateCellContextLayer::new())
//!     .service(service_fn(|req: Request<()>| async move {
//!         Ok::<_, Infallible>(req.headers().clone())
//!     }));
//!
//! // The service: the server layer outermost, the handler inside.
//! let svc = ServiceBuilder::new()
//!     .layer(CellContextLayer::internal())
//!     .service(service_fn(move |_req: Request<()>| {
//!         let downstream = downstream.clone();
//!         async move {
//!             let ctx = cellctx::current().expect("inside the layer's scope");
//!             assert_eq!(ctx.tenant.as_deref(), Some("acme"));
//!             let sent = downstream.oneshot(Request::new(())).await?;
//!             Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
//!                 bytes::Bytes::copy_from_slice(sent["x-cell-id"].as_bytes()),
//!             )))
//!         }
//!     }));
//!
//! let req = Request::builder()
//!     .header("x-cell-id", "eu-west-1")
//!     .header("x-tenant-id", "acme")
//!     .header("x-request-id", "req-1")
//!     .body(())
//!     .unwrap();
//! let res = svc.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.headers()["x-request-id"], "req-1"); // echoed
//!
//! let bad = Request::builder().header("x-cell-id", "EU West").body(()).unwrap();
//! let res = svc.oneshot(bad).await.unwrap();
//! assert_eq!(res.status(), StatusCode::BAD_REQUEST);
//! # }
//! ```
//!
//! # Where the layers go
//!
//! [`CellContextLayer`] goes outermost on the server, before routing, auth,
//! breakers and handlers, so everything inside sees the context (request
//! extension `Arc<CellContext>` and [`current()`]). It works unchanged on axum
//! routers (`Router::layer`) and tonic servers (`Server::builder().layer`).
//! Use [`TrustMode::Edge`] on services clients reach, [`TrustMode::Internal`]
//! behind them. [`PropagateCellContextLayer`] wraps every outgoing client
//! (hyper-util client, tonic `Channel`), innermost enough that it sees the
//! final request. The Kafka carrier ([`kafka`], feature `kafka`) writes and
//! reads message headers.
//!
//! # Headers
//!
//! | field | header | value | bound | status when bad |
//! |---|---|---|---|---|
//! | `cell` | `X-Cell-ID` | lowercase letters, digits, `-` | 32 B | 400 / 431 |
//! | `request_id` | `X-Request-ID` | token; generated (time-ordered) when absent | 128 B | 400 / 431 |
//! | `tenant` | `X-Tenant-ID` | token | 128 B | 400 / 431 |
//! | `auth_user` | `X-Auth-User` | token | 128 B | 400 / 431 |
//! | `routing_key` | `X-User-ID` | token | 128 B | 400 / 431 |
//! | `region_hint` | `X-Region-Hint` | `<region>;src=<gps\|phone\|ip>` | 64 B | 400 / 431 |
//! | `downgraded` | `X-Downgraded` | `true`/`false`/`1`/`0` | 8 B | 400 / 431 |
//! | `xid` | `X-Xid` | token | 128 B | 400 / 431 |
//! | (signature) | `X-Cell-Sig` | `v1;exp=<unix s>;sig=<base64url>` | | stripped, never rejected |
//! | `traceparent` | `traceparent` | W3C | 256 B | ignored when invalid (W3C) |
//! | `tracestate` | `tracestate` | W3C | 512 B | ignored when invalid (W3C) |
//! | `baggage` | `baggage` | W3C, percent-encoded | 64 entries, 8 KiB | 400 / 431 |
//!
//! A token is visible ASCII without `,` or `;`. Names are configurable
//! ([`HeaderNames`]), except the W3C ones. A repeated header is malformed.
//! Rejections carry an RFC 9457 problem document
//! (`{"type":"urn:cellctx:problem:malformed-header","title":...,"status":400,"header":"X-Cell-ID","detail":...}`);
//! gRPC requests get `grpc-status: 3` (`INVALID_ARGUMENT`) instead. The
//! response always echoes `X-Request-ID`.
//!
//! # Trust boundary
//!
//! In [`TrustMode::Edge`] the internal headers (`X-Cell-ID`, `X-Tenant-ID`,
//! `X-Auth-User`, `X-Xid`, `X-Downgraded`) are removed from the request before
//! anything reads them, unless it carries an `X-Cell-Sig` that verifies (HMAC-SHA256
//! of the canonical context, see [`Signer`]) under the current or previous key of
//! [`SigningKeys`] and has not expired. A wrong key, a tampered field, an expired
//! or unparsable signature: the internal headers are stripped (the request goes on
//! without them, it is not rejected), `cellctx.signature.rejected` is counted and
//! a `debug` log line written. The client may state its request id, routing key
//! (`X-User-ID`), region hint, trace context and baggage; authentication, further in,
//! sets the authenticated user. In [`TrustMode::Internal`] every header is trusted.
//!
//! # Traces
//!
//! `traceparent`/`tracestate`/`baggage` ride along through the OpenTelemetry
//! propagator API: the server layer makes the context the global propagator reads
//! from the request current around the inner service, the client layer writes the
//! current span's context through it ([`HeaderExtractor`], [`HeaderInjector`],
//! [`kafka::KafkaHeaderExtractor`], [`kafka::KafkaHeaderInjector`],
//! [`CellContext::otel_context`]). Without a global propagator installed the W3C
//! headers are still passed on unchanged.
//!
//! # Metrics
//!
//! Through the `opentelemetry` API (global meter `cellctx`, or
//! [`CellContextLayer::with_meter`]):
//!
//! - `cellctx.signature.rejected` (counter; attribute `reason`:
//!   `signature-malformed`, `signature-mismatch`, `signature-expired`, `no-keys`)
//! - `cellctx.edge.stripped` (counter): requests whose internal headers an edge stripped
//! - `cellctx.header.rejected` (counter; attributes `reason`: `malformed`/`oversized`, `header`)

pub mod auth;
mod baggage;
mod cell_id;
mod client;
mod clock;
mod codec;
mod context;
mod error;
mod header_template;
mod headers;
mod hop;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
mod name_scan;
mod propagation;
pub mod request_id;
mod scope;
mod server;
mod sign;
mod swar;
mod token;

pub use baggage::{Baggage, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_ENTRIES};
pub use cell_id::{CellId, MAX_CELL_ID_LEN};
pub use client::{PropagateCellContext, PropagateCellContextLayer};
pub use codec::{extract, inject};
pub use context::{CellContext, HintSource, MAX_TOKEN_LEN, RegionHint, validate_token};
pub use clock::{Clock, SystemClock, TokioClock};
pub use error::{AuthFailure, ContextError, InvalidValue};
pub use headers::{BAGGAGE, HOPS, HeaderNames, TRACEPARENT, TRACESTATE};
pub use hop::{DEFAULT_MAX_LIFETIME, DEFAULT_REPLAY_CAPACITY, DEFAULT_SKEW, HopVerifier};
pub use propagation::{HeaderExtractor, HeaderInjector};
pub use scope::{current, scope, with_current};
pub use server::{CellContextLayer, CellContextService, ResponseBody, ResponseFuture, TrustMode};
pub use sign::{DEFAULT_SIGNATURE_LIFETIME, MIN_KEY_LEN, Signer, SigningKey, SigningKeys};
pub use token::Token;
