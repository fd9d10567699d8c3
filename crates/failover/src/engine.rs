//! [`DecisionEngine`]: turns passive outcomes and prober views into drain and
//! failback decisions, and a traffic [`Plan`].
//!
//! Per cell, a small state machine evaluated on every [`tick`](DecisionEngine::tick):
//!
//! ```text
//!  Serving --bad for trip_window--> Drained --dwell + good for recover_window--> Ramping --curve done--> Serving
//!     ^  (refused: DrainSuppressed)    |  ^                                         |
//!     |                                |  +------------- bad while ramping ----------+
//!     |                                +--(Failback::Manual)--> AwaitingFailback --approve--> Ramping
//! ```
//!
//! A tick's signal is *bad* when the error rate of the outcomes since the last
//! tick is above the trip rate (with at least `min_samples` outcomes) or when
//! at least `prober_quorum` probers see the cell unhealthy; *good* when the
//! probers do not agree it is down and the error rate (if measurable) is at or
//! below the recover rate. Between the two rates the signal is neither, which
//! resets the recovery timer (hysteresis). A few outcomes (fewer than
//! `min_samples`) leave the trip timer as it was; no outcome at all (and no
//! prober quorum) is no evidence of a failure and resets it. A drain is
//! decided on a bad tick once the timer has run for `trip_window`, never on an
//! inconclusive one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use serde::Serialize;
use tokio::time::Instant;

use crate::config::{CellSpec, DecisionConfig, FailMode, Failback};
use crate::error::Error;
use crate::outcome::OutcomeReporter;

/// Where a cell is in the drain / failback cycle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum CellPhase {
    /// Takes all its traffic.
    Serving,
    /// Takes none; its traffic spills to its failover targets.
    Drained,
    /// Recovered, waiting for an operator to approve failback.
    AwaitingFailback,
    /// Failing back along the curve.
    Ramping {
        /// The share of its traffic it takes now.
        share: f64,
    },
}

/// Why a cell was drained.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum DrainReason {
    /// The error rate stayed above the trip rate for the trip window.
    ErrorRate {
        /// The error rate of the last evaluation.
        rate: f64,
    },
    /// A quorum of probers saw the cell unhealthy for the trip window.
    ProbersDown {
        /// How many probers voted unhealthy.
        votes: usize,
    },
    /// The cell relapsed while failing back.
    Relapse,
    /// An operator drained it.
    Manual,
}

/// A decision (and alert) the engine took.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Decision {
    /// Drain the cell (its weight goes to 0). Also an alert.
    Drain {
        /// The cell.
        cell: CellId,
        /// Why.
        reason: DrainReason,
        /// When the bad signal started.
        detected_at: Instant,
        /// When the engine decided.
        decided_at: Instant,
    },
    /// The cell should have been drained but the drain cap was reached. An alert.
    DrainSuppressed {
        /// The cell.
        cell: CellId,
        /// Cells drained (or failing back) now.
        drained: usize,
        /// The cap.
        cap: usize,
        /// When.
        at: Instant,
    },
    /// The cell recovered and waits for a manual failback.
    FailbackReady {
        /// The cell.
        cell: CellId,
        /// When.
        at: Instant,
    },
    /// The cell's share moved along the failback curve.
    FailbackStep {
        /// The cell.
        cell: CellId,
        /// Its new share.
        share: f64,
        /// When.
        at: Instant,
    },
    /// The cell takes all its traffic again.
    Restored {
        /// The cell.
        cell: CellId,
        /// When.
        at: Instant,
    },
}

impl Decision {
    /// The cell the decision is about.
    pub fn cell(&self) -> &CellId {
        match self {
            Decision::Drain { cell, .. }
            | Decision::DrainSuppressed { cell, .. }
            | Decision::FailbackReady { cell, .. }
            | Decision::FailbackStep { cell, .. }
            | Decision::Restored { cell, .. } => cell,
        }
    }

