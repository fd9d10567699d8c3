//! The 3-cell table and the keys the stack benches (`stack_load`,
//! `stack_layers`) route: every variant serves as cell `beijing-1`.

use cellctx::CellId;
use cellrouter::{Cell, RoutingTable, TableStore, resolve};
use http::HeaderValue;

/// The cell the benched service is.
pub(crate) const LOCAL: &str = "beijing-1";

/// A cell id (the bench's own, known-valid names).
pub(crate) fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

/// Three cells of region `cn`, 16,384 slots spread evenly.
pub(crate) fn routing_table() -> RoutingTable {
    let cells = ["beijing-1", "shanghai-1", "shenzhen-1"]
        .iter()
        .map(|c| Cell::new(id(c), id("cn"), "http://127.0.0.1:9"))
        .collect();
    RoutingTable::uniform(id("cn"), cells, 16384)
}

/// Keys whose home is (`local`) or is not (`!local`) the local cell.
pub(crate) fn keys(store: &TableStore, local: bool, n: usize) -> Vec<HeaderValue> {
    let table = store.current().unwrap();
    (0..)
        .map(|i| format!("user-{}", 1_000_000 + i * 7919))
        .filter(|k| (resolve(&table, k).unwrap().target.as_str() == LOCAL) == local)
        .take(n)
        .map(|k| HeaderValue::from_str(&k).unwrap())
        .collect()
}
