//! [`OutcomeReporter`]: passive outcomes (success or error, latency) reported by
//! the routing and breaker layers, accumulated until the engine's next tick.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellctx::CellId;

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Acc {
    pub(crate) ok: u64,
    pub(crate) err: u64,
    pub(crate) latency_sum: Duration,
}

/// A cheap handle (one `Arc`) the request path uses to report outcomes per cell.
/// One short critical section per report; the engine drains the counts on
/// every tick.
#[derive(Debug, Clone, Default)]
pub struct OutcomeReporter {
    inner: Arc<Mutex<HashMap<CellId, Acc>>>,
}

impl OutcomeReporter {
    /// Reports one request served (or failed) by `cell`.
    pub fn report(&self, cell: &CellId, ok: bool, latency: Duration) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let acc = match map.get_mut(cell) {
            Some(a) => a,
            None => map.entry(cell.clone()).or_default(),
        };
        if ok {
            acc.ok += 1;
        } else {
            acc.err += 1;
        }
        acc.latency_sum += latency;
    }

    /// Reports `ok` successes and `err` errors at once (aggregating callers).
    pub fn report_counts(&self, cell: &CellId, ok: u64, err: u64) {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let acc = map.entry(cell.clone()).or_default();
        acc.ok += ok;
        acc.err += err;
    }

    /// Takes the counts reported since the last take, per cell `(ok, err)`:
    /// for a request path in another process than the engine, which ships
    /// them to the engine's [`report_counts`](Self::report_counts). Counts
    /// taken here are not seen by an engine sharing this reporter.
    pub fn take_counts(&self) -> HashMap<CellId, (u64, u64)> {
        self.drain().into_iter().map(|(cell, acc)| (cell, (acc.ok, acc.err))).collect()
    }

    pub(crate) fn drain(&self) -> HashMap<CellId, Acc> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *map)
    }
}
