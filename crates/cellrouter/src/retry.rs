//! Retrying a forwarded request on the next cell, inside the request.
//!
//! When the instance of a key's cell refuses or resets the connection, or the
//! response does not start in time, the request can go to the next cell the
//! routing table names for the key ([`next_target`]: the failover list of the
//! key's home cell, cells that are up, compliance applied: a pinned region's
//! key never leaves its allowed regions; none left, the caller's error stands).
//!
//! - [`FailoverPolicy`] is a `tower::retry::Policy` (use it with
//!   `tower::retry::RetryLayer`): it classifies the failure ([`classify`]),
//!   lets a write be retried only when it was never sent or carries an
//!   idempotency key ([`IDEMPOTENCY_KEY_HEADER`]), checks that the table
//!   names another allowed cell, spends a token of the shared [`RetryBudget`]
//!   (tower's `TpsBudget`: retries at most a share of the requests), and
//!   records the failed cell in the request's [`Attempts`], which the inner
//!   service reads to pick its target ([`Attempts::target`]).
//! - The inner service reports which cell failed by returning a
//!   [`CellAttemptError`].
//!
//! The receiving cell deduplicates writes by their idempotency key (for
//! example `failover::idempotency`), so a write that landed before the
//! connection broke is not applied twice.
//!
//! ```
//! use std::time::Duration;
//! use cellrouter::retry::{FailoverPolicy, RetryBudget};
//! use cellrouter::{Cell, RoutingTable, TableStore};
//! use cellctx::CellId;
//!
//! let id = |s: &str| CellId::new(s).unwrap();
//! let mut a = Cell::new(id("a"), id("eu"), "http://127.0.0.1:1");
//! a.failover = vec![id("b")];
//! let store = TableStore::with_table(RoutingTable::uniform(id("eu"), vec![a, Cell::new(id("b"), id("eu"), "http://127.0.0.1:2")], 64)).unwrap();
//! // at most 20 % of the requests retried (plus 10 a second to start with)
//! let budget = RetryBudget::try_new(0.2, 10, Duration::from_secs(10)).unwrap();
//! let policy = FailoverPolicy::new(store, budget);
//! let _layer = tower::retry::RetryLayer::new(policy);
//! ```

use std::error::Error as StdError;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cellctx::CellId;
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use crate::error::{Error, ResolveError};
use crate::slot::xxh3;
use crate::store::TableStore;
use crate::table::{CellState, CompiledTable};

/// The header a client may send to name a write (`Idempotency-Key`, as the
/// IETF draft writes it); without one the gateway's request id is used.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

/// The header the gateway sets on a retried attempt; a cell whose routing
/// layer has [`with_failover_retries`](crate::CellRouterLayer::with_failover_retries)
/// serves it if it may ([`may_serve_retry`]).
pub const RETRY_HEADER: &str = "x-cell-retry";

/// Whether `local` may serve a retried request resolved as `res`: it is the
/// home cell or in the home's failover list, and the key's region allows it.
pub fn may_serve_retry(table: &CompiledTable, res: &crate::Resolution<'_>, local: &CellId) -> bool {
    table.allows(res.region, local) && table.cell(res.home).is_some_and(|h| &h.id == local || h.failover.contains(local))
}

/// The cell to try after `tried` failed for `key` in `region`'s slot map:
/// in order the slot's migration target, its home cell, then the home's
/// failover list; the first that was not tried, is not `down`, is not
/// reported failed and (for a compliance-pinned region) lies inside the
/// allowed regions. [`ResolveError::NoTarget`] when none is left.
pub fn next_target<'a>(table: &'a CompiledTable, region: &CellId, key: &str, tried: &[CellId]) -> Result<&'a CellId, ResolveError> {
    let c = &table.c;
    let r = *c.region_idx.get(region).ok_or_else(|| ResolveError::UnknownRegion(region.clone()))? as usize;
    let h = xxh3(key.as_bytes());
    let slot = if c.slot_mask != u64::MAX { h & c.slot_mask } else { h % u64::from(c.n_slots) } as usize;
    let home = c.owner[r][slot];
    let moving = c.moving[r][slot];
    let cells = table.cells();
    let up = |i: u16| {
        let cell = &cells[i as usize];
        cell.state != CellState::Down
            && !table.failed_at(i)
            && c.allowed[r] & (1u64 << c.cell_region[i as usize]) != 0
            && !tried.contains(&cell.id)
    };
    std::iter::once(moving)
        .filter(|&m| m != u16::MAX)
        .chain(std::iter::once(home))
        .chain(c.failover[home as usize].iter().copied())
        .find(|&i| up(i))
        .map(|i| &cells[i as usize].id)
        .ok_or_else(|| ResolveError::NoTarget { slot: slot as u32, home: cells[home as usize].id.clone(), pinned: c.pinned[r] })
}