    /// A short name (`drain`, `drain_suppressed`, `failback_ready`,
    /// `failback_step`, `restored`), also the `action` metric attribute.
    pub fn action(&self) -> &'static str {
        match self {
            Decision::Drain { .. } => "drain",
            Decision::DrainSuppressed { .. } => "drain_suppressed",
            Decision::FailbackReady { .. } => "failback_ready",
            Decision::FailbackStep { .. } => "failback_step",
            Decision::Restored { .. } => "restored",
        }
    }

    /// Whether the decision is an alert (drain or refused drain).
    pub fn is_alert(&self) -> bool {
        matches!(self, Decision::Drain { .. } | Decision::DrainSuppressed { .. })
    }
}

/// Traffic spilled from a cell to one failover target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spill {
    /// The target.
    pub to: CellId,
    /// The share of the source's traffic sent there.
    pub share: f64,
}

/// Where one cell's traffic goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Allocation {
    /// The cell's phase.
    pub phase: CellPhase,
    /// The share of its own traffic it serves (1.0 when serving).
    pub share: f64,
    /// Shares sent to failover targets, each within the target's headroom.
    pub spill: Vec<Spill>,
    /// The share nobody takes (fail closed), or 0 (fail open keeps it home).
    pub shed: f64,
    /// The cell's load estimate (requests per second) used for the spill.
    pub load_rps: f64,
}

/// The traffic plan: one [`Allocation`] per cell.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// Per cell, ordered by id.
    pub cells: BTreeMap<CellId, Allocation>,
}

impl Plan {
    /// The allocation of `cell`.
    pub fn get(&self, cell: &CellId) -> Option<&Allocation> {
        self.cells.get(cell)
    }

    /// Cells not serving all their traffic.
    pub fn drained(&self) -> impl Iterator<Item = &CellId> {
        self.cells.iter().filter(|(_, a)| a.phase != CellPhase::Serving).map(|(c, _)| c)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Serving,
    Drained { since: Instant },
    Awaiting,
    Ramping { since: Instant, share: f64 },
}

#[derive(Debug)]
struct CellRun {
    spec: CellSpec,
    phase: Phase,
    bad_since: Option<Instant>,
    good_since: Option<Instant>,
    suppressed: bool,
    load_rps: f64,
    last_rate: Option<f64>,
    last_votes: usize,
}

#[derive(Debug)]
struct Instruments {
    decisions: Counter<u64>,
    alerts: Counter<u64>,
    share: Gauge<f64>,
}

/// The failover decision engine: a synchronous state machine driven by
/// [`tick`](Self::tick) (the [`spawn`](crate::spawn_engine) driver ticks it
/// every second in its own task).
///
/// ```
/// use std::time::Duration;
/// use cellctx::CellId;
/// use failover::{CellSpec, Decision, DecisionConfig, DecisionEngine};
/// use tokio::time::Instant;
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), failover::Error> {
/// let a: CellId = "a".parse().unwrap();
/// let b: CellId = "b".parse().unwrap();
/// let mut engine = DecisionEngine::try_new(
///     DecisionConfig::new(),
///     vec![CellSpec::new(a.clone()).with_failover([b.clone()]), CellSpec::new(b.clone()).with_headroom_rps(1000.0)],
/// )?;
/// let outcomes = engine.reporter(); // handed to the routing / breaker layers
/// let mut drained = false;
/// for _ in 0..30 {
///     outcomes.report_counts(&a, 99, 1); // 1 % errors
///     tokio::time::advance(Duration::from_secs(1)).await;
///     drained |= engine.tick(Instant::now()).iter().any(|d| matches!(d, Decision::Drain { .. }));
/// }
/// assert!(drained); // after exactly 30 s above 0.5 %
/// assert_eq!(engine.plan().get(&a).unwrap().spill[0].to, b);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DecisionEngine {
    config: DecisionConfig,
    cells: BTreeMap<CellId, CellRun>,
    probers: HashMap<String, HashMap<CellId, (bool, Instant)>>,
    reporter: OutcomeReporter,
    last_tick: Instant,
    instruments: Instruments,
}

