//! [`resolve`]: routing key -> slot -> home cell -> target cell.

use cellctx::CellId;

use std::sync::atomic::Ordering;

use crate::error::ResolveError;
use crate::slot::xxh3;
use crate::table::{Cell, CompiledTable, route};

/// Why the target differs from (or equals) the home cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// The home cell serves the key.
    Home,
    /// The slot is migrating: the new owner serves it for the duration of the
    /// move (Redis `ASK`); the answer is temporary.
    Migrating,
    /// The home cell is down (or reported failed): the first failover target
    /// that is up and allowed serves the key.
    Failover,
}

/// Where a key goes. Borrows from the table: no allocation, no reference count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolution<'a> {
    /// The key's slot.
    pub slot: u32,
    /// The key's region (whose slot map was used).
    pub region: &'a CellId,
    /// The slot's owner in the table (the home cell).
    pub home: &'a CellId,
    /// The cell that should serve the key now.
    pub target: &'a CellId,
    /// Why `target` was chosen.
    pub kind: TargetKind,
    /// Whether the region is compliance-pinned.
    pub pinned: bool,
    target_cell: &'a Cell,
    pub(crate) target_idx: u16,
}

impl<'a> Resolution<'a> {
    /// The target cell's record (endpoints, state, ...).
    pub fn target_cell(&self) -> &'a Cell {
        self.target_cell
    }
}

/// Resolves `key` in the table's default region. See [`resolve_in`].
///
/// ```
/// use cellrouter::{resolve, Cell, RoutingTable, TargetKind};
/// use cellctx::CellId;
/// let id = |s: &str| CellId::new(s).unwrap();
/// let table = RoutingTable::uniform(
///     id("eu"),
///     vec![Cell::new(id("a"), id("eu"), "http://127.0.0.1:1"), Cell::new(id("b"), id("eu"), "http://127.0.0.1:2")],
///     16384,
/// )
/// .compile()
/// .unwrap();
/// let r = resolve(&table, "user-42").unwrap();
/// assert_eq!(r.kind, TargetKind::Home);
/// assert_eq!(r.home, r.target);
/// assert_eq!(r.slot, cellrouter::slot_of("user-42", 16384));
/// ```
#[inline]
pub fn resolve<'a>(table: &'a CompiledTable, key: &str) -> Result<Resolution<'a>, ResolveError> {
    resolve_idx(table, table.c.default_region, key)
}

/// Resolves `key` in `region`'s slot map:
///
/// 1. `slot = slot_of(key, N)`; the slot's owner is the home cell;
/// 2. a migrating slot goes to its new owner if that cell is up (`ASK`);
/// 3. a home cell that is up (active or draining, and not reported failed)
///    serves the key;
/// 4. otherwise the first cell of the home's failover list that is up and, for a
///    compliance-pinned region, inside the allowed regions;
/// 5. none: [`ResolveError::NoTarget`] (answered 503, never a leak).
///
/// The answers are precomputed per slot when the table is compiled and when the
/// health overlay changes, so a lookup costs one hash and one indexed load.
pub fn resolve_in<'a>(table: &'a CompiledTable, region: &CellId, key: &str) -> Result<Resolution<'a>, ResolveError> {
    let r = *table.c.region_idx.get(region).ok_or_else(|| ResolveError::UnknownRegion(region.clone()))?;
    resolve_idx(table, r, key)
}

/// Resolves in region index `r`: hash, mask (or modulo), one load of the
/// precomputed route, and pointer arithmetic into the table. No string compare,
/// no hash map, no allocation.
#[inline]
pub(crate) fn resolve_idx<'a>(table: &'a CompiledTable, r: u16, key: &str) -> Result<Resolution<'a>, ResolveError> {
    let c = &table.c;
    let h = xxh3(key.as_bytes());
    let slot = if c.slot_mask != u64::MAX { h & c.slot_mask } else { h % u64::from(c.n_slots) } as u32;
    let ri = r as usize;
    let e = table.routes[ri * c.n_slots as usize + slot as usize].load(Ordering::Relaxed);
    let (home_i, target_i, kind) = route::unpack(e);
    let pinned = c.pinned[ri];
    let cells = table.cells();
    let kind = match kind {
        route::HOME => TargetKind::Home,
        route::MIGRATING => TargetKind::Migrating,
        route::FAILOVER => TargetKind::Failover,
        _ => return Err(ResolveError::NoTarget { slot, home: cells[home_i as usize].id.clone(), pinned }),
    };
    let target_cell = &cells[target_i as usize];
    Ok(Resolution {
        slot,
        region: &table.region_at(r).name,
        home: &cells[home_i as usize].id,
        target: &target_cell.id,
        kind,
        pinned,
        target_cell,
        target_idx: target_i,
    })
}
