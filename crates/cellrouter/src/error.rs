//! The crate's error types: [`InvalidTable`] (a table that does not validate),
//! [`ResolveError`] (a key that cannot be routed) and [`Error`] (everything a
//! table store or source can report).

use cellctx::CellId;

/// Why a routing table was refused. The previous table stays in force.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTable {
    /// The slot count is 0 or above [`crate::MAX_SLOTS`].
    #[error("slot count {0} out of range 1..={max}", max = crate::MAX_SLOTS)]
    SlotCount(u32),
    /// The table has no region or no cell.
    #[error("the table is empty: {0}")]
    Empty(&'static str),
    /// Two cells (or two regions) have the same id.
    #[error("duplicate id {0}")]
    Duplicate(CellId),
    /// More regions or cells than the compiled form can index.
    #[error("too many {0}")]
    TooMany(&'static str),
    /// A cell, slot range or region names a region that does not exist.
    #[error("unknown region {0}")]
    UnknownRegion(CellId),
    /// A slot range, migration or failover list names a cell that does not exist.
    #[error("unknown cell {0}")]
    UnknownCell(CellId),
    /// A cell has no endpoint, or an endpoint is not an absolute http(s) URL.
    #[error("cell {cell}: bad endpoint {endpoint:?}")]
    BadEndpoint {
        /// The cell.
        cell: CellId,
        /// The endpoint as written.
        endpoint: String,
    },
    /// A slot range is empty, reversed or beyond the slot count.
    #[error("region {region}: bad slot range {start}..={end}")]
    BadRange {
        /// The region of the range.
        region: CellId,
        /// First slot.
        start: u32,
        /// Last slot.
        end: u32,
    },
    /// A slot is assigned twice in one region.
    #[error("region {region}: slot {slot} assigned twice")]
    SlotTwice {
        /// The region.
        region: CellId,
        /// The slot.
        slot: u32,
    },
    /// A slot of a region is not assigned to any cell.
    #[error("region {region}: slot {slot} unassigned")]
    SlotUnassigned {
        /// The region.
        region: CellId,
        /// The first unassigned slot.
        slot: u32,
    },
    /// A migration does not start from the slot's current owner, or migrates a
    /// slot to its own owner, or migrates a slot twice.
    #[error("region {region}: bad migration of slot {slot}")]
    BadMigration {
        /// The region.
        region: CellId,
        /// The slot.
        slot: u32,
    },
    /// A compliance-pinned region's slot, migration target or failover target
    /// lies outside its allowed regions.
    #[error("region {region} is pinned but cell {cell} (region {cell_region}) is outside its allowed regions")]
    Compliance {
        /// The pinned region.
        region: CellId,
        /// The offending cell.
        cell: CellId,
        /// That cell's region.
        cell_region: CellId,
    },
    /// A cell lists itself (or a duplicate) in its failover list.
    #[error("cell {0}: bad failover list")]
    BadFailover(CellId),
    /// Two regions claim the same idgen datacenter number.
    #[error("datacenter {0} claimed by two regions")]
    DuplicateDatacenter(u32),
    /// The new table's version is not above the one in force.
    #[error("version {offered} is not above the current version {current}")]
    StaleVersion {
        /// The version in force.
        current: u64,
        /// The version offered.
        offered: u64,
    },
}

/// Why a routing key could not be routed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The key's region is not in the table.
    #[error("unknown region {0}")]
    UnknownRegion(CellId),
    /// The home cell is down and no failover target may serve the key: none is
    /// up, or (for a compliance-pinned region) none is inside the allowed regions.
    #[error("no cell may serve slot {slot} (home {home}, pinned: {pinned})")]
    NoTarget {
        /// The key's slot.
        slot: u32,
        /// The home cell.
        home: CellId,
        /// Whether the key's region is compliance-pinned.
        pinned: bool,
    },
    /// No routing table has been loaded yet.
    #[error("no routing table loaded")]
    NoTable,
}

/// Everything a table store or table source can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The table does not validate (or its version does not go up).
    #[error("invalid routing table: {0}")]
    Invalid(#[from] InvalidTable),
    /// The table could not be decoded (JSON or YAML).
    #[error("cannot decode routing table: {0}")]
    Decode(String),
    /// The table could not be encoded.
    #[error("cannot encode routing table: {0}")]
    Encode(String),
    /// Reading or writing a table file failed.
    #[error("table file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The etcd client failed.
    #[cfg(feature = "etcd")]
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}
