//! [`Plan`]: the routing table in force, indexed for answering: each cell's
//! entry addresses and, per address family, one smooth-WRR group per region
//! plus one over every cell. Rebuilt when the table version changes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cellrouter::{CellId, CellState, CompiledTable, SmoothWrr, WeightParams};
use health::HealthSnapshot;
use opentelemetry::KeyValue;

use crate::config::Compiled;

/// Address family of a query (A or AAAA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4 = 0,
    V6 = 1,
}

pub(crate) struct PlanCell {
    pub(crate) id: CellId,
    pub(crate) v4: Vec<Ipv4Addr>,
    pub(crate) v6: Vec<Ipv6Addr>,
    /// `cell`, `region` attributes of `gslb.answers`.
    pub(crate) attrs: [KeyValue; 2],
    /// What the WRR groups were last told (true = failed).
    pub(crate) marked_failed: AtomicBool,
    /// (family, group) pairs the cell is a member of.
    memberships: Vec<(usize, usize)>,
}

impl PlanCell {
    pub(crate) fn count(&self, f: Family) -> usize {
        match f {
            Family::V4 => self.v4.len(),
            Family::V6 => self.v6.len(),
        }
    }
}

pub(crate) struct Group {
    /// Members (cell indices), highest base weight first.
    pub(crate) members: Vec<u16>,
    pub(crate) wrr: SmoothWrr<u16>,
}

pub(crate) struct Plan {
    pub(crate) version: u64,
    pub(crate) cells: Vec<PlanCell>,
    /// Per family: one group per table region (table order), then the all-cells group.
    pub(crate) groups: [Vec<Group>; 2],
    /// Region name -> group index.
    region_group: HashMap<CellId, usize>,
    /// Region-map rule index -> group index (`None`: region not in the table).
    pub(crate) rule_group: Vec<Option<usize>>,
    /// Group of clients no rule matches (`None`: the all-cells group).
    pub(crate) default_group: Option<usize>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan").field("version", &self.version).field("cells", &self.cells.len()).finish()
    }
}

/// The IP host of an `http(s)://host:port/...` endpoint, when it is one.
pub(crate) fn endpoint_ip(endpoint: &str) -> Option<IpAddr> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split_once(']')?.0.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    host.split(':').next()?.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

impl Plan {
    pub(crate) fn build(table: &CompiledTable, cfg: &Compiled, params: WeightParams, rtt: &HashMap<CellId, f64>) -> Plan {
        let t = table.table();
        let mut cells = Vec::with_capacity(t.cells.len());
        let mut bases = Vec::with_capacity(t.cells.len());
        let mut regions_of = Vec::with_capacity(t.cells.len());
        for c in &t.cells {
            let addrs: Vec<IpAddr> = match cfg.entry_addresses.get(&c.id) {
                Some(a) => a.iter().map(|a| a.to_canonical()).collect(),
                None => {
                    let a: Vec<IpAddr> = c.endpoints.iter().filter_map(|e| endpoint_ip(e)).collect();
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
            let attrs = [
                KeyValue::new("cell", Arc::<str>::from(c.id.as_str())),
                KeyValue::new("region", Arc::<str>::from(c.region.as_str())),
            ];
            cells.push(PlanCell { id: c.id.clone(), v4, v6, attrs, marked_failed: AtomicBool::new(false), memberships: Vec::new() });
            bases.push(f64::from(c.weight));
            regions_of.push(c.region.clone());
        }
        let mut region_group = HashMap::with_capacity(t.regions.len());
        for (i, r) in t.regions.iter().enumerate() {
            region_group.insert(r.name.clone(), i);
        }
        let n_groups = t.regions.len() + 1;
        let all = t.regions.len();
        let mut groups: [Vec<Group>; 2] = [Vec::with_capacity(n_groups), Vec::with_capacity(n_groups)];
        for (fi, fam) in [Family::V4, Family::V6].into_iter().enumerate() {
            let mut members: Vec<Vec<u16>> = vec![Vec::new(); n_groups];
            for (ci, cell) in cells.iter_mut().enumerate() {
                if cell.count(fam) == 0 || bases[ci] <= 0.0 {
                    continue;
                }
                let Ok(ci16) = u16::try_from(ci) else { continue };
                if let Some(&g) = region_group.get(&regions_of[ci]) {
                    members[g].push(ci16);
                    cell.memberships.push((fi, g));
                }
                members[all].push(ci16);
                cell.memberships.push((fi, all));
            }
            for mut m in members {
                m.sort_by(|a, b| bases[*b as usize].total_cmp(&bases[*a as usize]));
                let wrr = SmoothWrr::with_params(params);
                for &ci in &m {
                    wrr.insert(ci, bases[ci as usize]);
                    if let Some(&ms) = rtt.get(&cells[ci as usize].id) {
                        wrr.observe_rtt(&ci, Duration::from_secs_f64(ms / 1000.0));
                    }
                }
                groups[fi].push(Group { members: m, wrr });
            }
        }
        let rule_group = cfg.region_map.rules().iter().map(|r| region_group.get(&r.region).copied()).collect();
        let default_group = cfg.default_region.as_ref().and_then(|r| region_group.get(r).copied());
        Plan { version: table.version(), cells, groups, region_group, rule_group, default_group }
    }

    /// The all-cells group index.
    pub(crate) fn all_group(&self) -> usize {
        self.region_group.len()
    }

    /// Tells every WRR group of cell `ci` that it is failed (weight 0) or back.
    pub(crate) fn mark(&self, ci: usize, failed: bool) {
        let Some(cell) = self.cells.get(ci) else { return };
        if cell.marked_failed.swap(failed, Ordering::AcqRel) == failed {
            return;
        }
        let Ok(key) = u16::try_from(ci) else { return };
        for &(f, g) in &cell.memberships {
            self.groups[f][g].wrr.set_failed(&key, failed);
        }
    }

    /// Feeds an RTT sample of cell `ci` to every WRR group it is in; returns the
    /// resulting average (ms).
    pub(crate) fn observe_rtt(&self, ci: usize, rtt: Duration) -> Option<f64> {
        let cell = self.cells.get(ci)?;
        let key = u16::try_from(ci).ok()?;
        let mut avg = None;
        for &(f, g) in &cell.memberships {
            let wrr = &self.groups[f][g].wrr;
            wrr.observe_rtt(&key, rtt);
            avg = wrr.rtt_ms(&key);
        }
        avg
    }

    /// Index of the cell with this id.
    pub(crate) fn cell_index(&self, id: &CellId) -> Option<usize> {
        self.cells.iter().position(|c| &c.id == id)
    }

    /// The effective weight of a cell in the all-cells group of `f`.
    pub(crate) fn weight(&self, ci: usize, f: Family) -> Option<f64> {
        let key = u16::try_from(ci).ok()?;
        self.groups[f as usize][self.all_group()].wrr.weight(&key)
    }
}

/// Whether `cell` may be answered now: active in the table in force, not
/// reported failed to the table store, and not unhealthy in the health stream.
pub(crate) fn eligible(table: &CompiledTable, health: Option<&HealthSnapshot>, require_health: bool, id: &CellId) -> bool {
    let Some(cell) = table.cell(id) else { return false };
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
    health.get(id)?.probes.iter().filter_map(|p| p.p50_ms).filter(|v| v.is_finite() && *v >= 0.0).min_by(f64::total_cmp)
}
