//! `failover`: the failover decision engine, CEL routing rules, the atomic
//! audited traffic switch and SLA figures.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cellctx::CellId;
//! use failover::sla::{SlaConfig, SlaTracker};
//! use failover::{CellPhase, CellSpec, Decision, DecisionConfig, DecisionEngine, OutcomeLayer};
//! use tokio::time::Instant;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (a, b): (CellId, CellId) = ("eu-1".parse()?, "eu-2".parse()?);
//! // The seed's rule: > 0.5 % errors for 30 s drains the cell.
//! let mut engine = DecisionEngine::try_new(
//!     DecisionConfig::new(),
//!     vec![CellSpec::new(a.clone()).with_failover([b.clone()]), CellSpec::new(b.clone()).with_headroom_rps(500.0)],
//! )?;
//! let sla = Arc::new(SlaTracker::try_new(SlaConfig::default())?);
//!
//! let mut svc = ServiceBuilder::new()
//!     // after cellctx::CellContextLayer and cellrouter::CellRouterLayer
//!     .layer(OutcomeLayer::new(engine.reporter()).with_sla(sla.clone()).with_cell(a.clone()))
//!     .service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, Infallible>(http::Response::builder().status(503).body(()).unwrap())
//!     });
//!
//! let mut drained_at = None;
//! for second in 1..=30 {
//!     for _ in 0..50 {
//!         svc.ready().await?.call(http::Request::new(())).await?;
//!     }
//!     tokio::time::advance(Duration::from_secs(1)).await;
//!     // In production `spawn_engine` ticks in its own task.
//!     for d in engine.tick(Instant::now()) {
//!         if let Decision::Drain { .. } = d {
//!             drained_at = Some(second);
//!         }
//!     }
//! }
//! assert_eq!(drained_at, Some(30));
//! assert_eq!(engine.phase(&a), Some(CellPhase::Drained));
//! assert_eq!(engine.plan().get(&a).unwrap().spill[0].to, b);
//! assert_eq!(sla.report().overall.errors, 1500);
//! # Ok(()) }
//! ```
//!
//! # Where it goes
//! [`OutcomeLayer`] sits inside each cell's stack, after `cellctx`'s context
//! layer and `cellrouter`'s routing layer (so it sees the requests this cell
//! serves, with their cell), around the handlers or the per-cell breaker. The
//! engine, the rule watcher and the switch are background pieces: the engine
//! runs in its own task ([`spawn_engine`]), the request path only reports
//! outcomes and reads the latest [`Plan`] and [`RuleEngine`] set.
//!
//! # The pieces
//! - [`DecisionEngine`] (+ [`spawn_engine`]): consumes the per-cell health
//!   streams of several probers (`health::HealthHub::subscribe`; probers in
//!   other processes hand their views to [`EngineHandle::observe`]) and the
//!   passive outcomes reported through [`OutcomeReporter`] (a request path in
//!   another process counts on its own and ships
//!   [`OutcomeReporter::take_counts`] to the engine's `report_counts`). Defaults as in the seed
//!   (error rate > 0.5 % for 30 s drains the cell, which is an alert); every
//!   window configurable in [`DecisionConfig`]: separate trip and recover rates
//!   with a minimum dwell (no flapping), failback along a [`RampCurve`] or held
//!   for a manual decision ([`Failback`]), spill to failover targets capped by
//!   their declared headroom ([`CellSpec::headroom_rps`]), a cap on cells drained
//!   at once, a prober quorum (gray failures), and an explicit [`FailMode`].
//! - [`rules`]: CEL rules (`cel-interpreter`) over request attributes, context
//!   and cell health, with route / drain / weight actions; loaded from a file or
//!   etcd, hot-swapped, an invalid set rejected with the old one kept.
//! - `switch::AtomicSwitch` (features `etcd` + `sql`): an etcd election tied
//!   to a lease (the leader key's create revision is the term), a
//!   compare-on-revision-plus-term write of the `cellrouter` table,
//!   intent-first SQL audit row ([`audit`], feature `sql`) and reconcile;
//!   manual drain, failback and dry run through the same path (operator tools
//!   can also use its per-flow lock).
//! - [`Controller`] (feature `sql`): the background task that carries the
//!   engine's decisions ([`EngineHandle::decisions`]) into the routing table
//!   through a [`SwitchBackend`] and records each switch's detect / decide /
//!   commit / apply durations in the [`sla::SlaTracker`]. One controller acts
//!   at a time: each campaigns for the backend's leadership, the leader
//!   renews its lease in its own task, every table write is fenced with its
//!   [`Term`], and the drain cap (`with_max_drained` on the backends) is
//!   checked against the stored table at the write. The leader reconciles on
//!   election, every N seconds and after any failed switch, retries failed
//!   switches with capped exponential backoff and jitter ([`RetryPolicy`]),
//!   and prunes the audit table ([`audit::Retention`]). Backends:
//!   `AtomicSwitch` (etcd) and [`LocalSwitch`] (an in-process
//!   `cellrouter::TableStore` shared through a [`LocalStore`] that also holds
//!   the lease, for single-process control planes without etcd).
//! - [`DecisionConfigFile`]: the YAML / JSON file format of
//!   [`DecisionConfig`] (`DecisionConfig::try_from`, [`DecisionConfig::load`]).
//! - [`alert`]: an [`AlertSink`](alert::AlertSink) that sends drains,
//!   failbacks, failed switches, low health scores and replication lag to an
//!   Alertmanager v2 API (`alert::AlertmanagerClient`, feature
//!   `alerts-http`) or any `tower::Service`, with resolve notifications,
//!   de-duplication and a bounded drop-oldest queue. It subscribes to the
//!   engine's decisions, the controller's events and a health hub's
//!   snapshots; nothing waits for the receiver.
//! - `idempotency` (feature `sql`): durable deduplication of retried writes in
//!   the cell's own database: `IdempotencyStore` and the tower
//!   `IdempotencyLayer` a cell mounts around its write handlers.
//! - [`sla`]: availability, P99.9 latency (HDR histogram), error rate, switch
//!   durations (detect / decide / commit / apply, defined on
//!   [`sla::SwitchPhases`]; a router apply that timed out is
//!   [`sla::ApplyPhase::TimedOut`], never 0 ms) and the error budget left
//!   (default target 99.995 %) with the spent budget attributed to dependency,
//!   cell or switch; a JSON report and OpenTelemetry metrics.
//!   [`sla::attribution`] names where the budget went from the audit rows,
//!   the requests' outcomes and the probes' transitions: each failure and
//!   each bad interval charged to (cell, switch + phase), (cell, down probe)
//!   or (cell, unattributed).
//!
//! # Mapping decisions to the routing table
//! A drain is [`Change::Drain`] (the cell's state becomes `down`, so
//! `cellrouter` sends its slots to its failover list); when the [`Plan`]
//! spills the cell over several targets (each within its `headroom_rps`) it
//! is [`Change::Spread`]: shares of its slots migrate to each target. Each
//! failback step is [`Change::Ramp`] (the cell active again, the share of its
//! slots not yet home migrating to its failover target), the last one
//! [`Change::Failback`]; a relapse during the ramp is a drain, which removes
//! the ramp's moves. A canary cohort is [`Change::Cohort`]. Every one is a
//! table version with its own audit row; the moves are slot migrations
//! tagged with their purpose (`cellrouter::Migration::purpose`).
//!
//! # Metrics (OpenTelemetry API, meter `failover`)
//! | name | kind | attributes |
//! |---|---|---|
//! | `failover.decisions` | counter | `cell`, `action` |
//! | `failover.alerts` | counter | `cell` |
//! | `failover.cell.share` | gauge 0..1 | `cell` |
//! | `failover.rules.reloads` | counter | `result` = `loaded` \| `rejected` |
//! | `failover.rules.disabled` | counter | (none): rules disabled because their evaluation panicked |
//! | `failover.sla.requests` | counter | `cell`, `outcome`, `cause` |
//! | `failover.sla.latency` | histogram, s | `cell` |
//! | `failover.switch.duration` | histogram, s | `phase` = `detect` \| `decide` \| `commit` \| `apply` (apply only when measured) |
//! | `failover.switch.apply_timeouts` | counter | |
//! | `failover.switch.retries` | counter | `cell` |
//! | `failover.controller.leader` | gauge 0 \| 1 | |
//! | `failover.sla.availability` | gauge | |
//! | `failover.sla.error_budget_remaining` | gauge | |
//! | `failover.alerts.sent` | counter | `alertname`, `status` |
//! | `failover.alerts.dropped` | counter | |
//! | `failover.alerts.deduplicated` | counter | `alertname` |
//! | `failover.alerts.send_failures` | counter | |
//!
//! # Features
//! - `etcd`: rule sets from etcd ([`RuleEngine::watch_etcd`]); with `sql`, the
//!   `switch` module.
//! - `alerts-http`: `alert::AlertmanagerClient` (hyper-util's HTTP client).
//! - `sql`: the [`audit`] log (MySQL/MariaDB, PostgreSQL, SQLite through sqlx).
//!   Also the [`Controller`], the [`SwitchBackend`] trait, [`LocalSwitch`]
//!   and the `idempotency` store and layer.