/// Why a forwarded attempt may be tried on another cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// The connection was refused (or could not be made): the request was
    /// never sent, so even a write is safe to send elsewhere.
    Refused,
    /// The connection was reset or closed before the response: the request
    /// may have been applied.
    Reset,
    /// The response did not start within its budget: the request may have
    /// been applied.
    NoResponse,
}

impl RetryReason {
    /// Whether the request may have reached the cell (a write then needs an
    /// idempotency key to be retried).
    pub fn maybe_applied(self) -> bool {
        !matches!(self, RetryReason::Refused)
    }

    /// A short name (`refused`, `reset`, `no_response`) for reports and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Refused => "refused",
            RetryReason::Reset => "reset",
            RetryReason::NoResponse => "no_response",
        }
    }
}

/// The retry reason of a forwarding error, read along its source chain:
/// a refused or failed connect is [`RetryReason::Refused`]; a reset, aborted
/// or half-read connection [`RetryReason::Reset`]; a timeout (tokio's or
/// tower's `Elapsed`) [`RetryReason::NoResponse`]. Anything else (a breaker
/// that is open, a bad request) is not retried: `None`.
pub fn classify(err: &(dyn StdError + 'static)) -> Option<RetryReason> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            match io.kind() {
                K::ConnectionRefused | K::NotConnected | K::AddrNotAvailable => return Some(RetryReason::Refused),
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => return Some(RetryReason::Reset),
                K::TimedOut => return Some(RetryReason::NoResponse),
                _ => {}
            }
        }
        if e.is::<tokio::time::error::Elapsed>() || e.is::<tower::timeout::error::Elapsed>() {
            return Some(RetryReason::NoResponse);
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && (h.is_incomplete_message() || h.is_canceled() || h.is_closed())
        {
            return Some(RetryReason::Reset);
        }
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return Some(RetryReason::Refused);
        }
        cur = e.source();
    }
    None
}

/// Whether a request with `method` may be sent twice without a key (RFC 9110
/// idempotent methods).
pub fn is_idempotent(method: &http::Method) -> bool {
    matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::PUT | http::Method::DELETE | http::Method::TRACE)
}

/// A failed attempt on one cell: what the inner service of a
/// [`FailoverPolicy`] returns so the policy knows which cell to skip.
#[derive(Debug, thiserror::Error)]
#[error("cell {cell}: {source}")]
pub struct CellAttemptError {
    /// The cell that was tried.
    pub cell: CellId,
    /// Why it failed.
    #[source]
    pub source: tower::BoxError,
}

impl CellAttemptError {
    /// An attempt on `cell` that failed with `source`.
    pub fn new(cell: CellId, source: impl Into<tower::BoxError>) -> Self {
        CellAttemptError { cell, source: source.into() }
    }
}

/// A request's routing key and the cells already tried, kept in its
/// extensions across attempts. The gateway inserts it before the first
/// attempt; the inner service asks it for the cell to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempts {
    /// The key's region (whose slot map is used).
    pub region: CellId,
    /// The routing key.
    pub key: String,
    /// Cells tried and failed, in order.
    pub tried: Vec<CellId>,
    /// Why each retry was made (same order as the retries).
    pub reasons: Vec<RetryReason>,
}

impl Attempts {
    /// The first attempt of `key` in `region`.
    pub fn new(region: CellId, key: impl Into<String>) -> Self {
        Attempts { region, key: key.into(), tried: Vec::new(), reasons: Vec::new() }
    }

    /// The cell this attempt goes to: [`next_target`] past the cells tried.
    pub fn target<'a>(&self, table: &'a CompiledTable) -> Result<&'a CellId, ResolveError> {
        next_target(table, &self.region, &self.key, &self.tried)
    }

    /// How many retries were made so far.
    pub fn retries(&self) -> usize {
        self.tried.len()
    }
}

#[derive(Debug, Default)]
struct Counts {
    retried: AtomicU64,
    budget_refused: AtomicU64,
    no_target: AtomicU64,
    not_idempotent: AtomicU64,
}

