//! The ids a cell process issues, and (in the fault campaign) their log: with
//! `DEMO_ISSUED_IDS` naming a directory, each process appends every id it
//! issues to its own file there (`<cell>-<slot>-<pid>.ids`, one decimal id
//! per line, written with one `write` before the id is used, so a `kill -9`
//! loses no id that reached a response or a row). The campaign's checker
//! reads the files: every id unique across every process that ever ran, and
//! increasing within each process.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::DemoError;

/// The environment variable naming the log directory.
pub(crate) const ENV: &str = "DEMO_ISSUED_IDS";

/// The log directory of a run (the campaign sets [`ENV`] to it).
pub(crate) fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("issued")
}

/// A process's generator and, when [`ENV`] is set, its log. Clones share both.
#[derive(Debug, Clone)]
pub(crate) struct IssuedIds {
    ids: idgen::Generator,
    /// Held from issuing an id to its line, so the file's order is the
    /// issue order (without it, two writes racing log their ids swapped).
    log: Option<Arc<tokio::sync::Mutex<File>>>,
}

impl IssuedIds {
    /// Issues from `ids`; logs to `$DEMO_ISSUED_IDS/<cell>-<slot>-<pid>.ids` when set.
    pub(crate) fn open(ids: idgen::Generator, cell: &str, slot: u32) -> Result<Self, DemoError> {
        let log = match std::env::var_os(ENV) {
            Some(d) if !d.is_empty() => {
                let d = PathBuf::from(d);
                std::fs::create_dir_all(&d)?;
                let path = d.join(format!("{cell}-{slot}-{}.ids", std::process::id()));
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                Some(Arc::new(tokio::sync::Mutex::new(file)))
            }
            _ => None,
        };
        Ok(IssuedIds { ids, log })
    }

    /// The next id, awaiting the clock rather than blocking the runtime
    /// when a millisecond is used up or the clock stepped back; logged
    /// before it is returned.
    pub(crate) async fn next(&self) -> Result<idgen::Id, DemoError> {
        let Some(log) = &self.log else {
            return Ok(self.ids.next_id_async().await?);
        };
        let mut f = log.lock().await;
        let id = self.ids.next_id_async().await?;
        // one short append to the page cache: survives a kill -9 of this process
        f.write_all(format!("{id}\n").as_bytes())?;
        Ok(id)
    }

    /// The worker id.
    pub(crate) fn worker(&self) -> u32 {
        self.ids.worker()
    }
}

/// Every log of `dir`, by file name: the ids in the order the process issued
/// them (a torn last line, from a kill mid-write, is skipped).
pub(crate) fn read(dir: &Path) -> Result<BTreeMap<String, Vec<u64>>, DemoError> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("ids") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        // only whole lines: a line without its newline may be a torn write
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        let ids = whole.lines().filter_map(|l| l.parse().ok()).collect();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        out.insert(name, ids);
    }
    Ok(out)
}
