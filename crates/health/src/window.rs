//! [`ResultWindow`]: the last N results of one probe.

use std::collections::VecDeque;
use std::time::Duration;

/// A bounded window of one probe's most recent results: success ratio and
/// P50/P99 latency of the successful runs.
///
/// ```
/// use std::time::Duration;
/// use health::ResultWindow;
/// let mut w = ResultWindow::new(4);
/// for ms in [1, 2, 3, 40] { w.push(true, Duration::from_millis(ms)); }
/// w.push(false, Duration::from_millis(5)); // the oldest result falls out
/// assert_eq!(w.len(), 4);
/// assert_eq!(w.success_ratio(), Some(0.75));
/// assert_eq!(w.p99(), Some(Duration::from_millis(40)));
/// ```
#[derive(Debug, Clone)]
pub struct ResultWindow {
    cap: usize,
    samples: VecDeque<(bool, Duration)>,
}

impl ResultWindow {
    /// A window keeping the last `cap` results (at least 1).
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        ResultWindow { cap, samples: VecDeque::with_capacity(cap) }
    }

    /// Records one result, dropping the oldest when full.
    pub fn push(&mut self, ok: bool, latency: Duration) {
        if self.samples.len() == self.cap {
            self.samples.pop_front();
        }
        self.samples.push_back((ok, latency));
    }

    /// Number of results held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True when no result has been recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Share of successful results, `None` when empty.
    pub fn success_ratio(&self) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let ok = self.samples.iter().filter(|(ok, _)| *ok).count();
        Some(ok as f64 / self.samples.len() as f64)
    }

    /// Median latency of the successful results.
    pub fn p50(&self) -> Option<Duration> {
        self.quantile(0.50)
    }

    /// 99th percentile latency of the successful results.
    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }

    /// Nearest-rank quantile `q` (0..=1) of the successful results' latency.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let mut lat: Vec<Duration> = self.samples.iter().filter(|(ok, _)| *ok).map(|(_, d)| *d).collect();
        if lat.is_empty() {
            return None;
        }
        lat.sort_unstable();
        let q = q.clamp(0.0, 1.0);
        let rank = (q * lat.len() as f64).ceil() as usize;
        let idx = rank.saturating_sub(1).min(lat.len() - 1);
        Some(lat[idx])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn window_laws(cap in 1usize..50, samples in proptest::collection::vec((any::<bool>(), 0u64..10_000), 0..200)) {
            let mut w = ResultWindow::new(cap);
            for (ok, ms) in &samples {
                w.push(*ok, Duration::from_millis(*ms));
            }
            prop_assert!(w.len() <= cap);
            prop_assert_eq!(w.len(), samples.len().min(cap));
            let kept = &samples[samples.len() - w.len()..];
            match w.success_ratio() {
                None => prop_assert!(kept.is_empty()),
                Some(r) => {
                    let expect = kept.iter().filter(|(ok, _)| *ok).count() as f64 / kept.len() as f64;
                    prop_assert!((r - expect).abs() < 1e-12);
                }
            }
            match (w.p50(), w.p99()) {
                (Some(a), Some(b)) => {
                    prop_assert!(a <= b);
                    let max = kept.iter().filter(|(ok, _)| *ok).map(|(_, ms)| *ms).max().unwrap_or(0);
                    prop_assert!(b <= Duration::from_millis(max));
                }
                (None, None) => prop_assert!(kept.iter().all(|(ok, _)| !ok)),
                _ => prop_assert!(false, "p50 and p99 disagree on emptiness"),
            }
        }
    }

    #[test]
    fn quantiles_nearest_rank() {
        let mut w = ResultWindow::new(100);
        for ms in 1..=100 {
            w.push(true, Duration::from_millis(ms));
        }
        assert_eq!(w.p50(), Some(Duration::from_millis(50)));
        assert_eq!(w.p99(), Some(Duration::from_millis(99)));
        w.push(false, Duration::from_secs(9));
        assert_eq!(w.success_ratio(), Some(0.99));
    }
}
