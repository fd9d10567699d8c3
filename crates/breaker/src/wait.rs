//! [`WaitStrategy`]: how long an open breaker stays open.

use std::sync::Arc;
use std::time::Duration;

use crate::config::WaitConfig;

/// Computes the wait in open from the attempt number (opens since the breaker
/// last closed, from 0). Closures `Fn(u32) -> Duration` implement it.
pub trait WaitStrategy: Send + Sync + 'static {
    /// The wait for `attempt`.
    fn wait(&self, attempt: u32) -> Duration;
}

impl<F> WaitStrategy for F
where
    F: Fn(u32) -> Duration + Send + Sync + 'static,
{
    fn wait(&self, attempt: u32) -> Duration {
        self(attempt)
    }
}

impl WaitStrategy for WaitConfig {
    fn wait(&self, attempt: u32) -> Duration {
        match *self {
            WaitConfig::Fixed { wait } => wait,
            WaitConfig::Exponential { initial, multiplier, max, jitter } => {
                let exp = i32::try_from(attempt.min(64)).unwrap_or(64);
                let base = (initial.as_secs_f64() * multiplier.powi(exp)).min(max.as_secs_f64());
                let spread = if jitter > 0.0 { (rand::random::<f64>() * 2.0 - 1.0) * jitter } else { 0.0 };
                Duration::try_from_secs_f64((base * (1.0 + spread)).max(0.0)).unwrap_or(max)
            }
        }
    }
}

/// A shared wait strategy.
pub(crate) type SharedWait = Arc<dyn WaitStrategy>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn exponential_grows_and_caps() {
        let w = WaitConfig::Exponential {
            initial: Duration::from_secs(1),
            multiplier: 2.0,
            max: Duration::from_secs(10),
            jitter: 0.0,
        };
        let got: Vec<u64> = (0..6).map(|a| w.wait(a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(w.wait(u32::MAX), Duration::from_secs(10));
    }

    #[test]
    fn jitter_stays_in_band() {
        let w = WaitConfig::Exponential {
            initial: Duration::from_secs(4),
            multiplier: 1.0,
            max: Duration::from_secs(4),
            jitter: 0.25,
        };
        for _ in 0..200 {
            let d = w.wait(0).as_secs_f64();
            assert!((3.0..=5.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn closures_are_strategies() {
        let f = |a: u32| Duration::from_millis(100 * u64::from(a + 1));
        assert_eq!(WaitStrategy::wait(&f, 2), Duration::from_millis(300));
    }
}
