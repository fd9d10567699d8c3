//! [`RoutingTable`]: the versioned, serde-friendly routing table, and
//! [`CompiledTable`]: its validated, indexed form that requests read.
//!
//! The wire form (JSON or YAML, same field names):
//!
//! ```yaml
//! version: 7                 # strictly increasing
//! slot_count: 16384          # default; the seed's 128 is valid too
//! default_region: eu-west    # region of keys whose region is not known
//! regions:
//!   - name: eu-west
//!     compliance: [gdpr]     # non-empty tags pin the region's data...
//!     allowed_regions: [eu-central]  # ...to itself plus these regions
//!     datacenter: 1          # idgen datacenter bits of ids homed here
//!   - name: eu-central
//!   - name: us-east
//! cells:
//!   - id: eu-1
//!     region: eu-west
//!     endpoints: ["http://10.0.0.1:8080"]
//!     weight: 100            # capacity weight (default 100)
//!     state: active          # active | draining | down
//!     failover: [eu-2]       # ordered
//! slots:                     # per region, inclusive ranges
//!   - { region: eu-west, start: 0, end: 16383, cell: eu-1 }
//! migrations:                # slots moving between cells
//!   - { region: eu-west, start: 0, end: 99, from: eu-1, to: eu-2 }
//! ```
//!
//! Each region has its own slot map (every region's `N` slots assigned): a key
//! is hashed once (`slot_of`) and looked up in its region's map. A
//! region's slots may be served by cells of other regions unless the region is
//! pinned by compliance tags, in which case its slots, migration targets and the
//! failover targets of the cells serving it must stay inside its allowed regions.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use cellctx::CellId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, InvalidTable};

/// Default slot count (as in Redis Cluster).
pub const DEFAULT_SLOTS: u32 = 16_384;
/// Largest slot count a table may have.
pub const MAX_SLOTS: u32 = 1 << 20;
/// Most regions a table may have.
pub const MAX_REGIONS: usize = 64;
/// Most cells a table may have.
pub const MAX_CELLS: usize = 4096;

const NONE: u16 = u16::MAX;

fn default_slots() -> u32 {
    DEFAULT_SLOTS
}
fn default_weight() -> u32 {
    100
}

/// A cell's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CellState {
    /// Serves its slots and takes new (unkeyed) traffic.
    #[default]
    Active,
    /// Still serves its slots while they are moved away; no unkeyed traffic.
    Draining,
    /// Serves nothing: its slots go to its failover list.
    Down,
}

/// A region, with its compliance pinning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// The region name (same rules as a [`CellId`]).
    pub name: CellId,
    /// Compliance tags (`gdpr`, `pipl`, ...). Non-empty pins the region's data
    /// to the region itself plus [`Region::allowed_regions`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compliance: Vec<String>,
    /// Other regions a pinned region's data may be served from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_regions: Vec<CellId>,
    /// The idgen datacenter number of ids homed in this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<u32>,
}

impl Region {
    /// An unpinned region.
    pub fn new(name: CellId) -> Self {
        Region { name, compliance: Vec::new(), allowed_regions: Vec::new(), datacenter: None }
    }

    /// Whether the region is compliance-pinned.
    pub fn is_pinned(&self) -> bool {
        !self.compliance.is_empty()
    }
}

/// A cell: a full copy of the service stack serving some slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cell {
    /// The cell id.
    pub id: CellId,
    /// The region the cell runs in.
    pub region: CellId,
    /// Gateway base URLs (`http://host:port`), at least one.
    pub endpoints: Vec<String>,
    /// Capacity weight (default 100), used by rebalancing and unkeyed traffic.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Lifecycle state.
    #[serde(default)]
    pub state: CellState,
    /// Ordered failover targets, used while this cell is down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failover: Vec<CellId>,
    /// The links to this cell's endpoints are private (the same host or a
    /// private network): requests may reach it over plain `http://` (see
    /// [`PlaintextPolicy`](crate::PlaintextPolicy)). Default false: only
    /// `https://` endpoints are forwarded to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private_link: bool,
}

