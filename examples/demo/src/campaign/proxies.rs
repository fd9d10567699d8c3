//! A [`FaultProxy`] in front of every port of every cell: the routing table's
//! endpoints (the controllers' `--endpoints`) point at the proxies, so the
//! gateway's, the probers' and the controllers' links to a cell all pass
//! through it and a partition of the cell is one mode change. The
//! orchestrator's own reads (state, outbox) go to the cell's ports directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use testkit::proxy::{FaultProxy, LinkMode};

use crate::error::DemoError;

/// Every cell's proxies, and the faults in force on each cell's link.
#[derive(Debug, Default)]
pub(crate) struct Proxies {
    by_cell: BTreeMap<String, Vec<FaultProxy>>,
    /// Faults (schedule index, mode) in force per cell; the last one wins.
    active: BTreeMap<String, Vec<(usize, LinkMode)>>,
}

impl Proxies {
    /// One proxy per `(cell, ports)` port.
    pub(crate) async fn start(ports: &[(String, Vec<u16>)]) -> Result<Self, DemoError> {
        let mut by_cell = BTreeMap::new();
        for (id, ports) in ports {
            let mut v = Vec::new();
            for p in ports {
                v.push(FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], *p))).await?);
            }
            by_cell.insert(id.clone(), v);
        }
        Ok(Proxies { by_cell, active: BTreeMap::new() })
    }

    /// The URLs the routing table gives for `cell`.
    pub(crate) fn urls(&self, cell: &str) -> Option<Vec<String>> {
        self.by_cell.get(cell).map(|v| v.iter().map(|p| format!("http://{}", p.addr())).collect())
    }

    /// Puts fault `fault` (`mode`) on `cell`'s link.
    pub(crate) fn fault(&mut self, cell: &str, fault: usize, mode: LinkMode) -> Result<(), DemoError> {
        if !self.by_cell.contains_key(cell) {
            return Err(DemoError::UnknownCell(cell.to_string()));
        }
        self.active.entry(cell.to_string()).or_default().push((fault, mode));
        self.apply(cell);
        Ok(())
    }

    /// Lifts fault `fault` from `cell`'s link (another one in force stays).
    pub(crate) fn heal(&mut self, cell: &str, fault: usize) {
        if let Some(v) = self.active.get_mut(cell) {
            v.retain(|(f, _)| *f != fault);
        }
        self.apply(cell);
    }

    /// Every link back to pass.
    pub(crate) fn heal_all(&mut self) {
        self.active.clear();
        for v in self.by_cell.values() {
            v.iter().for_each(|p| p.set(LinkMode::Pass));
        }
    }

    fn apply(&self, cell: &str) {
        let mode = self.active.get(cell).and_then(|v| v.last()).map_or(LinkMode::Pass, |(_, m)| *m);
        if let Some(v) = self.by_cell.get(cell) {
            v.iter().for_each(|p| p.set(mode));
        }
    }
}
