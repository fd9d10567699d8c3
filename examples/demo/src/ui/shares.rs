//! Which cell serves which share of the slots, from the routing table in
//! force: a slot goes to its owner while the owner is up, else to the first
//! failover target that is up (the order `cellrouter::resolve_in` follows).

use std::collections::BTreeMap;

use cellrouter::{CellState, RoutingTable};

/// Per cell: the slots it serves, over every region's slot map.
pub(crate) fn served_slots(table: &RoutingTable) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = table.cells.iter().map(|c| (c.id.to_string(), 0)).collect();
    let up = |id: &cellctx::CellId| table.cells.iter().any(|c| &c.id == id && c.state != CellState::Down);
    for range in &table.slots {
        let n = u64::from(range.end.saturating_sub(range.start)) + 1;
        let target = if up(&range.cell) {
            Some(&range.cell)
        } else {
            table.cell(&range.cell).and_then(|c| c.failover.iter().find(|f| up(f)))
        };
        if let Some(t) = target {
            *out.entry(t.to_string()).or_default() += n;
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use cellctx::CellId;
    use cellrouter::Cell;

    #[test]
    fn a_down_cell_s_slots_go_to_its_failover_target() {
        let id = |s: &str| CellId::new(s).unwrap();
        let mut a = Cell::new(id("a"), id("eu"), "http://127.0.0.1:1");
        a.failover = vec![id("b")];
        let b = Cell::new(id("b"), id("eu"), "http://127.0.0.1:2");
        let mut t = RoutingTable::uniform(id("eu"), vec![a, b], 1024);
        assert_eq!(served_slots(&t), BTreeMap::from([("a".into(), 512), ("b".into(), 512)]));
        t.cells[0].state = CellState::Down;
        assert_eq!(served_slots(&t), BTreeMap::from([("a".into(), 0), ("b".into(), 1024)]));
    }
}
