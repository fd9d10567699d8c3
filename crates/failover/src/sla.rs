//! SLA figures: availability, P99.9 latency (HDR histogram), error rate and
//! switch durations over a sliding window, and the error budget left against a
//! target, with the budget spent attributed to causes. [`attribution`] names
//! where the budget went: which cell, which phase of which switch, which
//! dependency probe.
//!
//! ```
//! use std::time::Duration;
//! use failover::sla::{Cause, SlaConfig, SlaTracker};
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), failover::Error> {
//! let sla = SlaTracker::try_new(SlaConfig::default())?; // 99.995 %, 1 h window
//! let cell = "eu-1".parse().unwrap();
//! for _ in 0..99_999 {
//!     sla.record(&cell, Duration::from_millis(3), None);
//! }
//! sla.record(&cell, Duration::from_millis(250), Some(Cause::Dependency));
//! let report = sla.report();
//! assert_eq!(report.overall.requests, 100_000);
//! assert!((report.budget.remaining - 0.8).abs() < 1e-9); // 1 of 5 allowed errors spent
//! assert_eq!(report.budget.spent_by_cause.dependency, 1);
//! println!("{}", report.to_json()?);
//! # Ok(()) }
//! ```

pub mod attribution;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use cellctx::CellId;
use hdrhistogram::Histogram;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram as OtelHistogram};
use serde::Serialize;
use tokio::time::Instant;

use crate::error::Error;

/// What an error is blamed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// A dependency of the cell (database, cache, downstream service).
    Dependency,
    /// The cell itself.
    Cell,
    /// A traffic switch in progress.
    Switch,
}

impl Cause {
    fn idx(self) -> usize {
        match self {
            Cause::Dependency => 0,
            Cause::Cell => 1,
            Cause::Switch => 2,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Cause::Dependency => "dependency",
            Cause::Cell => "cell",
            Cause::Switch => "switch",
        }
    }
}

/// How the apply phase of a switch ended.
///
/// A router apply that timed out is [`ApplyPhase::TimedOut`], never a zero
/// duration; a switch with no router to wait for is [`ApplyPhase::NotTracked`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "ms")]
pub enum ApplyPhase {
    /// Every router given to the controller ran the new table version this
    /// long after the commit.
    Applied(#[serde(serialize_with = "ser_ms")] Duration),
    /// The routers did not all run the new version within the apply wait
    /// (the wait, in ms, is carried).
    TimedOut(#[serde(serialize_with = "ser_ms")] Duration),
    /// No router was watched: the apply was not measured.
    #[default]
    NotTracked,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

impl ApplyPhase {
    /// The measured duration; `None` when it timed out or was not tracked.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            ApplyPhase::Applied(d) => Some(*d),
            ApplyPhase::TimedOut(_) | ApplyPhase::NotTracked => None,
        }
    }
}

/// The four phases of a switch, between five instants stamped on its audit
/// row (wall clock, ms since the Unix epoch):
///
/// | phase | from | to |
/// |---|---|---|
/// | `detect` | **detected**: the start of the engine tick in which the first bad sample of the tripping signal (error rate or prober votes) was seen; a manual drain is detected when it is asked for | **decided**: the engine tick that issued the `Decision` (so `detect` includes the rule's trip window, e.g. 30 s) |
/// | `decide` | decided | **intent**: the intent audit row is written (leadership checked, table read, change prepared and validated) |
/// | `commit` | intent | **committed**: the fenced table write succeeded (the etcd transaction or the store write) |
/// | `apply` | committed | **applied**: every router the controller watches runs the new table version, or [`ApplyPhase::TimedOut`] after the apply wait, or [`ApplyPhase::NotTracked`] |
///
/// Retries of a failed switch start a new intent: `decide` then covers the
/// backoff, `commit` only the attempt that succeeded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SwitchPhases {
    /// Detected -> decided.
    pub detect: Duration,
    /// Decided -> intent written.
    pub decide: Duration,
    /// Intent -> committed.
    pub commit: Duration,
    /// Committed -> applied by every watched router, or why not measured.
    pub apply: ApplyPhase,
}

impl SwitchPhases {
    /// The sum of the phases; `None` when the apply was not measured
    /// (timed out or not tracked).
    pub fn total(&self) -> Option<Duration> {
        Some(self.detect + self.decide + self.commit + self.apply.duration()?)
    }
}

/// SLA tracker configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaConfig {
    target: f64,
    window: Duration,
    buckets: u32,
}

impl Default for SlaConfig {
    /// Target 99.995 %, a one-hour window in 60 buckets.
    fn default() -> Self {
        SlaConfig { target: 0.99995, window: Duration::from_secs(3600), buckets: 60 }
    }
}

