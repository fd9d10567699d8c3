//! [`TableStore`]: the table in force, swapped atomically; readers never wait.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwapOption, Guard};
use cellctx::CellId;
use tokio::sync::watch;

use crate::error::{Error, InvalidTable};
use crate::metrics::StoreMetrics;
use crate::table::{CompiledTable, RoutingTable};

/// The routing table in force, shared by the routing layer, table sources and
/// anyone who needs to look a key up. Cheap to clone (one `Arc`).
///
/// - [`load`](Self::load) is wait-free (`ArcSwap`): requests never wait for a writer.
/// - [`store`](Self::store) validates, rejects a version that does not go up, and
///   keeps the old table on any error.
/// - [`subscribe`](Self::subscribe) notifies of every applied table.
/// - [`set_cell_failed`](Self::set_cell_failed) overlays health-check results: a
///   failed cell is treated as down (its keys go to its failover list).
///
/// ```
/// use cellrouter::{Cell, RoutingTable, TableStore};
/// use cellctx::CellId;
/// let id = |s: &str| CellId::new(s).unwrap();
/// let t = RoutingTable::uniform(id("eu"), vec![Cell::new(id("a"), id("eu"), "http://127.0.0.1:1")], 128);
/// let store = TableStore::new();
/// store.store(t.clone()).unwrap();
/// assert!(store.store(t.clone()).is_err()); // same version: rejected
/// let mut t2 = t;
/// t2.version = 2;
/// store.store(t2).unwrap();
/// assert_eq!(store.version(), Some(2));
/// ```
#[derive(Clone)]
pub struct TableStore {
    inner: Arc<Inner>,
}

struct Inner {
    current: ArcSwapOption<CompiledTable>,
    writer: Mutex<HashSet<CellId>>,
    tx: watch::Sender<Option<Arc<CompiledTable>>>,
    applied: AtomicU64,
    rejected: AtomicU64,
    source_errors: AtomicU64,
    compactions: AtomicU64,
    fresh_ms: AtomicU64,
    /// Bumped after every swap (readers holding a [`TableCache`] compare it).
    generation: AtomicU64,
    metrics: StoreMetrics,
}

impl fmt::Debug for TableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableStore")
            .field("version", &self.version())
            .field("applied", &self.applied_count())
            .field("rejected", &self.rejected_count())
            .finish()
    }
}

