//! Hybrid logical clock (Kulkarni et al., 2014) and the stamps it hands out.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::CrdtError;

const LOGICAL_BITS: u32 = 16;
const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// The id of a writer (a site): orders writes whose timestamps tie, names the
/// tags of OR-set adds, and keys a [`PnCounter`](crate::PnCounter)'s per-site totals.
///
/// Every process that writes must have its own site, or two processes of one
/// cell overwrite each other's counter totals in the join by maximum (and may
/// mint the same OR-set tag): derive it with [`SiteId::for_writer`] from the
/// cell and the process's writer id within the cell (e.g. its leased `idgen`
/// worker id).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct SiteId(pub u64);

impl SiteId {
    /// A stable 64-bit FNV-1a hash of the cell id and the writer id (the
    /// process's id within the cell, unique among its live processes).
    ///
    /// ```
    /// use crdt::SiteId;
    /// let sh = "sh".parse().unwrap();
    /// assert_ne!(SiteId::for_writer(&sh, 1), SiteId::for_writer(&sh, 2));
    /// assert_eq!(SiteId::for_writer(&sh, 1), SiteId::for_writer(&sh, 1));
    /// ```
    pub fn for_writer(cell: &cellctx::CellId, writer: u32) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        // a cell id never contains 0xff, so (cell, writer) pairs do not collide by concatenation
        for b in cell.as_str().bytes().chain([0xff]).chain(writer.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        SiteId(h)
    }
}

impl fmt::Debug for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteId({:#x})", self.0)
    }
}

/// An HLC timestamp: 48 bits of physical time (ms since the Unix epoch) and a
/// 16-bit logical counter, packed into one `u64` so that comparing the integers
/// compares the timestamps.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The zero timestamp (before everything).
    pub const ZERO: Timestamp = Timestamp(0);

    /// Builds a timestamp from its parts (`physical_ms` is truncated to 48 bits).
    pub const fn new(physical_ms: u64, logical: u16) -> Self {
        Timestamp((physical_ms << LOGICAL_BITS) | logical as u64)
    }

    /// Physical part, ms since the Unix epoch.
    pub const fn physical_ms(self) -> u64 {
        self.0 >> LOGICAL_BITS
    }

    /// Logical counter.
    pub const fn logical(self) -> u16 {
        (self.0 & LOGICAL_MASK) as u16
    }

    /// The next timestamp: logical + 1, carrying into the physical part on overflow.
    pub const fn next(self) -> Self {
        Timestamp(self.0.saturating_add(1))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// A timestamp with the site that made it: the total order used to resolve
/// conflicts (timestamp first, site id breaks ties), so merges stay commutative.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Stamp {
    /// When.
    pub ts: Timestamp,
    /// Where.
    pub site: SiteId,
}

impl Stamp {
    /// A stamp from its parts.
    pub const fn new(ts: Timestamp, site: SiteId) -> Self {
        Stamp { ts, site }
    }
}

impl fmt::Debug for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@{:x}", self.ts, self.site.0)
    }
}

/// A source of physical time in ms since the Unix epoch.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Current wall-clock time, ms since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The process's wall clock: [`cellclock::now_ms`], the system clock plus the
/// offset the process may set to model a skewed host.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        cellclock::now_ms()
    }
}