impl SlaConfig {
    /// A target availability in `(0, 1)` over `window`, counted in `buckets` slices.
    pub fn try_new(target: f64, window: Duration, buckets: u32) -> Result<Self, Error> {
        if !(target > 0.0 && target < 1.0) {
            return Err(Error::Config("SLA target must be in (0, 1)".into()));
        }
        if window.is_zero() || buckets == 0 || window / buckets < Duration::from_millis(1) {
            return Err(Error::Config("SLA window and buckets must be positive".into()));
        }
        Ok(SlaConfig { target, window, buckets })
    }
}

#[derive(Debug)]
struct CellStats {
    requests: u64,
    errors: [u64; 3],
    latency_us: Option<Histogram<u64>>,
}

fn histogram() -> Option<Histogram<u64>> {
    // 1 µs .. 1 h, 3 significant digits (constant, valid bounds).
    Histogram::new_with_bounds(1, 3_600_000_000, 3).ok()
}

impl Default for CellStats {
    fn default() -> Self {
        CellStats { requests: 0, errors: [0; 3], latency_us: histogram() }
    }
}

impl CellStats {
    fn merge(&mut self, o: &CellStats) {
        self.requests += o.requests;
        for i in 0..3 {
            self.errors[i] += o.errors[i];
        }
        if let (Some(a), Some(b)) = (&mut self.latency_us, &o.latency_us) {
            let _ = a.add(b);
        }
    }
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    cells: HashMap<CellId, CellStats>,
    switches: Vec<SwitchPhases>,
}

/// Figures for one cell (or all cells).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CellReport {
    /// Requests in the window.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `1 - errors / requests` (1 when there was no request).
    pub availability: f64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// P99.9 latency, milliseconds.
    pub p999_ms: f64,
    /// P99 latency, milliseconds.
    pub p99_ms: f64,
    /// P50 latency, milliseconds.
    pub p50_ms: f64,
}

/// Errors per cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByCause {
    /// Dependency errors.
    pub dependency: u64,
    /// Cell errors.
    pub cell: u64,
    /// Switch errors.
    pub switch: u64,
}

/// The error budget against the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetReport {
    /// The target availability.
    pub target: f64,
    /// Errors the target allows for the requests seen: `(1 - target) × requests`.
    pub allowed_errors: f64,
    /// Errors so far.
    pub spent: u64,
    /// `1 - spent / allowed` (negative when the budget is blown).
    pub remaining: f64,
    /// The errors per cause.
    pub spent_by_cause: ByCause,
    /// The share of the spent budget per cause (sums to 1 when anything was spent).
    pub share_by_cause: BTreeMap<String, f64>,
}

/// Switch durations in the window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SwitchReport {
    /// Switches in the window.
    pub count: usize,
    /// Switches whose router apply timed out (their apply is not in the figures).
    pub apply_timed_out: usize,
    /// Switches whose apply was not tracked (no router watched).
    pub apply_not_tracked: usize,
    /// Mean of each phase, milliseconds.
    pub mean_ms: PhaseMs,
    /// Worst of each phase, milliseconds.
    pub max_ms: PhaseMs,
}

/// One figure per switch phase, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PhaseMs {
    /// Detect.
    pub detect: f64,
    /// Decide.
    pub decide: f64,
    /// Commit.
    pub commit: f64,
    /// Apply, over the switches whose apply was measured; `None` when none was.
    pub apply: Option<f64>,
    /// All phases, over the switches whose apply was measured; `None` when none was.
    pub total: Option<f64>,
}

/// The SLA report (serialize it with [`SlaReport::to_json`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlaReport {
    /// The window, seconds.
    pub window_secs: f64,
    /// All cells.
    pub overall: CellReport,
    /// Per cell.
    pub cells: BTreeMap<String, CellReport>,
    /// The error budget.
    pub budget: BudgetReport,
    /// Switch durations.
    pub switches: SwitchReport,
}

impl SlaReport {
    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, Error> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))
    }
}

#[derive(Debug)]
struct Instruments {
    requests: Counter<u64>,
    latency: OtelHistogram<f64>,
    switch: OtelHistogram<f64>,
    apply_timeouts: Counter<u64>,
    availability: Gauge<f64>,
    budget: Gauge<f64>,
}

/// Collects request outcomes and switch durations over a sliding window.
#[derive(Debug)]
pub struct SlaTracker {
    config: SlaConfig,
    state: Mutex<VecDeque<Bucket>>,
    instruments: Instruments,
}

