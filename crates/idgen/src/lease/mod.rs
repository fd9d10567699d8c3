//! Leased worker ids: a worker id is held under a TTL in Redis, etcd or a SQL
//! table, renewed in the background, and released on drop.
//!
//! # The high-water mark
//!
//! Beside each lease record the backend keeps a persistent high-water mark: a
//! Unix-ms timestamp no id issued under that worker id has exceeded. It is
//! written when the lease is taken and with every renewal as a *ceiling* —
//! `max(now, last issued, floor) + TTL` — and, on release, as the exact last
//! timestamp. Because a generator stops issuing once its clock passes the
//! renewal's send time plus the TTL, every id it ever issued is below the
//! recorded ceiling, even if the process dies right after a renewal. A new
//! holder starts from the record plus one ([`WorkerLease::floor_ms`]), so
//! neither a restart after a clock rollback nor a worker id handed to a
//! process whose clock is behind can reissue an old id.
//!
//! # Clock steps
//!
//! The deadline is kept on the generators' clock, not a monotonic one, on
//! purpose: it is what bounds the ids' timestamps by the recorded ceiling. So
//! a clock stepped forward past the deadline stops the generators
//! ([`Error::LeaseExpired`](crate::Error::LeaseExpired)) until the next
//! renewal, at most a third of the TTL later (the fault campaign's
//! `clock_step` shows it as a few failed writes on the stepped process); a
//! clock stepped back keeps them issuing longer than the TTL, and the ceiling
//! still covers every id, so a process that takes the worker id over meanwhile
//! starts above them.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::clock::{Clock, SystemClock};
use crate::generator::DEFAULT_MAX_BEHIND;
use crate::lease_state::LeaseState;
use crate::{Error, Generator, Layout};

#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "sql")]
mod sql;

#[cfg(feature = "sql")]
pub use sql::SqlLeases;

/// Default lease TTL.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// Where and how to lease a worker id.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    prefix: String,
    layout: Layout,
    datacenter: u32,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    max_behind: Duration,
}

impl LeaseOptions {
    /// Leases a worker id of `datacenter` under the key prefix `prefix` (one
    /// prefix per id space: every service issuing ids into the same space must
    /// use the same prefix and layout).
    pub fn try_new(prefix: impl Into<String>, layout: Layout, datacenter: u32) -> Result<Self, Error> {
        let prefix = prefix.into();
        if prefix.is_empty() {
            return Err(Error::InvalidLease("key prefix must not be empty"));
        }
        if datacenter > layout.max_datacenter() {
            return Err(Error::OutOfRange {
                field: "datacenter",
                value: u64::from(datacenter),
                max: u64::from(layout.max_datacenter()),
            });
        }
        Ok(LeaseOptions {
            prefix,
            layout,
            datacenter,
            ttl: DEFAULT_LEASE_TTL,
            clock: Arc::new(SystemClock::new()),
            max_behind: DEFAULT_MAX_BEHIND,
        })
    }

    /// The lease TTL (default 10 s; at least 300 ms, and for etcd at least 2 s
    /// in whole seconds). Renewal runs every third of it.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The clock for the lease deadline and the generators (default: a new
    /// [`SystemClock`]).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The generators' bound on a clock behind the last issued id.
    #[must_use]
    pub fn with_max_behind(mut self, bound: Duration) -> Self {
        self.max_behind = bound;
        self
    }

    fn ttl_ms(&self) -> Result<u64, Error> {
        let ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        if ms < 300 {
            return Err(Error::InvalidLease("TTL must be at least 300 ms"));
        }
        Ok(ms)
    }
}

/// What a backend reports when it took a worker id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Acquired {
    /// The high-water mark recorded by previous holders (0 if none).
    pub(crate) prior_ms: u64,
    /// Clock reading taken before the backend's TTL started.
    pub(crate) valid_from_ms: u64,
}

