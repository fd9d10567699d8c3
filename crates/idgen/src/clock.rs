//! Clock sources: the system clock (monotonic, anchored to the wall clock, with
//! a slewed offset correction) and a manual clock for tests.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crate::Error;

/// A source of Unix time in milliseconds.
///
/// A generator is correct with any clock (it never issues a duplicate, it
/// holds its last timestamp while the clock is behind); a clock that does not
/// step backwards simply never makes it wait or fail.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// A fresh reading, for when a stale one would cost something: the
    /// generator calls it when the current millisecond is used up (to switch
    /// to the next one as soon as it starts) and before reporting the clock
    /// behind. Clocks that read from a cache override it to read their source;
    /// the default is [`now_ms`](Self::now_ms).
    fn now_ms_fresh(&self) -> u64 {
        self.now_ms()
    }
}

/// A measured offset of this host's wall clock, NTP style: true time minus
/// `SystemTime::now()`, in milliseconds (positive when the host is behind).
///
/// Closures `Fn() -> Option<i64>` implement it; `None` means "no measurement
/// now" and leaves the correction as it is.
pub trait OffsetSource {
    /// The current measured offset, if any.
    fn offset_ms(&self) -> Option<i64>;
}

impl<F: Fn() -> Option<i64>> OffsetSource for F {
    fn offset_ms(&self) -> Option<i64> {
        self()
    }
}

/// Default slew rate: a correction is paid down at 50 ms per second (5 %).
pub const DEFAULT_SLEW_PPM: u32 = 50_000;

/// The system clock, read from a monotonic clock anchored to the wall clock
/// when it was created: an NTP step of the wall clock does not move it (and so
/// does not move ids backwards).
///
/// Corrections ([`set_offset_ms`](Self::set_offset_ms),
/// [`sync_from`](Self::sync_from)) are paid down gradually at the slew rate
/// (default [`DEFAULT_SLEW_PPM`], i.e. 50 ms per second, always below 100 %),
/// never stepped, so the clock never goes backwards.
///
/// # Cost of a reading: the shared coarse clock
///
/// A monotonic clock read costs ~40-50 ns on some virtual machines (the vDSO
/// falls back to a system call), more than the rest of an id. So by default
/// [`now_ms`](Clock::now_ms) reads a process-wide coarse clock: one atomic
/// load of the monotonic time, refreshed every 100 µs
/// ([`COARSE_CLOCK_PERIOD`]) by one thread shared by every `SystemClock` of
/// the process. The thread starts lazily on the first reading, parks itself
/// after ~10 ms without readers and is woken by the next reader (which reads
/// the monotonic clock directly for that one reading). A coarse reading lags
/// the monotonic clock by up to a period plus the thread's wake-up latency
/// (typically 0.1-0.2 ms), never runs ahead of it, and never goes backwards.
/// [`now_ms_fresh`](Clock::now_ms_fresh) always reads the monotonic clock
/// directly (and refreshes the shared reading); the generator uses it when a
/// millisecond is used up, so the lag never costs throughput at the layout's
/// ceiling.
///
/// If the thread cannot be started, every reading falls back to a direct
/// monotonic read (correct, just slower). [`direct`](Self::direct) opts out of
/// the coarse clock for one `SystemClock`.
///
/// Once a correction has been set, a reading also costs a few atomic loads (a
/// seqlock; no lock on the read path).
pub struct SystemClock {
    /// Unix ns at the process-wide monotonic anchor ([`anchor`]), as measured
    /// when this clock was created.
    anchor_unix_ns: u64,
    coarse: bool,
    slew_ppm: u64,
    corrected: AtomicBool,
    slew: Slew,
}

/// Seqlock-protected slew parameters: at `t0_ns` (since the anchor) the applied
/// correction was `applied0_ns`, moving towards `target_ns` at the slew rate.
struct Slew {
    version: AtomicU64,
    t0_ns: AtomicU64,
    applied0_ns: AtomicI64,
    target_ns: AtomicI64,
    writer: Mutex<()>,
}

