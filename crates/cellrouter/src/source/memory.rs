//! [`MemorySource`]: tables pushed by code.

use tokio::sync::mpsc;

use super::TableSource;
use crate::store::TableStore;
use crate::table::RoutingTable;

/// A source fed through a [`MemoryWriter`] (tests, admin endpoints).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use cellrouter::source::{MemorySource, TableSource};
/// use cellrouter::{Cell, RoutingTable, TableStore};
/// use cellctx::CellId;
/// let id = |s: &str| CellId::new(s).unwrap();
/// let (source, writer) = MemorySource::new();
/// let store = TableStore::new();
/// let mut changes = store.subscribe();
/// tokio::spawn(source.run(store.clone()));
/// writer.push(RoutingTable::uniform(id("eu"), vec![Cell::new(id("a"), id("eu"), "http://127.0.0.1:1")], 128));
/// changes.changed().await.unwrap();
/// assert_eq!(store.version(), Some(1));
/// # }
/// ```
#[derive(Debug)]
pub struct MemorySource {
    rx: mpsc::UnboundedReceiver<RoutingTable>,
}

/// The writing end of a [`MemorySource`].
#[derive(Debug, Clone)]
pub struct MemoryWriter {
    tx: mpsc::UnboundedSender<RoutingTable>,
}

impl MemorySource {
    /// A source and its writer.
    pub fn new() -> (Self, MemoryWriter) {
        let (tx, rx) = mpsc::unbounded_channel();
        (MemorySource { rx }, MemoryWriter { tx })
    }
}

impl MemoryWriter {
    /// Pushes a table; false when the source has stopped.
    pub fn push(&self, table: RoutingTable) -> bool {
        self.tx.send(table).is_ok()
    }
}

impl TableSource for MemorySource {
    async fn run(mut self, store: TableStore) {
        while let Some(t) = self.rx.recv().await {
            let _ = super::apply(&store, t, "memory");
        }
    }
}
