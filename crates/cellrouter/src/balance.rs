//! [`Balancer`]: weighted selection among a cell's endpoints (forwarding) and
//! among cells (unkeyed traffic): [`SmoothWrr`] with weights following the
//! seed's RTT formula, RTT as an EWMA of forwarded responses.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cellctx::CellId;

use crate::table::{CellState, CompiledTable};
use crate::weight::{SmoothWrr, WeightParams};

/// Base weight of every endpoint of a cell (a cell's endpoints are equal
/// replicas: their RTTs make the difference).
const ENDPOINT_BASE: f64 = 100.0;

/// What the routing layer does with a request that has no routing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnkeyedPolicy {
    /// Serve it where it lands (the default).
    #[default]
    Local,
    /// Pick a cell of the local cell's region (the table's default region when
    /// the local cell is not in the table, as at a gateway) by smooth weighted
    /// round robin over `capacity weight × (1 + 0.5 e^(−0.02 rtt_ms))`; only
    /// active cells that are not reported failed take part. The request is served
    /// locally when the local cell is picked or when it was already forwarded.
    Weighted,
    /// Like [`Weighted`](Self::Weighted), over the active cells of every region.
    WeightedGlobal,
}

/// The endpoints of one cell, synced with the table lazily.
pub(crate) struct EndpointSet {
    /// `version + 1` of the table the set was last synced with (0: never).
    synced: AtomicU64,
    pub(crate) wrr: SmoothWrr<Arc<str>>,
}

impl EndpointSet {
    fn sync(&self, version: u64, endpoints: &[String]) {
        if self.synced.load(Ordering::Acquire) == version.wrapping_add(1) {
            return;
        }
        for e in endpoints {
            // Keeps the RTT average and failed flag of a known endpoint.
            self.wrr.insert(Arc::from(e.as_str()), ENDPOINT_BASE);
        }
        self.wrr.retain(|k| endpoints.iter().any(|e| e.as_str() == &**k));
        self.synced.store(version.wrapping_add(1), Ordering::Release);
    }
}

/// The cells of one scope (a region, or every region), synced with the table
/// and its health overlay lazily.
struct CellSet {
    synced: Mutex<Option<(u64, u64)>>,
    wrr: SmoothWrr<CellId>,
}

/// Weighted selection state shared by a [`CellRouterLayer`](crate::CellRouterLayer)
/// and the services it makes (and, through
/// [`with_balancer`](crate::CellRouterLayer::with_balancer), by several layers).
///
/// - Among a cell's endpoints (where a request is forwarded or redirected):
///   smooth WRR, each endpoint `100 × (1 + 0.5 e^(−0.02 rtt_ms))` with the RTT an
///   EWMA of the forwarded responses' time to headers; weight 0 for an endpoint
///   marked failed ([`set_endpoint_failed`](Self::set_endpoint_failed), e.g.
///   from health checks), and a floor (10 % of the base by default) for a live one.
/// - Among cells, for unkeyed traffic ([`UnkeyedPolicy`]): the same with the
///   cell's capacity weight as base; draining, down and failed cells get 0.
///
/// ```
/// use std::time::Duration;
/// use cellrouter::{Balancer, Cell, RoutingTable};
/// use cellctx::CellId;
/// let id = |s: &str| CellId::new(s).unwrap();
/// let mut cell = Cell::new(id("a"), id("eu"), "http://10.0.0.1:80");
/// cell.endpoints.push("http://10.0.0.2:80".into());
/// let table = RoutingTable::uniform(id("eu"), vec![cell], 128).compile().unwrap();
/// let b = Balancer::new();
/// b.set_endpoint_failed(&id("a"), "http://10.0.0.2:80", true);
/// assert!((0..10).all(|_| &*b.pick_endpoint(&table, &id("a")).unwrap() == "http://10.0.0.1:80"));
/// b.observe_endpoint_rtt(&id("a"), "http://10.0.0.1:80", Duration::from_millis(0));
/// assert_eq!(b.endpoint_weight(&id("a"), "http://10.0.0.1:80"), Some(150.0));
/// ```
pub struct Balancer {
    params: WeightParams,
    endpoints: Mutex<HashMap<CellId, Arc<EndpointSet>>>,
    cells: Mutex<HashMap<Option<CellId>, Arc<CellSet>>>,
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("params", &self.params)
            .field("cells_with_endpoints", &lock(&self.endpoints).len())
            .field("unkeyed_scopes", &lock(&self.cells).len())
            .finish()
    }
}

impl Default for Balancer {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Balancer {
    /// A balancer with the default [`WeightParams`] (a = 0.5, b = 0.02, floor 0.1,
    /// EWMA α 0.3).
    pub fn new() -> Self {
        Self::with_params(WeightParams::default())
    }