impl SystemClock {
    /// Anchors a new clock to the wall clock now.
    pub fn new() -> Self {
        let elapsed = precise_elapsed_ns();
        let wall_ns = cellclock::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        SystemClock {
            anchor_unix_ns: wall_ns.saturating_sub(elapsed),
            coarse: true,
            slew_ppm: u64::from(DEFAULT_SLEW_PPM),
            corrected: AtomicBool::new(false),
            slew: Slew {
                version: AtomicU64::new(0),
                t0_ns: AtomicU64::new(0),
                applied0_ns: AtomicI64::new(0),
                target_ns: AtomicI64::new(0),
                writer: Mutex::new(()),
            },
        }
    }

    /// Sets the slew rate in parts per million (1..=500,000, i.e. at most half
    /// a second of correction per second).
    pub fn with_slew_ppm(mut self, ppm: u32) -> Result<Self, Error> {
        if !(1..=500_000).contains(&ppm) {
            return Err(Error::InvalidLayout("slew rate must be 1..=500000 ppm"));
        }
        self.slew_ppm = u64::from(ppm);
        Ok(self)
    }

    /// Reads the monotonic clock directly on every reading instead of the
    /// shared coarse clock: ~40-50 ns more per id on some virtual machines,
    /// no lag and no background thread.
    pub fn direct(mut self) -> Self {
        self.coarse = false;
        self
    }

    /// Monotonic ns since the process-wide anchor, read directly.
    fn elapsed_ns(&self) -> u64 {
        precise_elapsed_ns()
    }

    fn reading_ms(&self, elapsed: u64) -> u64 {
        let ns = i128::from(self.raw_ns(elapsed)) + i128::from(self.applied_ns(elapsed));
        u64::try_from(ns.max(0) / 1_000_000).unwrap_or(u64::MAX)
    }

    /// Reading without the correction (anchor + monotonic elapsed), in ns.
    fn raw_ns(&self, elapsed: u64) -> u64 {
        self.anchor_unix_ns.saturating_add(elapsed)
    }

    /// The correction applied at `elapsed` ns since the anchor.
    fn applied_ns(&self, elapsed: u64) -> i64 {
        if !self.corrected.load(Ordering::Relaxed) {
            return 0;
        }
        let s = &self.slew;
        loop {
            let v1 = s.version.load(Ordering::Acquire);
            if v1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let t0 = s.t0_ns.load(Ordering::Relaxed);
            let a0 = s.applied0_ns.load(Ordering::Relaxed);
            let target = s.target_ns.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if s.version.load(Ordering::Relaxed) == v1 {
                return slewed(t0, a0, target, elapsed, self.slew_ppm);
            }
        }
    }

    /// The correction currently applied, in ms (rounded toward zero).
    pub fn applied_offset_ms(&self) -> i64 {
        self.applied_ns(self.elapsed_ns()) / 1_000_000
    }

    /// Sets a measured offset of the host's wall clock (true time minus
    /// `SystemTime::now()`, ms). The clock moves towards `wall + offset` at the
    /// slew rate; it also absorbs the drift between the monotonic clock and
    /// the wall clock since the anchor.
    pub fn set_offset_ms(&self, offset_ms: i64) {
        let wall_ns = cellclock::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
            .unwrap_or(0);
        let elapsed = self.elapsed_ns();
        let want = wall_ns + i128::from(offset_ms) * 1_000_000;
        let target = want - i128::from(self.raw_ns(elapsed));
        self.set_target(elapsed, i64::try_from(target).unwrap_or(0));
    }

    /// Reads `source` and applies its offset as [`set_offset_ms`](Self::set_offset_ms)
    /// does; returns the offset read.
    pub fn sync_from(&self, source: &dyn OffsetSource) -> Option<i64> {
        let offset = source.offset_ms()?;
        self.set_offset_ms(offset);
        Some(offset)
    }

