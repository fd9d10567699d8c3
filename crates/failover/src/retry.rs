//! [`RetryPolicy`]: when the [`Controller`](crate::Controller) tries a failed
//! switch again: capped exponential backoff with jitter (`backon`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::Error;

/// Capped exponential backoff with jitter for failed switches.
///
/// Attempt `n` (from 0) waits `d + j`, with `d = min(min_delay · 2ⁿ, max_delay / 2)`
/// and `j` drawn uniformly in `[0, d)`: every delay is at least `min_delay`
/// and below `max_delay`, and two controllers that failed together spread
/// out. The jitter comes from one seed ([`with_seed`](Self::with_seed)); by
/// default a random one.
///
/// ```
/// use std::time::Duration;
/// use failover::RetryPolicy;
///
/// let p = RetryPolicy::try_new(Duration::from_millis(100), Duration::from_secs(2))?.with_seed(7);
/// let delays: Vec<Duration> = p.delays().take(8).collect();
/// assert!(delays.iter().all(|d| *d >= Duration::from_millis(100) && *d < Duration::from_secs(2)));
/// assert_eq!(delays, p.delays().take(8).collect::<Vec<_>>()); // same seed, same delays
/// # Ok::<(), failover::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    min: Duration,
    max: Duration,
    seed: Option<u64>,
}

impl Default for RetryPolicy {
    /// 200 ms doubling up to below 30 s, random seed.
    fn default() -> Self {
        RetryPolicy { min: Duration::from_millis(200), max: Duration::from_secs(30), seed: None }
    }
}

impl RetryPolicy {
    /// Delays from `min_delay` to below `max_delay`; `min_delay` must be
    /// positive and at most half `max_delay`.
    pub fn try_new(min_delay: Duration, max_delay: Duration) -> Result<Self, Error> {
        if min_delay.is_zero() || min_delay.saturating_mul(2) > max_delay {
            return Err(Error::Config(format!(
                "retry delays: min {min_delay:?} must be positive and at most half of max {max_delay:?}"
            )));
        }
        Ok(RetryPolicy { min: min_delay, max: max_delay, seed: None })
    }

    /// Draws the jitter from `seed` (reproducible delays).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The delays of successive attempts (endless).
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + 'static {
        let b = ExponentialBuilder::new()
            .with_min_delay(self.min)
            .with_max_delay(self.max / 2)
            .with_factor(2.0)
            .without_max_times()
            .with_jitter();
        let b = match self.seed {
            Some(s) => b.with_jitter_seed(s),
            None => b,
        };
        let cap = self.max.saturating_sub(Duration::from_nanos(1));
        b.build().map(move |d| d.min(cap))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn delays_stay_within_bounds_and_grow_until_the_cap(min_ms in 1u64..500, factor in 2u64..100, seed in any::<u64>()) {
            let (min, max) = (Duration::from_millis(min_ms), Duration::from_millis(min_ms * factor));
            let p = RetryPolicy::try_new(min, max).unwrap().with_seed(seed);
            let delays: Vec<Duration> = p.delays().take(40).collect();
            prop_assert_eq!(delays.len(), 40);
            for (n, d) in delays.iter().enumerate() {
                prop_assert!(*d >= min && *d < max, "attempt {} delay {:?} outside [{:?}, {:?})", n, d, min, max);
                // the base doubles until half the cap: the floor of attempt n
                let floor = min.saturating_mul(1u32 << n.min(20)).min(max / 2);
                prop_assert!(*d + Duration::from_millis(1) >= floor, "attempt {} delay {:?} below {:?}", n, d, floor);
            }
        }
    }

    #[test]
    fn invalid_bounds_are_errors() {
        assert!(RetryPolicy::try_new(Duration::ZERO, Duration::from_secs(1)).is_err());
        assert!(RetryPolicy::try_new(Duration::from_secs(1), Duration::from_millis(1500)).is_err());
        assert!(RetryPolicy::try_new(Duration::from_secs(1), Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn jitter_spreads_two_seeds() {
        let a: Vec<_> = RetryPolicy::default().with_seed(1).delays().take(5).collect();
        let b: Vec<_> = RetryPolicy::default().with_seed(2).delays().take(5).collect();
        assert_ne!(a, b);
    }
}
