//! [`DecisionConfig`]: thresholds, windows, caps and the failback curve of the
//! decision engine, and [`CellSpec`]: what the engine knows about each cell.

use std::time::Duration;

use cellctx::CellId;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// What to do when the engine lacks information or capacity.
///
/// - A prober whose view of a cell is missing or stale counts as a *healthy*
///   vote when open, an *unhealthy* vote when closed.
/// - Traffic a drained cell cannot spill (its failover targets' headroom is
///   used up) stays on the sick cell when open, and is shed when closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Keep serving: missing data is healthy, unplaced traffic stays home.
    Open,
    /// Stop serving: missing data is unhealthy, unplaced traffic is shed.
    Closed,
}

/// How a drained cell comes back.
#[derive(Debug, Clone, PartialEq)]
pub enum Failback {
    /// Automatically, following the curve once the cell has recovered.
    Ramp(RampCurve),
    /// Held at zero until an operator approves
    /// ([`DecisionEngine::approve_failback`](crate::DecisionEngine::approve_failback)),
    /// then following the curve.
    Manual(RampCurve),
}

impl Failback {
    /// The curve followed once failback starts.
    pub fn curve(&self) -> &RampCurve {
        match self {
            Failback::Ramp(c) | Failback::Manual(c) => c,
        }
    }
}

/// A failback curve: the share of its traffic a recovering cell gets, as a step
/// function of the time since failback started.
///
/// ```
/// use std::time::Duration;
/// use failover::RampCurve;
/// let curve = RampCurve::try_new(vec![
///     (Duration::ZERO, 0.01),
///     (Duration::from_secs(60), 0.10),
///     (Duration::from_secs(120), 0.50),
///     (Duration::from_secs(180), 1.0),
/// ])?;
/// assert_eq!(curve.share_at(Duration::from_secs(30)), 0.01);
/// assert_eq!(curve.share_at(Duration::from_secs(61)), 0.10);
/// assert_eq!(curve.share_at(Duration::from_secs(500)), 1.0);
/// # Ok::<(), failover::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RampCurve {
    points: Vec<(Duration, f64)>,
}

impl RampCurve {
    /// Points `(offset, share)`: offsets strictly increasing from zero, shares in
    /// `(0, 1]` and non-decreasing, the last one `1.0`.
    pub fn try_new(points: Vec<(Duration, f64)>) -> Result<Self, Error> {
        let bad = |m: &str| Err(Error::Config(format!("ramp curve: {m}")));
        let Some(first) = points.first() else { return bad("no point") };
        if first.0 != Duration::ZERO {
            return bad("the first point must be at offset 0");
        }
        for w in points.windows(2) {
            if w[1].0 <= w[0].0 {
                return bad("offsets must increase");
            }
            if w[1].1 < w[0].1 {
                return bad("shares must not decrease");
            }
        }
        if points.iter().any(|p| !(p.1 > 0.0 && p.1 <= 1.0)) {
            return bad("shares must be in (0, 1]");
        }
        if points.last().map(|p| p.1) != Some(1.0) {
            return bad("the last share must be 1.0");
        }
        Ok(RampCurve { points })
    }

    /// The share at `elapsed` since failback started.
    pub fn share_at(&self, elapsed: Duration) -> f64 {
        self.points.iter().rev().find(|p| p.0 <= elapsed).map(|p| p.1).unwrap_or(0.0)
    }

    /// The offset at which the curve reaches 100 %.
    pub fn duration(&self) -> Duration {
        self.points.last().map(|p| p.0).unwrap_or_default()
    }

    /// The points.
    pub fn points(&self) -> &[(Duration, f64)] {
        &self.points
    }
}

impl Default for RampCurve {
    /// 1 % -> 5 % -> 25 % -> 50 % -> 100 %, one step a minute.
    fn default() -> Self {
        let m = |n: u64| Duration::from_secs(60 * n);
        RampCurve { points: vec![(m(0), 0.01), (m(1), 0.05), (m(2), 0.25), (m(3), 0.50), (m(4), 1.0)] }
    }
}

/// The decision engine's configuration. Defaults follow the seed: an error
/// rate above 0.5 % sustained for 30 s drains the cell.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionConfig {
    pub(crate) trip_error_rate: f64,
    pub(crate) trip_window: Duration,
    pub(crate) recover_error_rate: f64,
    pub(crate) recover_window: Duration,
    pub(crate) min_dwell: Duration,
    pub(crate) min_samples: u64,
    pub(crate) max_drained: usize,
    pub(crate) failback: Failback,
    pub(crate) prober_quorum: usize,
    pub(crate) probe_stale_after: Duration,
    pub(crate) fail_mode: FailMode,
    pub(crate) load_alpha: f64,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            trip_error_rate: 0.005,
            trip_window: Duration::from_secs(30),
            recover_error_rate: 0.001,
            recover_window: Duration::from_secs(60),
            min_dwell: Duration::from_secs(120),
            min_samples: 20,
            max_drained: 1,
            failback: Failback::Ramp(RampCurve::default()),
            prober_quorum: 2,
            probe_stale_after: Duration::from_secs(30),
            fail_mode: FailMode::Open,
            load_alpha: 0.2,
        }
    }
}