impl Cell {
    /// An active cell with weight 100 and no failover list.
    pub fn new(id: CellId, region: CellId, endpoint: impl Into<String>) -> Self {
        Cell {
            id,
            region,
            endpoints: vec![endpoint.into()],
            weight: default_weight(),
            state: CellState::Active,
            failover: Vec::new(),
            private_link: false,
        }
    }

    /// Marks the cell's links private (plain HTTP allowed), or not.
    pub fn with_private_link(mut self, private: bool) -> Self {
        self.private_link = private;
        self
    }
}

/// An inclusive range of a region's slots owned by one cell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotRange {
    /// The region whose slot map this range belongs to.
    pub region: CellId,
    /// First slot.
    pub start: u32,
    /// Last slot (inclusive).
    pub end: u32,
    /// The owning cell.
    pub cell: CellId,
}

/// An inclusive range of a region's slots moving from one cell to another.
///
/// While listed, requests for these slots go to `to` (like Redis `ASK`); once the
/// move is done the writer publishes a table where `to` owns them (`MOVED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// The region.
    pub region: CellId,
    /// First slot.
    pub start: u32,
    /// Last slot (inclusive).
    pub end: u32,
    /// The current owner.
    pub from: CellId,
    /// The new owner.
    pub to: CellId,
    /// Who put the move here (e.g. `ramp:eu-1`, `cohort:canary`), so the
    /// writer that placed it can find and replace its own moves; absent for
    /// plain slot migrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

impl Migration {
    /// A plain move of `region`'s slots `start..=end` from `from` to `to`.
    pub fn new(region: CellId, start: u32, end: u32, from: CellId, to: CellId) -> Self {
        Migration { region, start, end, from, to, purpose: None }
    }

    /// Tags the move with who placed it.
    pub fn with_purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(purpose.into());
        self
    }
}

/// The routing table as written in files and etcd (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingTable {
    /// Version, strictly increasing across updates.
    pub version: u64,
    /// Number of slots per region (default [`DEFAULT_SLOTS`]).
    #[serde(default = "default_slots")]
    pub slot_count: u32,
    /// Region of keys whose region is not known.
    pub default_region: CellId,
    /// Regions.
    pub regions: Vec<Region>,
    /// Cells.
    pub cells: Vec<Cell>,
    /// Slot ownership, per region.
    pub slots: Vec<SlotRange>,
    /// Slots being moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Migration>,
}

/// A slot's state in a [`CompiledTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState<'a> {
    /// Owned by one cell.
    Stable(&'a CellId),
    /// Moving between two cells.
    Migrating {
        /// The current owner.
        from: &'a CellId,
        /// The new owner.
        to: &'a CellId,
    },
}

impl RoutingTable {
    /// A one-region table with every slot on `cells` in equal contiguous ranges
    /// (version 1). Handy for tests and single-region services.
    pub fn uniform(region: CellId, cells: Vec<Cell>, slot_count: u32) -> Self {
        let n = cells.len().max(1) as u64;
        let slots = cells
            .iter()
            .enumerate()
            .map(|(i, c)| SlotRange {
                region: region.clone(),
                start: (i as u64 * slot_count as u64 / n) as u32,
                end: (((i as u64 + 1) * slot_count as u64 / n) as u32).saturating_sub(1),
                cell: c.id.clone(),
            })
            .collect();
        RoutingTable {
            version: 1,
            slot_count,
            default_region: region.clone(),
            regions: vec![Region::new(region)],
            cells,
            slots,
            migrations: Vec::new(),
        }
    }

    /// Checks every rule (see [`InvalidTable`]); the version rule is checked by the
    /// store, which knows the table in force.
    pub fn validate(&self) -> Result<(), InvalidTable> {
        Compiled::build(self).map(|_| ())
    }

    /// Validates and indexes the table for lookups.
    pub fn compile(self) -> Result<CompiledTable, InvalidTable> {
        let c = Compiled::build(&self)?;
        let health = HealthFlags::new(self.cells.len());
        let routes = (0..c.owner.len() * c.n_slots as usize).map(|_| AtomicU32::new(0)).collect();
        let t = CompiledTable { table: self, c, health, routes, recompute: Mutex::new(()), health_gen: AtomicU64::new(0) };
        t.recompute_routes();
        Ok(t)
    }

