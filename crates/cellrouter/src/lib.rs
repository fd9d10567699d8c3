//! Cell routing: a versioned routing table, placement of keys and users, the
//! server-side routing layer, weighted cell selection and live table sources.
//!
//! ```
//! use cellrouter::{Cell, CellRouterLayer, MisroutePolicy, RoutingTable, TableStore};
//! use cellctx::CellId;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let id = |s: &str| CellId::new(s).unwrap();
//! let table = RoutingTable::uniform(
//!     id("eu"),
//!     vec![Cell::new(id("eu-1"), id("eu"), "http://10.0.0.1:8080"), Cell::new(id("eu-2"), id("eu"), "http://10.0.0.2:8080")],
//!     16384,
//! );
//! let store = TableStore::with_table(table).unwrap();
//!
//! let svc = ServiceBuilder::new()
//!     // after cellctx::CellContextLayer (the context is read from the extensions)
//!     .layer(CellRouterLayer::new(store.clone(), id("eu-1")).with_policy(MisroutePolicy::Refuse))
//!     .service_fn(|_req: http::Request<http_body_util::Empty<bytes::Bytes>>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
//!     });
//!
//! // Find a key whose home is eu-2: this cell refuses it with 421.
//! let key = (0..).map(|i| format!("user-{i}")).find(|k| cellrouter::resolve(&store.current().unwrap(), k).unwrap().home.as_str() == "eu-2").unwrap();
//! let req = http::Request::builder().header("x-user-id", key).body(http_body_util::Empty::new()).unwrap();
//! let resp = svc.oneshot(req).await.unwrap();
//! assert_eq!(resp.status(), http::StatusCode::MISDIRECTED_REQUEST);
//! assert_eq!(resp.headers()["x-cell-home"], "eu-2");
//! # }
//! ```
//!
//! # Where it goes
//! Server side, after `cellctx::CellContextLayer` (which puts the request's
//! context in the extensions and the task-local scope) and before the handlers
//! (and before per-cell breakers or rate limits, which should only see requests
//! this cell serves). At a global gateway, the same layer with a `local` cell id
//! that owns no slot forwards every keyed request to its home cell.
//!
//! # The pieces
//! - [`table`]: [`RoutingTable`] (serde JSON/YAML; version, `N` slots per region,
//!   slot states, cells with endpoints/capacity/state, regions with compliance
//!   pinning, per-cell failover lists), [`RoutingTable::validate`] and
//!   [`InvalidTable`]; [`CompiledTable`] is the validated, indexed form.
//! - Placement: [`slot_of`]`(key, n)` = `xxh3_64(key) % n` (test vectors in
//!   [`slot_of`]'s docs), [`slot_of_md5`] (the seed's variant),
//!   [`placement`] (new users: GPS > phone prefix > IP CIDR), and id-carried regions
//!   through idgen's datacenter bits ([`CellRouterLayer::with_id_layout`]).
//! - [`resolve`] / [`resolve_in`]: key -> [`Resolution`] (slot, home, target, kind)
//!   honouring cell state, health, migrations (`ASK`), failover lists and
//!   compliance; [`ResolveError`] when no allowed cell can serve.
//!   A lookup is hash + mask (modulo when `N` is not a power of two) + one indexed
//!   load: the answer of every slot is precomputed when the table is compiled and
//!   whenever the health overlay changes.
//! - [`TableStore`]: the table in force behind `ArcSwap` (`load`, `store`,
//!   `subscribe`, `set_cell_failed`); a rejected table leaves the old one in force.
//!   [`TableStore::cache`] gives long-lived readers a [`TableCache`] (one atomic
//!   load per read while the table does not change).
//! - Weights: [`rtt_weight`] (`base × (1 + 0.5 e^(−0.02 rtt))`), [`SmoothWrr`] with
//!   live weights, an EWMA RTT per key, a floor, and 0 for a failed key.
//! - [`plan_rebalance`]: the fewest slot moves to reach capacity shares.
//! - [`CellRouterLayer`]: local / forward (once; 508 on a loop) / 307 / 421,
//!   migrating slots always forwarded (`ASK`), 503 rather than a compliance leak;
//!   forwarded requests bounded by [`CellRouterLayer::with_forward_timeout`] (504;
//!   [`DEFAULT_FORWARD_TIMEOUT`] unless set). The forward itself is a tower
//!   [`Forwarder`] the user can wrap ([`CellRouterLayer::with_forwarder`]: TLS,
//!   the hop signature, retries); plain HTTP only to cells whose link the table
//!   marks private ([`PlaintextPolicy`]), HTTPS through rustls with the `tls` feature.
//! - [`retry`]: a request retried inside itself on the next allowed cell of the
//!   table ([`retry::next_target`], [`retry::FailoverPolicy`] for
//!   `tower::retry`), writes only with an idempotency key, within a shared
//!   [`retry::RetryBudget`] (tower's `TpsBudget`).
//! - [`outlier`]: passive outlier detection (Envoy's): consecutive failures eject an
//!   endpoint at once, for a time that grows with repeats, bounded by a max share.
//! - [`Balancer`]: which endpoint of a cell gets a forwarded request (smooth WRR,
//!   RTT EWMA of forwarded responses, 0 for an endpoint marked failed, a floor for
//!   live ones), and which cell gets unkeyed traffic ([`UnkeyedPolicy`]: local by
//!   default, or WRR over capacity weight × RTT).
//! - [`source`]: [`source::MemorySource`], [`source::FileSource`] and (feature
//!   `etcd`) `source::EtcdSource` with its key layout (`DEFAULT_ETCD_KEY`), encoding
//!   ([`source::encode`]/[`source::decode`]) and a compare-on-revision
//!   `source::publish` for writers.
//!
//! # Metrics (OpenTelemetry API, meter `cellrouter`)
//! - `cellrouter.table.updates` (counter, `result` = `applied` | `rejected`)
//! - `cellrouter.table.version` (gauge)
//! - `cellrouter.table.staleness` (gauge, seconds since the source confirmed the table)
//! - `cellrouter.source.errors` (counter, `source` = `etcd` | `file` | `memory`)
//! - `cellrouter.source.compactions` (counter: watch revision compacted, table re-read)
//! - `cellrouter.outlier.ejections` (counter, `result` = `ejected` | `cap_reached`;
//!   see [`outlier`])
//! - `cellrouter.requests` (counter, `outcome` = `local` | `forward` | `redirect` |
//!   `refuse` | `loop` | `unavailable` | `forward_error` | `forward_timeout`)
//!
//! Every attribute value comes from the fixed sets above: none is taken from a
//! request (cell id, region hint, routing key, method or path), so forged
//! headers cannot grow the number of series.
//!
//! # Features
//! - `etcd`: `source::EtcdSource` and `source::publish` (etcd-client).
//! - `tls`: the default forwarder speaks HTTPS (hyper-rustls, ring, the platform's roots).


