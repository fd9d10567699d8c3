//! One snapshot of the run for the console: traffic, the table in force,
//! the switches, the audit log and replication.

use std::collections::HashSet;

use failover::audit::epoch_ms;
use serde::Serialize;

use super::Live;
use super::shares::served_slots;
use crate::cells::CellEvent;
use crate::replication::CellReplication;
use crate::report::{AuditRow, audit_rows};
use crate::stats::Series;

/// Seconds of traffic each snapshot carries.
const WINDOW_S: usize = 60;

/// One cell as the console shows it.
#[derive(Debug, Serialize)]
struct CellView {
    id: String,
    /// Its process runs.
    alive: bool,
    /// Its process is stopped (SIGSTOP).
    paused: bool,
    /// Its state in the table in force (`active`, `draining`, `down`).
    state: String,
    /// Slots it serves (all regions).
    slots: u64,
    /// Its declared failover targets.
    failover: Vec<String>,
    replication: CellReplication,
    /// Writes it holds fewer than the live cell holding the most (replication lag).
    behind: Option<u64>,
}

/// What the page gets every tick.
#[derive(Debug, Serialize)]
pub(super) struct Snapshot {
    /// `starting`, `running` or `stopping`.
    phase: &'static str,
    /// ms since the load started.
    t_ms: u64,
    table_version: Option<u64>,
    total_slots: u64,
    cells: Vec<CellView>,
    /// Every digest of the live cells is present and they are equal.
    converged: bool,
    /// The last [`WINDOW_S`] seconds.
    series: Series,
    events: Vec<CellEvent>,
    audit: Vec<AuditRow>,
}

/// The snapshot of `live` (an empty `starting` one before the run is live).
pub(super) async fn take(live: Option<&Live>, stopping: bool) -> Snapshot {
    let Some(live) = live else {
        return Snapshot {
            phase: "starting",
            t_ms: 0,
            table_version: None,
            total_slots: 0,
            cells: Vec::new(),
            converged: false,
            series: Series::default(),
            events: Vec::new(),
            audit: Vec::new(),
        };
    };
    let t0 = epoch_ms(live.t0_wall);
    let t_ms = epoch_ms(std::time::SystemTime::now()).saturating_sub(t0);
    let (list, events) = live
        .cells
        .lock()
        .map(|c| {
            let list: Vec<_> = c.list().into_iter().map(|(id, _, alive)| (c.paused(&id), id, alive)).collect();
            (list, c.events().to_vec())
        })
        .unwrap_or_default();
    let replication = live.replication.lock().map(|r| r.clone()).unwrap_or_default();
    let table = live.control.store.current();
    let slots = table.as_ref().map(|t| served_slots(t.table())).unwrap_or_default();
    let cells: Vec<CellView> = list
        .into_iter()
        .map(|(paused, id, alive)| {
            let spec = table.as_ref().and_then(|t| t.table().cells.iter().find(|c| c.id.as_str() == id).cloned());
            CellView {
                alive,
                paused,
                state: spec.as_ref().map(|c| format!("{:?}", c.state).to_lowercase()).unwrap_or_default(),
                slots: slots.get(&id).copied().unwrap_or(0),
                failover: spec.map(|c| c.failover.iter().map(ToString::to_string).collect()).unwrap_or_default(),
                replication: replication.get(&id).cloned().unwrap_or_default(),
                behind: None,
                id,
            }
        })
        .collect();
    let mut cells = cells;
    let most = cells.iter().filter(|c| c.alive).filter_map(|c| c.replication.writes).max();
    for c in cells.iter_mut().filter(|c| c.alive) {
        c.behind = most.zip(c.replication.writes).map(|(m, w)| m.saturating_sub(w));
    }
    let digests: Vec<Option<u64>> = cells.iter().filter(|c| c.alive).map(|c| c.replication.digest).collect();
    let distinct: HashSet<Option<u64>> = digests.iter().copied().collect();
    let converged = !digests.is_empty() && distinct.len() == 1 && !distinct.contains(&None);
    let audit = live.control.audit_rows().await.map(|a| audit_rows(&a, t0)).unwrap_or_default();
    let from = live.stats.len().saturating_sub(WINDOW_S);
    Snapshot {
        phase: if stopping { "stopping" } else { "running" },
        t_ms,
        table_version: table.as_ref().map(|t| t.version()),
        total_slots: slots.values().sum(),
        cells,
        converged,
        series: live.stats.series(from),
        events,
        audit,
    }
}

