//! Retry policy: attempts and exponential backoff with full jitter.

use std::time::Duration;

use rand::Rng;

use crate::error::Error;

/// How many times a step's action (or compensation) is tried, and how long to
/// wait between tries.
///
/// The wait before retry `n` (1-based: the wait after the first failure is
/// `n = 1`) is drawn uniformly from `[0, min(max_backoff, base * 2^(n-1))]`
/// ("full jitter"), so executors that failed together do not retry together.
///
/// ```
/// use std::time::Duration;
/// use saga::RetryPolicy;
///
/// let p = RetryPolicy::try_new(5, Duration::from_millis(50), Duration::from_secs(2)).unwrap();
/// assert_eq!(p.max_attempts(), 5);
/// assert!(p.backoff(3) <= Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    base: Duration,
    max_backoff: Duration,
    jitter: bool,
}

impl Default for RetryPolicy {
    /// Three attempts, 100 ms base, 5 s cap, jitter on.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            jitter: true,
        }
    }
}

impl RetryPolicy {
    /// A policy of `max_attempts` tries (at least 1) with backoff starting at
    /// `base` and capped at `max_backoff` (`base <= max_backoff`).
    pub fn try_new(
        max_attempts: u32,
        base: Duration,
        max_backoff: Duration,
    ) -> Result<Self, Error> {
        if max_attempts == 0 {
            return Err(Error::InvalidConfig(
                "max_attempts must be at least 1".into(),
            ));
        }
        if base > max_backoff {
            return Err(Error::InvalidConfig(format!(
                "backoff base {base:?} exceeds max_backoff {max_backoff:?}"
            )));
        }
        Ok(RetryPolicy {
            max_attempts,
            base,
            max_backoff,
            jitter: true,
        })
    }

    /// A single attempt, no retry.
    pub fn once() -> Self {
        RetryPolicy {
            max_attempts: 1,
            base: Duration::ZERO,
            max_backoff: Duration::ZERO,
            jitter: false,
        }
    }

    /// Turns jitter off: the wait is exactly `min(max_backoff, base * 2^(n-1))`.
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }

    /// The number of attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The upper bound of the wait before retry `n` (1-based):
    /// `min(max_backoff, base * 2^(n-1))`; zero for `n = 0`.
    pub fn backoff_ceiling(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32
            .checked_shl(n.saturating_sub(1).min(31))
            .unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }

    /// The wait before retry `n` (1-based): the ceiling, or a uniform draw in
    /// `[0, ceiling]` with jitter.
    pub fn backoff(&self, n: u32) -> Duration {
        let ceiling = self.backoff_ceiling(n);
        if !self.jitter || ceiling.is_zero() {
            return ceiling;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_zero_attempts_and_inverted_bounds() {
        assert!(matches!(
            RetryPolicy::try_new(0, Duration::ZERO, Duration::ZERO),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            RetryPolicy::try_new(3, Duration::from_secs(2), Duration::from_secs(1)),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn ceiling_doubles_then_caps() {
        let p = RetryPolicy::try_new(10, Duration::from_millis(10), Duration::from_millis(70))
            .unwrap()
            .without_jitter();
        let waits: Vec<u128> = (0..6).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, vec![0, 10, 20, 40, 70, 70]);
    }

    proptest! {
        #[test]
        fn backoff_within_ceiling_and_ceiling_monotone(
            base_ms in 0u64..1_000, extra_ms in 0u64..60_000, n in 0u32..200,
        ) {
            let p = RetryPolicy::try_new(3, Duration::from_millis(base_ms), Duration::from_millis(base_ms + extra_ms)).unwrap();
            let c = p.backoff_ceiling(n);
            prop_assert!(p.backoff(n) <= c);
            prop_assert!(c <= Duration::from_millis(base_ms + extra_ms));
            prop_assert!(p.backoff_ceiling(n + 1) >= c);
        }
    }
}
