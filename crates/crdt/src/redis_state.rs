//! [`RedisStateStore`] (feature `redis`): replica state in Redis.

use cellctx::CellId;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::error::CrdtError;
use crate::state::StateStore;

/// Saves each cell's encoded replica state under `{prefix}:{cell}`.
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

    /// The key of `cell`'s state.
    pub fn key(&self, cell: &CellId) -> String {
        format!("{}:{}", self.prefix, cell)
    }
}

impl StateStore for RedisStateStore {
    async fn load(&self, cell: &CellId) -> Result<Option<Vec<u8>>, CrdtError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.key(cell)).await?)
    }

    async fn save(&self, cell: &CellId, state: &[u8]) -> Result<(), CrdtError> {
        let mut conn = self.conn.clone();
        let () = conn.set(self.key(cell), state).await?;
        Ok(())
    }
}
