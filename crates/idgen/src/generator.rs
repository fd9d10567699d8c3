//! The generator: one atomic state word shared by every thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::lease_state::LeaseState;
use crate::state::{self, Next, Step};
use crate::{Error, Id, Layout};

/// Default bound on how far the clock may be behind the last issued id.
pub const DEFAULT_MAX_BEHIND: Duration = Duration::from_secs(1);

/// The state word on its own cache line, away from the read-only settings.
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct Padded(pub(crate) AtomicU64);

/// Issues unique, strictly increasing ids for one (datacenter, worker).
///
/// Shared by many threads with no mutex: the state is one atomic word advanced
/// by compare-and-swap. Clones share that word (a clone is the same generator).
///
/// - A fresh millisecond resets the counter; inside a millisecond the sequence
///   advances, then the logical clock (the seed layout gives 1,024 ids/ms).
/// - When the clock is behind the last issued timestamp (it stepped back, or a
///   lease's high-water mark is ahead), the generator keeps that timestamp and
///   keeps counting instead of issuing a duplicate; more than the bound
///   ([`DEFAULT_MAX_BEHIND`], see [`GeneratorBuilder::with_max_behind`]) is
///   [`Error::ClockMovedBackwards`].
/// - When the counter is used up, [`next_id`](Self::next_id) waits for the
///   clock to pass the held millisecond and
///   [`try_next_id`](Self::try_next_id) returns [`Error::WouldBlock`].
/// - A generator made from a [`WorkerLease`](crate::WorkerLease) refuses to
///   issue once the lease has expired or was lost.
///
/// ```
/// use idgen::{Generator, Layout};
///
/// let layout = Layout::seed();
/// let ids = Generator::try_new(layout, 3, 17)?;
/// let a = ids.next_id()?;
/// let b = ids.next_id()?;
/// assert!(b > a);
/// let parts = layout.decode(b);
/// assert_eq!((parts.datacenter, parts.worker), (3, 17));
/// # Ok::<(), idgen::Error>(())
/// ```
#[derive(Clone)]
pub struct Generator {
    state: Arc<Padded>,
    step: Step,
    epoch_ms: u64,
    /// Datacenter and worker bits, already in place.
    fixed: u64,
    ts_shift: u32,
    logical_shift: u32,
    seq_bits: u32,
    seq_mask: u64,
    logical_mask: u64,
    layout: Layout,
    datacenter: u32,
    worker: u32,
    clock: Arc<dyn Clock>,
    lease: Option<Arc<LeaseState>>,
}

/// Builds a [`Generator`] with a custom clock, bound or starting floor.
#[derive(Debug)]
#[must_use]
pub struct GeneratorBuilder {
    layout: Layout,
    datacenter: u32,
    worker: u32,
    clock: Option<Arc<dyn Clock>>,
    max_behind: Duration,
    floor_ms: u64,
    lease: Option<Arc<LeaseState>>,
}

impl GeneratorBuilder {
    /// The clock to read (default: a new [`SystemClock`]).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// How far the clock may be behind the last issued timestamp before
    /// `next_id` fails with [`Error::ClockMovedBackwards`] (default 1 s).
    pub fn with_max_behind(mut self, bound: Duration) -> Self {
        self.max_behind = bound;
        self
    }

    /// The first id's timestamp is at least `floor_ms` (Unix ms), e.g. a
    /// high-water mark from a previous holder of the worker id.
    pub fn with_floor_ms(mut self, floor_ms: u64) -> Self {
        self.floor_ms = self.floor_ms.max(floor_ms);
        self
    }

