//! [`RedisStateStore`] (feature `redis`): replica state in Redis.

use cellctx::CellId;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::error::CrdtError;
use crate::state::StateStore;

/// Saves each cell's encoded replica snapshot under `{prefix}:{cell}` and its
/// log of changes since in the list `{prefix}:{cell}:log`.
#[derive(Clone)]
pub struct RedisStateStore {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStateStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisStateStore {
    /// Connects to `url`; keys are `{prefix}:{cell}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CrdtError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(RedisStateStore { conn, prefix: prefix.to_string() })
    }

    /// The key of `cell`'s snapshot.
    pub fn key(&self, cell: &CellId) -> String {
        format!("{}:{}", self.prefix, cell)
    }

    /// The key of `cell`'s log (a list).
    pub fn log_key(&self, cell: &CellId) -> String {
        format!("{}:{}:log", self.prefix, cell)
    }
}

impl StateStore for RedisStateStore {
    async fn load(&self, cell: &CellId) -> Result<Option<Vec<u8>>, CrdtError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.key(cell)).await?)
    }

    async fn save(&self, cell: &CellId, state: &[u8]) -> Result<(), CrdtError> {
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .atomic()
            .set(self.key(cell), state)
            .ignore()
            .del(self.log_key(cell))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn append(&self, cell: &CellId, records: &[Vec<u8>]) -> Result<(), CrdtError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: u64 = conn.rpush(self.log_key(cell), records).await?;
        Ok(())
    }

    async fn load_log(&self, cell: &CellId) -> Result<Vec<Vec<u8>>, CrdtError> {
        let mut conn = self.conn.clone();
        Ok(conn.lrange(self.log_key(cell), 0, -1).await?)
    }
}
