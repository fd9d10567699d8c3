//! The async path: [`Generator::next_id_async`] awaits a tokio timer where
//! [`Generator::next_id`] would spin or sleep the thread.

use std::time::Duration;

use tokio::time::Instant;

use crate::state::Next;
use crate::{Error, Generator, Id};

/// Slack added to the stall bound (see [`Generator::next_id_async`]).
const STALL_SLACK: Duration = Duration::from_secs(1);

impl Generator {
    /// The next id, for async code: never blocks the thread it runs on.
    ///
    /// When the current millisecond is used up, or the clock is behind the
    /// held timestamp (within the bound) and that timestamp's counter is used
    /// up, it awaits [`tokio::time::sleep`] until the clock should have passed
    /// the held millisecond, then tries again; other tasks of the runtime run
    /// meanwhile. Ids stay unique and strictly increasing per generator, as
    /// with [`next_id`](Self::next_id) (the same compare-and-swap step).
    ///
    /// Errors, without waiting:
    /// - [`Error::ClockMovedBackwards`] when the clock is behind the last
    ///   issued timestamp by more than the bound,
    /// - [`Error::LeaseExpired`] / [`Error::LeaseLost`] when the generator's
    ///   worker lease is gone (checked again after every wait),
    /// - [`Error::BeforeEpoch`], [`Error::TimestampOverflow`].
    ///
    /// A clock that does not reach the held millisecond within twice the bound
    /// plus one second of timer time (a frozen clock; a slewing
    /// [`SystemClock`](crate::SystemClock) runs at least at half speed, so it
    /// catches up a bound's worth of rollback in twice the bound) is
    /// [`Error::ClockStalled`].
    ///
    /// Needs a tokio runtime with the time driver enabled (feature `async`).
    pub async fn next_id_async(&self) -> Result<Id, Error> {
        let mut fresh = false;
        let mut started: Option<Instant> = None;
        loop {
            let (next, now) = self.attempt(fresh)?;
            match next {
                // A cached reading may look used up or behind: read afresh
                // before waiting or failing.
                Next::Exhausted { .. } | Next::Behind { .. } if !fresh => fresh = true,
                Next::Exhausted { held } => {
                    let since = *started.get_or_insert_with(Instant::now);
                    let waited = since.elapsed();
                    if waited > self.stall_bound() {
                        return Err(Error::ClockStalled {
                            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                        });
                    }
                    // The held millisecond is used up: the clock must pass it.
                    let ms = held.saturating_sub(now).saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                other => return self.finish(other),
            }
        }
    }

    /// How long the clock may take to pass a held millisecond.
    fn stall_bound(&self) -> Duration {
        Duration::from_millis(self.max_behind_ms().saturating_mul(2)).saturating_add(STALL_SLACK)
    }
}