    #[cfg_attr(not(any(feature = "redis", feature = "etcd", feature = "sql")), allow(dead_code))]
    pub(crate) fn with_lease(mut self, lease: Arc<LeaseState>) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Validates the datacenter and worker against the layout and builds.
    pub fn build(self) -> Result<Generator, Error> {
        let layout = self.layout;
        if self.datacenter > layout.max_datacenter() {
            return Err(Error::OutOfRange {
                field: "datacenter",
                value: u64::from(self.datacenter),
                max: u64::from(layout.max_datacenter()),
            });
        }
        if self.worker > layout.max_worker() {
            return Err(Error::OutOfRange {
                field: "worker",
                value: u64::from(self.worker),
                max: u64::from(layout.max_worker()),
            });
        }
        let counter_bits = layout.counter_bits();
        let step = Step {
            counter_bits,
            max_ts: layout.max_timestamp_rel(),
            max_behind_ms: u64::try_from(self.max_behind.as_millis()).unwrap_or(u64::MAX),
        };
        // The state is "last issued": the floor's counter 0 counts as issued, so
        // every id is above the floor's first id.
        let floor_rel = self.floor_ms.saturating_sub(layout.epoch_ms()).min(step.max_ts);
        let initial = floor_rel << counter_bits;
        let fixed = layout.pack(0, self.datacenter, 0, self.worker, 0);
        let seq_bits = u32::from(layout.sequence_bits());
        let generator = Generator {
            state: Arc::new(Padded(AtomicU64::new(initial))),
            step,
            epoch_ms: layout.epoch_ms(),
            fixed,
            ts_shift: layout.timestamp_shift(),
            logical_shift: layout.logical_shift(),
            seq_bits,
            seq_mask: (1u64 << seq_bits) - 1,
            logical_mask: (1u64 << layout.logical_bits()) - 1,
            layout,
            datacenter: self.datacenter,
            worker: self.worker,
            clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock::new())),
            lease: self.lease,
        };
        if let Some(lease) = &generator.lease {
            lease.attach(&generator);
        }
        Ok(generator)
    }
}

impl Generator {
    /// A generator for `(datacenter, worker)` on the system clock.
    ///
    /// Configured worker ids are for tests and single-process tools; in
    /// production lease them ([`WorkerLease`](crate::WorkerLease)).
    pub fn try_new(layout: Layout, datacenter: u32, worker: u32) -> Result<Self, Error> {
        Self::builder(layout, datacenter, worker).build()
    }

    /// A builder for a generator with a custom clock, bound or floor.
    pub fn builder(layout: Layout, datacenter: u32, worker: u32) -> GeneratorBuilder {
        GeneratorBuilder {
            layout,
            datacenter,
            worker,
            clock: None,
            max_behind: DEFAULT_MAX_BEHIND,
            floor_ms: 0,
            lease: None,
        }
    }

    /// The next id, waiting for the next millisecond when the current one is
    /// used up (spinning with `yield_now`), or sleeping while the clock is
    /// behind the held timestamp by less than the bound.
    ///
    /// It blocks the thread for at most about the bound (1 s by default) and
    /// usually for under a millisecond, only at the layout's ceiling. For
    /// threads that may block (plain threads, `spawn_blocking`). On a tokio
    /// worker thread use `next_id_async` (feature `async`), which awaits a
    /// timer instead and never blocks the runtime, or
    /// [`try_next_id`](Self::try_next_id), which never waits.
    #[inline]
    pub fn next_id(&self) -> Result<Id, Error> {
        match self.attempt(false)?.0 {
            Next::Issued(s) => Ok(Id::new(self.compose(s))),
            _ => self.next_id_slow(),
        }
    }

    /// The millisecond is used up or the (possibly coarse) reading is behind:
    /// from here on every reading is a fresh one.
    #[cold]
    fn next_id_slow(&self) -> Result<Id, Error> {
        let mut spins = 0u32;
        loop {
            let (next, now) = self.attempt(true)?;
            match next {
                Next::Exhausted { held } if held > now.saturating_add(1) => {
                    // The clock is behind (within the bound): sleep most of it.
                    std::thread::sleep(Duration::from_millis(held - now - 1));
                }
                Next::Exhausted { held } => {
                    // At the ceiling: the next millisecond is under 1 ms away.
                    // Spin on the clock alone (no CAS traffic on the shared
                    // word) until it passes the held millisecond; yield only
                    // rarely (~every 0.2 ms): on a busy host a yield can cost
                    // a whole time slice, i.e. whole milliseconds of ids.
                    while self.clock.now_ms_fresh().checked_sub(self.epoch_ms) == Some(held) {
                        spins = spins.wrapping_add(1);
                        if spins.is_multiple_of(4096) {
                            std::thread::yield_now();
                        } else {
                            std::hint::spin_loop();
                        }
                    }
                }
                other => return self.finish(other),
            }
        }
    }

    /// The next id, or [`Error::WouldBlock`] when the current millisecond is
    /// used up (or the clock is behind the held timestamp and its counter is
    /// used up).
    #[inline]
    pub fn try_next_id(&self) -> Result<Id, Error> {
        match self.attempt(false)?.0 {
            // A coarse or stale reading (the clock's cache lags, or this
            // thread was preempted between its reading and its CAS) can look
            // "behind" or "used up": read the clock afresh before failing.
            Next::Behind { .. } | Next::Exhausted { .. } => self.finish(self.attempt(true)?.0),
            next => self.finish(next),
        }
    }