/// A hybrid logical clock: monotonic, close to wall time, and never adopting a
/// remote timestamp more than `max_drift` ahead of the local wall clock.
///
/// Lock-free: the state is one `AtomicU64` updated by compare-and-swap.
///
/// ```
/// use std::time::Duration;
/// use crdt::{Hlc, SiteId, Timestamp};
/// let hlc = Hlc::try_new(SiteId(1), Duration::from_secs(1)).unwrap();
/// let a = hlc.now();
/// let b = hlc.now();
/// assert!(b > a);
/// // a remote timestamp an hour ahead is rejected, not adopted
/// let far = Timestamp::new(a.physical_ms() + 3_600_000, 0);
/// assert!(hlc.update(far).is_err());
/// assert!(hlc.now() < far);
/// ```
#[derive(Debug)]
pub struct Hlc {
    site: SiteId,
    max_drift_ms: u64,
    state: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl Hlc {
    /// A clock for `site` on the system wall clock; `max_drift` must be at least 1 ms.
    pub fn try_new(site: SiteId, max_drift: Duration) -> Result<Self, CrdtError> {
        let max_drift_ms = u64::try_from(max_drift.as_millis()).unwrap_or(u64::MAX);
        if max_drift_ms == 0 {
            return Err(CrdtError::Config("max_drift must be at least 1 ms".into()));
        }
        Ok(Hlc { site, max_drift_ms, state: AtomicU64::new(0), clock: Arc::new(SystemClock) })
    }

    /// Uses `clock` as the physical time source (tests, simulations).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The site this clock stamps for.
    pub fn site(&self) -> SiteId {
        self.site
    }

    /// The tolerated drift.
    pub fn max_drift(&self) -> Duration {
        Duration::from_millis(self.max_drift_ms)
    }

    /// The last timestamp handed out or adopted.
    pub fn last(&self) -> Timestamp {
        Timestamp(self.state.load(Ordering::Acquire))
    }

    /// A fresh timestamp for a local event, greater than every earlier one.
    pub fn now(&self) -> Timestamp {
        let pt = Timestamp::new(self.clock.now_ms(), 0);
        let mut old = self.state.load(Ordering::Acquire);
        loop {
            let new = if pt.0 > old { pt } else { Timestamp(old).next() };
            match self.state.compare_exchange_weak(old, new.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return new,
                Err(cur) => old = cur,
            }
        }
    }

    /// A fresh [`Stamp`] (timestamp and this site).
    pub fn stamp(&self) -> Stamp {
        Stamp::new(self.now(), self.site)
    }

    /// Moves the clock past `ts` without the drift check: for this cell's own
    /// earlier timestamps (a restored snapshot, replayed outbox rows), which
    /// must never be stamped again whatever the wall clock says now.
    pub(crate) fn adopt(&self, ts: Timestamp) {
        let mut old = self.state.load(Ordering::Acquire);
        while ts.0 > old {
            match self.state.compare_exchange_weak(old, ts.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(cur) => old = cur,
            }
        }
    }

    /// Merges a timestamp received from another site (the HLC receive rule) and
    /// returns the new local timestamp, greater than both.
    ///
    /// # Errors
    /// [`CrdtError::ClockDrift`] when `remote` is more than `max_drift` ahead of
    /// the local wall clock; the clock is left unchanged.
    pub fn update(&self, remote: Timestamp) -> Result<Timestamp, CrdtError> {
        let wall = self.clock.now_ms();
        let remote_ms = remote.physical_ms();
        if remote_ms > wall.saturating_add(self.max_drift_ms) {
            return Err(CrdtError::ClockDrift {
                remote_ms,
                ahead_ms: remote_ms - wall,
                max_drift_ms: self.max_drift_ms,
            });
        }
        let pt = Timestamp::new(wall, 0);
        let mut old = self.state.load(Ordering::Acquire);
        loop {
            let top = old.max(remote.0);
            let new = if pt.0 > top { pt } else { Timestamp(top).next() };
            match self.state.compare_exchange_weak(old, new.0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(new),
                Err(cur) => old = cur,
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[derive(Debug, Default)]
    struct Manual(AtomicU64);
    impl Clock for Manual {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    #[test]
    fn logical_counter_advances_when_wall_clock_stalls_or_goes_back() {
        let clock = Arc::new(Manual(AtomicU64::new(1_000)));
        let hlc = Hlc::try_new(SiteId(1), Duration::from_millis(500)).unwrap().with_clock(clock.clone());
        assert_eq!(hlc.now(), Timestamp::new(1_000, 0));
        assert_eq!(hlc.now(), Timestamp::new(1_000, 1));
        clock.0.store(900, Ordering::SeqCst);
        assert_eq!(hlc.now(), Timestamp::new(1_000, 2));
        clock.0.store(1_001, Ordering::SeqCst);
        assert_eq!(hlc.now(), Timestamp::new(1_001, 0));
    }

    #[test]
    fn receive_rule_and_drift_bound() {
        let clock = Arc::new(Manual(AtomicU64::new(1_000)));
        let hlc = Hlc::try_new(SiteId(1), Duration::from_millis(500)).unwrap().with_clock(clock);
        // within the bound: adopted, logical bumped
        assert_eq!(hlc.update(Timestamp::new(1_400, 7)).unwrap(), Timestamp::new(1_400, 8));
        assert_eq!(hlc.now(), Timestamp::new(1_400, 9));
        // beyond the bound: error, state untouched
        let err = hlc.update(Timestamp::new(1_501, 0)).unwrap_err();
        assert!(matches!(err, CrdtError::ClockDrift { ahead_ms: 501, .. }), "{err}");
        assert_eq!(hlc.last(), Timestamp::new(1_400, 9));
        // an old remote timestamp still yields a fresh local one
        assert_eq!(hlc.update(Timestamp::new(10, 0)).unwrap(), Timestamp::new(1_400, 10));
    }

    #[test]
    fn zero_drift_is_invalid_config() {
        assert!(matches!(Hlc::try_new(SiteId(1), Duration::ZERO), Err(CrdtError::Config(_))));
    }

    #[test]
    fn logical_overflow_carries_into_physical() {
        let t = Timestamp::new(5, u16::MAX);
        assert_eq!(t.next(), Timestamp::new(6, 0));
    }
}
