//! [`Clock`]: the injectable monotonic time source.
//!
//! The breaker reads time twice per call (start and end, for slow-call
//! detection and time buckets), so the default is [`CoarseClock`]: one atomic
//! load, refreshed every millisecond by a background thread. Tests inject
//! [`TokioClock`] to run on tokio's paused clock.

use std::fmt;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock in nanoseconds from an arbitrary origin.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Nanoseconds since this clock's origin; never decreases.
    fn now_nanos(&self) -> u64;

    /// A process-lifetime cell that always holds [`Clock::now_nanos`], when
    /// the clock is such a cached value: the breaker then reads it with one
    /// relaxed load instead of a dynamic call. `None` (the default) for
    /// clocks that compute the time on each read.
    fn cached_cell(&self) -> Option<&'static AtomicU64> {
        None
    }
}

/// A shared, type-erased clock.
pub type SharedClock = Arc<dyn Clock>;

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A clock that reads [`tokio::time::Instant`], so it follows tokio's paused
/// and advanced test clock. About as costly as [`std::time::Instant::now`].
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        TokioClock { origin: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now_nanos(&self) -> u64 {
        nanos(tokio::time::Instant::now().saturating_duration_since(self.origin))
    }
}

/// A precise clock on [`std::time::Instant`].
#[derive(Debug, Clone, Copy)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock { origin: Instant::now() }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now_nanos(&self) -> u64 {
        nanos(self.origin.elapsed())
    }
}

/// Resolution of [`CoarseClock`].
pub const COARSE_RESOLUTION: Duration = Duration::from_millis(1);

#[derive(Debug)]
struct CoarseInner {
    origin: Instant,
    now: AtomicU64,
    ticking: AtomicBool,
}

static COARSE: OnceLock<Arc<CoarseInner>> = OnceLock::new();

/// A coarse cached clock: one atomic load per read, refreshed every
/// [`COARSE_RESOLUTION`] by a single process-wide background thread
/// (`breaker-clock`, started on first use). Should the thread fail to start,
/// reads fall back to [`std::time::Instant`].
#[derive(Clone)]
pub struct CoarseClock {
    inner: Arc<CoarseInner>,
}

impl fmt::Debug for CoarseClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoarseClock").field("ticking", &self.inner.ticking.load(Ordering::Relaxed)).finish()
    }
}

impl CoarseClock {
    /// The process-wide coarse clock.
    pub fn global() -> Self {
        let inner = COARSE.get_or_init(|| {
            let inner = Arc::new(CoarseInner {
                origin: Instant::now(),
                now: AtomicU64::new(0),
                ticking: AtomicBool::new(false),
            });
            let tick = Arc::clone(&inner);
            let started = std::thread::Builder::new()
                .name("breaker-clock".into())
                .spawn(move || {
                    loop {
                        tick.now.store(nanos(tick.origin.elapsed()), Ordering::Relaxed);
                        std::thread::sleep(COARSE_RESOLUTION);
                    }
                })
                .is_ok();
            inner.ticking.store(started, Ordering::Relaxed);
            inner
        });
        CoarseClock { inner: Arc::clone(inner) }
    }
}

impl Clock for CoarseClock {
    fn now_nanos(&self) -> u64 {
        if self.inner.ticking.load(Ordering::Relaxed) {
            self.inner.now.load(Ordering::Relaxed)
        } else {
            nanos(self.inner.origin.elapsed())
        }
    }

    fn cached_cell(&self) -> Option<&'static AtomicU64> {
        let inner: &'static Arc<CoarseInner> = COARSE.get()?;
        (Arc::ptr_eq(inner, &self.inner) && inner.ticking.load(Ordering::Relaxed)).then_some(&inner.now)
    }
}

/// A clock moved by hand (tests and simulations).
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now.fetch_add(nanos(d), Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now_nanos(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn only_the_coarse_clock_exposes_its_cell() {
        let coarse = CoarseClock::global();
        let cell = coarse.cached_cell().expect("the coarse clock ticks");
        assert!(std::ptr::eq(cell, &coarse.inner.now));
        let read = cell.load(Ordering::Relaxed);
        assert!(read <= coarse.now_nanos(), "the cell is the clock's value");
        assert!(ManualClock::new().cached_cell().is_none());
        assert!(MonotonicClock::new().cached_cell().is_none());
    }
}