    /// Decodes a table from JSON (does not validate).
    pub fn from_json(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Decodes a table from YAML (does not validate).
    pub fn from_yaml(bytes: &[u8]) -> Result<Self, Error> {
        serde_yaml::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))
    }

    /// Decodes JSON or YAML (JSON when the first non-space byte is `{`).
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Self::from_json(bytes),
            Some(_) => Self::from_yaml(bytes),
            None => Err(Error::Decode("empty table".into())),
        }
    }

    /// Encodes the table as compact JSON (the etcd encoding).
    pub fn to_json(&self) -> Result<Vec<u8>, Error> {
        serde_json::to_vec(self).map_err(|e| Error::Encode(e.to_string()))
    }

    /// Encodes the table as YAML.
    pub fn to_yaml(&self) -> Result<String, Error> {
        serde_yaml::to_string(self).map_err(|e| Error::Encode(e.to_string()))
    }

    /// The cell with this id.
    pub fn cell(&self, id: &CellId) -> Option<&Cell> {
        self.cells.iter().find(|c| &c.id == id)
    }

    /// The cell with this id, mutable.
    pub fn cell_mut(&mut self, id: &CellId) -> Option<&mut Cell> {
        self.cells.iter_mut().find(|c| &c.id == id)
    }
}

/// Indexed form of a table: per region a slot -> cell array.
#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) n_slots: u32,
    /// `n_slots - 1` when `n_slots` is a power of two (the slot is then a mask,
    /// not a division), else `u64::MAX`.
    pub(crate) slot_mask: u64,
    pub(crate) default_region: u16,
    /// Region name -> index.
    pub(crate) region_idx: HashMap<CellId, u16>,
    /// Per region: pinned flag and allowed-region bitmask (self included).
    pub(crate) pinned: Vec<bool>,
    pub(crate) allowed: Vec<u64>,
    /// Per region: owner cell index per slot.
    pub(crate) owner: Vec<Box<[u16]>>,
    /// Per region: migration target per slot (`NONE` when stable).
    pub(crate) moving: Vec<Box<[u16]>>,
    /// Cell id -> index.
    pub(crate) cell_idx: HashMap<CellId, u16>,
    /// Per cell: region index.
    pub(crate) cell_region: Vec<u16>,
    /// Per cell: failover indices.
    pub(crate) failover: Vec<Box<[u16]>>,
    /// Datacenter -> region index.
    pub(crate) datacenters: HashMap<u32, u16>,
}

