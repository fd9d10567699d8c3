//! [`Clock`]: the wall clock the signature verifier reads, a seam for tests.

use std::fmt;
use std::time::SystemTime;

/// The wall clock a [`HopVerifier`](crate::HopVerifier) checks issue and
/// expiry times against.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The process's wall clock ([`cellclock::now`]: [`SystemTime::now`] plus the
/// offset the process may set to model a skewed host), the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        cellclock::now()
    }
}

/// A wall clock that advances with Tokio's clock: the system time when it was
/// made plus the Tokio time elapsed since. Under `tokio::time::pause` it moves
/// only when Tokio's time does, so expiry can be tested without waiting.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    wall: SystemTime,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// Anchored at the current system and Tokio times.
    pub fn new() -> Self {
        TokioClock { wall: cellclock::now(), start: tokio::time::Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        TokioClock::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.wall + self.start.elapsed()
    }
}
