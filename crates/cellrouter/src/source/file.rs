//! [`FileSource`]: a table file, re-read when it changes.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use super::TableSource;
use crate::error::Error;
use crate::store::TableStore;

/// A JSON or YAML table file, polled for changes (modification time and size)
/// every `interval` (default 1 s). A file that fails to read, decode or validate
/// is counted (`cellrouter.source.errors`, `source = file`) and the table in force
/// stays.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    interval: Duration,
}

impl FileSource {
    /// A source for `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into(), interval: Duration::from_secs(1) }
    }

    /// Sets the polling interval (at least 10 ms).
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// Reads the file once and stores it.
    pub fn load_into(&self, store: &TableStore) -> Result<bool, Error> {
        match super::read_file(&self.path) {
            Ok(t) => super::apply(store, t, "file"),
            Err(e) => {
                store.source_error("file");
                Err(e)
            }
        }
    }

    fn stamp(&self) -> Option<(SystemTime, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((m.modified().ok()?, m.len()))
    }
}

impl TableSource for FileSource {
    async fn run(self, store: TableStore) {
        let mut last = None;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stamp = self.stamp();
            if stamp.is_some() && stamp == last {
                store.mark_fresh();
                continue;
            }
            last = stamp;
            if let Err(e) = self.load_into(&store) {
                tracing::warn!(path = %self.path.display(), error = %e, "routing table file not applied");
            }
        }
    }
}
