//! What fires and resolves which alert: engine decisions, the plan,
//! switches, health snapshots and replication lag.

use std::time::Duration;

use cellctx::CellId;
use health::HealthSnapshot;

use super::kind::AlertKind;
use super::payload::Labels;
use super::sink::AlertSink;
use crate::engine::{CellPhase, Decision, DrainReason, Plan};

fn annotations<const N: usize>(pairs: [(&str, String); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn describe(reason: &DrainReason) -> String {
    match reason {
        DrainReason::ErrorRate { rate } => format!("error rate {:.2} % stayed above the trip rate", rate * 100.0),
        DrainReason::ProbersDown { votes } => format!("{votes} probers saw the cell unhealthy"),
        DrainReason::Relapse => "the cell relapsed while failing back".into(),
        DrainReason::Manual => "drained by an operator".into(),
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().to_string()
}

impl AlertSink {
    /// Applies one engine decision: a drain fires `CellDrained`; a recovered
    /// cell waiting for approval fires `CellFailbackPending`, resolved when
    /// failback starts; a restored cell (failback complete) resolves both.
    /// Ramp steps and refused drains change nothing else.
    pub fn on_decision(&self, decision: &Decision) {
        match decision {
            Decision::Drain { cell, reason, .. } => {
                self.resolve(AlertKind::CellFailbackPending, cell, None, None);
                self.fire(
                    AlertKind::CellDrained,
                    cell,
                    None,
                    annotations([
                        ("summary", format!("cell {cell} drained: its traffic goes to its failover cells")),
                        ("description", describe(reason)),
                    ]),
                );
            }
            Decision::FailbackReady { cell, .. } => self.fire(
                AlertKind::CellFailbackPending,
                cell,
                None,
                annotations([
                    ("summary", format!("cell {cell} recovered; its failback waits for an operator")),
                    ("description", "approve it with EngineHandle::approve_failback".into()),
                ]),
            ),
            Decision::FailbackStep { cell, .. } => {
                self.resolve(AlertKind::CellFailbackPending, cell, None, Some("failback started"));
            }
            Decision::Restored { cell, .. } => {
                self.resolve(AlertKind::CellFailbackPending, cell, None, Some("failback complete"));
                self.resolve(
                    AlertKind::CellDrained,
                    cell,
                    None,
                    Some("failback complete: the cell takes all its traffic again"),
                );
            }
            Decision::DrainSuppressed { .. } => {}
        }
    }

    /// Brings the drain alerts in line with `plan` (after missed decisions):
    /// serving cells resolve `CellDrained` and `CellFailbackPending`; other
    /// cells fire `CellDrained`, and `CellFailbackPending` while awaiting
    /// approval.
    pub fn on_plan(&self, plan: &Plan) {
        for (cell, alloc) in &plan.cells {
            let drained = || {
                self.fire(
                    AlertKind::CellDrained,
                    cell,
                    None,
                    annotations([
                        ("summary", format!("cell {cell} drained: its traffic goes to its failover cells")),
                        ("description", "as the engine's plan says".into()),
                    ]),
                );
            };
            match alloc.phase {
                CellPhase::Serving => {
                    self.resolve(AlertKind::CellFailbackPending, cell, None, None);
                    self.resolve(AlertKind::CellDrained, cell, None, Some("the cell takes all its traffic again"));
                }
                CellPhase::AwaitingFailback => {
                    drained();
                    self.fire(
                        AlertKind::CellFailbackPending,
                        cell,
                        None,
                        annotations([(
                            "summary",
                            format!("cell {cell} recovered; its failback waits for an operator"),
                        )]),
                    );
                }
                CellPhase::Drained | CellPhase::Ramping { .. } => {
                    drained();
                    self.resolve(AlertKind::CellFailbackPending, cell, None, None);
                }
            }
        }
    }

    /// A routing-table switch of `cell` failed: fires `TrafficSwitchFailed`.
    pub fn switch_failed(&self, cell: &CellId, error: &str) {
        self.fire(
            AlertKind::TrafficSwitchFailed,
            cell,
            None,
            annotations([
                ("summary", format!("the traffic switch of cell {cell} failed; plan and routing table disagree")),
                ("description", error.to_string()),
            ]),
        );
    }

    /// A switch of `cell` succeeded (or found its change in force): resolves
    /// `TrafficSwitchFailed`.
    pub fn switch_succeeded(&self, cell: &CellId) {
        self.resolve(AlertKind::TrafficSwitchFailed, cell, None, Some("a later switch succeeded"));
    }

    /// Applies one [`ControllerEvent`](crate::ControllerEvent): a failed
    /// switch fires `TrafficSwitchFailed`, a switch or a no-change resolves it.
    #[cfg(feature = "sql")]
    pub fn on_controller_event(&self, event: &crate::ControllerEvent) {
        use crate::ControllerEvent;
        match event {
            ControllerEvent::Failed { cell, error } => self.switch_failed(cell, error),
            ControllerEvent::NoChange { cell, .. } => self.switch_succeeded(cell),
            ControllerEvent::Switched(record) => match record.flow.parse::<CellId>() {
                Ok(cell) => self.switch_succeeded(&cell),
                Err(e) => tracing::warn!(flow = %record.flow, error = %e, "switch of a flow that is no cell"),
            },
            // leadership changes and retries raise nothing of their own: a
            // failed switch already fired, its success resolves it
            ControllerEvent::Resynced { .. }
            | ControllerEvent::Elected { .. }
            | ControllerEvent::Deposed { .. }
            | ControllerEvent::Retrying { .. }
            | ControllerEvent::Reconciled(..)
            | ControllerEvent::Held { .. } => {}
        }
    }

    /// Applies a health snapshot: every cell alerting under the threshold
    /// (the configured one, else the snapshot's) fires `CellHealthScoreLow`;
    /// every other cell, and cells gone from the snapshot, resolve it.
    pub fn on_health(&self, snapshot: &HealthSnapshot) {
        let threshold = self.config().score_threshold().unwrap_or(snapshot.threshold());
        for health in snapshot.cells() {
            let cell = &health.cell;
            if health.is_alerting(threshold) {
                self.fire(
                    AlertKind::CellHealthScoreLow,
                    cell,
                    None,
                    annotations([
                        ("summary", format!("cell {cell} health score {} is below {threshold}", health.score)),
                        ("score", health.score.to_string()),
                        ("threshold", threshold.to_string()),
                    ]),
                );
            } else {
                self.resolve(AlertKind::CellHealthScoreLow, cell, None, Some("the score is back at the threshold"));
            }
        }
        self.resolve_where(AlertKind::CellHealthScoreLow, |cell| {
            cell.parse::<CellId>().is_ok_and(|c| snapshot.get(&c).is_some())
        });
    }

    /// Reports the replication lag from `origin` into `cell`: above the
    /// bound it fires `ReplicationLagHigh` (labels `cell`, `origin`), at or
    /// under it resolves it.
    pub fn observe_replication_lag(&self, origin: &CellId, cell: &CellId, lag: Duration) {
        let bound = self.config().max_replication_lag();
        if lag > bound {
            self.fire(
                AlertKind::ReplicationLagHigh,
                cell,
                Some(origin),
                annotations([
                    ("summary", format!("replication from {origin} into {cell} lags {lag:?} (bound {bound:?})")),
                    ("lag_ms", ms(lag)),
                    ("bound_ms", ms(bound)),
                ]),
            );
        } else {
            self.resolve(AlertKind::ReplicationLagHigh, cell, Some(origin), Some("the lag is back under the bound"));
        }
    }
}