mod balance;
mod error;
mod layer;
pub mod placement;
mod rebalance;
pub mod metrics;
pub mod outlier;
mod resolve;
pub mod retry;
mod slot;
pub mod source;
mod store;
pub mod table;
mod weight;

pub use cellctx::CellId;
pub use layer::{
    BoxError, CellRouter, CellRouterLayer, DEFAULT_FORWARD_TIMEOUT, ForwardBody, Forwarder, HOME_HEADER, HOPS_HEADER, KeyExtractor,
    MisroutePolicy, PlaintextPolicy, ResponseFuture, Forwarding, Route, Routing, RouterBody, VERSION_HEADER, client_forwarder, default_forwarder, forwarder,
};
pub use balance::{Balancer, UnkeyedPolicy};
pub use error::{Error, InvalidTable, ResolveError};
pub use rebalance::{RebalancePlan, SlotMove, plan_rebalance};
pub use resolve::{Resolution, TargetKind, resolve, resolve_in};
pub use slot::{slot_of, slot_of_md5, xxh3};
pub use store::{TableCache, TableStore};
pub use table::{
    Cell, CellState, CompiledTable, DEFAULT_SLOTS, MAX_CELLS, MAX_REGIONS, MAX_SLOTS, Migration, Region, RoutingTable,
    SlotRange, SlotState,
};
pub use weight::{RTT_A, RTT_B, SmoothWrr, WeightParams, rtt_weight, rtt_weight_with};

#[cfg(test)]
mod tests;