impl SlaTracker {
    /// A tracker (metrics on the global meter `failover`).
    pub fn try_new(config: SlaConfig) -> Result<Self, Error> {
        let m = opentelemetry::global::meter("failover");
        let instruments = Instruments {
            requests: m.u64_counter("failover.sla.requests").with_description("Requests by outcome and cause").build(),
            latency: m.f64_histogram("failover.sla.latency").with_unit("s").with_description("Request latency").build(),
            switch: m.f64_histogram("failover.switch.duration").with_unit("s").with_description("Switch phase durations").build(),
            apply_timeouts: m
                .u64_counter("failover.switch.apply_timeouts")
                .with_description("Switches whose router apply timed out")
                .build(),
            availability: m.f64_gauge("failover.sla.availability").with_description("Availability over the window").build(),
            budget: m.f64_gauge("failover.sla.error_budget_remaining").with_description("Error budget left").build(),
        };
        Ok(SlaTracker { config, state: Mutex::new(VecDeque::new()), instruments })
    }

    fn with_bucket<R>(&self, f: impl FnOnce(&mut Bucket) -> R) -> R {
        let now = Instant::now();
        let len = self.config.window / self.config.buckets;
        let mut q = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while q.front().is_some_and(|b| now.saturating_duration_since(b.start) >= self.config.window) {
            q.pop_front();
        }
        let fresh = q.back().is_none_or(|b| now.saturating_duration_since(b.start) >= len);
        if fresh {
            q.push_back(Bucket { start: now, cells: HashMap::new(), switches: Vec::new() });
        }
        match q.back_mut() {
            Some(b) => f(b),
            None => f(&mut Bucket { start: now, cells: HashMap::new(), switches: Vec::new() }),
        }
    }

    /// Records one request: its latency and, when it failed, the cause.
    pub fn record(&self, cell: &CellId, latency: Duration, error: Option<Cause>) {
        let us = (latency.as_micros() as u64).max(1);
        self.with_bucket(|b| {
            let st = match b.cells.get_mut(cell) {
                Some(s) => s,
                None => b.cells.entry(cell.clone()).or_default(),
            };
            st.requests += 1;
            if let Some(c) = error {
                st.errors[c.idx()] += 1;
            }
            if let Some(h) = &mut st.latency_us {
                h.saturating_record(us);
            }
        });
        let cell_kv = KeyValue::new("cell", cell.to_string());
        self.instruments.latency.record(latency.as_secs_f64(), std::slice::from_ref(&cell_kv));
        match error {
            None => self.instruments.requests.add(1, &[cell_kv, KeyValue::new("outcome", "ok")]),
            Some(c) => self.instruments.requests.add(
                1,
                &[cell_kv, KeyValue::new("outcome", "error"), KeyValue::new("cause", c.as_str())],
            ),
        }
    }

    /// Records a switch's phase durations. A timed-out apply counts on
    /// `failover.switch.apply_timeouts` and is not put in the `apply`
    /// histogram (nor is an untracked one).
    pub fn record_switch(&self, phases: SwitchPhases) {
        for (name, d) in [("detect", phases.detect), ("decide", phases.decide), ("commit", phases.commit)] {
            self.instruments.switch.record(d.as_secs_f64(), &[KeyValue::new("phase", name)]);
        }
        match phases.apply {
            ApplyPhase::Applied(d) => self.instruments.switch.record(d.as_secs_f64(), &[KeyValue::new("phase", "apply")]),
            ApplyPhase::TimedOut(_) => self.instruments.apply_timeouts.add(1, &[]),
            ApplyPhase::NotTracked => {}
        }
        self.with_bucket(|b| b.switches.push(phases));
    }

    /// The figures over the window now (also records the availability and
    /// budget gauges).
    pub fn report(&self) -> SlaReport {
        let now = Instant::now();
        let mut cells: HashMap<CellId, CellStats> = HashMap::new();
        let mut switches = Vec::new();
        {
            let q = self.state.lock().unwrap_or_else(|p| p.into_inner());
            for b in q.iter().filter(|b| now.saturating_duration_since(b.start) < self.config.window) {
                for (c, s) in &b.cells {
                    cells.entry(c.clone()).or_default().merge(s);
                }
                switches.extend_from_slice(&b.switches);
            }
        }
        let mut overall = CellStats::default();
        for s in cells.values() {
            overall.merge(s);
        }
        let target = self.config.target;
        let spent: u64 = overall.errors.iter().sum();
        let allowed = (1.0 - target) * overall.requests as f64;
        let remaining = if allowed > 0.0 { 1.0 - spent as f64 / allowed } else { 1.0 };
        let by = ByCause { dependency: overall.errors[0], cell: overall.errors[1], switch: overall.errors[2] };
        let mut share = BTreeMap::new();
        if spent > 0 {
            for (name, n) in [("dependency", by.dependency), ("cell", by.cell), ("switch", by.switch)] {
                share.insert(name.to_string(), n as f64 / spent as f64);
            }
        }
        let overall_r = cell_report(&overall);
        self.instruments.availability.record(overall_r.availability, &[]);
        self.instruments.budget.record(remaining, &[]);
        SlaReport {
            window_secs: self.config.window.as_secs_f64(),
            overall: overall_r,
            cells: cells.iter().map(|(c, s)| (c.to_string(), cell_report(s))).collect(),
            budget: BudgetReport {
                target,
                allowed_errors: allowed,
                spent,
                remaining,
                spent_by_cause: by,
                share_by_cause: share,
            },
            switches: switch_report(&switches),
        }
    }
}