impl Compiled {
    fn build(t: &RoutingTable) -> Result<Self, InvalidTable> {
        if t.slot_count == 0 || t.slot_count > MAX_SLOTS {
            return Err(InvalidTable::SlotCount(t.slot_count));
        }
        if t.regions.is_empty() {
            return Err(InvalidTable::Empty("no region"));
        }
        if t.cells.is_empty() {
            return Err(InvalidTable::Empty("no cell"));
        }
        if t.regions.len() > MAX_REGIONS {
            return Err(InvalidTable::TooMany("regions"));
        }
        if t.cells.len() > MAX_CELLS {
            return Err(InvalidTable::TooMany("cells"));
        }
        let n = t.slot_count as usize;
        let mut region_idx = HashMap::with_capacity(t.regions.len());
        let mut datacenters = HashMap::new();
        for (i, r) in t.regions.iter().enumerate() {
            if region_idx.insert(r.name.clone(), i as u16).is_some() {
                return Err(InvalidTable::Duplicate(r.name.clone()));
            }
            if let Some(dc) = r.datacenter
                && datacenters.insert(dc, i as u16).is_some()
            {
                return Err(InvalidTable::DuplicateDatacenter(dc));
            }
        }
        let region_of = |name: &CellId| region_idx.get(name).copied().ok_or_else(|| InvalidTable::UnknownRegion(name.clone()));
        let default_region = region_of(&t.default_region)?;
        let mut pinned = Vec::with_capacity(t.regions.len());
        let mut allowed = Vec::with_capacity(t.regions.len());
        for (i, r) in t.regions.iter().enumerate() {
            let mut mask = 1u64 << i;
            for a in &r.allowed_regions {
                mask |= 1u64 << region_of(a)?;
            }
            pinned.push(r.is_pinned());
            allowed.push(if r.is_pinned() { mask } else { u64::MAX });
        }
        let mut cell_idx = HashMap::with_capacity(t.cells.len());
        let mut cell_region = Vec::with_capacity(t.cells.len());
        for (i, c) in t.cells.iter().enumerate() {
            if cell_idx.insert(c.id.clone(), i as u16).is_some() {
                return Err(InvalidTable::Duplicate(c.id.clone()));
            }
            cell_region.push(region_of(&c.region)?);
            if c.endpoints.is_empty() {
                return Err(InvalidTable::BadEndpoint { cell: c.id.clone(), endpoint: String::new() });
            }
            for e in &c.endpoints {
                let ok = e
                    .parse::<http::Uri>()
                    .ok()
                    .is_some_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
                if !ok {
                    return Err(InvalidTable::BadEndpoint { cell: c.id.clone(), endpoint: e.clone() });
                }
            }
        }
        let cell_of = |id: &CellId| cell_idx.get(id).copied().ok_or_else(|| InvalidTable::UnknownCell(id.clone()));
        let mut failover = Vec::with_capacity(t.cells.len());
        for c in &t.cells {
            let mut seen = HashSet::new();
            let mut list = Vec::with_capacity(c.failover.len());
            for f in &c.failover {
                if f == &c.id || !seen.insert(f) {
                    return Err(InvalidTable::BadFailover(c.id.clone()));
                }
                list.push(cell_of(f)?);
            }
            failover.push(list.into_boxed_slice());
        }
        let mut owner: Vec<Box<[u16]>> = (0..t.regions.len()).map(|_| vec![NONE; n].into_boxed_slice()).collect();
        let mut moving: Vec<Box<[u16]>> = (0..t.regions.len()).map(|_| vec![NONE; n].into_boxed_slice()).collect();
        for s in &t.slots {
            let r = region_of(&s.region)? as usize;
            let c = cell_of(&s.cell)?;
            if s.start > s.end || s.end >= t.slot_count {
                return Err(InvalidTable::BadRange { region: s.region.clone(), start: s.start, end: s.end });
            }
            for slot in s.start..=s.end {
                let o = &mut owner[r][slot as usize];
                if *o != NONE {
                    return Err(InvalidTable::SlotTwice { region: s.region.clone(), slot });
                }
                *o = c;
            }
        }
        for (r, map) in owner.iter().enumerate() {
            if let Some(slot) = map.iter().position(|&o| o == NONE) {
                return Err(InvalidTable::SlotUnassigned { region: t.regions[r].name.clone(), slot: slot as u32 });
            }
        }
        for m in &t.migrations {
            let r = region_of(&m.region)? as usize;
            let from = cell_of(&m.from)?;
            let to = cell_of(&m.to)?;
            if m.start > m.end || m.end >= t.slot_count {
                return Err(InvalidTable::BadRange { region: m.region.clone(), start: m.start, end: m.end });
            }
            for slot in m.start..=m.end {
                let s = slot as usize;
                if owner[r][s] != from || from == to || moving[r][s] != NONE {
                    return Err(InvalidTable::BadMigration { region: m.region.clone(), slot });
                }
                moving[r][s] = to;
            }
        }
        // Compliance: every cell that serves a pinned region's slot (owner or
        // migration target), and every failover target of those cells, must be
        // inside the region's allowed set.
        for (r, region) in t.regions.iter().enumerate() {
            if !pinned[r] {
                continue;
            }
            let mut serving = vec![false; t.cells.len()];
            for (&o, &m) in owner[r].iter().zip(moving[r].iter()) {
                serving[o as usize] = true;
                if m != NONE {
                    serving[m as usize] = true;
                }
            }
            for (ci, _) in serving.iter().enumerate().filter(|(_, s)| **s) {
                let check = |c: u16| {
                    let cr = cell_region[c as usize];
                    if allowed[r] & (1u64 << cr) == 0 {
                        let cell = &t.cells[c as usize];
                        return Err(InvalidTable::Compliance {
                            region: region.name.clone(),
                            cell: cell.id.clone(),
                            cell_region: cell.region.clone(),
                        });
                    }
                    Ok(())
                };
                check(ci as u16)?;
                for &f in failover[ci].iter() {
                    check(f)?;
                }
            }
        }
        Ok(Compiled {
            n_slots: t.slot_count,
            slot_mask: if t.slot_count.is_power_of_two() { u64::from(t.slot_count) - 1 } else { u64::MAX },
            default_region,
            region_idx,
            pinned,
            allowed,
            owner,
            moving,
            cell_idx,
            cell_region,
            failover,
            datacenters,
        })
    }
}