    /// A balancer with explicit weight parameters.
    pub fn with_params(params: WeightParams) -> Self {
        Balancer { params, endpoints: Mutex::new(HashMap::new()), cells: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn endpoint_set(&self, cell: &CellId) -> Arc<EndpointSet> {
        let mut m = lock(&self.endpoints);
        if let Some(s) = m.get(cell) {
            return Arc::clone(s);
        }
        let s = Arc::new(EndpointSet { synced: AtomicU64::new(0), wrr: SmoothWrr::with_params(self.params) });
        m.insert(cell.clone(), Arc::clone(&s));
        s
    }

    /// Picks the endpoint of cell index `cell` in `table`; also returns the set
    /// (for RTT feedback). `None` inside when every endpoint is failed.
    pub(crate) fn pick_endpoint_in(&self, table: &CompiledTable, cell: &crate::Cell) -> (Arc<EndpointSet>, Option<Arc<str>>) {
        let set = self.endpoint_set(&cell.id);
        set.sync(table.version(), &cell.endpoints);
        let pick = set.wrr.pick();
        (set, pick)
    }

    /// Picks the endpoint of `cell` the next request should go to; `None` when
    /// the cell is not in `table` or every endpoint of it is failed.
    pub fn pick_endpoint(&self, table: &CompiledTable, cell: &CellId) -> Option<Arc<str>> {
        let c = table.cell(cell)?;
        self.pick_endpoint_in(table, c).1
    }

    /// Marks an endpoint of `cell` failed (weight 0: it gets no request) or
    /// recovered. Kept across table updates while the table lists the endpoint.
    pub fn set_endpoint_failed(&self, cell: &CellId, endpoint: &str, failed: bool) {
        let set = self.endpoint_set(cell);
        let key: Arc<str> = Arc::from(endpoint);
        if set.wrr.weight(&key).is_none() {
            set.wrr.insert(Arc::clone(&key), ENDPOINT_BASE);
        }
        set.wrr.set_failed(&key, failed);
    }

    /// Feeds an observed round-trip time of an endpoint of `cell` (the layer does
    /// it for every forwarded response).
    pub fn observe_endpoint_rtt(&self, cell: &CellId, endpoint: &str, rtt: Duration) {
        let set = self.endpoint_set(cell);
        let key: Arc<str> = Arc::from(endpoint);
        if set.wrr.weight(&key).is_none() {
            set.wrr.insert(Arc::clone(&key), ENDPOINT_BASE);
        }
        set.wrr.observe_rtt(&key, rtt);
    }

    /// The current weight of an endpoint of `cell` (`None` before it was seen).
    pub fn endpoint_weight(&self, cell: &CellId, endpoint: &str) -> Option<f64> {
        let set = lock(&self.endpoints).get(cell).cloned()?;
        set.wrr.weight(&Arc::from(endpoint))
    }

    /// The RTT average of an endpoint of `cell`, in milliseconds (`None` before a
    /// response was observed).
    pub fn endpoint_rtt_ms(&self, cell: &CellId, endpoint: &str) -> Option<f64> {
        let set = lock(&self.endpoints).get(cell).cloned()?;
        set.wrr.rtt_ms(&Arc::from(endpoint))
    }

    fn cell_set(&self, scope: Option<&CellId>) -> Arc<CellSet> {
        let mut m = lock(&self.cells);
        let key = scope.cloned();
        if let Some(s) = m.get(&key) {
            return Arc::clone(s);
        }
        let s = Arc::new(CellSet { synced: Mutex::new(None), wrr: SmoothWrr::with_params(self.params) });
        m.insert(key, Arc::clone(&s));
        s
    }

    /// Picks a cell for an unkeyed request among the active, non-failed cells of
    /// region `scope` (every region when `None`), by smooth WRR over capacity
    /// weight × RTT factor. `None` when no cell qualifies.
    pub fn pick_cell(&self, table: &CompiledTable, scope: Option<&CellId>) -> Option<CellId> {
        let set = self.cell_set(scope);
        {
            let stamp = (table.version(), table.health_gen.load(Ordering::Acquire));
            let mut synced = lock(&set.synced);
            if *synced != Some(stamp) {
                let in_scope = |c: &crate::Cell| scope.is_none_or(|r| &c.region == r);
                for (i, c) in table.cells().iter().enumerate().filter(|(_, c)| in_scope(c)) {
                    set.wrr.insert(c.id.clone(), f64::from(c.weight));
                    let eligible = c.state == CellState::Active && !table.failed_at(i as u16);
                    set.wrr.set_failed(&c.id, !eligible);
                }
                set.wrr.retain(|id| table.cell(id).is_some_and(in_scope));
                *synced = Some(stamp);
            }
        }
        set.wrr.pick()
    }

    /// Feeds an observed round-trip time to `cell` into the cell weights used for
    /// unkeyed traffic (the layer does it for every forwarded response).
    pub fn observe_cell_rtt(&self, cell: &CellId, rtt: Duration) {
        let sets: Vec<Arc<CellSet>> = lock(&self.cells).values().cloned().collect();
        for s in sets {
            s.wrr.observe_rtt(cell, rtt);
        }
    }

    /// The current weight of `cell` for unkeyed traffic in `scope` (`None` before
    /// the first pick in that scope).
    pub fn cell_weight(&self, scope: Option<&CellId>, cell: &CellId) -> Option<f64> {
        let set = lock(&self.cells).get(&scope.cloned()).cloned()?;
        set.wrr.weight(cell)
    }
}
