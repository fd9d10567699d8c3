//! [`plan_rebalance`]: the fewest slot moves that bring a region's slot map to
//! the cells' capacity shares.
//!
//! Each target cell's quota is `N × weight / Σweight`, rounded by largest
//! remainder (the spare units going first to cells that already hold more than
//! their floor, which saves a move each; only cells with a fractional share). Only slots above a cell's quota move,
//! and only to cells below theirs, so the number of moves is
//! `Σ max(0, held − quota)`: the minimum for those quotas. Adding one cell to `k`
//! equal cells moves `N / (k+1)` slots (25 % for 3 -> 4, where naive consistent
//! hashing with few virtual nodes moves around 30 % and unevenly); draining any
//! cell (drop it from `target`, or give it weight 0) moves exactly its slots.

use std::collections::HashMap;

use cellctx::CellId;

use crate::error::InvalidTable;
use crate::table::{Migration, RoutingTable, SlotRange};

/// One slot changing owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMove {
    /// The slot.
    pub slot: u32,
    /// The current owner.
    pub from: CellId,
    /// The new owner.
    pub to: CellId,
}

/// The moves of one region's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalancePlan {
    /// The region.
    pub region: CellId,
    /// Slots per region.
    pub slot_count: u32,
    /// The moves, by slot.
    pub moves: Vec<SlotMove>,
}

impl RebalancePlan {
    /// Fraction of the region's slots that move.
    pub fn moved_fraction(&self) -> f64 {
        self.moves.len() as f64 / f64::from(self.slot_count.max(1))
    }

    /// The moves as [`Migration`] entries (the `ASK` phase: the slots are served
    /// by their new owners while the data moves).
    pub fn migrations(&self) -> Vec<Migration> {
        let mut out: Vec<Migration> = Vec::new();
        for m in &self.moves {
            if let Some(last) = out.last_mut()
                && last.end + 1 == m.slot
                && last.from == m.from
                && last.to == m.to
            {
                last.end = m.slot;
                continue;
            }
            out.push(Migration::new(self.region.clone(), m.slot, m.slot, m.from.clone(), m.to.clone()));
        }
        out
    }

    /// `table` with the moves done (the `MOVED` phase): new owners in the slot
    /// map, this region's migrations cleared, version + 1. The caller adds new
    /// cells to `table.cells` beforehand.
    pub fn apply(&self, table: &RoutingTable) -> RoutingTable {
        let mut owners = region_owners(table, &self.region);
        for m in &self.moves {
            if let Some(o) = owners.get_mut(m.slot as usize) {
                *o = Some(m.to.clone());
            }
        }
        let mut t = table.clone();
        t.version += 1;
        t.migrations.retain(|m| m.region != self.region);
        t.slots.retain(|s| s.region != self.region);
        let mut start = 0u32;
        for i in 1..=owners.len() {
            if i == owners.len() || owners[i] != owners[start as usize] {
                if let Some(cell) = owners[start as usize].clone() {
                    t.slots.push(SlotRange { region: self.region.clone(), start, end: i as u32 - 1, cell });
                }
                start = i as u32;
            }
        }
        t
    }
}

fn region_owners(table: &RoutingTable, region: &CellId) -> Vec<Option<CellId>> {
    let mut owners = vec![None; table.slot_count as usize];
    for s in table.slots.iter().filter(|s| &s.region == region) {
        for slot in s.start..=s.end.min(table.slot_count.saturating_sub(1)) {
            owners[slot as usize] = Some(s.cell.clone());
        }
    }
    owners
}

/// Plans the moves that give each of `target` (cell, capacity weight) its
/// share of `region`'s slots; cells holding slots but absent from `target` (or
/// with weight 0) are drained.
///
/// ```
/// use cellrouter::{plan_rebalance, Cell, RoutingTable};
/// use cellctx::CellId;
/// let id = |s: &str| CellId::new(s).unwrap();
/// let cells: Vec<Cell> = ["a", "b", "c"].iter().map(|c| Cell::new(id(c), id("eu"), "http://127.0.0.1:1")).collect();
/// let table = RoutingTable::uniform(id("eu"), cells, 16384);
/// let target: Vec<(CellId, u32)> = ["a", "b", "c", "d"].iter().map(|c| (id(c), 100)).collect();
/// let plan = plan_rebalance(&table, &id("eu"), &target).unwrap();
/// assert_eq!(plan.moves.len(), 4096); // exactly 1/4 of the slots
/// assert!(plan.moves.iter().all(|m| m.to.as_str() == "d"));
/// ```
pub fn plan_rebalance(table: &RoutingTable, region: &CellId, target: &[(CellId, u32)]) -> Result<RebalancePlan, InvalidTable> {
    if !table.regions.iter().any(|r| &r.name == region) {
        return Err(InvalidTable::UnknownRegion(region.clone()));
    }
    let n = table.slot_count as u64;
    let total: u64 = target.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return Err(InvalidTable::Empty("no target cell with a positive weight"));
    }
    let owners = region_owners(table, region);
    let mut held: HashMap<&CellId, u64> = HashMap::new();
    for o in owners.iter().flatten() {
        *held.entry(o).or_default() += 1;
    }
    // Quotas by largest remainder; spare units first to cells holding more than their floor.
    let mut quota: Vec<(CellId, u64)> = Vec::with_capacity(target.len());
    let mut spare: Vec<(bool, bool, u64, usize)> = Vec::with_capacity(target.len());
    let mut assigned = 0u64;
    for (i, (c, w)) in target.iter().enumerate() {
        let exact = n * u64::from(*w);
        let q = exact / total;
        let rem = exact % total;
        assigned += q;
        let h = held.get(c).copied().unwrap_or(0);
        spare.push((rem > 0, h > q, rem, i));
        quota.push((c.clone(), q));
    }
    spare.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(b.2.cmp(&a.2)).then(a.3.cmp(&b.3)));
    for &(_, _, _, i) in spare.iter().take((n - assigned) as usize) {
        quota[i].1 += 1;
    }
    let quota_of: HashMap<&CellId, u64> = quota.iter().map(|(c, q)| (c, *q)).collect();
    // Surplus slots, taken from the end of each donor's slots; receivers in target order.
    let mut kept: HashMap<&CellId, u64> = HashMap::new();
    let mut free: Vec<(u32, CellId)> = Vec::new();
    for (slot, o) in owners.iter().enumerate() {
        match o {
            Some(c) => {
                let k = kept.entry(c).or_default();
                if *k < quota_of.get(c).copied().unwrap_or(0) {
                    *k += 1;
                } else {
                    free.push((slot as u32, c.clone()));
                }
            }
            None => free.push((slot as u32, CellId::new("unassigned").map_err(|_| InvalidTable::Empty("slot"))?)),
        }
    }
    let mut moves = Vec::with_capacity(free.len());
    let mut free = free.into_iter();
    for (c, q) in &quota {
        let have = kept.get(c).copied().unwrap_or(0);
        for _ in have..*q {
            if let Some((slot, from)) = free.next() {
                moves.push(SlotMove { slot, from, to: c.clone() });
            }
        }
    }
    moves.sort_by_key(|m| m.slot);
    Ok(RebalancePlan { region: region.clone(), slot_count: table.slot_count, moves })
}
