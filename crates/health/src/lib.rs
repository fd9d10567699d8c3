//! Dependency probes, `/livez` `/readyz` `/healthz` handlers and a 0-100 cell
//! health score.
//!
//! Probes ([`HttpProbe`], [`TcpProbe`], [`SqlProbe`], [`RedisProbe`],
//! [`KafkaProbe`], [`FnProbe`]) run in the background under a [`Scheduler`]
//! (bounded concurrency, per-probe interval, jitter and timeout, never
//! overlapping themselves). Their results land in a [`HealthHub`], which keeps a
//! bounded [`ResultWindow`] per probe, scores each cell and publishes:
//!
//! - the latest [`HealthSnapshot`] (lock-free reads, what the handlers serve),
//! - a `watch` of snapshots ([`HealthHub::subscribe`]): the per-cell health
//!   stream the `failover` and `gslb` crates consume,
//! - [`HealthEvent`]s: probe up/down, [`HealthEvent::Alert`] when a cell falls
//!   below the threshold, [`HealthEvent::Healthy`] when it is back;
//!   [`HealthSnapshot::alerting`] is the same set as a level (the cells
//!   alerting now, under [`HealthSnapshot::threshold`]), what alert sinks
//!   such as `failover`'s follow, since a watch never loses the current state.
//!
//! [`CellProber`] does the same for *peer* cells: it polls each peer's
//! `/healthz?cell=ID` and TCP-connects to its endpoints.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use health::{FnProbe, HealthHub, ProbeOutcome, ProbeSpec, Scheduler, ScorePolicy};
//! use http::{Request, StatusCode};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = HealthHub::try_new(ScorePolicy::default())?;
//! let cache = FnProbe::new(|| async { Ok::<_, std::io::Error>(ProbeOutcome::up().with_hit_ratio(0.99)) });
//! let running = Scheduler::try_new(&hub, 16)?
//!     .with_probe(ProbeSpec::new("shanghai".parse()?, "local-cache", cache).with_interval(Duration::from_secs(5)))?
//!     .start();
//!
//! // The handlers are tower services: mount them in axum with `route_service`.
//! let mut events = hub.events();
//! events.recv().await?; // the first result made the cell healthy
//! let resp = hub.healthz().oneshot(Request::get("/healthz?cell=shanghai").body(())?).await?;
//! assert_eq!(resp.status(), StatusCode::OK);
//! let resp = hub.healthz().oneshot(Request::get("/healthz?cell=Bad!").body(())?).await?;
//! assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
//! running.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Where it goes
//!
//! The handlers are endpoints, not middleware: mount them beside the service
//! (`Router::route_service("/healthz", hub.healthz())`), outside any auth or
//! cell-routing layer so load balancers and peer cells can reach them. They read
//! the latest cached results only; no probe runs on the request path.
//!
//! # Score
//!
//! Per probe: 0 when its last run failed, else `100 × success ratio` of its
//! window, halved once for each threshold crossed: P99 latency over the probe's
//! budget (Redis: 50 ms, see [`ProbeKind::defaults`]), pool water level at or
//! above 90 %, backlog above 10 000, hit ratio below 95 %. Per cell: the mean
//! of its probes' scores weighted by [`ProbeKind::defaults`] (SQL 30, HTTP 20,
//! Redis 20, Kafka 15, TCP 10, custom 10; override with
//! [`ProbeSpec::with_weight`]). Below 60 the cell is unhealthy and an alert is
//! emitted. A cell with a probe that has not reported yet is not healthy.
//! Thresholds live in [`ScorePolicy`].
//!
//! # Metrics (OpenTelemetry API)
//!
//! | name | kind | attributes |
//! |---|---|---|
//! | `health.probe.duration` | histogram, s | `cell`, `probe`, `kind` |
//! | `health.probe.up` | gauge 0/1 | `cell`, `probe`, `kind` |
//! | `health.probe.water_level` | gauge, in use / max | `cell`, `probe`, `kind` |
//! | `health.probe.backlog` | gauge, messages | `cell`, `probe`, `kind` |
//! | `health.cell.score` | gauge 0-100 | `cell` |
//! | `health.cell.alerts` | counter | `cell` |
//!
//! With the `runtime-metrics` feature, [`RuntimeMetricsReporter`] adds
//! `tokio.runtime.workers`, `tokio.runtime.live_tasks`,
//! `tokio.runtime.global_queue_depth`, `tokio.runtime.busy_ratio` (gauges) and
//! `tokio.runtime.park_count` (counter).
//!
//! # Features
//!
//! `sql` ([`SqlProbe`]), `redis` ([`RedisProbe`]), `kafka` ([`KafkaProbe`]),
//! `runtime-metrics` ([`RuntimeMetricsReporter`]), `pprof` ([`CpuProfile`]).

mod cell;
mod error;
mod handlers;
mod hub;
mod metrics;
mod probe;
mod prober;
#[cfg(feature = "pprof")]
mod profile;
#[cfg(feature = "runtime-metrics")]
mod runtime_metrics;
mod scheduler;
mod score;
mod window;

pub use cell::{CellHealth, HealthEvent, HealthSnapshot, ProbeState, ProbeStatus};
pub use error::HealthError;
pub use handlers::{HealthBody, Healthz, Livez, Readyz};
pub use hub::HealthHub;
#[cfg(feature = "kafka")]
pub use probe::KafkaProbe;
#[cfg(feature = "redis")]
pub use probe::RedisProbe;
#[cfg(feature = "sql")]
pub use probe::SqlProbe;
pub use probe::{FnProbe, HttpProbe, Probe, ProbeFuture, ProbeKind, ProbeOutcome, ProbeSpec, TcpProbe, WaterLevel};
pub use prober::{CellProber, PeerCell};
#[cfg(feature = "pprof")]
pub use profile::{CpuProfile, CpuProfileFuture};
#[cfg(feature = "runtime-metrics")]
pub use runtime_metrics::RuntimeMetricsReporter;
pub use scheduler::{Scheduler, SchedulerHandle};
pub use score::ScorePolicy;
pub use window::ResultWindow;
