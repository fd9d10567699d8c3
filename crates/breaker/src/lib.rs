//! Circuit breaking and degradation as a tower layer: lock-free, one breaker
//! per key, resilience4j-grade semantics plus Google-SRE adaptive throttling.
//!
//! ```
//! use std::time::Duration;
//! use breaker::{BreakerConfig, CircuitBreakerLayer, SlidingWindowConfig, WindowConfig};
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let config = BreakerConfig::sliding(SlidingWindowConfig {
//!     window: WindowConfig::Count { size: 10 },
//!     minimum_calls: 2,
//!     failure_rate_threshold: Some(50.0),
//!     ..Default::default()
//! });
//! let layer = CircuitBreakerLayer::new("user-svc", config)?;
//! let svc = ServiceBuilder::new().layer(layer.clone()).service(service_fn(|_req: Request<()>| async {
//!     let mut res = Response::new(());
//!     *res.status_mut() = StatusCode::BAD_GATEWAY;
//!     Ok::<_, std::convert::Infallible>(res)
//! }));
//!
//! // Two 502s: half the window failed, the breaker opens.
//! for _ in 0..2 {
//!     svc.clone().oneshot(Request::new(())).await?;
//! }
//! let err = svc.clone().oneshot(Request::new(())).await.unwrap_err();
//! let err = err.downcast_ref::<breaker::Error>().unwrap();
//! assert!(matches!(err, breaker::Error::Open { .. }));
//! assert_eq!(layer.registry().by_name("user-svc").unwrap().state(), breaker::State::Open);
//! # Ok(()) }
//! ```
//!
//! # Where it goes
//!
//! On the client side of a call to one downstream (one layer per downstream
//! cell or service), outside the retry layer and inside the timeout, so a
//! timeout counts as a failure and retries do not hammer an open breaker:
//! `ServiceBuilder::new().layer(retry).layer(breaker).layer(timeout)`. In an
//! axum server, put it under `HandleErrorLayer::new(|e| async { breaker::handle_error(e) })`
//! (feature `axum`), or give it a [`fallback::MethodFallback`] so it never
//! errors. Readiness is the inner service's: rejections happen in `call`.
//!
//! # Policies
//!
//! * [`Policy::SlidingWindow`]: count- or time-based window (time-based with
//!   `buckets` buckets), failure-rate and slow-call-rate thresholds with a
//!   minimum number of calls, consecutive failures, an absolute failure count;
//!   the wait in open from a [`WaitStrategy`] (fixed, exponential with jitter,
//!   capped, or any closure); half-open admits exactly
//!   `permitted_calls_in_half_open` concurrent trials (permits taken by CAS,
//!   given back when a caller's future is dropped), closes after
//!   `success_threshold` successes, re-opens on a failure or after
//!   `max_wait_in_half_open`; open -> half-open by timer
//!   (`automatic_transition`) or at the first call after the wait.
//! * [`Policy::Adaptive`]: rejects with probability
//!   `max(0, (requests - protection - k * accepts) / (requests + 1))` over a
//!   rolling window (reported as [`State::Throttling`] while above 0).
//!
//! Outcomes come from a [`Classify`] (default [`HttpClassifier`]: errors,
//! timeouts and 5xx fail, 4xx are ignored; any closure; [`Classified`] for a
//! classifier type of your own), recorded when the response arrives, or from
//! [`GrpcClassifier`], which reads `grpc-status` where gRPC sends it: in the
//! trailers, recorded when the response body ([`GrpcBody`]) yields them, or
//! in the headers of a trailers-only response. A call is slow when it takes
//! `slow_call_duration` or more (for gRPC, up to the trailers). Ignored and
//! dropped calls count as nothing: a dropped response future or a gRPC body
//! dropped before its end is a cancellation, and gives a half-open trial
//! permit back.
//!
//! # Keys and bounds
//!
//! Breakers are per key ([`key`]): one per downstream ([`key::Downstream`]),
//! per route template ([`key::ByRoute`]: axum's `MatchedPath`, a gRPC method
//! path, else one shared `unmatched` key; never the raw path), per method
//! ([`key::ByMethod`]: the nine standard methods, every other one shares
//! `other`), or any closure ([`key::KeyFn`]). The registry holds at most
//! [`CircuitBreakerLayer::with_max_breakers`] keyed breakers (default
//! [`DEFAULT_MAX_BREAKERS`]); when full, a new key evicts closed breakers idle
//! for the idle timeout or else shares one overflow breaker (`overflow`, or
//! `<downstream>:overflow`). An open, half-open or otherwise non-closed
//! breaker is never evicted, so a flood of new keys cannot reset it, and the
//! `breaker` attribute of every instrument takes at most `max + 1` values.
//!
//! Modes ([`Mode`]): normal, forced open, disabled, metrics only; set in
//! config or by hand ([`Breaker::force_open`], ...). Config changes apply live
//! ([`Registry::reconfigure`]) and keep the window's counts when the window
//! shape is unchanged.
//!
//! # Hot path
//!
//! A closed breaker's call costs: a cached registry lookup (one atomic load), a
//! coarse clock read (one atomic load), the state word load, one or two
//! relaxed atomic adds into the window and an `Arc` clone. No lock, no
//! allocation.
//!
//! # Events and metrics
//!
//! Transitions are published on a `tokio::sync::broadcast` channel
//! ([`CircuitBreakerLayer::subscribe`]). OpenTelemetry instruments (API only;
//! meter `breaker` unless [`CircuitBreakerLayer::with_meter`]):
//!
//! | name | kind | attributes |
//! |---|---|---|
//! | `breaker.calls` | counter | `breaker`, `outcome` = `success` / `failure` / `ignored` |
//! | `breaker.slow_calls` | counter | `breaker` |
//! | `breaker.rejected` | counter | `breaker` |
//! | `breaker.transitions` | counter | `breaker`, `from`, `to` |
//! | `breaker.state` | gauge (i64) | `breaker` (0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled, 5 metrics only, 6 throttling) |
//!
//! Attribute values are never taken from a request: `breaker` is a breaker's
//! name, bounded as above; the others come from fixed sets.
//!
//! # Features
//!
//! * `axum`: `IntoResponse` for [`Error`] (503 + `Retry-After`) and [`handle_error`].
//! * `tonic`: `From<Error> for tonic::Status` (`UNAVAILABLE`).

#[cfg(feature = "axum")]
mod answer;
mod breaker;
mod classify;
pub mod clock;
mod config;
mod error;
mod event;
pub mod fallback;
mod future;
mod gate;
mod grpc;
mod integrations;
pub mod key;
mod layer;
pub mod metrics;
mod registry;
mod service;
mod wait;
mod window;

#[cfg(feature = "axum")]
pub use answer::{AnswerErrors, AnswerErrorsFuture, AnswerErrorsLayer, answer, poll_ready_answering};
pub use breaker::{Breaker, Permit, PermitRef};
pub use classify::{Classified, Classify, ErrorsAreFailures, HttpClassifier, Outcome, RecordOutcome, classify_status};
pub use grpc::{GrpcBody, GrpcClassifier};
pub use clock::{Clock, CoarseClock, ManualClock, MonotonicClock, TokioClock};
pub use config::{
    AdaptiveConfig, BreakerConfig, BreakersConfig, MAX_BUCKETS, MAX_COUNT_WINDOW, MAX_HALF_OPEN, Mode, Policy,
    SeedBreaker, SeedConfig, SlidingWindowConfig, WaitConfig, WindowConfig,
};
pub use error::Error;
pub use event::{State, Transition};
pub use fallback::{Fallback, MethodFallback, NoFallback, Rejected, X_DOWNGRADED};
pub use future::ResponseFuture;
pub use gate::{Admission, Gate};
#[cfg(feature = "axum")]
pub use integrations::handle_error;
pub use layer::CircuitBreakerLayer;
pub use registry::{DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_BREAKERS, Registry};
pub use service::CircuitBreaker;
pub use wait::WaitStrategy;
pub use window::Snapshot;
