//! [`AlertKind`]: what the sink alerts on, with its `alertname` and severity.

/// The alerts the sink raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertKind {
    /// `CellDrained` (critical): the engine drained a cell; resolved when
    /// the cell takes all its traffic again (failback complete).
    CellDrained,
    /// `CellFailbackPending` (warning): the cell recovered and waits for an
    /// operator to approve its failback; resolved when failback starts.
    CellFailbackPending,
    /// `TrafficSwitchFailed` (critical): the routing-table switch for a
    /// cell failed; resolved by the next switch of that cell that succeeds
    /// (or finds the change already in force).
    TrafficSwitchFailed,
    /// `CellHealthScoreLow` (warning): the cell's health score is below its
    /// threshold (60 by default); resolved when it is back at or above it.
    CellHealthScoreLow,
    /// `ReplicationLagHigh` (warning): replication from `origin` into the
    /// cell lags more than the bound; resolved when it is back under it.
    ReplicationLagHigh,
}

impl AlertKind {
    /// The `alertname` label.
    pub fn alertname(self) -> &'static str {
        match self {
            AlertKind::CellDrained => "CellDrained",
            AlertKind::CellFailbackPending => "CellFailbackPending",
            AlertKind::TrafficSwitchFailed => "TrafficSwitchFailed",
            AlertKind::CellHealthScoreLow => "CellHealthScoreLow",
            AlertKind::ReplicationLagHigh => "ReplicationLagHigh",
        }
    }

    /// The `severity` label: `critical` or `warning`.
    pub fn severity(self) -> &'static str {
        match self {
            AlertKind::CellDrained | AlertKind::TrafficSwitchFailed => "critical",
            AlertKind::CellFailbackPending | AlertKind::CellHealthScoreLow | AlertKind::ReplicationLagHigh => {
                "warning"
            }
        }
    }
}