/// A validated table, indexed for lookups; what the [`TableStore`](crate::TableStore)
/// publishes and [`resolve`](crate::resolve) reads.
#[derive(Debug)]
pub struct CompiledTable {
    table: RoutingTable,
    pub(crate) c: Compiled,
    pub(crate) health: HealthFlags,
    /// Per region, per slot: the precomputed answer (see [`route`]), region-major
    /// (`region * n_slots + slot`). Recomputed when the health overlay changes,
    /// so a lookup is hash + mask/modulo + one indexed load.
    pub(crate) routes: Box<[AtomicU32]>,
    /// Serializes recomputations of `routes`.
    recompute: Mutex<()>,
    /// Bumped on every health overlay change (weighted pickers resync on it).
    pub(crate) health_gen: AtomicU64,
}

/// Packing of a precomputed route: home cell in bits 0..12, target cell in bits
/// 12..24, kind in bits 24..26 (`MAX_CELLS` = 4096 indices fit in 12 bits).
pub(crate) mod route {
    pub(crate) const HOME: u8 = 0;
    pub(crate) const MIGRATING: u8 = 1;
    pub(crate) const FAILOVER: u8 = 2;
    pub(crate) const NO_TARGET: u8 = 3;

    #[inline]
    pub(crate) fn pack(home: u16, target: u16, kind: u8) -> u32 {
        u32::from(home & 0xfff) | u32::from(target & 0xfff) << 12 | u32::from(kind) << 24
    }

    #[inline]
    pub(crate) fn unpack(e: u32) -> (u16, u16, u8) {
        ((e & 0xfff) as u16, (e >> 12 & 0xfff) as u16, (e >> 24 & 0b11) as u8)
    }
}

/// Per-cell health overlay of a compiled table (cells reported failed by health checks).
#[derive(Debug)]
pub(crate) struct HealthFlags(pub(crate) Box<[AtomicBool]>);

impl HealthFlags {
    pub(crate) fn new(n: usize) -> Self {
        HealthFlags((0..n).map(|_| AtomicBool::new(false)).collect())
    }
    pub(crate) fn failed(&self, i: u16) -> bool {
        self.0.get(i as usize).is_some_and(|f| f.load(Ordering::Relaxed))
    }
}

