//! Per-second counters of the load generator: successes per serving cell,
//! failures per home cell and a latency histogram per second. The console's
//! live figures, the text report's timeline and the HTML report all read them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies above this are clamped (µs).
const MAX_LATENCY_US: u64 = 60_000_000;

/// One second of the run.
#[derive(Debug, Clone)]
struct Second {
    served: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    latency_us: Option<Histogram<u64>>,
}

impl Second {
    fn new(cells: &[String]) -> Self {
        let zero = || cells.iter().map(|c| (c.clone(), 0)).collect();
        Second { served: zero(), errors: zero(), latency_us: Histogram::new_with_max(MAX_LATENCY_US, 2).ok() }
    }
}

/// The counters, shared by the load generator and their readers.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    cells: Arc<Vec<String>>,
    seconds: Arc<Mutex<Vec<Second>>>,
}

/// Per-second series, one value per second of the run (or of a window of it).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Series {
    /// Seconds since the run started.
    pub(crate) t: Vec<u64>,
    /// Per cell: requests it served successfully.
    pub(crate) served: BTreeMap<String, Vec<u64>>,
    /// Per cell: failed requests of users homed in it.
    pub(crate) errors: BTreeMap<String, Vec<u64>>,
    /// Median latency of the second's requests (ms), `None` when there were none.
    pub(crate) p50_ms: Vec<Option<f64>>,
    /// 99th percentile latency (ms).
    pub(crate) p99_ms: Vec<Option<f64>>,
}

impl Stats {
    /// Counters for `cells`.
    pub(crate) fn new(cells: Vec<String>) -> Self {
        Stats { cells: Arc::new(cells), seconds: Arc::new(Mutex::new(Vec::new())) }
    }

    /// Counts one finished request: at second `end_ms / 1000`, served by
    /// `served_by` (success) or failed for a user homed in `home`.
    pub(crate) fn record(&self, end_ms: u64, ok: bool, served_by: Option<&str>, home: &str, latency_us: u64) {
        let sec = usize::try_from(end_ms / 1000).unwrap_or(usize::MAX);
        let Ok(mut seconds) = self.seconds.lock() else { return };
        if seconds.len() <= sec {
            seconds.resize_with(sec + 1, || Second::new(&self.cells));
        }
        let s = &mut seconds[sec];
        match (ok, served_by) {
            (true, Some(by)) => *s.served.entry(by.to_string()).or_default() += 1,
            (true, None) => {}
            (false, _) => *s.errors.entry(home.to_string()).or_default() += 1,
        }
        if let Some(h) = s.latency_us.as_mut() {
            h.saturating_record(latency_us.min(MAX_LATENCY_US));
        }
    }

    /// The series of the seconds from `from` on.
    pub(crate) fn series(&self, from: usize) -> Series {
        let Ok(seconds) = self.seconds.lock() else { return Series::default() };
        let mut out = Series {
            served: self.cells.iter().map(|c| (c.clone(), Vec::new())).collect(),
            errors: self.cells.iter().map(|c| (c.clone(), Vec::new())).collect(),
            ..Series::default()
        };
        let pct = |h: &Option<Histogram<u64>>, q: f64| {
            h.as_ref().filter(|h| !h.is_empty()).map(|h| h.value_at_quantile(q) as f64 / 1000.0)
        };
        for (i, s) in seconds.iter().enumerate().skip(from) {
            out.t.push(i as u64);
            for (c, v) in out.served.iter_mut() {
                v.push(s.served.get(c).copied().unwrap_or(0));
            }
            for (c, v) in out.errors.iter_mut() {
                v.push(s.errors.get(c).copied().unwrap_or(0));
            }
            out.p50_ms.push(pct(&s.latency_us, 0.5));
            out.p99_ms.push(pct(&s.latency_us, 0.99));
        }
        out
    }

    /// Seconds counted so far.
    pub(crate) fn len(&self) -> usize {
        self.seconds.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Successes per cell per second (the text report's timeline).
    pub(crate) fn timeline(&self) -> Vec<BTreeMap<String, u64>> {
        self.seconds.lock().map(|s| s.iter().map(|s| s.served.clone()).collect()).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_successes_by_server_and_failures_by_home() {
        let s = Stats::new(vec!["a".into(), "b".into()]);
        s.record(100, true, Some("a"), "a", 1_000);
        s.record(1_500, true, Some("b"), "a", 3_000);
        s.record(1_600, false, None, "a", 9_000);
        let series = s.series(0);
        assert_eq!(series.t, vec![0, 1]);
        assert_eq!(series.served["a"], vec![1, 0]);
        assert_eq!(series.served["b"], vec![0, 1]);
        assert_eq!(series.errors["a"], vec![0, 1]);
        assert_eq!(series.errors["b"], vec![0, 0]);
        assert!((series.p50_ms[0].unwrap() - 1.0).abs() < 0.01);
        assert!((series.p99_ms[1].unwrap() - 9.0).abs() < 0.05);
        assert_eq!(s.series(1).t, vec![1]);
        assert_eq!(s.timeline()[1]["b"], 1);
    }
}
