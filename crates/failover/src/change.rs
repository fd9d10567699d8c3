//! [`Change`] and [`SwitchRequest`]: what a switch changes in the routing
//! table, and its audit context. Every switch backend takes these.

use std::time::SystemTime;

use cellctx::CellId;
use cellrouter::{CellState, RoutingTable};
use serde::Serialize;

use crate::error::Error;

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
            Change::Drain(c) | Change::Failback(c) | Change::SetState(c, _) | Change::SetWeight(c, _) => c,
        }
    }

    /// Applies the change; returns the (from, to) descriptions, equal when the
    /// change is already in force.
    pub fn apply(&self, table: &mut RoutingTable) -> Result<(String, String), Error> {
        let cell = table.cell_mut(self.flow()).ok_or_else(|| Error::UnknownCell(self.flow().clone()))?;
        let set_state = |cell: &mut cellrouter::Cell, s: CellState| {
            let from = format!("state={}", state_name(cell.state));
            cell.state = s;
            (from, format!("state={}", state_name(s)))
        };
        Ok(match self {
            Change::Drain(_) => set_state(cell, CellState::Down),
            Change::Failback(_) => set_state(cell, CellState::Active),
            Change::SetState(_, s) => set_state(cell, *s),
            Change::SetWeight(_, w) => {
                let from = format!("weight={}", cell.weight);
                cell.weight = *w;
                (from, format!("weight={w}"))
            }
        })
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
}

impl SwitchRequest {
    /// A manual switch detected and decided now.
    pub fn new(change: Change) -> Self {
        let now = cellclock::now();
        SwitchRequest { change, reason: "manual".into(), rule: "manual".into(), detected_at: now, decided_at: now }
    }

    /// The switch a decision of the [`DecisionEngine`](crate::DecisionEngine)
    /// calls for: a drain becomes [`Change::Drain`] (reason, detected and
    /// decided times carried over), a restored cell [`Change::Failback`]. Ramp
    /// steps and refused drains change no table (they live in the
    /// [`Plan`](crate::Plan)): `None`.
    pub fn from_decision(d: &crate::Decision, rule: &str) -> Option<Self> {
        let wall = |at: tokio::time::Instant| cellclock::now() - tokio::time::Instant::now().saturating_duration_since(at);
        match d {
            crate::Decision::Drain { cell, reason, detected_at, decided_at } => Some(
                SwitchRequest::new(Change::Drain(cell.clone()))
                    .with_reason(serde_json::to_string(reason).unwrap_or_else(|_| format!("{reason:?}")))
                    .with_rule(rule)
                    .with_times(wall(*detected_at), wall(*decided_at)),
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