    /// One step; also returns the clock reading (ms since the epoch). `fresh`
    /// asks the clock for a direct reading instead of a cached one.
    #[inline]
    pub(crate) fn attempt(&self, fresh: bool) -> Result<(Next, u64), Error> {
        let now_ms = if fresh { self.clock.now_ms_fresh() } else { self.clock.now_ms() };
        if let Some(lease) = &self.lease {
            lease.check(now_ms)?;
        }
        let now = now_ms
            .checked_sub(self.epoch_ms)
            .ok_or(Error::BeforeEpoch { now_ms, epoch_ms: self.epoch_ms })?;
        Ok((state::advance(&self.state.0, now, self.step), now))
    }

    #[inline]
    pub(crate) fn finish(&self, next: Next) -> Result<Id, Error> {
        match next {
            Next::Issued(s) => Ok(Id::new(self.compose(s))),
            Next::Exhausted { .. } => Err(Error::WouldBlock),
            Next::Behind { by_ms } => {
                Err(Error::ClockMovedBackwards { behind_ms: by_ms, max_ms: self.step.max_behind_ms })
            }
            Next::Overflow => Err(Error::TimestampOverflow),
        }
    }

    #[inline]
    fn compose(&self, s: u64) -> u64 {
        let ts = s >> self.step.counter_bits;
        let logical = (s >> self.seq_bits) & self.logical_mask;
        (ts << self.ts_shift) | (logical << self.logical_shift) | (s & self.seq_mask) | self.fixed
    }

