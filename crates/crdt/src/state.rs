//! Where a replica's state is persisted so a restarted cell recovers: a
//! snapshot plus a log of the changes made since it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::CrdtError;

/// Persistence of a replica's state: a snapshot ([`Replica::snapshot`](crate::Replica::snapshot))
/// and a log of encoded changes appended after it, under the replica's
/// [`state_key`](crate::Replica::state_key) (one per writer: two processes of
/// a cell must not share a snapshot).
///
/// The replicator appends what each batch of messages changed (a few bytes
/// per change, whatever the size of the state) and only now and then writes a
/// compacting snapshot; a restore loads the snapshot and replays the log
/// ([`Replica::restore_from`](crate::Replica::restore_from)).
pub trait StateStore: Send + Sync + 'static {
    /// The last saved snapshot under `key`, if any.
    fn load(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, CrdtError>> + Send;
    /// Saves a snapshot under `key` and, in the same write, empties its log (the
    /// snapshot holds everything the log held).
    fn save(&self, key: &str, state: &[u8]) -> impl Future<Output = Result<(), CrdtError>> + Send;
    /// Appends `records` to `key`'s log, in order; durable when it returns.
    fn append(&self, key: &str, records: &[Vec<u8>]) -> impl Future<Output = Result<(), CrdtError>> + Send;
    /// The records appended since the last [`save`](Self::save), in order.
    fn load_log(&self, key: &str) -> impl Future<Output = Result<Vec<Vec<u8>>, CrdtError>> + Send;
}

/// One cell's persisted state in a [`MemoryStateStore`].
#[derive(Debug, Clone, Default)]
struct Saved {
    snapshot: Option<Vec<u8>>,
    log: Vec<Vec<u8>>,
}

/// An in-process [`StateStore`] (tests, single-process demos). Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct MemoryStateStore {
    map: Arc<Mutex<HashMap<String, Saved>>>,
}

impl MemoryStateStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl StateStore for MemoryStateStore {
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CrdtError> {
        Ok(self.map.lock().get(key).and_then(|s| s.snapshot.clone()))
    }

    async fn save(&self, key: &str, state: &[u8]) -> Result<(), CrdtError> {
        self.map.lock().insert(key.to_string(), Saved { snapshot: Some(state.to_vec()), log: Vec::new() });
        Ok(())
    }

    async fn append(&self, key: &str, records: &[Vec<u8>]) -> Result<(), CrdtError> {
        self.map.lock().entry(key.to_string()).or_default().log.extend(records.iter().cloned());
        Ok(())
    }

    async fn load_log(&self, key: &str) -> Result<Vec<Vec<u8>>, CrdtError> {
        Ok(self.map.lock().get(key).map(|s| s.log.clone()).unwrap_or_default())
    }
}
