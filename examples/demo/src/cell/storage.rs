//! A cell's storage: cell-local SQL (SQLite file by default, MySQL/MariaDB or
//! Postgres by URL) holding the business rows and the crdt outbox in one
//! transaction, and a file that persists the replica's state for restarts.

use std::path::PathBuf;

use cellctx::CellId;
use crdt::outbox::Outbox;
use crdt::{Event, Replica, StateStore};
use sqlx::Row;

use crate::error::DemoError;

/// The cell's SQL tables.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    pub(crate) outbox: Outbox,
    pub(crate) likes: String,
    pub(crate) comments: String,
}

impl Storage {
    /// Connects and creates the tables (`{prefix}likes`, `{prefix}comments`,
    /// `{prefix}outbox`).
    pub(crate) async fn open(url: &str, prefix: &str) -> Result<Self, DemoError> {
        let outbox = Outbox::connect(url, &format!("{prefix}outbox")).await?;
        if url.starts_with("sqlite:") {
            // readers (relay) do not block the writer
            sqlx::query("PRAGMA journal_mode=WAL").execute(outbox.pool()).await?;
        }
        outbox.migrate().await?;
        let s = Storage { outbox, likes: format!("{prefix}likes"), comments: format!("{prefix}comments") };
        let ddl = [
            format!("CREATE TABLE IF NOT EXISTS {} (id VARCHAR(32) PRIMARY KEY, post VARCHAR(128) NOT NULL, user_id VARCHAR(128) NOT NULL)", s.likes),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (id VARCHAR(32) PRIMARY KEY, post VARCHAR(128) NOT NULL, user_id VARCHAR(128) NOT NULL, body TEXT NOT NULL)",
                s.comments
            ),
        ];
        for q in ddl {
            sqlx::query(&q).execute(s.outbox.pool()).await?;
        }
        Ok(s)
    }

    /// Placeholders of the dialect (`?` or `$n`).
    pub(crate) fn ph(&self, n: usize) -> String {
        let pg = self.outbox.dialect() == crdt::outbox::Dialect::Postgres;
        (1..=n).map(|i| if pg { format!("${i}") } else { "?".into() }).collect::<Vec<_>>().join(", ")
    }

    /// Re-applies every change this cell ever wrote (its whole outbox, sent or
    /// not) to `replica`: a restarted cell must know its own past writes before
    /// it takes new ones (a counter delta carries the cell's running total).
    /// Already-known changes are skipped as duplicates.
    pub(crate) async fn replay_own_changes(&self, replica: &Replica) -> Result<u64, DemoError> {
        let sql = format!("SELECT id, aggregateid, type, payload, hlc FROM {} ORDER BY id", self.outbox.table());
        let rows = sqlx::query(&sql).fetch_all(self.outbox.pool()).await?;
        let mut applied = 0;
        for r in rows {
            let ev = Event {
                origin: replica.cell().clone(),
                seq: u64::try_from(r.try_get::<i64, _>("id")?).unwrap_or(0),
                ts: crdt::Timestamp(u64::try_from(r.try_get::<i64, _>("hlc")?).unwrap_or(0)),
                aggregate_id: r.try_get("aggregateid")?,
                event_type: r.try_get("type")?,
                payload: r.try_get("payload")?,
            };
            if replica.apply_event(&ev).await? == crdt::Applied::Applied {
                applied += 1;
            }
        }
        Ok(applied)
    }
}

/// The replica state in a file (written to a temporary file, then renamed).
#[derive(Debug, Clone)]
pub(crate) struct FileStateStore {
    dir: PathBuf,
}

impl FileStateStore {
    pub(crate) fn new(dir: PathBuf) -> Self {
        FileStateStore { dir }
    }

    fn path(&self, cell: &CellId) -> PathBuf {
        self.dir.join(format!("{cell}.replica"))
    }
}

impl StateStore for FileStateStore {
    async fn load(&self, cell: &CellId) -> Result<Option<Vec<u8>>, crdt::CrdtError> {
        match tokio::fs::read(self.path(cell)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(crdt::CrdtError::Config(format!("replica state: {e}"))),
        }
    }

    async fn save(&self, cell: &CellId, state: &[u8]) -> Result<(), crdt::CrdtError> {
        let path = self.path(cell);
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| crdt::CrdtError::Config(format!("replica state: {e}"));
        tokio::fs::write(&tmp, state).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)
    }
}
