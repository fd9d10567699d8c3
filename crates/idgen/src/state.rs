//! The generator's one-word state and its compare-and-swap step.
//!
//! The state word is the last issued `(timestamp, logical clock, sequence)`,
//! packed as `timestamp << counter_bits | counter`, where the counter is the
//! logical clock (high bits) over the sequence (low bits). Adding 1 to the word
//! advances the sequence, carries into the logical clock when the sequence runs
//! out, and would carry into the timestamp when both are used up: that last
//! carry is refused (the id would run ahead of the clock), and the caller waits
//! for the next millisecond instead.
//!
//! The step is generic over [`Word`] so the loom model test drives the very same
//! code with loom's atomics under plain `cargo test`.

use std::sync::atomic::{AtomicU64, Ordering};

/// An atomic 64-bit word (std's, or loom's in the model test).
pub(crate) trait Word {
    fn load(&self) -> u64;
    fn compare_exchange_weak(&self, current: u64, new: u64) -> Result<u64, u64>;
}

impl Word for AtomicU64 {
    #[inline]
    fn load(&self) -> u64 {
        // Relaxed is enough: uniqueness needs only the total order of
        // read-modify-writes on this one word.
        AtomicU64::load(self, Ordering::Relaxed)
    }
    #[inline]
    fn compare_exchange_weak(&self, current: u64, new: u64) -> Result<u64, u64> {
        AtomicU64::compare_exchange_weak(self, current, new, Ordering::Relaxed, Ordering::Relaxed)
    }
}

/// Constants of one generator's step.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    /// Width of the counter (logical clock + sequence).
    pub(crate) counter_bits: u32,
    /// Largest timestamp (relative to the epoch) that fits the layout.
    pub(crate) max_ts: u64,
    /// How far the clock may be behind the last issued timestamp.
    pub(crate) max_behind_ms: u64,
}

/// Outcome of one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The new state word (the issued id's timestamp and counter).
    Issued(u64),
    /// Counter exhausted at timestamp `held`: retry once the clock passes it.
    Exhausted { held: u64 },
    /// The clock is more than the bound behind the last issued timestamp.
    Behind { by_ms: u64 },
    /// The clock no longer fits the timestamp bits.
    Overflow,
}

/// One compare-and-swap step: claims the next state for a clock reading of
/// `now` (ms since the epoch).
#[inline]
pub(crate) fn advance<W: Word>(word: &W, now: u64, step: Step) -> Next {
    if now > step.max_ts {
        return Next::Overflow;
    }
    let mut cur = word.load();
    loop {
        let held = cur >> step.counter_bits;
        let next = if now > held {
            // A fresh millisecond: counter back to zero.
            now << step.counter_bits
        } else {
            // Same millisecond, or the clock is behind: keep the held timestamp
            // and advance the counter (sequence, then logical clock).
            let behind = held - now;
            if behind > step.max_behind_ms {
                return Next::Behind { by_ms: behind };
            }
            let next = cur.wrapping_add(1);
            if next >> step.counter_bits != held || next == 0 {
                return Next::Exhausted { held };
            }
            next
        };
        match word.compare_exchange_weak(cur, next) {
            Ok(_) => return Next::Issued(next),
            Err(actual) => cur = actual,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    const STEP: Step = Step { counter_bits: 2, max_ts: 1000, max_behind_ms: 5 };

    #[test]
    fn counter_then_wait_then_fresh_millisecond() {
        let w = AtomicU64::new(0);
        assert_eq!(advance(&w, 10, STEP), Next::Issued(10 << 2));
        assert_eq!(advance(&w, 10, STEP), Next::Issued((10 << 2) + 1));
        assert_eq!(advance(&w, 10, STEP), Next::Issued((10 << 2) + 2));
        assert_eq!(advance(&w, 10, STEP), Next::Issued((10 << 2) + 3));
        assert_eq!(advance(&w, 10, STEP), Next::Exhausted { held: 10 });
        assert_eq!(advance(&w, 11, STEP), Next::Issued(11 << 2));
    }

    #[test]
    fn clock_behind_keeps_the_timestamp_until_the_bound() {
        let w = AtomicU64::new(20 << 2);
        assert_eq!(advance(&w, 17, STEP), Next::Issued((20 << 2) + 1));
        assert_eq!(advance(&w, 15, STEP), Next::Issued((20 << 2) + 2));
        assert_eq!(advance(&w, 14, STEP), Next::Behind { by_ms: 6 });
        assert_eq!(AtomicU64::load(&w, Ordering::Relaxed), (20 << 2) + 2);
        assert_eq!(advance(&w, 1001, STEP), Next::Overflow);
    }
}

/// Model test of the compare-and-swap step with loom: every interleaving of
/// concurrent callers, the same `advance` code as production.
#[cfg(test)]
mod loom_model {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use loom::sync::Arc;
    use loom::sync::atomic::AtomicU64 as LoomU64;

    impl Word for LoomU64 {
        fn load(&self) -> u64 {
            LoomU64::load(self, Ordering::Relaxed)
        }
        fn compare_exchange_weak(&self, current: u64, new: u64) -> Result<u64, u64> {
            LoomU64::compare_exchange_weak(self, current, new, Ordering::Relaxed, Ordering::Relaxed)
        }
    }

    /// Two bits of counter: 4 ids per millisecond.
    const STEP: Step = Step { counter_bits: 2, max_ts: 1 << 20, max_behind_ms: 10 };

    fn issue(word: &LoomU64, now: u64, out: &mut Vec<u64>) {
        match advance(word, now, STEP) {
            Next::Issued(s) => out.push(s),
            Next::Exhausted { held } => assert!(held >= now),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn concurrent_callers_never_share_a_state() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let word = Arc::new(LoomU64::new(5 << 2));
            let other = Arc::clone(&word);
            let t = loom::thread::spawn(move || {
                let mut out = Vec::new();
                issue(&other, 5, &mut out);
                issue(&other, 6, &mut out);
                out
            });
            let mut mine = Vec::new();
            issue(&word, 4, &mut mine); // clock behind: keeps the held timestamp
            issue(&word, 6, &mut mine);
            let theirs = t.join().unwrap();
            // Each caller sees its own ids strictly increasing.
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{mine:?}");
            assert!(theirs.windows(2).all(|w| w[0] < w[1]), "{theirs:?}");
            let mut all: Vec<u64> = mine.into_iter().chain(theirs).collect();
            let n = all.len();
            all.sort_unstable();
            all.dedup();
            assert_eq!(all.len(), n, "duplicate state issued");
            assert!(all.iter().all(|&s| s > 5 << 2));
        });
    }

    #[test]
    fn exhaustion_is_reported_not_wrapped() {
        loom::model(|| {
            // One id left in millisecond 7.
            let word = Arc::new(LoomU64::new((7 << 2) + 2));
            let other = Arc::clone(&word);
            let t = loom::thread::spawn(move || advance(&*other, 7, STEP));
            let mine = advance(&*word, 7, STEP);
            let theirs = t.join().unwrap();
            let issued: Vec<_> = [mine, theirs].into_iter().filter(|n| matches!(n, Next::Issued(_))).collect();
            assert_eq!(issued, vec![Next::Issued((7 << 2) + 3)]);
            assert!([mine, theirs].contains(&Next::Exhausted { held: 7 }));
        });
    }
}
