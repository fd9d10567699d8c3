//! Where a replica's state is persisted so a restarted cell recovers.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use cellctx::CellId;
use parking_lot::Mutex;

use crate::error::CrdtError;

/// Persistence of a replica's encoded state ([`Replica::snapshot`](crate::Replica::snapshot)).
pub trait StateStore: Send + Sync + 'static {
    /// The last saved state of `cell`, if any.
    fn load(&self, cell: &CellId) -> impl Future<Output = Result<Option<Vec<u8>>, CrdtError>> + Send;
    /// Saves the state of `cell`.
    fn save(&self, cell: &CellId, state: &[u8]) -> impl Future<Output = Result<(), CrdtError>> + Send;
}

/// An in-process [`StateStore`] (tests, single-process demos). Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct MemoryStateStore {
    map: Arc<Mutex<HashMap<CellId, Vec<u8>>>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateStore for MemoryStateStore {
    async fn load(&self, cell: &CellId) -> Result<Option<Vec<u8>>, CrdtError> {
        Ok(self.map.lock().get(cell).cloned())
    }

    async fn save(&self, cell: &CellId, state: &[u8]) -> Result<(), CrdtError> {
        self.map.lock().insert(cell.clone(), state.to_vec());
        Ok(())
    }
}