impl DecisionEngine {
    /// An engine for `cells` (every failover target must be one of them).
    pub fn try_new(config: DecisionConfig, cells: Vec<CellSpec>) -> Result<Self, Error> {
        config.validate()?;
        let mut map = BTreeMap::new();
        for spec in &cells {
            if !(spec.headroom_rps >= 0.0 && spec.headroom_rps.is_finite()) {
                return Err(Error::Config(format!("cell {}: headroom must be >= 0", spec.id)));
            }
        }
        for spec in cells {
            let run = CellRun {
                spec,
                phase: Phase::Serving,
                bad_since: None,
                good_since: None,
                suppressed: false,
                load_rps: 0.0,
                last_rate: None,
                last_votes: 0,
            };
            if let Some(dup) = map.insert(run.spec.id.clone(), run) {
                return Err(Error::Config(format!("cell {} listed twice", dup.spec.id)));
            }
        }
        for run in map.values() {
            if let Some(t) = run.spec.failover.iter().find(|t| !map.contains_key(*t)) {
                return Err(Error::UnknownCell(t.clone()));
            }
        }
        let meter = opentelemetry::global::meter("failover");
        let instruments = Instruments {
            decisions: meter.u64_counter("failover.decisions").with_description("Decisions taken").build(),
            alerts: meter.u64_counter("failover.alerts").with_description("Drain alerts").build(),
            share: meter.f64_gauge("failover.cell.share").with_description("Share of its traffic a cell serves").build(),
        };
        Ok(DecisionEngine {
            config,
            cells: map,
            probers: HashMap::new(),
            reporter: OutcomeReporter::default(),
            last_tick: Instant::now(),
            instruments,
        })
    }