pub mod alert;
#[cfg(feature = "sql")]
pub mod audit;
#[cfg(feature = "sql")]
mod backend;
mod change;
mod config;
mod config_file;
#[cfg(feature = "sql")]
mod controller;
mod driver;
mod engine;
mod error;
#[cfg(feature = "sql")]
pub mod idempotency;
#[cfg(all(feature = "etcd", feature = "sql"))]
mod etcd_leader;
mod layer;
#[cfg(feature = "sql")]
mod local;
#[cfg(feature = "sql")]
mod local_store;
#[cfg(feature = "sql")]
mod retry;
mod outcome;
pub mod rules;
pub mod sla;
#[cfg(feature = "sql")]
mod steer;
mod steps;
#[cfg(all(feature = "etcd", feature = "sql"))]
pub mod switch;

#[cfg(feature = "sql")]
pub use backend::{DryRun, Prepare, Prepared, ReconcileReport, SwitchBackend, SwitchOutcome, Term};
pub use change::{Change, SwitchRequest};
pub use config::{CellSpec, DecisionConfig, FailMode, Failback, RampCurve};
pub use config_file::{CurvePoint, DecisionConfigFile, FailbackFile, FailbackMode};
#[cfg(feature = "sql")]
pub use controller::{Controller, ControllerEvent, ControllerHandle};
#[cfg(feature = "sql")]
pub use retry::RetryPolicy;
pub use driver::{EngineHandle, spawn_engine};
pub use engine::{Allocation, CellPhase, Decision, DecisionEngine, DrainReason, Plan, SharedPlan, Spill};
pub use error::Error;
pub use layer::{Outcome, OutcomeLayer, ResponseFuture};
#[cfg(feature = "sql")]
pub use local::LocalSwitch;
#[cfg(feature = "sql")]
pub use local_store::LocalStore;
pub use outcome::OutcomeReporter;
pub use rules::{Action, RuleEngine, RuleMatch, RuleSet};
#[cfg(all(feature = "etcd", feature = "sql"))]
pub use switch::AtomicSwitch;
