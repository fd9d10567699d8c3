//! [`Watermarks`]: the HLC watermark every cell has acknowledged, for tombstone GC.

use std::collections::BTreeMap;

use cellctx::CellId;

use crate::hlc::Timestamp;

/// Acknowledged HLC watermarks of a known set of cells.
///
/// A cell acknowledges `w` once it has applied every write stamped at or below
/// `w` from every origin (its own HLC is then past `w`, so it makes no new
/// write at or below it). [`global`](Self::global) is the minimum over all known
/// cells: tombstones at or below it can be collected with `gc`.
///
/// ```
/// use crdt::{Timestamp, Watermarks};
/// let cells = ["a", "b"].map(|c| c.parse().unwrap());
/// let mut w = Watermarks::new(cells.clone());
/// w.ack(&cells[0], Timestamp::new(10, 0));
/// assert_eq!(w.global(), None); // b has not acknowledged anything yet
/// w.ack(&cells[1], Timestamp::new(7, 0));
/// assert_eq!(w.global(), Some(Timestamp::new(7, 0)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Watermarks {
    acked: BTreeMap<CellId, Option<Timestamp>>,
}

impl Watermarks {
    /// Watermarks of `cells`, none acknowledged yet.
    pub fn new(cells: impl IntoIterator<Item = CellId>) -> Self {
        Watermarks { acked: cells.into_iter().map(|c| (c, None)).collect() }
    }

    /// Records `cell`'s acknowledgement (watermarks only move forward); unknown
    /// cells are ignored and `false` is returned.
    pub fn ack(&mut self, cell: &CellId, ts: Timestamp) -> bool {
        match self.acked.get_mut(cell) {
            Some(cur) => {
                if cur.is_none_or(|c| ts > c) {
                    *cur = Some(ts);
                }
                true
            }
            None => false,
        }
    }

    /// The minimum acknowledged watermark, or `None` until every cell has acknowledged.
    pub fn global(&self) -> Option<Timestamp> {
        self.acked.values().try_fold(None::<Timestamp>, |min, w| {
            let w = (*w)?;
            Some(Some(min.map_or(w, |m| m.min(w))))
        })?
    }
}