    /// The handle the request path reports outcomes through.
    pub fn reporter(&self) -> OutcomeReporter {
        self.reporter.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &DecisionConfig {
        &self.config
    }

    /// Records one prober's view of one cell at `now`.
    pub fn observe(&mut self, prober: &str, cell: &CellId, healthy: bool, now: Instant) {
        self.probers.entry(prober.to_string()).or_default().insert(cell.clone(), (healthy, now));
    }

    /// Records one prober's whole snapshot (from `health::HealthHub::subscribe`).
    pub fn observe_snapshot(&mut self, prober: &str, snapshot: &health::HealthSnapshot, now: Instant) {
        let view = self.probers.entry(prober.to_string()).or_default();
        for c in snapshot.cells() {
            view.insert(c.cell.clone(), (c.healthy, now));
        }
    }

    /// Probers that see `cell` unhealthy (missing or stale views count per the fail mode).
    fn votes(&self, cell: &CellId, now: Instant) -> usize {
        self.probers
            .values()
            .filter(|view| match view.get(cell) {
                Some((healthy, at)) if now.saturating_duration_since(*at) <= self.config.probe_stale_after => !healthy,
                _ => self.config.fail_mode == FailMode::Closed,
            })
            .count()
    }

    fn drained_count(&self) -> usize {
        self.cells.values().filter(|c| c.phase != Phase::Serving).count()
    }

    /// Evaluates every cell at `now` (call it at a steady interval, e.g. 1 s):
    /// drains the outcomes reported since the last tick and returns the
    /// decisions taken.
    pub fn tick(&mut self, now: Instant) -> Vec<Decision> {
        let prev = self.last_tick;
        let elapsed = now.saturating_duration_since(prev);
        self.last_tick = now;
        let mut accs = self.reporter.drain();
        let votes: HashMap<CellId, usize> = self.cells.keys().map(|c| (c.clone(), self.votes(c, now))).collect();
        let mut out = Vec::new();
        let ids: Vec<CellId> = self.cells.keys().cloned().collect();
        for id in ids {
            let acc = accs.remove(&id).unwrap_or_default();
            let drained_now = self.drained_count();
            let cfg = &self.config;
            let Some(run) = self.cells.get_mut(&id) else { continue };
            let samples = acc.ok + acc.err;
            let rate = (samples >= cfg.min_samples).then(|| acc.err as f64 / samples as f64);
            if run.phase == Phase::Serving && !elapsed.is_zero() && samples > 0 {
                let rps = samples as f64 / elapsed.as_secs_f64();
                run.load_rps =
                    if run.load_rps == 0.0 { rps } else { cfg.load_alpha * rps + (1.0 - cfg.load_alpha) * run.load_rps };
            }
            let v = votes.get(&id).copied().unwrap_or(0);
            let probe_down = v >= cfg.prober_quorum;
            run.last_rate = rate.or(run.last_rate);
            run.last_votes = v;
            let bad = probe_down || rate.is_some_and(|r| r > cfg.trip_error_rate);
            let known = probe_down || rate.is_some();
            let good = !probe_down && rate.is_none_or(|r| r <= cfg.recover_error_rate);
            match run.phase {
                Phase::Serving => {
                    if bad {
                        run.bad_since.get_or_insert(prev);
                    } else if known || samples == 0 {
                        run.bad_since = None;
                        run.suppressed = false;
                    }
                    // the window must have run out on a tick that is itself
                    // bad: a drain needs evidence now, not only a timer left
                    // running by inconclusive ticks (a few outcomes, probers
                    // no longer agreeing)
                    if let Some(since) = run.bad_since
                        && bad
                        && now.saturating_duration_since(since) >= cfg.trip_window
                    {
                        if drained_now >= cfg.max_drained {
                            if !run.suppressed {
                                run.suppressed = true;
                                tracing::error!(cell = %id, drained = drained_now, cap = cfg.max_drained, "drain refused: drain cap reached");
                                out.push(Decision::DrainSuppressed {
                                    cell: id.clone(),
                                    drained: drained_now,
                                    cap: cfg.max_drained,
                                    at: now,
                                });
                            }
                        } else {
                            let reason = if probe_down {
                                DrainReason::ProbersDown { votes: v }
                            } else {
                                DrainReason::ErrorRate { rate: run.last_rate.unwrap_or(0.0) }
                            };
                            tracing::error!(cell = %id, ?reason, "draining cell");
                            out.push(Decision::Drain { cell: id.clone(), reason, detected_at: since, decided_at: now });
                            run.phase = Phase::Drained { since: now };
                            run.bad_since = None;
                            run.good_since = None;
                            run.suppressed = false;
                        }
                    }
                }
                Phase::Drained { since } => {
                    if good {
                        run.good_since.get_or_insert(prev);
                    } else {
                        run.good_since = None;
                    }
                    let dwelt = now.saturating_duration_since(since) >= cfg.min_dwell;
                    let recovered = run.good_since.is_some_and(|g| now.saturating_duration_since(g) >= cfg.recover_window);
                    if dwelt && recovered {
                        run.good_since = None;
                        match &cfg.failback {
                            Failback::Manual(_) => {
                                run.phase = Phase::Awaiting;
                                out.push(Decision::FailbackReady { cell: id.clone(), at: now });
                            }
                            Failback::Ramp(curve) => {
                                let share = curve.share_at(Duration::ZERO);
                                run.phase = Phase::Ramping { since: now, share };
                                out.push(Decision::FailbackStep { cell: id.clone(), share, at: now });
                            }
                        }
                    }
                }
                Phase::Awaiting => {
                    if bad {
                        run.phase = Phase::Drained { since: now };
                    }
                }
                Phase::Ramping { since, share } => {
                    if bad {
                        tracing::error!(cell = %id, share, "cell relapsed during failback; draining again");
                        run.phase = Phase::Drained { since: now };
                        run.good_since = None;
                        out.push(Decision::Drain {
                            cell: id.clone(),
                            reason: DrainReason::Relapse,
                            detected_at: prev,
                            decided_at: now,
                        });
                    } else {
                        let next = cfg.failback.curve().share_at(now.saturating_duration_since(since));
                        if next >= 1.0 {
                            run.phase = Phase::Serving;
                            out.push(Decision::Restored { cell: id.clone(), at: now });
                        } else if next != share {
                            run.phase = Phase::Ramping { since, share: next };
                            out.push(Decision::FailbackStep { cell: id.clone(), share: next, at: now });
                        }
                    }
                }
            }
        }
        self.record(&out);
        out
    }

    fn record(&self, out: &[Decision]) {
        for d in out {
            let attrs = [KeyValue::new("cell", d.cell().to_string()), KeyValue::new("action", d.action())];
            self.instruments.decisions.add(1, &attrs);
            if d.is_alert() {
                self.instruments.alerts.add(1, &attrs[..1]);
            }
        }
        for (id, run) in &self.cells {
            self.instruments.share.record(share_of(run.phase), &[KeyValue::new("cell", id.to_string())]);
        }
    }

    /// Drains `cell` now (manual operation; the drain cap does not apply).
    pub fn force_drain(&mut self, cell: &CellId, now: Instant) -> Result<Decision, Error> {
        let run = self.cells.get_mut(cell).ok_or_else(|| Error::UnknownCell(cell.clone()))?;
        run.phase = Phase::Drained { since: now };
        run.bad_since = None;
        run.good_since = None;
        let d = Decision::Drain { cell: cell.clone(), reason: DrainReason::Manual, detected_at: now, decided_at: now };
        self.record(std::slice::from_ref(&d));
        Ok(d)
    }

    /// Starts the failback ramp of a drained or waiting cell (manual operation).
    pub fn approve_failback(&mut self, cell: &CellId, now: Instant) -> Result<Decision, Error> {
        let share = self.config.failback.curve().share_at(Duration::ZERO);
        let run = self.cells.get_mut(cell).ok_or_else(|| Error::UnknownCell(cell.clone()))?;
        if run.phase == Phase::Serving {
            return Err(Error::Config(format!("cell {cell} is not drained")));
        }
        run.phase = Phase::Ramping { since: now, share };
        let d = Decision::FailbackStep { cell: cell.clone(), share, at: now };
        self.record(std::slice::from_ref(&d));
        Ok(d)
    }

    /// The phase of `cell`.
    pub fn phase(&self, cell: &CellId) -> Option<CellPhase> {
        self.cells.get(cell).map(|r| public_phase(r.phase))
    }

    /// Overrides the load estimate of `cell` (requests per second), e.g. from a
    /// capacity plan, before any traffic was seen.
    pub fn set_load(&mut self, cell: &CellId, rps: f64) -> Result<(), Error> {
        let run = self.cells.get_mut(cell).ok_or_else(|| Error::UnknownCell(cell.clone()))?;
        run.load_rps = rps.max(0.0);
        Ok(())
    }

    /// The traffic plan now: each drained share spilled to the failover targets
    /// in order, each target taking at most its declared headroom (shared by all
    /// the cells spilling into it); the rest stays home (fail open) or is shed
    /// (fail closed).
    pub fn plan(&self) -> Plan {
        let mut used: HashMap<&CellId, f64> = HashMap::new();
        let mut cells = BTreeMap::new();
        for (id, run) in &self.cells {
            let mut share = share_of(run.phase);
            let displaced = 1.0 - share;
            let mut spill = Vec::new();
            let mut shed = 0.0;
            if displaced > 0.0 {
                let mut left = displaced;
                for t in &run.spec.failover {
                    let Some(target) = self.cells.get(t) else { continue };
                    if target.phase != Phase::Serving || left <= 0.0 {
                        continue;
                    }
                    let take = if run.load_rps > 0.0 {
                        let free = (target.spec.headroom_rps - used.get(t).copied().unwrap_or(0.0)).max(0.0);
                        let fits = (free / run.load_rps).min(left);
                        *used.entry(t).or_default() += fits * run.load_rps;
                        fits
                    } else {
                        left
                    };
                    if take > 0.0 {
                        spill.push(Spill { to: t.clone(), share: take });
                        left -= take;
                    }
                }
                if left > 1e-12 {
                    match self.config.fail_mode {
                        FailMode::Open => share += left,
                        FailMode::Closed => shed = left,
                    }
                }
            }
            cells.insert(
                id.clone(),
                Allocation { phase: public_phase(run.phase), share, spill, shed, load_rps: run.load_rps },
            );
        }
        Plan { cells }
    }
}

fn share_of(p: Phase) -> f64 {
    match p {
        Phase::Serving => 1.0,
        Phase::Drained { .. } | Phase::Awaiting => 0.0,
        Phase::Ramping { share, .. } => share,
    }
}

fn public_phase(p: Phase) -> CellPhase {
    match p {
        Phase::Serving => CellPhase::Serving,
        Phase::Drained { .. } => CellPhase::Drained,
        Phase::Awaiting => CellPhase::AwaitingFailback,
        Phase::Ramping { share, .. } => CellPhase::Ramping { share },
    }
}

/// A shared, cheaply readable plan (what the driver publishes).
pub type SharedPlan = Arc<Plan>;
