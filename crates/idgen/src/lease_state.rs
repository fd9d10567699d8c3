//! The part of a worker lease the generator sees: a validity deadline checked
//! on every id, and the generators whose last timestamp the renewals record.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::Error;
use crate::generator::{Generator, Padded};

/// Shared by a lease's renewal task and its generators.
#[derive(Debug, Default)]
pub(crate) struct LeaseState {
    /// Ids may be issued while the clock reads below this (Unix ms).
    valid_until_ms: AtomicU64,
    /// The record is no longer ours (taken over, deleted, or released).
    lost: AtomicBool,
    /// Released or lost: renewals no longer extend the deadline.
    closed: AtomicBool,
    /// The first timestamp the holder may issue (previous record + 1).
    floor_ms: u64,
    attached: Mutex<Vec<Attached>>,
}

#[derive(Debug)]
struct Attached {
    /// Kept alive after the generator drops: its last timestamp still counts.
    state: Arc<Padded>,
    counter_bits: u32,
    epoch_ms: u64,
}

#[cfg_attr(not(any(feature = "redis", feature = "etcd", feature = "sql")), allow(dead_code))]
impl LeaseState {
    pub(crate) fn new(valid_until_ms: u64, floor_ms: u64) -> Self {
        LeaseState { valid_until_ms: AtomicU64::new(valid_until_ms), floor_ms, ..Default::default() }
    }


    /// Called on every id: errors once the deadline has passed or the lease is lost.
    #[inline]
    pub(crate) fn check(&self, now_ms: u64) -> Result<(), Error> {
        if now_ms < self.valid_until_ms.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.lost.load(Ordering::Acquire) { Err(Error::LeaseLost) } else { Err(Error::LeaseExpired) }
    }

    /// Moves the deadline forward (never back) after a successful renewal;
    /// a no-op once revoked, even when racing with `revoke`.
    pub(crate) fn extend(&self, valid_until_ms: u64) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        self.valid_until_ms.fetch_max(valid_until_ms, Ordering::SeqCst);
        if self.closed.load(Ordering::SeqCst) {
            self.valid_until_ms.store(0, Ordering::SeqCst);
        }
    }

    /// Stops every generator of this lease at once, for good.
    pub(crate) fn revoke(&self, lost: bool) {
        if lost {
            self.lost.store(true, Ordering::SeqCst);
        }
        self.closed.store(true, Ordering::SeqCst);
        self.valid_until_ms.store(0, Ordering::SeqCst);
    }

    pub(crate) fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    pub(crate) fn valid_until_ms(&self) -> u64 {
        self.valid_until_ms.load(Ordering::Acquire)
    }

    pub(crate) fn attach(&self, generator: &Generator) {
        let mut list = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        list.push(Attached {
            state: Arc::clone(generator.state_arc()),
            counter_bits: generator.layout().logical_bits() as u32
                + generator.layout().sequence_bits() as u32,
            epoch_ms: generator.layout().epoch_ms(),
        });
    }

    /// The latest timestamp (Unix ms) any generator of this lease issued, or
    /// the floor if that is higher: what a high-water mark must cover.
    pub(crate) fn last_issued_ms(&self) -> u64 {
        let list = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .map(|a| a.epoch_ms.saturating_add(a.state.0.load(Ordering::Relaxed) >> a.counter_bits))
            .fold(self.floor_ms, u64::max)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn deadline_expiry_loss_and_no_resurrection() {
        let s = LeaseState::new(100, 1);
        assert!(s.check(99).is_ok());
        assert!(matches!(s.check(100), Err(Error::LeaseExpired)));
        s.extend(200);
        s.extend(150); // never moves back
        assert!(s.check(199).is_ok());
        s.revoke(false);
        s.extend(10_000); // a renewal finishing after release does not revive it
        assert!(matches!(s.check(0), Err(Error::LeaseExpired)));
        let lost = LeaseState::new(100, 1);
        lost.revoke(true);
        assert!(matches!(lost.check(0), Err(Error::LeaseLost)));
        assert_eq!(lost.last_issued_ms(), 1); // the floor, no generator attached
    }
}
