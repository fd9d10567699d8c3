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
//! | (signature) | `X-Cell-Sig` | `v2;iat=<unix s>;exp=<unix s>;sig=<base64url>` | | stripped, never rejected |
//! | (hop count) | `X-Cell-Hops` | set by a cell router | | stripped at the edge unless signed |
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
//! In [`TrustMode::Edge`] a client chooses nothing that routes or authorises:
//!
//! 1. **Signed hops.** A request carrying an `X-Cell-Sig` that verifies is
//!    trusted whole (its context and its `X-Cell-Hops`). The `v2` signature
//!    ([`Signer`], [`HopVerifier`]) is an HMAC-SHA256 over the method, the path
//!    and query, the request id, the hop count, the issue and expiry times and
//!    the context fields, under the current or previous key of [`SigningKeys`].
//!    The verifier refuses lifetimes above a maximum (30 s by default), issue
//!    times beyond a clock-skew allowance (5 s), expired signatures (past `exp`
//!    plus the skew), and replays: each accepted MAC is remembered until it
//!    expires, in a bounded cache (100,000 by default) that **refuses new
//!    signatures when full** rather than forget live ones. The unbound `v1` form
//!    is refused unless [`HopVerifier::with_accept_unbound_v1`] is on (for a
//!    rollout). A refused signature (wrong key, tampered, moved to another
//!    request, expired, replayed, unparsable, a context that does not parse) is
//!    not a rejection: the request goes on as an unsigned one,
//!    `cellctx.signature.rejected` is counted and a `debug` line logged.
//!    A service that refuses such a request can add its clock
//!    ([`CLOCK_HEADER`], [`clock_value`]); a signer with a [`ClockSkew`]
//!    ([`PropagateCellContextLayer::with_clock_skew`]) learns from it and signs
//!    that downstream's next hops with its clock, so a host whose clock is off
//!    by more than the allowance keeps its hops accepted (the correction AWS
//!    SDKs make for SigV4; at most [`MAX_CORRECTION`]).
//! 2. **Unsigned requests** lose the internal headers (`X-Cell-ID`,
//!    `X-Tenant-ID`, `X-Auth-User`, `X-Xid`, `X-Downgraded`), the hop count
//!    (`X-Cell-Hops`) and the routing key (`X-User-ID`) before anything reads
//!    them. With [`CellContextLayer::with_authentication`] the user, routing
//!    key and tenant then come from the verified identity only ([`auth`]):
//!    JWT bearer tokens against a JWKS with the `jwt` feature
//!    ([`auth::jwt::JwtAuthenticator`]), or any [`auth::Authenticator`]. A
//!    missing credential (outside the [`auth::AnonymousRoutes`]) or one that
//!    does not verify is answered `401` with
//!    `WWW-Authenticate: Bearer error="invalid_token"` (gRPC: status 16). The
//!    client's region hint counts only for users without a registered home
//!    region and never for a compliance-pinned user. Anonymous requests carry
//!    no user, tenant or routing key: a cell router serves them by its unkeyed
//!    policy (the local cell by default).
//!
//! The client may still state its request id, region hint (as above), trace
//! context and baggage. [`CellContextLayer::with_client_routing_key`] keeps the
//! client's `X-User-ID` for an edge behind a proxy that already authenticated
//! the request (it lets a client pick its cell otherwise). In
//! [`TrustMode::Internal`] every header is trusted.
//!
//! # Features
//!
//! - `jwt`: [`auth::jwt`], JWT bearer authentication against a JWKS
//!   (`jsonwebtoken` with the RustCrypto backend; RS256, ES256, EdDSA), the key
//!   set static or fetched over HTTP and refreshed in a background task.
//! - `kafka`: the Kafka carrier ([`kafka`]).
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
//!   `signature-malformed`, `signature-mismatch`, `signature-expired`,
//!   `signature-not-yet-valid`, `signature-too-long`, `signature-replayed`,
//!   `replay-cache-full`, `signature-unbound`, `no-keys`)
//! - `cellctx.edge.stripped` (counter): requests whose internal headers an edge stripped
//! - `cellctx.header.rejected` (counter; attributes `reason`: `malformed`/`oversized`, `header`)
//! - `cellctx.auth.rejected` (counter; attribute `reason`: `missing`,
//!   `malformed`, `expired`, `not-yet-valid`, `wrong-audience`, `wrong-issuer`,
//!   `unknown-key`, `bad-signature`, `bad-claim`, `refused`): requests an edge
//!   answered 401

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
pub use hop::{CLOCK_HEADER, ClockSkew, clock_value, DEFAULT_MAX_LIFETIME, DEFAULT_REPLAY_CAPACITY, DEFAULT_SKEW, HopVerifier, MAX_CORRECTION};
pub use propagation::{HeaderExtractor, HeaderInjector};
pub use scope::{current, scope, sync_scope, with_current};
pub use server::{Admitted, CellContextLayer, Refusal, CellContextService, ResponseBody, ResponseFuture, TrustMode};
pub use sign::{DEFAULT_SIGNATURE_LIFETIME, MIN_KEY_LEN, Signer, SigningKey, SigningKeys};
pub use token::Token;