impl Default for TableStore {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl TableStore {
    /// An empty store (no table yet: routing answers 503 until one is stored).
    pub fn new() -> Self {
        let (tx, _) = watch::channel(None);
        TableStore {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                writer: Mutex::new(HashSet::new()),
                tx,
                applied: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                source_errors: AtomicU64::new(0),
                compactions: AtomicU64::new(0),
                fresh_ms: AtomicU64::new(0),
                generation: AtomicU64::new(0),
                metrics: StoreMetrics::new(),
            }),
        }
    }

    /// A store holding `table` (validated).
    pub fn with_table(table: RoutingTable) -> Result<Self, Error> {
        let s = Self::new();
        s.store(table)?;
        Ok(s)
    }

    /// The table in force, wait-free (a guard: hold it briefly).
    #[inline]
    pub fn load(&self) -> Guard<Option<Arc<CompiledTable>>> {
        self.inner.current.load()
    }

    /// A caching read handle for a reader that lives long (a task, a thread, a
    /// service instance): its [`TableCache::load`] is one atomic load and a
    /// compare while the table does not change, instead of an `ArcSwap` load.
    pub fn cache(&self) -> TableCache {
        TableCache { store: self.clone(), generation: u64::MAX, table: None }
    }

    /// Bumped after every table swap.
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// The table in force, as an owned `Arc`.
    pub fn current(&self) -> Option<Arc<CompiledTable>> {
        self.inner.current.load_full()
    }

    /// The version in force.
    pub fn version(&self) -> Option<u64> {
        self.inner.current.load().as_ref().map(|t| t.version())
    }

    /// Validates `table` and makes it the table in force if its version is above
    /// the current one. On error the table in force is unchanged and the
    /// rejection is counted.
    pub fn store(&self, table: RoutingTable) -> Result<Arc<CompiledTable>, Error> {
        let res = self.try_store(table);
        match &res {
            Ok(t) => {
                self.inner.applied.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.updates.add(1, &self.inner.metrics.applied);
                self.inner.metrics.version.record(t.version(), &[]);
                self.mark_fresh();
                tracing::info!(version = t.version(), "routing table applied");
            }
            Err(e) => {
                self.inner.rejected.fetch_add(1, Ordering::Relaxed);
                self.inner.metrics.updates.add(1, &self.inner.metrics.rejected);
                tracing::warn!(error = %e, version = ?self.version(), "routing table rejected; keeping the table in force");
            }
        }
        res
    }

    fn try_store(&self, table: RoutingTable) -> Result<Arc<CompiledTable>, Error> {
        let failed = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cur) = self.inner.current.load().as_ref()
            && table.version <= cur.version()
        {
            return Err(InvalidTable::StaleVersion { current: cur.version(), offered: table.version }.into());
        }
        let compiled = table.compile()?;
        compiled.set_failed_many(failed.iter(), true);
        let compiled = Arc::new(compiled);
        self.inner.current.store(Some(Arc::clone(&compiled)));
        self.inner.generation.fetch_add(1, Ordering::Release);
        self.inner.tx.send_replace(Some(Arc::clone(&compiled)));
        drop(failed);
        Ok(compiled)
    }

    /// Change notifications: the receiver sees every table applied after it was
    /// created (the latest one when several land between two reads).
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<CompiledTable>>> {
        self.inner.tx.subscribe()
    }

    /// Marks `cell` failed (or recovered) from health checks: while failed it is
    /// treated as down. Kept across table updates.
    pub fn set_cell_failed(&self, cell: &CellId, failed: bool) {
        let mut set = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        if failed {
            set.insert(cell.clone());
        } else {
            set.remove(cell);
        }
        if let Some(t) = self.inner.current.load().as_ref() {
            t.set_failed(cell, failed);
        }
    }

    /// Tables applied so far.
    pub fn applied_count(&self) -> u64 {
        self.inner.applied.load(Ordering::Relaxed)
    }

    /// Tables rejected so far (invalid or stale).
    pub fn rejected_count(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// Source errors so far (unreadable, undecodable, empty or invalid pushes,
    /// lost connections); also the `cellrouter.source.errors` counter.
    pub fn source_error_count(&self) -> u64 {
        self.inner.source_errors.load(Ordering::Relaxed)
    }

    /// Times a source found its watch revision compacted and re-read the whole
    /// table (metric `cellrouter.source.compactions`).
    pub fn compaction_count(&self) -> u64 {
        self.inner.compactions.load(Ordering::Relaxed)
    }

    #[cfg_attr(not(feature = "etcd"), allow(dead_code))]
    pub(crate) fn compaction_reread(&self) {
        self.inner.compactions.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.compactions.add(1, &[]);
    }

    /// Records that the source confirmed the table is current (sources call it
    /// on every successful sync or progress notification).
    pub fn mark_fresh(&self) {
        self.inner.fresh_ms.store(now_ms(), Ordering::Relaxed);
        self.inner.metrics.staleness.record(0.0, &[]);
    }

    /// Time since the source last confirmed the table (`None` before the first
    /// confirmation). Also recorded as the `cellrouter.table.staleness` gauge by
    /// [`record_staleness`](Self::record_staleness).
    pub fn staleness(&self) -> Option<Duration> {
        match self.inner.fresh_ms.load(Ordering::Relaxed) {
            0 => None,
            t => Some(Duration::from_millis(now_ms().saturating_sub(t))),
        }
    }

    /// Records the staleness gauge now (sources call it periodically).
    pub fn record_staleness(&self) {
        if let Some(s) = self.staleness() {
            self.inner.metrics.staleness.record(s.as_secs_f64(), &[]);
        }
    }

    /// Counts a source error (metric `cellrouter.source.errors`).
    pub(crate) fn source_error(&self, source: &'static str) {
        self.inner.source_errors.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.source_errors.add(1, &[opentelemetry::KeyValue::new("source", source)]);
    }
}

/// A per-reader cache of the table in force (see [`TableStore::cache`]).
///
/// Holds an `Arc` of the table it last saw: [`load`](Self::load) compares the
/// store's swap counter with the one it cached and reloads only after a swap,
/// so a reader never waits for a writer and, between swaps, pays one atomic
/// load. The previous table stays alive until the next `load` after a swap.
///
/// ```
/// use cellrouter::{Cell, RoutingTable, TableStore, resolve};
/// use cellctx::CellId;
/// let id = |s: &str| CellId::new(s).unwrap();
/// let mut t = RoutingTable::uniform(id("eu"), vec![Cell::new(id("a"), id("eu"), "http://127.0.0.1:1")], 128);
/// let store = TableStore::with_table(t.clone()).unwrap();
/// let mut cache = store.cache();
/// assert_eq!(cache.load().unwrap().version(), 1);
/// t.version = 2;
/// store.store(t).unwrap();
/// let table = cache.load().unwrap();
/// assert_eq!(table.version(), 2);
/// assert_eq!(resolve(table, "user-1").unwrap().target.as_str(), "a");
/// ```
#[derive(Debug, Clone)]
pub struct TableCache {
    store: TableStore,
    generation: u64,
    table: Option<Arc<CompiledTable>>,
}

impl TableCache {
    /// The table in force (`None` before the first table).
    #[inline]
    pub fn load(&mut self) -> Option<&Arc<CompiledTable>> {
        let g = self.store.generation();
        if g != self.generation {
            self.table = self.store.current();
            self.generation = g;
        }
        self.table.as_ref()
    }

    /// The store this cache reads.
    pub fn store(&self) -> &TableStore {
        &self.store
    }
}