    fn set_target(&self, elapsed: u64, target_ns: i64) {
        let s = &self.slew;
        let _guard = s.writer.lock().unwrap_or_else(|e| e.into_inner());
        let applied = self.applied_ns(elapsed);
        let v = s.version.load(Ordering::Relaxed);
        s.version.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        s.t0_ns.store(elapsed, Ordering::Relaxed);
        s.applied0_ns.store(applied, Ordering::Relaxed);
        s.target_ns.store(target_ns, Ordering::Relaxed);
        s.version.store(v.wrapping_add(2), Ordering::Release);
        self.corrected.store(true, Ordering::Release);
    }
}

/// Correction at `t` given `a0` at `t0`, moving towards `target` at `ppm`.
fn slewed(t0: u64, a0: i64, target: i64, t: u64, ppm: u64) -> i64 {
    let dt = t.saturating_sub(t0);
    let room = i64::try_from(u128::from(dt) * u128::from(ppm) / 1_000_000).unwrap_or(i64::MAX);
    if target >= a0 { a0.saturating_add(room).min(target) } else { a0.saturating_sub(room).max(target) }
}

impl Clock for SystemClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        let elapsed = if self.coarse { coarse_elapsed_ns() } else { precise_elapsed_ns() };
        self.reading_ms(elapsed)
    }

    #[inline]
    fn now_ms_fresh(&self) -> u64 {
        let elapsed = precise_elapsed_ns();
        if self.coarse {
            // Share the fresh reading: coarse readers catch up at once.
            COARSE_NS.fetch_max(elapsed, Ordering::Relaxed);
        }
        self.reading_ms(elapsed)
    }
}

/// Refresh period of the process-wide coarse clock behind [`SystemClock`].
pub const COARSE_CLOCK_PERIOD: Duration = Duration::from_micros(100);

/// Ticks without a reader after which the coarse clock thread parks (~10 ms).
const IDLE_TICKS: u32 = 100;

/// Monotonic ns since [`anchor`], refreshed by the coarse clock thread.
static COARSE_NS: AtomicU64 = AtomicU64::new(0);
/// Set by readers, cleared by the thread every `IDLE_TICKS`: `COARSE_NS` is
/// fresh (the thread is running) only while this is set.
static COARSE_ACTIVE: AtomicBool = AtomicBool::new(false);
/// The coarse clock thread, `None` if it could not be started.
static COARSE_THREAD: OnceLock<Option<Thread>> = OnceLock::new();
static ANCHOR: OnceLock<Instant> = OnceLock::new();

/// The process-wide monotonic anchor every [`SystemClock`] measures from.
fn anchor() -> Instant {
    *ANCHOR.get_or_init(Instant::now)
}

