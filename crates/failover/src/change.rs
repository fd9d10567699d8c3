//! [`Change`] and [`SwitchRequest`]: what a switch changes in the routing
//! table, and its audit context. Every switch backend takes these.

use std::time::SystemTime;

use cellctx::CellId;
use cellrouter::{CellState, RoutingTable};
use serde::Serialize;

use crate::error::Error;
use crate::steps;

/// A change to the routing table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Mark the cell down: its slots go to its failover list.
    Drain(CellId),
    /// Mark the cell active again.
    Failback(CellId),
    /// Set the cell's state.
    SetState(CellId, CellState),
    /// Set the cell's weight.
    SetWeight(CellId, u32),
    /// One failback step: the cell is active again and serves `permille`
    /// thousandths of each of its slot ranges; the rest stay with its first
    /// active failover target (migrations tagged `ramp:<cell>`). 1000 is a
    /// full [`Change::Failback`]. On a cell the table has active and not
    /// ramping it is in force already: a ramp never takes traffic from a cell
    /// that serves all of it.
    Ramp {
        /// The cell failing back.
        cell: CellId,
        /// Its share of its own slots, in thousandths.
        permille: u16,
    },
    /// A drain spread by the targets' headroom: the cell is down and the
    /// given thousandths of each of its slot ranges go to each target
    /// (migrations tagged `spread:<cell>`); the rest follow its failover list.
    Spread {
        /// The cell drained.
        cell: CellId,
        /// Targets with their share of the cell's slots, in thousandths.
        targets: Vec<(CellId, u16)>,
    },
    /// A cohort for a canary: the first `permille` thousandths of `region`'s
    /// slots go to `to` (migrations tagged `cohort:<to>`); 0 ends the cohort.
    Cohort {
        /// The region whose slots move.
        region: CellId,
        /// The share of the region's slots, in thousandths.
        permille: u16,
        /// The canary cell.
        to: CellId,
    },
}

/// A share in `[0, 1]` as thousandths.
pub(crate) fn permille(share: f64) -> u16 {
    (share.clamp(0.0, 1.0) * 1000.0).round() as u16
}

pub(crate) fn state_name(s: CellState) -> &'static str {
    match s {
        CellState::Active => "active",
        CellState::Draining => "draining",
        CellState::Down => "down",
    }
}

impl Change {
    /// The flow (the cell) the change is about; it names the lock.
    pub fn flow(&self) -> &CellId {
        match self {
            Change::Drain(c)
            | Change::Failback(c)
            | Change::SetState(c, _)
            | Change::SetWeight(c, _)
            | Change::Ramp { cell: c, .. }
            | Change::Spread { cell: c, .. }
            | Change::Cohort { to: c, .. } => c,
        }
    }

    /// Applies the change; returns the (from, to) descriptions, equal when the
    /// change is already in force.
    pub fn apply(&self, table: &mut RoutingTable) -> Result<(String, String), Error> {
        if table.cell(self.flow()).is_none() {
            return Err(Error::UnknownCell(self.flow().clone()));
        }
        if let Change::Cohort { region, permille, to } = self {
            let from = steps::describe_cohort(table, region, to);
            steps::cohort(table, region, *permille, to)?;
            return Ok((from, steps::describe_cohort(table, region, to)));
        }
        let cell = self.flow().clone();
        let from = steps::describe(table, &cell);
        let set_state = |table: &mut RoutingTable, s: CellState| {
            if let Some(c) = table.cell_mut(&cell) {
                c.state = s;
            }
        };
        match self {
            Change::Drain(_) => {
                steps::clear(table, &cell);
                set_state(table, CellState::Down);
            }
            Change::Failback(_) => {
                steps::clear(table, &cell);
                set_state(table, CellState::Active);
            }
            Change::SetState(_, s) => set_state(table, *s),
            Change::SetWeight(_, w) => {
                let from = table.cell(&cell).map(|c| format!("weight={}", c.weight)).unwrap_or_default();
                if let Some(c) = table.cell_mut(&cell) {
                    c.weight = *w;
                }
                return Ok((from, format!("weight={w}")));
            }
            // a ramp gives a recovering cell its traffic back step by step; it
            // never takes traffic from a cell the table has serving all of it
            // (a new leader whose engine saw a failure no table recorded)
            Change::Ramp { .. } if table.cell(&cell).is_some_and(|c| c.state == CellState::Active) && !steps::ramping(table, &cell) => {
                return Ok((from.clone(), from));
            }
            Change::Ramp { permille, .. } => {
                steps::clear(table, &cell);
                set_state(table, CellState::Active);
                steps::ramp(table, &cell, *permille)?;
            }
            Change::Spread { targets, .. } => {
                steps::clear(table, &cell);
                set_state(table, CellState::Down);
                steps::spread(table, &cell, targets)?;
            }
            Change::Cohort { .. } => {}
        }
        Ok((from, steps::describe(table, &cell)))
    }
}