/// A lease store. Every method checks ownership with the holder's token.
pub(crate) trait Backend: Send + 'static {
    /// Tries to take `worker`; on success the ceiling
    /// `max(prior + 1, valid_from) + ttl` is already recorded.
    fn acquire(&mut self, worker: u32) -> impl Future<Output = Result<Option<Acquired>, Error>> + Send;
    /// Extends the lease and raises the recorded ceiling; `Ok(false)` when the
    /// record is no longer ours.
    fn renew(&mut self, worker: u32, ceiling_ms: u64) -> impl Future<Output = Result<bool, Error>> + Send;
    /// Records `record_ms` as the exact high-water mark and frees the worker id.
    fn release(&mut self, worker: u32, record_ms: u64) -> impl Future<Output = Result<(), Error>> + Send;
    /// Called when no worker id could be taken (free any backend resources).
    fn give_up(&mut self) -> impl Future<Output = ()> + Send;
}

/// A unique holder token: pid, time and a process-wide counter.
pub(crate) fn token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A worker id held under a TTL, renewed in the background at a third of the
/// TTL. Generators made from it ([`generator`](Self::generator)) stop issuing
/// with [`Error::LeaseExpired`] when renewals have failed for a whole TTL, and
/// with [`Error::LeaseLost`] when the record turned out not to be ours.
///
/// Dropping it releases the worker id in the background (inside a tokio
/// runtime); [`release`](Self::release) does it and waits.
pub struct WorkerLease {
    layout: Layout,
    datacenter: u32,
    worker: u32,
    floor_ms: u64,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    max_behind: Duration,
    state: Arc<LeaseState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl WorkerLease {
    /// Scans the datacenter's worker ids (from a random start) and takes the
    /// first free one.
    pub(crate) async fn acquire_with<B: Backend>(mut backend: B, opts: LeaseOptions) -> Result<Self, Error> {
        let ttl_ms = opts.ttl_ms()?;
        let workers = opts.layout.workers();
        let start = xorshift(token_seed()) % workers;
        for i in 0..workers {
            let worker = u32::try_from((start + i) % workers).unwrap_or(0);
            let Some(acquired) = backend.acquire(worker).await? else { continue };
            let floor_ms = acquired.prior_ms.saturating_add(1);
            let state = Arc::new(LeaseState::new(acquired.valid_from_ms.saturating_add(ttl_ms), floor_ms));
            let (stop, stop_rx) = oneshot::channel();
            let task = tokio::spawn(renew_loop(
                backend,
                worker,
                Arc::clone(&state),
                Arc::clone(&opts.clock),
                opts.ttl,
                stop_rx,
            ));
            tracing::info!(
                prefix = %opts.prefix,
                datacenter = opts.datacenter,
                worker,
                floor_ms,
                "idgen: worker id leased"
            );
            return Ok(WorkerLease {
                layout: opts.layout,
                datacenter: opts.datacenter,
                worker,
                floor_ms,
                ttl: opts.ttl,
                clock: opts.clock,
                max_behind: opts.max_behind,
                state,
                stop: Some(stop),
                task: Some(task),
            });
        }
        backend.give_up().await;
        Err(Error::NoWorkerAvailable { datacenter: opts.datacenter, workers })
    }

    /// A generator issuing ids under this worker id, starting above the
    /// previous holders' high-water mark. It shares the lease's deadline.
    pub fn generator(&self) -> Result<Generator, Error> {
        Generator::builder(self.layout, self.datacenter, self.worker)
            .with_clock(Arc::clone(&self.clock))
            .with_max_behind(self.max_behind)
            .with_floor_ms(self.floor_ms)
            .with_lease(Arc::clone(&self.state))
            .build()
    }

    /// The leased worker id.
    pub fn worker(&self) -> u32 {
        self.worker
    }
    /// The datacenter.
    pub fn datacenter(&self) -> u32 {
        self.datacenter
    }
    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
    /// The first timestamp (Unix ms) this holder may issue: the previous
    /// holders' high-water mark plus one.
    pub fn floor_ms(&self) -> u64 {
        self.floor_ms
    }
    /// Ids may be issued while the clock reads below this (Unix ms); 0 once
    /// released or lost.
    pub fn valid_until_ms(&self) -> u64 {
        self.state.valid_until_ms()
    }
    /// Whether generators of this lease may issue ids now.
    pub fn is_valid(&self) -> bool {
        self.state.check(self.clock.now_ms()).is_ok()
    }
    /// Whether the record turned out not to be ours (taken over or deleted).
    pub fn is_lost(&self) -> bool {
        self.state.is_lost()
    }

    /// Stops the generators, records the exact high-water mark and frees the
    /// worker id, waiting for the backend.
    pub async fn release(mut self) -> Result<(), Error> {
        if let Some(stop) = self.stop.take() {
            self.state.revoke(false);
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.unwrap_or(Ok(())),
            None => Ok(()),
        }
    }

    /// Stops renewing without releasing, as a frozen or partitioned process
    /// would: existing generators keep issuing until the lease's deadline (at
    /// most one TTL after the last renewal), and the record expires in the
    /// backend after the TTL. For failover drills and tests.
    pub fn abandon(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // Dropping the sender without a signal tells the task not to release.
        self.stop.take();
    }
}

impl Drop for WorkerLease {
    fn drop(&mut self) {
        // Generators stop now; the renewal task sees the stop signal and
        // releases the worker id in the background. An abandoned lease
        // (aborted task, no sender) does neither.
        if let Some(stop) = self.stop.take() {
            self.state.revoke(false);
            let _ = stop.send(());
        }
    }
}

impl fmt::Debug for WorkerLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerLease")
            .field("layout", &self.layout)
            .field("datacenter", &self.datacenter)
            .field("worker", &self.worker)
            .field("floor_ms", &self.floor_ms)
            .field("ttl", &self.ttl)
            .field("valid_until_ms", &self.valid_until_ms())
            .field("lost", &self.is_lost())
            .finish()
    }
}