impl CompiledTable {
    /// The table as written.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.table.version
    }

    /// Slots per region.
    pub fn slot_count(&self) -> u32 {
        self.c.n_slots
    }

    /// The default region.
    pub fn default_region(&self) -> &CellId {
        &self.table.regions[self.c.default_region as usize].name
    }

    /// The cell with this id.
    pub fn cell(&self, id: &CellId) -> Option<&Cell> {
        self.c.cell_idx.get(id).map(|&i| &self.table.cells[i as usize])
    }

    /// The region with this name.
    pub fn region(&self, name: &CellId) -> Option<&Region> {
        self.c.region_idx.get(name).map(|&i| &self.table.regions[i as usize])
    }

    /// The region whose idgen datacenter number is `dc`.
    pub fn region_of_datacenter(&self, dc: u32) -> Option<&Region> {
        self.c.datacenters.get(&dc).map(|&i| &self.table.regions[i as usize])
    }

    /// The state of `slot` in `region`'s map.
    pub fn slot_state(&self, region: &CellId, slot: u32) -> Option<SlotState<'_>> {
        let r = *self.c.region_idx.get(region)? as usize;
        let o = *self.c.owner[r].get(slot as usize)?;
        let m = self.c.moving[r][slot as usize];
        let from = &self.table.cells[o as usize].id;
        Some(if m == NONE { SlotState::Stable(from) } else { SlotState::Migrating { from, to: &self.table.cells[m as usize].id } })
    }

    /// Whether cell `cell` may serve data of region `region` (compliance).
    pub fn allows(&self, region: &CellId, cell: &CellId) -> bool {
        match (self.c.region_idx.get(region), self.c.cell_idx.get(cell)) {
            (Some(&r), Some(&c)) => self.c.allowed[r as usize] & (1u64 << self.c.cell_region[c as usize]) != 0,
            _ => false,
        }
    }

    /// Whether health checks reported `cell` failed (see
    /// [`TableStore::set_cell_failed`](crate::TableStore::set_cell_failed)).
    pub fn is_failed(&self, cell: &CellId) -> bool {
        self.c.cell_idx.get(cell).is_some_and(|&i| self.health.failed(i))
    }

    pub(crate) fn set_failed(&self, cell: &CellId, failed: bool) {
        self.set_failed_many(std::iter::once(cell), failed);
    }

    /// Sets the health flag of `cells`, then recomputes the routes once.
    pub(crate) fn set_failed_many<'a>(&self, cells: impl IntoIterator<Item = &'a CellId>, failed: bool) {
        let _g = self.recompute.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for cell in cells {
            if let Some(f) = self.c.cell_idx.get(cell).and_then(|&i| self.health.0.get(i as usize)) {
                changed |= f.swap(failed, Ordering::Relaxed) != failed;
            }
        }
        if changed {
            self.recompute_locked();
            self.health_gen.fetch_add(1, Ordering::Release);
        }
    }

    fn recompute_routes(&self) {
        let _g = self.recompute.lock().unwrap_or_else(|p| p.into_inner());
        self.recompute_locked();
    }

    /// Recomputes every precomputed route from the slot maps, cell states,
    /// health flags, failover lists and compliance masks.
    fn recompute_locked(&self) {
        let c = &self.c;
        let n = c.n_slots as usize;
        for (r, (owner, moving)) in c.owner.iter().zip(c.moving.iter()).enumerate() {
            let allowed = c.allowed[r];
            let up = |i: u16| {
                self.table.cells[i as usize].state != CellState::Down
                    && !self.health.failed(i)
                    && allowed & (1u64 << c.cell_region[i as usize]) != 0
            };
            for (slot, (&home, &mv)) in owner.iter().zip(moving.iter()).enumerate() {
                let e = if mv != NONE && up(mv) {
                    route::pack(home, mv, route::MIGRATING)
                } else if up(home) {
                    route::pack(home, home, route::HOME)
                } else {
                    match c.failover[home as usize].iter().copied().find(|&f| up(f)) {
                        Some(f) => route::pack(home, f, route::FAILOVER),
                        None => route::pack(home, home, route::NO_TARGET),
                    }
                };
                self.routes[r * n + slot].store(e, Ordering::Relaxed);
            }
        }
    }

    /// The index of cell `id`.
    pub(crate) fn cell_index(&self, id: &CellId) -> Option<u16> {
        self.c.cell_idx.get(id).copied()
    }

    /// The region index of cell index `i`.
    pub(crate) fn cell_region_index(&self, i: u16) -> u16 {
        self.c.cell_region[i as usize]
    }

    /// Cells, in table order (index = cell index).
    pub(crate) fn cells(&self) -> &[Cell] {
        &self.table.cells
    }

    pub(crate) fn failed_at(&self, i: u16) -> bool {
        self.health.failed(i)
    }

    pub(crate) fn region_at(&self, i: u16) -> &Region {
        &self.table.regions[i as usize]
    }
}