    /// Unix ms of the last issued id's timestamp (or of the starting floor).
    pub fn last_timestamp_ms(&self) -> u64 {
        let s = state::Word::load(&self.state.0);
        self.epoch_ms.saturating_add(s >> self.step.counter_bits)
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
    /// The datacenter bits every id carries.
    pub fn datacenter(&self) -> u32 {
        self.datacenter
    }
    /// The worker bits every id carries.
    pub fn worker(&self) -> u32 {
        self.worker
    }
    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The bound on a clock behind the last issued timestamp, in ms.
    #[cfg_attr(not(feature = "async"), allow(dead_code))]
    pub(crate) fn max_behind_ms(&self) -> u64 {
        self.step.max_behind_ms
    }

    pub(crate) fn state_arc(&self) -> &Arc<Padded> {
        &self.state
    }
}

impl fmt::Debug for Generator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Generator")
            .field("layout", &self.layout)
            .field("datacenter", &self.datacenter)
            .field("worker", &self.worker)
            .field("last_timestamp_ms", &self.last_timestamp_ms())
            .field("leased", &self.lease.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::{Clock, ManualClock};

    const T0: u64 = crate::layout::DEFAULT_EPOCH_MS + 1_000_000;

    fn manual(layout: Layout, clock: &ManualClock) -> Generator {
        Generator::builder(layout, 1, 2).with_clock(Arc::new(clock.clone())).build().unwrap()
    }

    #[test]
    fn seed_layout_gives_1024_ids_per_ms_then_would_block() {
        let clock = ManualClock::new(T0);
        let g = manual(Layout::seed(), &clock);
        let mut last = 0;
        for i in 0..1024u32 {
            let id = g.try_next_id().unwrap().get();
            assert!(id > last);
            last = id;
            let p = Layout::seed().decode(id);
            assert_eq!((p.timestamp_ms, p.logical, p.sequence), (T0, i / 32, i % 32));
            assert_eq!((p.datacenter, p.worker), (1, 2));
        }
        assert!(matches!(g.try_next_id(), Err(Error::WouldBlock)));
        clock.advance(1);
        let p = Layout::seed().decode(g.try_next_id().unwrap());
        assert_eq!((p.timestamp_ms, p.logical, p.sequence), (T0 + 1, 0, 0));
    }

    #[test]
    fn clock_step_back_keeps_the_last_timestamp() {
        let clock = ManualClock::new(T0);
        let g = manual(Layout::seed(), &clock);
        let a = g.try_next_id().unwrap();
        clock.step_back(500);
        let b = g.try_next_id().unwrap();
        assert!(b > a);
        assert_eq!(Layout::seed().decode(b).timestamp_ms, T0);
        clock.step_back(501);
        assert!(matches!(
            g.try_next_id(),
            Err(Error::ClockMovedBackwards { behind_ms: 1001, max_ms: 1000 })
        ));
        clock.set(T0 + 1);
        let c = g.try_next_id().unwrap();
        assert!(c > b);
        assert_eq!(Layout::seed().decode(c).timestamp_ms, T0 + 1);
    }

    #[test]
    fn floor_holds_the_first_ids_and_errors_beyond_the_bound() {
        let clock = ManualClock::new(T0);
        let g = Generator::builder(Layout::seed(), 0, 0)
            .with_clock(Arc::new(clock.clone()))
            .with_floor_ms(T0 + 10)
            .build()
            .unwrap();
        assert_eq!(Layout::seed().decode(g.try_next_id().unwrap()).timestamp_ms, T0 + 10);
        let far = Generator::builder(Layout::seed(), 0, 0)
            .with_clock(Arc::new(clock.clone()))
            .with_floor_ms(T0 + 5_000)
            .build()
            .unwrap();
        assert!(matches!(far.try_next_id(), Err(Error::ClockMovedBackwards { .. })));
    }

    #[test]
    fn invalid_worker_datacenter_and_epoch() {
        assert!(matches!(
            Generator::try_new(Layout::seed(), 8, 0),
            Err(Error::OutOfRange { field: "datacenter", .. })
        ));
        assert!(matches!(
            Generator::try_new(Layout::seed(), 0, 1024),
            Err(Error::OutOfRange { field: "worker", .. })
        ));
        let clock = ManualClock::new(5);
        let g = manual(Layout::seed(), &clock);
        assert!(matches!(g.try_next_id(), Err(Error::BeforeEpoch { now_ms: 5, .. })));
        let max = Layout::seed().max_timestamp_ms();
        clock.set(max + 1);
        assert!(matches!(g.try_next_id(), Err(Error::TimestampOverflow)));
    }

    #[test]
    fn next_id_waits_for_the_next_millisecond_on_the_system_clock() {
        let g = Generator::try_new(Layout::js_safe(), 0, 0).unwrap();
        let ids: Vec<u64> = (0..200).map(|_| g.next_id().unwrap().get()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        // 16 ids per ms: 200 ids span at least 13 distinct milliseconds.
        let first = Layout::js_safe().decode(ids[0]).timestamp_ms;
        let last = Layout::js_safe().decode(ids[199]).timestamp_ms;
        assert!(last - first >= 12);
    }

    /// `now_ms` reads `stale` (a lagging cache), `now_ms_fresh` reads `fresh`.
    #[derive(Debug)]
    struct Lagging {
        stale: ManualClock,
        fresh: ManualClock,
    }

    impl Clock for Lagging {
        fn now_ms(&self) -> u64 {
            self.stale.now_ms()
        }
        fn now_ms_fresh(&self) -> u64 {
            self.fresh.now_ms()
        }
    }

    #[test]
    fn a_lagging_reading_is_refreshed_before_waiting_or_failing() {
        let (stale, fresh) = (ManualClock::new(T0), ManualClock::new(T0 + 1));
        let clock = Arc::new(Lagging { stale: stale.clone(), fresh: fresh.clone() });
        let g = Generator::builder(Layout::seed(), 0, 0).with_clock(clock).build().unwrap();
        for _ in 0..1024 {
            assert_eq!(Layout::seed().decode(g.try_next_id().unwrap()).timestamp_ms, T0);
        }
        // The cached reading says T0 is used up; the fresh one says T0 + 1.
        let p = Layout::seed().decode(g.try_next_id().unwrap());
        assert_eq!((p.timestamp_ms, p.logical, p.sequence), (T0 + 1, 0, 0));
        let p = Layout::seed().decode(g.next_id().unwrap());
        assert_eq!((p.timestamp_ms, p.logical, p.sequence), (T0 + 1, 0, 1));
        // A cached reading far behind (beyond the bound) is not an error while
        // the fresh reading is on time.
        stale.set(T0 - 5_000);
        fresh.set(T0 + 2);
        assert_eq!(Layout::seed().decode(g.try_next_id().unwrap()).timestamp_ms, T0 + 2);
        assert_eq!(Layout::seed().decode(g.next_id().unwrap()).timestamp_ms, T0 + 2);
        // Both behind beyond the bound: an error, never a duplicate.
        fresh.set(T0 - 5_000);
        assert!(matches!(g.try_next_id(), Err(Error::ClockMovedBackwards { .. })));
        assert!(matches!(g.next_id(), Err(Error::ClockMovedBackwards { .. })));
    }

    #[test]
    fn clones_share_the_state() {
        let clock = ManualClock::new(T0);
        let g = manual(Layout::twitter(), &clock);
        let h = g.clone();
        let a = g.try_next_id().unwrap();
        let b = h.try_next_id().unwrap();
        assert_eq!(b.get(), a.get() + 1);
    }
}