#[inline]
fn precise_elapsed_ns() -> u64 {
    u64::try_from(anchor().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Monotonic ns since the anchor from the shared coarse clock.
#[inline]
fn coarse_elapsed_ns() -> u64 {
    if COARSE_ACTIVE.load(Ordering::Acquire) {
        COARSE_NS.load(Ordering::Relaxed)
    } else {
        activate_coarse()
    }
}

/// First reading after the thread went idle (or before it started): read
/// directly, publish the reading, then mark the coarse clock active and wake
/// (or start) the thread. Without a thread it stays inactive, so every
/// reading is a direct one.
#[cold]
fn activate_coarse() -> u64 {
    let now = precise_elapsed_ns();
    COARSE_NS.fetch_max(now, Ordering::Relaxed);
    if let Some(thread) = COARSE_THREAD.get_or_init(spawn_coarse) {
        COARSE_ACTIVE.store(true, Ordering::Release);
        thread.unpark();
    }
    now
}

fn spawn_coarse() -> Option<Thread> {
    let spawned = std::thread::Builder::new().name("idgen-coarse-clock".into()).spawn(|| {
        let mut ticks = 0u32;
        loop {
            std::thread::sleep(COARSE_CLOCK_PERIOD);
            COARSE_NS.fetch_max(precise_elapsed_ns(), Ordering::Relaxed);
            ticks += 1;
            if ticks >= IDLE_TICKS {
                ticks = 0;
                // No reader for a while: park until one comes back (it reads
                // directly, publishes, sets the flag, then unparks us).
                if !COARSE_ACTIVE.swap(false, Ordering::AcqRel) {
                    while !COARSE_ACTIVE.load(Ordering::Acquire) {
                        std::thread::park();
                    }
                }
            }
        }
    });
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(e) => {
            tracing::warn!(target: "idgen", error = %e, "cannot start the coarse clock thread; reading the clock directly");
            None
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl fmt::Debug for SystemClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemClock")
            .field("anchor_unix_ms", &(self.anchor_unix_ns / 1_000_000))
            .field("slew_ppm", &self.slew_ppm)
            .field("applied_offset_ms", &self.applied_offset_ms())
            .finish()
    }
}

/// A clock read from memory: a background thread copies another clock's
/// reading into an atomic every `period` (default 100 µs); reading it is one
/// atomic load instead of a clock read (which costs ~50 ns on some virtual
/// machines, where the vDSO falls back to a system call).
///
/// Readings lag the source by up to about one period plus the thread's wake-up
/// jitter, never run ahead of it, and never go backwards (`fetch_max`). Ids
/// stay unique and increasing whatever the lag; [`Clock::now_ms_fresh`] reads
/// the source, so the lag does not delay the switch to the next millisecond at
/// the layout's ceiling. The thread stops when the last clone is dropped.
///
/// [`SystemClock`] already reads a shared coarse clock by default; this type
/// is for other sources or a private refresh period.
#[derive(Debug, Clone)]
pub struct CachedClock {
    inner: Arc<CachedInner>,
}

#[derive(Debug)]
struct CachedInner {
    now: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    source: Arc<dyn Clock>,
}

/// Default refresh period of a [`CachedClock`].
pub const DEFAULT_CACHE_PERIOD: std::time::Duration = std::time::Duration::from_micros(100);

impl CachedClock {
    /// Starts the refresh thread over `source` with the default period.
    pub fn start(source: Arc<dyn Clock>) -> Result<Self, Error> {
        Self::with_period(source, DEFAULT_CACHE_PERIOD)
    }

    /// Starts the refresh thread over `source`, refreshing every `period`.
    pub fn with_period(source: Arc<dyn Clock>, period: std::time::Duration) -> Result<Self, Error> {
        let now = Arc::new(AtomicU64::new(source.now_ms()));
        let stop = Arc::new(AtomicBool::new(false));
        let (now2, stop2, source2) = (Arc::clone(&now), Arc::clone(&stop), Arc::clone(&source));
        std::thread::Builder::new()
            .name("idgen-clock".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    now2.fetch_max(source2.now_ms(), Ordering::Relaxed);
                    std::thread::sleep(period);
                }
            })
            .map_err(Error::ClockThread)?;
        Ok(CachedClock { inner: Arc::new(CachedInner { now, stop, source }) })
    }
}

impl Drop for CachedInner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Clock for CachedClock {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.inner.now.load(Ordering::Relaxed)
    }

    /// Reads the source (and publishes the reading to the cache).
    fn now_ms_fresh(&self) -> u64 {
        let now = self.inner.source.now_ms_fresh();
        self.inner.now.fetch_max(now, Ordering::Relaxed).max(now)
    }
}