/// A retry budget shared by every request of a gateway: tower's
/// [`TpsBudget`] (Finagle's), each request deposits, each retry withdraws.
/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<TpsBudget>,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// What a [`RetryBudget`] and its policies did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Retries made.
    pub retried: u64,
    /// Retries refused because the budget was spent.
    pub budget_refused: u64,
    /// Retries not made because no other allowed cell could serve the key.
    pub no_target: u64,
    /// Retries not made because the request may have been applied and carries
    /// no idempotency key.
    pub not_idempotent: u64,
}

impl RetryBudget {
    /// Retries at most `ratio` of the requests deposited in the last `ttl`
    /// (0.2 = one retry per five requests), plus `min_per_sec` a second for a
    /// quiet gateway. `ttl` between 1 s and 60 s, `ratio` between 0 and 1000.
    pub fn try_new(ratio: f32, min_per_sec: u32, ttl: Duration) -> Result<Self, Error> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(Error::Config(format!("retry budget ttl {ttl:?} outside 1 s..=60 s")));
        }
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(Error::Config(format!("retry budget ratio {ratio} outside 0..=1000")));
        }
        if min_per_sec >= i32::MAX as u32 {
            return Err(Error::Config(format!("retry budget min_per_sec {min_per_sec} too large")));
        }
        Ok(RetryBudget { inner: Arc::new(TpsBudget::new(ttl, min_per_sec, ratio)), counts: Arc::default() })
    }

    /// Records one request (earns retry credit).
    pub fn deposit(&self) {
        self.inner.deposit();
    }

    /// Takes one retry's credit; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        let ok = self.inner.withdraw();
        if !ok {
            self.counts.budget_refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// What was retried and refused so far.
    pub fn stats(&self) -> RetryStats {
        let c = &self.counts;
        RetryStats {
            retried: c.retried.load(Ordering::Relaxed),
            budget_refused: c.budget_refused.load(Ordering::Relaxed),
            no_target: c.no_target.load(Ordering::Relaxed),
            not_idempotent: c.not_idempotent.load(Ordering::Relaxed),
        }
    }
}

/// A `tower::retry::Policy` that sends a failed attempt to the next allowed
/// cell of the routing table (see the [module docs](self)). Requests carry
/// [`Attempts`] in their extensions; one without is never retried.
#[derive(Debug, Clone)]
pub struct FailoverPolicy {
    store: TableStore,
    budget: RetryBudget,
    max_retries: usize,
}

impl FailoverPolicy {
    /// Retries on the cells of `store`'s table within `budget`, at most once
    /// per request (see [`with_max_retries`](Self::with_max_retries)).
    pub fn new(store: TableStore, budget: RetryBudget) -> Self {
        FailoverPolicy { store, budget, max_retries: 1 }
    }

    /// Retries a request at most `n` times.
    pub fn with_max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// The budget.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }
}

impl<B: Clone, Res> Policy<http::Request<B>, Res, tower::BoxError> for FailoverPolicy {
    type Future = Ready<()>;

    fn retry(&mut self, req: &mut http::Request<B>, result: &mut Result<Res, tower::BoxError>) -> Option<Self::Future> {
        let err = result.as_ref().err()?;
        let failed = err.downcast_ref::<CellAttemptError>()?;
        let reason = classify(failed.source.as_ref())?;
        let keyed = req.headers().contains_key(IDEMPOTENCY_KEY_HEADER);
        let attempts = req.extensions().get::<Attempts>()?;
        if attempts.retries() >= self.max_retries {
            return None;
        }
        let counts = &self.budget.counts;
        if reason.maybe_applied() && !is_idempotent(req.method()) && !keyed {
            counts.not_idempotent.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut tried = attempts.tried.clone();
        tried.push(failed.cell.clone());
        let table = self.store.current()?;
        if next_target(&table, &attempts.region, &attempts.key, &tried).is_err() {
            counts.no_target.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if !self.budget.withdraw() {
            return None;
        }
        counts.retried.fetch_add(1, Ordering::Relaxed);
        let a = req.extensions_mut().get_mut::<Attempts>()?;
        a.tried = tried;
        a.reasons.push(reason);
        Some(ready(()))
    }

    fn clone_request(&mut self, req: &http::Request<B>) -> Option<http::Request<B>> {
        let attempts = req.extensions().get::<Attempts>()?;
        if attempts.tried.is_empty() {
            // the first attempt of a request earns retry credit
            self.budget.deposit();
        }
        let mut out = http::Request::new(req.body().clone());
        *out.method_mut() = req.method().clone();
        *out.uri_mut() = req.uri().clone();
        *out.version_mut() = req.version();
        *out.headers_mut() = req.headers().clone();
        *out.extensions_mut() = req.extensions().clone();
        Some(out)
    }
}
