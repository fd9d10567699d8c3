//! Table sources: where routing tables come from. Each one feeds a
//! [`TableStore`]; the store validates and rejects bad pushes, so a source never
//! replaces a good table with a bad one.
//!
//! - [`MemorySource`]: tables pushed by code (tests, admin endpoints).
//! - [`FileSource`]: a JSON or YAML file, re-read when it changes.
//! - `EtcdSource` (feature `etcd`): a watched etcd key, with reconnects,
//!   compaction recovery and a last-known-good file.

use std::future::Future;
use std::path::Path;

use crate::error::Error;
use crate::store::TableStore;
use crate::table::RoutingTable;

#[cfg(feature = "etcd")]
mod etcd;
mod file;
mod memory;

#[cfg(feature = "etcd")]
pub use etcd::{DEFAULT_ETCD_KEY, EtcdSource, publish};
pub use file::FileSource;
pub use memory::{MemorySource, MemoryWriter};

/// A source of routing tables.
pub trait TableSource: Send + 'static {
    /// Feeds `store` until the source ends (or forever); run it in its own task
    /// (`tokio::spawn(source.run(store))`).
    fn run(self, store: TableStore) -> impl Future<Output = ()> + Send;
}

/// Encodes a table as stored in files and etcd (compact JSON).
pub fn encode(table: &RoutingTable) -> Result<Vec<u8>, Error> {
    table.to_json()
}

/// Decodes a table from JSON or YAML bytes; an empty value is an error.
pub fn decode(bytes: &[u8]) -> Result<RoutingTable, Error> {
    RoutingTable::decode(bytes)
}

/// Writes `table` to `path` atomically (temporary file + rename).
pub fn persist(table: &RoutingTable, path: &Path) -> Result<(), Error> {
    let bytes = encode(table)?;
    let tmp = path.with_extension("tmp");
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Reads a table written by [`persist`] (or any JSON/YAML table file).
pub fn read_file(path: &Path) -> Result<RoutingTable, Error> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    decode(&bytes)
}

/// Applies a decoded table to the store, treating a re-read of the table in
/// force (same version, same content) as a confirmation rather than a rejection.
pub(crate) fn apply(store: &TableStore, table: RoutingTable, source: &'static str) -> Result<bool, Error> {
    if let Some(cur) = store.load().as_ref()
        && cur.version() == table.version
        && cur.table() == &table
    {
        store.mark_fresh();
        return Ok(false);
    }
    match store.store(table) {
        Ok(_) => Ok(true),
        Err(e) => {
            store.source_error(source);
            Err(e)
        }
    }
}
