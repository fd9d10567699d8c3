//! `stale_restart`: a cell process killed and started again from an older
//! copy of its replicated state than the one it had (a restore from last
//! night's backup). The executor copies every process's state (the snapshot
//! row and its log, `crdt::SqlStateStore`) at the start of the run and after
//! each fault it starts; a stale restart kills the process, writes the copy
//! from the step before back over its state, and starts it at the heal.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crdt::StateStore;
use crdt::sql_state::SqlStateStore;

use crate::cells::Cells;
use crate::error::DemoError;

/// One process's state as copied: its snapshot (if any) and log.
#[derive(Debug, Clone, Default)]
struct Copy {
    snapshot: Option<Vec<u8>>,
    log: Vec<Vec<u8>>,
}

/// The latest copy of every process's state, by replica name (`cell/index`).
#[derive(Debug, Default)]
pub(crate) struct Backups {
    by_process: BTreeMap<String, Copy>,
}

/// Where a process keeps its state: the store and its key.
async fn store_of(cells: &Mutex<Cells>, name: &str) -> Result<(SqlStateStore, String), DemoError> {
    let loc = cells.lock().map_err(|_| DemoError::Other("cells lock poisoned".into()))?.state_location(name)?;
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&loc.url).await?;
    let dialect = crdt::outbox::Dialect::from_url(&loc.url).map_err(|e| DemoError::Config(e.to_string()))?;
    Ok((SqlStateStore::new(pool, dialect, &loc.table)?, loc.key))
}

impl Backups {
    /// Copies the state of every process of `cells` (a process whose state
    /// cannot be read keeps its previous copy).
    pub(crate) async fn take(&mut self, cells: &Mutex<Cells>) {
        let names: Vec<String> = cells.lock().map(|c| c.processes().into_iter().map(|(n, _, _)| n).collect()).unwrap_or_default();
        for name in names {
            let copy = async {
                let (store, key) = store_of(cells, &name).await?;
                Ok::<_, DemoError>(Copy { snapshot: store.load(&key).await?, log: store.load_log(&key).await? })
            };
            match copy.await {
                Ok(c) => {
                    self.by_process.insert(name, c);
                }
                Err(e) => eprintln!("chaos: state of {name} not copied: {e}"),
            }
        }
    }

    /// Whether a copy of `name`'s state with a snapshot was taken.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.by_process.get(name).is_some_and(|c| c.snapshot.is_some())
    }

    /// Writes the copy of `name` back over its state (the process is down).
    pub(crate) async fn restore(&self, cells: &Mutex<Cells>, name: &str) -> Result<(), DemoError> {
        let copy = self.by_process.get(name).ok_or_else(|| DemoError::Other(format!("no copy of {name}'s state yet")))?;
        let (store, key) = store_of(cells, name).await?;
        match &copy.snapshot {
            Some(s) => store.save(&key, s).await?,
            None => return Err(DemoError::Other(format!("the copy of {name}'s state has no snapshot"))),
        }
        store.append(&key, &copy.log).await?;
        Ok(())
    }
}