/// A clock that moves only when told: for tests and simulations. Clones share
/// the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock reading `now_ms` (Unix ms).
    pub fn new(now_ms: u64) -> Self {
        ManualClock { now: Arc::new(AtomicU64::new(now_ms)) }
    }
    /// Sets the time (forwards or backwards).
    pub fn set(&self, now_ms: u64) {
        self.now.store(now_ms, Ordering::SeqCst);
    }
    /// Moves the time forward.
    pub fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
    /// Moves the time backward (saturating at 0).
    pub fn step_back(&self, ms: u64) {
        let _ = self.now.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_sub(ms)));
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn slew_moves_at_the_rate_and_stops_at_the_target() {
        // 5 % rate: 50 ms of correction per second.
        assert_eq!(slewed(0, 0, -100_000_000, 1_000_000_000, 50_000), -50_000_000);
        assert_eq!(slewed(0, 0, -100_000_000, 10_000_000_000, 50_000), -100_000_000);
        assert_eq!(slewed(0, 0, 30_000_000, 1_000_000_000, 50_000), 30_000_000);
        assert_eq!(slewed(5, 7, 7, 1_000, 50_000), 7);
    }

    #[test]
    fn system_clock_tracks_the_wall_clock() {
        let c = SystemClock::new();
        let wall = cellclock::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(c.now_ms().abs_diff(wall) < 1_000);
    }

    #[test]
    fn a_negative_correction_is_slewed_not_stepped() {
        let c = SystemClock::new();
        let before = c.now_ms();
        c.set_offset_ms(-60_000);
        let after = c.now_ms();
        assert!(after >= before, "clock stepped back: {before} -> {after}");
        assert!(c.applied_offset_ms() > -1_000);
        assert!(matches!(SystemClock::new().with_slew_ppm(0), Err(Error::InvalidLayout(_))));
    }

    #[test]
    fn sync_from_reads_the_source() {
        let c = SystemClock::new();
        assert_eq!(c.sync_from(&|| None), None);
        assert_eq!(c.sync_from(&|| Some(5)), Some(5));
    }

    #[test]
    fn cached_clock_follows_its_source_and_stops() {
        let source = ManualClock::new(1_000);
        let cached = CachedClock::with_period(Arc::new(source.clone()), std::time::Duration::from_micros(50))
            .unwrap();
        assert_eq!(cached.now_ms(), 1_000);
        source.set(2_000);
        while cached.now_ms() != 2_000 {
            std::thread::yield_now();
        }
        source.set(1_500); // a source stepping back does not move it back
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(cached.now_ms(), 2_000);
        let stop = Arc::clone(&cached.inner.stop);
        drop(cached);
        assert!(stop.load(Ordering::Relaxed));
    }

    #[test]
    fn coarse_readings_never_run_ahead_and_catch_up_with_fresh_ones() {
        let c = SystemClock::new();
        for _ in 0..1_000 {
            let coarse = coarse_elapsed_ns();
            assert!(coarse <= precise_elapsed_ns());
        }
        // A fresh reading is published: later coarse readings are not behind it.
        let fresh = c.now_ms_fresh();
        assert!(c.now_ms() >= fresh);
        // The shared thread (or a reader waking it) moves the coarse clock on.
        while c.now_ms() <= fresh {
            std::thread::yield_now();
        }
        let wall = cellclock::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(c.now_ms().abs_diff(wall) < 1_000);
        let direct = SystemClock::new().direct();
        assert!(!direct.coarse);
        assert!(direct.now_ms().abs_diff(wall) < 1_000);
    }

    #[test]
    fn cached_clock_fresh_reading_reads_the_source() {
        let source = ManualClock::new(1_000);
        let cached =
            CachedClock::with_period(Arc::new(source.clone()), std::time::Duration::from_secs(3_600)).unwrap();
        source.set(1_005);
        assert_eq!(cached.now_ms_fresh(), 1_005);
        assert_eq!(cached.now_ms(), 1_005, "the fresh reading is published to the cache");
    }

    #[test]
    fn manual_clock_moves_when_told() {
        let c = ManualClock::new(100);
        let shared = c.clone();
        c.advance(5);
        assert_eq!(shared.now_ms(), 105);
        c.step_back(10);
        assert_eq!(shared.now_ms(), 95);
        c.set(7);
        assert_eq!(shared.now_ms(), 7);
    }
}