impl DecisionConfig {
    /// The seed's defaults (see the field setters for each value).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trip when the error rate is above `rate` (default 0.005) for `window`
    /// (default 30 s) without interruption.
    pub fn with_trip(mut self, rate: f64, window: Duration) -> Self {
        self.trip_error_rate = rate;
        self.trip_window = window;
        self
    }

    /// A drained cell recovers when its error rate stays at or below `rate`
    /// (default 0.001) and the probers agree it is up for `window` (default 60 s).
    pub fn with_recover(mut self, rate: f64, window: Duration) -> Self {
        self.recover_error_rate = rate;
        self.recover_window = window;
        self
    }

    /// Minimum time a cell stays drained before failback may start (default 120 s).
    pub fn with_min_dwell(mut self, dwell: Duration) -> Self {
        self.min_dwell = dwell;
        self
    }

    /// Minimum outcomes in one evaluation for its error rate to count (default 20).
    pub fn with_min_samples(mut self, n: u64) -> Self {
        self.min_samples = n;
        self
    }

    /// At most `n` cells drained (or failing back) at once (default 1).
    pub fn with_max_drained(mut self, n: usize) -> Self {
        self.max_drained = n;
        self
    }

    /// How drained cells come back (default: the default [`RampCurve`]).
    pub fn with_failback(mut self, failback: Failback) -> Self {
        self.failback = failback;
        self
    }

    /// How many probers must see a cell unhealthy for it to be down (default 2),
    /// and after how long a prober's view is stale (default 30 s).
    pub fn with_probers(mut self, quorum: usize, stale_after: Duration) -> Self {
        self.prober_quorum = quorum;
        self.probe_stale_after = stale_after;
        self
    }

    /// Fail open (default) or closed; see [`FailMode`].
    pub fn with_fail_mode(mut self, mode: FailMode) -> Self {
        self.fail_mode = mode;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if !(self.trip_error_rate > 0.0 && self.trip_error_rate < 1.0) {
            return bad("trip error rate must be in (0, 1)");
        }
        if !(self.recover_error_rate >= 0.0 && self.recover_error_rate < self.trip_error_rate) {
            return bad("recover error rate must be in [0, trip rate)");
        }
        if self.trip_window.is_zero() || self.recover_window.is_zero() {
            return bad("windows must be positive");
        }
        if self.min_samples == 0 {
            return bad("min samples must be at least 1");
        }
        if self.max_drained == 0 {
            return bad("max drained must be at least 1");
        }
        if self.prober_quorum == 0 {
            return bad("prober quorum must be at least 1");
        }
        Ok(())
    }
}

/// What the engine knows about a cell: its failover targets (in order) and the
/// extra load it may take as a failover target (its declared headroom).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellSpec {
    /// The cell.
    pub id: CellId,
    /// Ordered failover targets.
    #[serde(default)]
    pub failover: Vec<CellId>,
    /// Extra requests per second this cell may absorb from drained cells.
    #[serde(default)]
    pub headroom_rps: f64,
}

impl CellSpec {
    /// A cell with no failover target and no headroom.
    pub fn new(id: CellId) -> Self {
        CellSpec { id, failover: Vec::new(), headroom_rps: 0.0 }
    }

    /// Sets the failover targets.
    pub fn with_failover(mut self, targets: impl IntoIterator<Item = CellId>) -> Self {
        self.failover = targets.into_iter().collect();
        self
    }

    /// Sets the declared headroom.
    pub fn with_headroom_rps(mut self, rps: f64) -> Self {
        self.headroom_rps = rps;
        self
    }

    /// Specs from a routing table: each cell's failover list, and a headroom of
    /// `headroom_per_weight × weight` requests per second.
    pub fn from_table(table: &cellrouter::RoutingTable, headroom_per_weight: f64) -> Vec<CellSpec> {
        table
            .cells
            .iter()
            .map(|c| CellSpec {
                id: c.id.clone(),
                failover: c.failover.clone(),
                headroom_rps: c.weight as f64 * headroom_per_weight,
            })
            .collect()
    }
}
