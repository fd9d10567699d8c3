//! [`Plan`]: the routing table in force, indexed for answering: each cell's
//! entry addresses, and per region (and overall) the cells by capacity weight.
//! Rebuilt when the table version changes. The weighted pick itself is the
//! router's [`cellrouter::Balancer`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use cellrouter::{CellId, CellState, CompiledTable};
use health::HealthSnapshot;
use opentelemetry::KeyValue;

use crate::config::Compiled;

/// Address family of a query (A or AAAA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

pub(crate) struct PlanCell {
    pub(crate) id: CellId,
    pub(crate) v4: Vec<Ipv4Addr>,
    pub(crate) v6: Vec<Ipv6Addr>,
    /// `cell`, `region` attributes of `gslb.answers`.
    pub(crate) attrs: [KeyValue; 2],
}

impl PlanCell {
    pub(crate) fn count(&self, f: Family) -> usize {
        match f {
            Family::V4 => self.v4.len(),
            Family::V6 => self.v6.len(),
        }
    }
}

pub(crate) struct Plan {
    pub(crate) version: u64,
    pub(crate) cells: Vec<PlanCell>,
    index: HashMap<CellId, usize>,
    /// Per region: its cells with an address and a weight, highest weight first.
    by_region: HashMap<CellId, Vec<usize>>,
    /// Every such cell, highest weight first.
    all: Vec<usize>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("version", &self.version)
            .field("cells", &self.cells.len())
            .finish()
    }
}

/// The IP host of an `http(s)://host:port/...` endpoint, when it is one.
pub(crate) fn endpoint_ip(endpoint: &str) -> Option<IpAddr> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host.strip_prefix('[') {
        return v6
            .split_once(']')?
            .0
            .parse::<Ipv6Addr>()
            .ok()
            .map(IpAddr::V6);
    }
    host.split(':')
        .next()?
        .parse::<Ipv4Addr>()
        .ok()
        .map(IpAddr::V4)
}

impl Plan {
    pub(crate) fn build(table: &CompiledTable, cfg: &Compiled) -> Plan {
        let t = table.table();
        let mut cells = Vec::with_capacity(t.cells.len());
        let mut index = HashMap::with_capacity(t.cells.len());
        let mut by_region: HashMap<CellId, Vec<usize>> = HashMap::new();
        let mut all = Vec::with_capacity(t.cells.len());
        for (ci, c) in t.cells.iter().enumerate() {
            let addrs: Vec<IpAddr> = match cfg.entry_addresses.get(&c.id) {
                Some(a) => a.iter().map(|a| a.to_canonical()).collect(),
                None => {
                    let a: Vec<IpAddr> =
                        c.endpoints.iter().filter_map(|e| endpoint_ip(e)).collect();
                    if a.is_empty() {
                        tracing::warn!(cell = %c.id, "no endpoint of the cell has an IP host and no entry address is configured: never answered");
                    }
                    a
                }
            };
            let mut v4 = Vec::new();
            let mut v6 = Vec::new();
            for a in addrs {
                match a {
                    IpAddr::V4(a) if !v4.contains(&a) => v4.push(a),
                    IpAddr::V6(a) if !v6.contains(&a) => v6.push(a),
                    _ => {}
                }
            }
            if c.weight > 0 && !(v4.is_empty() && v6.is_empty()) {
                by_region.entry(c.region.clone()).or_default().push(ci);
                all.push(ci);
            }
            let attrs = [
                KeyValue::new("cell", Arc::<str>::from(c.id.as_str())),
                KeyValue::new("region", Arc::<str>::from(c.region.as_str())),
            ];
            index.insert(c.id.clone(), ci);
            cells.push(PlanCell {
                id: c.id.clone(),
                v4,
                v6,
                attrs,
            });
        }
        let by_weight =
            |v: &mut Vec<usize>| v.sort_by_key(|&ci| std::cmp::Reverse(t.cells[ci].weight));
        by_region.values_mut().for_each(by_weight);
        by_weight(&mut all);
        Plan {
            version: table.version(),
            cells,
            index,
            by_region,
            all,
        }
    }

    /// Index of the cell with this id.
    pub(crate) fn cell_index(&self, id: &CellId) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Cells of `region` (every cell when `None`) that can be answered, by weight.
    pub(crate) fn members(&self, region: Option<&CellId>) -> &[usize] {
        match region {
            Some(r) => self.by_region.get(r).map_or(&[], Vec::as_slice),
            None => &self.all,
        }
    }

    /// Whether `region` has cells in this table.
    pub(crate) fn has_region(&self, region: &CellId) -> bool {
        self.by_region.contains_key(region)
    }
}

/// Whether `cell` may be answered now: active in the table in force, not
/// reported failed to the table store, and not unhealthy in the health stream.
pub(crate) fn eligible(
    table: &CompiledTable,
    health: Option<&HealthSnapshot>,
    require_health: bool,
    id: &CellId,
) -> bool {
    let Some(cell) = table.cell(id) else {
        return false;
    };
    if cell.state != CellState::Active || table.is_failed(id) {
        return false;
    }
    match health.and_then(|h| h.get(id)) {
        Some(h) => h.healthy,
        None => !require_health,
    }
}

/// The RTT the health stream measured for `id`: the lowest p50 of its probes.
pub(crate) fn health_rtt_ms(health: &HealthSnapshot, id: &CellId) -> Option<f64> {
    health
        .get(id)?
        .probes
        .iter()
        .filter_map(|p| p.p50_ms)
        .filter(|v| v.is_finite() && *v >= 0.0)
        .min_by(f64::total_cmp)
}
