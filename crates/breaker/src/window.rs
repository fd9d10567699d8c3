//! Lock-free sliding windows: a ring of the last N outcomes (count-based) and a
//! ring of time buckets (time-based). Recording is a few relaxed atomic
//! operations; nothing allocates after construction.
//!
//! Under concurrency the counts are exact except for calls that race a time
//! bucket's rollover (they may land in the bucket just before it is cleared).

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::clock::nanos;
use crate::config::WindowConfig;

/// The counts of a window at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Recorded calls.
    pub calls: u64,
    /// Failed calls.
    pub failures: u64,
    /// Slow calls.
    pub slow: u64,
}

const FIELD: u32 = 21;
const MASK: i64 = (1 << FIELD) - 1;
const CALL: u8 = 1;
const FAIL: u8 = 2;
const SLOW: u8 = 4;

fn delta(slot: u8) -> i64 {
    (i64::from(slot & CALL) << (2 * FIELD)) + (i64::from((slot & FAIL) >> 1) << FIELD) + i64::from((slot & SLOW) >> 2)
}

fn sext(v: i64) -> i64 {
    (v << (64 - FIELD)) >> (64 - FIELD)
}

fn decode(word: u64) -> Snapshot {
    let w = word as i64;
    let s = sext(w & MASK);
    let w = (w - s) >> FIELD;
    let f = sext(w & MASK);
    let c = (w - f) >> FIELD;
    let pos = |v: i64| u64::try_from(v).unwrap_or(0);
    Snapshot { calls: pos(c), failures: pos(f), slow: pos(s) }
}

/// Lemire's fast `h % d` for 32-bit numbers.
fn fastmod(h: u32, m: u64, d: u32) -> usize {
    let low = m.wrapping_mul(u64::from(h));
    ((u128::from(low) * u128::from(d)) >> 64) as usize
}

/// The last `size` outcomes.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    head: AtomicU32,
    magic: u64,
    size: u32,
    /// Packed signed sums: calls << 42 | failures << 21 | slow.
    totals: AtomicU64,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.max(1);
        CountWindow {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            head: AtomicU32::new(0),
            magic: (u64::MAX / u64::from(size)).wrapping_add(1),
            size,
            totals: AtomicU64::new(0),
        }
    }

    fn record(&self, failure: bool, slow: bool) {
        let h = self.head.fetch_add(1, Relaxed);
        let idx = if self.size == 1 { 0 } else { fastmod(h, self.magic, self.size) };
        let new = CALL | if failure { FAIL } else { 0 } | if slow { SLOW } else { 0 };
        let Some(slot) = self.slots.get(idx) else { return };
        let old = slot.swap(new, Relaxed);
        if old != new {
            self.totals.fetch_add(delta(new).wrapping_sub(delta(old)) as u64, Relaxed);
        }
    }

    fn snapshot(&self) -> Snapshot {
        decode(self.totals.load(Relaxed))
    }

    fn reset(&self) {
        for s in self.slots.iter() {
            s.store(0, Relaxed);
        }
        self.totals.store(0, Relaxed);
    }
}

#[derive(Debug, Default)]
struct Bucket {
    epoch: AtomicU64,
    calls: AtomicU64,
    /// failures in the low 32 bits, slow calls in the high 32.
    bad: AtomicU64,
}

/// Calls of the last `n` buckets of `width` each.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    ring: Box<[Bucket]>,
    mask: u64,
    width: u64,
    /// `floor(now / width) == (now * magic) >> shift` for `now < 2^63`
    /// (a multiply instead of a 64-bit division on the hot path).
    magic: u64,
    shift: u32,
    n: u64,
    last_bad: AtomicU64,
}

impl TimeWindow {
    pub(crate) fn new(duration: Duration, buckets: u32) -> Self {
        let n = u64::from(buckets.max(1));
        let width = (nanos(duration) / n).max(1);
        let cap = n.next_power_of_two();
        // k = ceil(log2(width)); magic = ceil(2^(63 + k) / width) < 2^64.
        let k = 64 - (width - 1).leading_zeros();
        let shift = 63 + k;
        let magic = u64::try_from((1u128 << shift).div_ceil(u128::from(width))).unwrap_or(u64::MAX);
        TimeWindow {
            ring: (0..cap).map(|_| Bucket::default()).collect(),
            mask: cap - 1,
            width,
            magic,
            shift,
            n,
            last_bad: AtomicU64::new(0),
        }
    }

