//! [`FailoverOrder`]: which cells a [`crate::CellClient`] tries, in order, when
//! the request's own cell has no serving instance (or is down), with the
//! routing table's failover lists as the main implementation.

use std::fmt;

use cellctx::CellId;

/// The failover cells of a cell, best first (the cell itself excluded).
///
/// Implemented by [`cellrouter::TableStore`] (the routing table's per-cell
/// failover lists, skipping cells that are down or reported failed), by plain
/// closures `Fn(&CellId) -> Vec<CellId>`, and by [`NoFailover`].
/// [`failover_cells`](Self::failover_cells) is called only when the request's
/// cell cannot serve, never on the happy path.
pub trait FailoverOrder: Send + Sync + 'static {
    /// The cells to try after `cell`, in order.
    fn failover_cells(&self, cell: &CellId) -> Vec<CellId>;

    /// Whether `cell` must not take requests even though it has instances
    /// (down in the routing table); its requests then go to its failover
    /// cells. Default: never.
    fn is_down(&self, cell: &CellId) -> bool {
        let _ = cell;
        false
    }
}

fn table_down(t: &cellrouter::CompiledTable, cell: &CellId) -> bool {
    t.is_failed(cell) || t.cell(cell).is_some_and(|c| c.state == cellrouter::CellState::Down)
}

/// The routing table in force: the cell's ordered failover list, without the
/// cells that are down or failed. A cell the table does not know (or no table
/// yet) has no failover cells and is never down.
impl FailoverOrder for cellrouter::TableStore {
    fn failover_cells(&self, cell: &CellId) -> Vec<CellId> {
        let guard = self.load();
        let Some(t) = guard.as_ref() else { return Vec::new() };
        match t.cell(cell) {
            Some(c) => c.failover.iter().filter(|f| !table_down(t, f)).cloned().collect(),
            None => Vec::new(),
        }
    }

    fn is_down(&self, cell: &CellId) -> bool {
        self.load().as_ref().is_some_and(|t| table_down(t, cell))
    }
}

impl<F> FailoverOrder for F
where
    F: Fn(&CellId) -> Vec<CellId> + Send + Sync + 'static,
{
    fn failover_cells(&self, cell: &CellId) -> Vec<CellId> {
        self(cell)
    }
}

/// No failover: a request whose cell has no instance fails with
/// [`crate::Error::NoInstance`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFailover;

impl FailoverOrder for NoFailover {
    fn failover_cells(&self, _: &CellId) -> Vec<CellId> {
        Vec::new()
    }
}

pub(crate) struct DebugFailover<'a>(pub(crate) &'a dyn FailoverOrder);

impl fmt::Debug for DebugFailover<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let _ = self.0;
        f.write_str("FailoverOrder")
    }
}