/// A switch to perform, with its audit context.
#[derive(Debug, Clone)]
pub struct SwitchRequest {
    /// The change.
    pub change: Change,
    /// Why (free text).
    pub reason: String,
    /// The rule that decided it (`manual` by default).
    pub rule: String,
    /// When the problem was detected (default: now).
    pub detected_at: SystemTime,
    /// When the switch was decided (default: now).
    pub decided_at: SystemTime,
    /// Whether the drain cap is overridden (an operator's forced drain); the
    /// audit row's reason says so.
    pub force: bool,
}

impl SwitchRequest {
    /// A manual switch detected and decided now.
    pub fn new(change: Change) -> Self {
        let now = cellclock::now();
        SwitchRequest { change, reason: "manual".into(), rule: "manual".into(), detected_at: now, decided_at: now, force: false }
    }

    /// The switch a decision of the [`DecisionEngine`](crate::DecisionEngine)
    /// calls for: a drain becomes [`Change::Drain`] (reason, detected and
    /// decided times carried over), a failback step [`Change::Ramp`] at its
    /// share, a restored cell [`Change::Failback`]. Refused drains and a
    /// failback waiting for approval change no table: `None`. See
    /// [`from_decision_in`](Self::from_decision_in) for drains spread by
    /// headroom.
    pub fn from_decision(d: &crate::Decision, rule: &str) -> Option<Self> {
        Self::from_decision_in(d, rule, None)
    }

    /// As [`from_decision`](Self::from_decision), with the engine's `plan`
    /// applied to drains: when the plan spills the drained cell over more
    /// than one target (each within its `headroom_rps`), the drain is a
    /// [`Change::Spread`] with those shares.
    pub fn from_decision_in(d: &crate::Decision, rule: &str, plan: Option<&crate::Plan>) -> Option<Self> {
        let wall = |at: tokio::time::Instant| cellclock::now() - tokio::time::Instant::now().saturating_duration_since(at);
        match d {
            crate::Decision::Drain { cell, reason, detected_at, decided_at } => {
                let spill = plan.and_then(|p| p.get(cell)).map(|a| a.spill.as_slice()).unwrap_or_default();
                let change = if spill.len() > 1 {
                    Change::Spread { cell: cell.clone(), targets: spill.iter().map(|s| (s.to.clone(), permille(s.share))).collect() }
                } else {
                    Change::Drain(cell.clone())
                };
                Some(
                    SwitchRequest::new(change)
                        .with_reason(serde_json::to_string(reason).unwrap_or_else(|_| format!("{reason:?}")))
                        .with_rule(rule)
                        .with_times(wall(*detected_at), wall(*decided_at)),
                )
            }
            crate::Decision::FailbackStep { cell, share, at } => Some(
                SwitchRequest::new(Change::Ramp { cell: cell.clone(), permille: permille(*share) })
                    .with_reason(format!("recovered; failback ramp at {:.0} %", share * 100.0))
                    .with_rule(rule)
                    .with_times(wall(*at), wall(*at)),
            ),
            crate::Decision::Restored { cell, at } => Some(
                SwitchRequest::new(Change::Failback(cell.clone()))
                    .with_reason("recovered; failback ramp complete")
                    .with_rule(rule)
                    .with_times(wall(*at), wall(*at)),
            ),
            _ => None,
        }
    }

    /// Overrides the drain cap (a forced manual drain); the audit row's
    /// reason ends with `[forced: drain cap not applied]`.
    pub fn forced(mut self) -> Self {
        self.force = true;
        self
    }

    /// Sets the reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = reason.into();
        self
    }

    /// Sets the rule.
    pub fn with_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = rule.into();
        self
    }

    /// Sets when the problem was detected and when the switch was decided.
    pub fn with_times(mut self, detected_at: SystemTime, decided_at: SystemTime) -> Self {
        self.detected_at = detected_at;
        self.decided_at = decided_at;
        self
    }
}