fn cell_report(s: &CellStats) -> CellReport {
    let errors: u64 = s.errors.iter().sum();
    let rate = if s.requests == 0 { 0.0 } else { errors as f64 / s.requests as f64 };
    let q = |p: f64| match &s.latency_us {
        Some(h) if s.requests > 0 => h.value_at_quantile(p) as f64 / 1000.0,
        _ => 0.0,
    };
    CellReport {
        requests: s.requests,
        errors,
        availability: 1.0 - rate,
        error_rate: rate,
        p999_ms: q(0.999),
        p99_ms: q(0.99),
        p50_ms: q(0.5),
    }
}

fn switch_report(sw: &[SwitchPhases]) -> SwitchReport {
    if sw.is_empty() {
        return SwitchReport::default();
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut sum = [0.0; 3];
    let mut max = [0.0f64; 3];
    let (mut applied_sum, mut applied_max, mut total_sum, mut total_max, mut applied) = (0.0, 0.0f64, 0.0, 0.0f64, 0usize);
    for p in sw {
        for (i, v) in [ms(p.detect), ms(p.decide), ms(p.commit)].into_iter().enumerate() {
            sum[i] += v;
            max[i] = max[i].max(v);
        }
        if let (Some(a), Some(t)) = (p.apply.duration(), p.total()) {
            applied += 1;
            applied_sum += ms(a);
            applied_max = applied_max.max(ms(a));
            total_sum += ms(t);
            total_max = total_max.max(ms(t));
        }
    }
    let n = sw.len() as f64;
    let measured = |v: f64| (applied > 0).then_some(v);
    let mk = |a: [f64; 3], apply: Option<f64>, total: Option<f64>| PhaseMs { detect: a[0], decide: a[1], commit: a[2], apply, total };
    SwitchReport {
        count: sw.len(),
        apply_timed_out: sw.iter().filter(|p| matches!(p.apply, ApplyPhase::TimedOut(_))).count(),
        apply_not_tracked: sw.iter().filter(|p| p.apply == ApplyPhase::NotTracked).count(),
        mean_ms: mk(sum.map(|v| v / n), measured(applied_sum / applied.max(1) as f64), measured(total_sum / applied.max(1) as f64)),
        max_ms: mk(max, measured(applied_max), measured(total_max)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn phases(apply: ApplyPhase) -> SwitchPhases {
        SwitchPhases {
            detect: Duration::from_millis(1000),
            decide: Duration::from_millis(10),
            commit: Duration::from_millis(20),
            apply,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_apply_is_a_timeout_not_zero_ms() {
        let sla = SlaTracker::try_new(SlaConfig::default()).unwrap();
        sla.record_switch(phases(ApplyPhase::TimedOut(Duration::from_secs(5))));
        let r = sla.report().switches;
        assert_eq!((r.count, r.apply_timed_out, r.apply_not_tracked), (1, 1, 0));
        assert_eq!(r.mean_ms.apply, None);
        assert_eq!(r.max_ms.apply, None);
        assert_eq!(r.mean_ms.total, None);
        assert_eq!(r.mean_ms.commit, 20.0);
        assert_eq!(phases(ApplyPhase::TimedOut(Duration::from_secs(5))).total(), None);
        let json = serde_json::to_value(phases(ApplyPhase::TimedOut(Duration::from_secs(5)))).unwrap();
        assert_eq!(json["apply"], serde_json::json!({"outcome": "timed_out", "ms": 5000.0}));
    }

    #[tokio::test(start_paused = true)]
    async fn only_measured_applies_enter_the_apply_and_total_figures() {
        let sla = SlaTracker::try_new(SlaConfig::default()).unwrap();
        sla.record_switch(phases(ApplyPhase::Applied(Duration::from_millis(70))));
        sla.record_switch(phases(ApplyPhase::TimedOut(Duration::from_secs(5))));
        sla.record_switch(phases(ApplyPhase::NotTracked));
        let r = sla.report().switches;
        assert_eq!((r.count, r.apply_timed_out, r.apply_not_tracked), (3, 1, 1));
        assert_eq!(r.mean_ms.apply, Some(70.0));
        assert_eq!(r.max_ms.apply, Some(70.0));
        assert_eq!(r.mean_ms.total, Some(1100.0));
        assert_eq!(r.mean_ms.detect, 1000.0);
    }
}