    /// The bucket epoch of `now` (from 1: 0 marks an empty bucket).
    #[inline]
    fn epoch(&self, now: u64) -> u64 {
        let now = now & (u64::MAX >> 1);
        ((u128::from(now) * u128::from(self.magic)) >> self.shift) as u64 + 1
    }

    /// The bucket of `now`, cleared first if it still holds an older epoch.
    #[inline]
    fn bucket(&self, now: u64) -> Option<&Bucket> {
        let e = self.epoch(now);
        let b = self.ring.get((e & self.mask) as usize)?;
        // Rotation is checked with one relaxed load.
        if b.epoch.load(Relaxed) != e {
            self.rotate(b, e);
        }
        Some(b)
    }

    #[cold]
    #[inline(never)]
    fn rotate(&self, b: &Bucket, e: u64) {
        let cur = b.epoch.load(Relaxed);
        if cur != e {
            if cur > e {
                // A racing caller with a later clock reading already moved on:
                // count this call there.
                return;
            }
            if b.epoch.compare_exchange(cur, e, Relaxed, Relaxed).is_ok() {
                b.calls.store(0, Relaxed);
                b.bad.store(0, Relaxed);
            }
        }
    }

    #[inline]
    pub(crate) fn add(&self, now: u64, calls: u64, failures: u64, slow: u64) {
        let Some(b) = self.bucket(now) else { return };
        if calls != 0 {
            b.calls.fetch_add(calls, Relaxed);
        }
        if failures != 0 || slow != 0 {
            b.bad.fetch_add(failures | (slow << 32), Relaxed);
            self.last_bad.fetch_max(self.epoch(now), Relaxed);
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        let e = self.epoch(now);
        let oldest = e.saturating_sub(self.n);
        let mut s = Snapshot::default();
        for b in self.ring.iter() {
            let be = b.epoch.load(Relaxed);
            if be > oldest && be <= e {
                let bad = b.bad.load(Relaxed);
                s.calls += b.calls.load(Relaxed);
                s.failures += bad & 0xffff_ffff;
                s.slow += bad >> 32;
            }
        }
        s
    }

    #[inline]
    fn has_bad(&self, now: u64) -> bool {
        let last = self.last_bad.load(Relaxed);
        last != 0 && self.epoch(now).saturating_sub(last) < self.n
    }

    pub(crate) fn reset(&self) {
        for b in self.ring.iter() {
            b.epoch.store(0, Relaxed);
            b.calls.store(0, Relaxed);
            b.bad.store(0, Relaxed);
        }
        self.last_bad.store(0, Relaxed);
    }
}

/// Either window.
#[derive(Debug)]
pub(crate) enum Window {
    Count(CountWindow),
    Time(TimeWindow),
}

impl Window {
    pub(crate) fn new(cfg: &WindowConfig) -> Self {
        match *cfg {
            WindowConfig::Count { size } => Window::Count(CountWindow::new(size)),
            WindowConfig::Time { duration, buckets } => Window::Time(TimeWindow::new(duration, buckets)),
        }
    }

    /// Whether this window has the shape `cfg` describes.
    pub(crate) fn matches(&self, cfg: &WindowConfig) -> bool {
        match (self, *cfg) {
            (Window::Count(w), WindowConfig::Count { size }) => w.size == size,
            (Window::Time(w), WindowConfig::Time { duration, buckets }) => {
                w.n == u64::from(buckets) && w.width == (nanos(duration) / u64::from(buckets.max(1))).max(1)
            }
            _ => false,
        }
    }

    #[inline]
    pub(crate) fn record(&self, now: u64, failure: bool, slow: bool) {
        match self {
            Window::Count(w) => w.record(failure, slow),
            Window::Time(w) => w.add(now, 1, u64::from(failure), u64::from(slow)),
        }
    }

    pub(crate) fn snapshot(&self, now: u64) -> Snapshot {
        match self {
            Window::Count(w) => w.snapshot(),
            Window::Time(w) => w.snapshot(now),
        }
    }

    /// Whether the window may hold a failure or a slow call (cheap; may say
    /// yes when there are none, never no when there are some).
    #[inline]
    pub(crate) fn has_bad(&self, now: u64) -> bool {
        match self {
            Window::Count(w) => {
                let s = w.snapshot();
                s.failures != 0 || s.slow != 0
            }
            Window::Time(w) => w.has_bad(now),
        }
    }

