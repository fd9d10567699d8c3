//! Service registration and discovery by cell over etcd, feeding tower's
//! balancing machinery.
//!
//! - [`Registration`]: at start an instance writes its [`Instance`] (`service`,
//!   `cell`, `region`, `address`, `version`, `weight`, `metadata`) under
//!   `<root>/<service>/<cell>/<id>`, tied to an etcd lease that a background task
//!   keeps alive (TTL default 5 s). [`Registration::shutdown`] marks it
//!   draining, waits the grace period, then revokes the lease; a crashed
//!   instance disappears when its lease expires.
//! - [`Watcher`]: a background task lists and watches a service's prefix and
//!   publishes [`Snapshot`]s (lock-free reads). It reconnects with backoff,
//!   lists again after a compaction, keeps the last known instances while etcd
//!   is unreachable, skips (and counts) malformed values and rejects a listing
//!   that would drop every instance at once.
//! - [`CellDiscover`] ([`Watcher::discover`]): one cell's serving instances as a
//!   [`tower::discover::Discover`] of `Change::Insert` / `Change::Remove`, for
//!   [`tower::balance::p2c::Balance`] (with `PeakEwma` or `Constant` load) within
//!   a cell. A draining instance is removed at once.
//! - [`CellClient`]: sends a request to an instance of the request's cell (from
//!   its `Arc<CellContext>` extension or [`cellctx::current`]), falls back to
//!   the [`FailoverOrder`]'s cells (the routing table's failover lists: pass a
//!   [`cellrouter::TableStore`]; or any closure), and propagates the context.
//!
//! # Example
//!
//! A cell-aware client behind a `ServiceBuilder`. [`Watcher::fixed`] stands in
//! for a live watcher ([`Watcher::start`]) so the example runs without etcd; the
//! endpoint service would be an HTTP client bound to `instance.address`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cellctx::{CellContext, CellId};
//! use discovery::{CellClient, Instance, Watcher};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let cell = |s: &str| s.parse::<CellId>().unwrap();
//! let watcher = Watcher::fixed("orders", [
//!     Instance::try_new("orders", cell("sh-1"), "10.0.0.1:8080")?,
//!     Instance::try_new("orders", cell("bj-1"), "10.0.1.1:8080")?,
//! ]);
//! // one endpoint service per instance (here: answers with its address)
//! let endpoint = |i: &Instance| {
//!     let addr = i.address.clone();
//!     tower::service_fn(move |_req: http::Request<String>| {
//!         let addr = addr.clone();
//!         async move { Ok::<_, tower::BoxError>(addr) }
//!     })
//! };
//! let client = CellClient::new(watcher, endpoint)
//!     .with_failover(|c: &CellId| if c.as_str() == "gz-1" { vec!["sh-1".parse().unwrap()] } else { vec![] });
//! let mut svc = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(2))
//!     .service(client);
//!
//! // the request's cell picks the instance...
//! let ctx = Arc::new(CellContext::new().with_cell(cell("bj-1")));
//! let mut req = http::Request::new(String::new());
//! req.extensions_mut().insert(ctx);
//! assert_eq!(svc.ready().await?.call(req).await?, "10.0.1.1:8080");
//!
//! // ...and a cell without instances falls over to its failover cell
//! let ctx = Arc::new(CellContext::new().with_cell(cell("gz-1")));
//! let reply = cellctx::scope(ctx, async { svc.ready().await?.call(http::Request::new(String::new())).await }).await?;
//! assert_eq!(reply, "10.0.0.1:8080");
//! # Ok(())
//! # }
//! ```
//!
//! With etcd: register at start, shut down gracefully, balance within a cell.
//!
//! ```no_run
//! use std::time::Duration;
//! use discovery::{Instance, Registration, RegistrationConfig, Watcher, WatcherConfig};
//! use tower::balance::p2c::Balance;
//! use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
//!
//! # async fn run(endpoint: impl Fn(&Instance) -> tower::util::BoxService<http::Request<String>, String, tower::BoxError> + Send + 'static) -> Result<(), Box<dyn std::error::Error>> {
//! let etcd = etcd_client::Client::connect(["http://127.0.0.1:2379"], None).await?;
//! let me = Instance::try_new("orders", "sh-1".parse()?, "10.0.0.1:8080")?.with_version("1.4.2");
//! let registration = Registration::register(etcd.clone(), me, RegistrationConfig::new()).await?;
//!
//! let watcher = Watcher::start(etcd, "orders", WatcherConfig::new())?;
//! watcher.synced(Duration::from_secs(5)).await?;
//! let discover = PeakEwmaDiscover::new(
//!     watcher.discover("sh-1".parse()?, endpoint),
//!     Duration::from_millis(30),
//!     Duration::from_secs(10),
//!     CompleteOnResponse::default(),
//! );
//! let balance: Balance<_, http::Request<String>> = Balance::new(discover);
//! # drop(balance);
//! // ... serve until SIGTERM, then:
//! registration.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Where it goes in the stack
//!
//! [`Registration`] belongs to the service's startup and shutdown (register
//! once listening; [`Registration::shutdown`] on SIGTERM, before the server
//! stops accepting). On the calling side, [`CellClient`] (or a p2c `Balance`
//! over [`CellDiscover`]) is the innermost service of the outbound stack: the
//! caller's layers (timeouts, breakers, retries) wrap it, and the per-instance
//! endpoint services it builds (HTTP or gRPC clients, with the `cellctx` client
//! layer) sit below it. The [`Watcher`] runs beside the request path; requests
//! only read its latest [`Snapshot`].
//!
//! # Registry layout
//!
//! `<root>/<service>/<cell>/<id>` (root default [`DEFAULT_ROOT`]) holds the
//! [`Instance`] as JSON; the key's cell and id must match the value's, or the
//! value is treated as malformed.
//!
//! # Metrics
//!
//! Through the `opentelemetry` API only (instrument names in [`metrics`]):
//!
//! | instrument | kind | attributes |
//! |---|---|---|
//! | `discovery.instances` | u64 gauge: serving instances | `service`, `cell` |
//! | `discovery.registry.staleness` | f64 observable gauge, seconds since etcd last answered | `service` |
//! | `discovery.registry.malformed` | u64 counter: values skipped | `service` |
//! | `discovery.registry.rejected` | u64 counter: empty listings rejected | `service` |
//! | `discovery.watch.reconnects` | u64 counter | `service` |
//! | `discovery.registration.lease_regrants` | u64 counter: leases lost and granted again | `service`, `cell` |

mod client;
mod discover;
mod error;
mod failover;
mod instance;
pub mod metrics;
mod register;
mod snapshot;
mod state;
mod watcher;

pub use client::{CellClient, ResponseFuture};
pub use discover::CellDiscover;
pub use error::Error;
pub use failover::{FailoverOrder, NoFailover};
pub use instance::{DEFAULT_ROOT, DEFAULT_WEIGHT, Instance, InstanceState, service_prefix};
pub use register::{Registration, RegistrationConfig};
pub use snapshot::Snapshot;
pub use watcher::{Watcher, WatcherConfig, WatcherStats};