fn token_seed() -> u64 {
    let t = token();
    t.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Renews every third of the TTL until stopped (then releases) or lost.
async fn renew_loop<B: Backend>(
    mut backend: B,
    worker: u32,
    state: Arc<LeaseState>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    mut stop: oneshot::Receiver<()>,
) -> Result<(), Error> {
    let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let period = ttl / 3;
    let mut delay = period;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            signal = &mut stop => {
                if signal.is_err() {
                    // Sender dropped without a signal: abandoned, no release.
                    return Ok(());
                }
                // Stop the generators first, then record what they issued.
                state.revoke(false);
                let record = clock.now_ms().max(state.last_issued_ms());
                let released = tokio::time::timeout(period, backend.release(worker, record)).await;
                tracing::info!(worker, record_ms = record, "idgen: worker id released");
                return match released {
                    Ok(r) => r,
                    Err(_) => Ok(()),
                };
            }
        }
        let sent = clock.now_ms();
        let ceiling = sent.max(state.last_issued_ms()).saturating_add(ttl_ms);
        match tokio::time::timeout(period, backend.renew(worker, ceiling)).await {
            Ok(Ok(true)) => {
                state.extend(sent.saturating_add(ttl_ms));
                delay = period;
            }
            Ok(Ok(false)) => {
                state.revoke(true);
                tracing::error!(worker, "idgen: worker lease lost, generators stopped");
                return Err(Error::LeaseLost);
            }
            Ok(Err(e)) => {
                tracing::warn!(worker, error = %e, "idgen: lease renewal failed, retrying");
                delay = period / 3;
            }
            Err(_) => {
                tracing::warn!(worker, "idgen: lease renewal timed out, retrying");
                delay = period / 3;
            }
        }
    }
}

#[cfg(test)]
mod tests;