    pub(crate) fn reset(&self) {
        match self {
            Window::Count(w) => w.reset(),
            Window::Time(w) => w.reset(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn count_window_keeps_the_last_n() {
        let w = CountWindow::new(3);
        w.record(true, false);
        w.record(true, true);
        assert_eq!(w.snapshot(), Snapshot { calls: 2, failures: 2, slow: 1 });
        w.record(false, false);
        w.record(false, false);
        w.record(false, false);
        assert_eq!(w.snapshot(), Snapshot { calls: 3, failures: 0, slow: 0 });
        w.reset();
        assert_eq!(w.snapshot(), Snapshot::default());
    }

    #[test]
    fn time_window_expires_buckets() {
        let w = TimeWindow::new(Duration::from_millis(100), 10);
        w.add(0, 1, 1, 0);
        w.add(55 * MS, 1, 0, 1);
        assert_eq!(w.snapshot(55 * MS), Snapshot { calls: 2, failures: 1, slow: 1 });
        // The first bucket [0, 10) ms leaves the window at 100 ms.
        assert_eq!(w.snapshot(99 * MS).calls, 2);
        assert_eq!(w.snapshot(100 * MS), Snapshot { calls: 1, failures: 0, slow: 1 });
        assert_eq!(w.snapshot(160 * MS), Snapshot::default());
        assert!(!w.has_bad(160 * MS));
    }

    #[test]
    fn burst_across_a_bucket_edge_stays_in_the_window() {
        let w = TimeWindow::new(Duration::from_secs(1), 10);
        for i in 0..5 {
            w.add(99 * MS + i, 1, 1, 0);
        }
        for i in 0..5 {
            w.add(100 * MS + i, 1, 1, 0);
        }
        assert_eq!(w.snapshot(101 * MS).failures, 10);
    }

    proptest! {
        // Law: the multiply-shift epoch equals the division.
        #[test]
        fn epoch_is_exact(width in 1u64..u64::MAX >> 2, now in 0u64..u64::MAX >> 1) {
            let w = TimeWindow::new(Duration::from_nanos(width), 1);
            prop_assert_eq!(w.epoch(now), now / width + 1);
            prop_assert_eq!(w.epoch(now / width * width), now / width + 1);
            if now / width > 0 {
                prop_assert_eq!(w.epoch(now / width * width - 1), now / width);
            }
        }

        #[test]
        fn epoch_is_exact_for_small_widths(width in 1u64..5000, now in 0u64..10_000_000_000_000) {
            let w = TimeWindow::new(Duration::from_nanos(width), 1);
            prop_assert_eq!(w.epoch(now), now / width + 1);
        }

        // Law: the count window's packed totals equal a plain recount of its
        // last `size` outcomes.
        #[test]
        fn count_totals_match_recount(size in 1u32..40, ops in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..200)) {
            let w = CountWindow::new(size);
            for &(f, s) in &ops {
                w.record(f, s);
            }
            let tail = &ops[ops.len().saturating_sub(size as usize)..];
            let want = Snapshot {
                calls: tail.len() as u64,
                failures: tail.iter().filter(|o| o.0).count() as u64,
                slow: tail.iter().filter(|o| o.1).count() as u64,
            };
            prop_assert_eq!(w.snapshot(), want);
        }

        // Law: a time window sums exactly the calls of the last n buckets.
        #[test]
        fn time_window_matches_recount(buckets in 1u32..12, ops in proptest::collection::vec((0u64..500, any::<bool>()), 0..100)) {
            let w = TimeWindow::new(Duration::from_millis(u64::from(buckets) * 10), buckets);
            let mut ops = ops;
            ops.sort();
            let mut now = 0;
            for &(t, f) in &ops {
                now = t * MS;
                w.add(now, 1, u64::from(f), 0);
            }
            let e = now / (10 * MS);
            let live: Vec<_> = ops.iter().filter(|(t, _)| t / 10 + u64::from(buckets) > e).collect();
            let got = w.snapshot(now);
            prop_assert_eq!(got.calls, live.len() as u64);
            prop_assert_eq!(got.failures, live.iter().filter(|o| o.1).count() as u64);
        }
    }
}
