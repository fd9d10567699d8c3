//! [`RedisStateStore`] (feature `redis`): replica state in Redis.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::error::CrdtError;
use crate::state::StateStore;

/// Saves each replica's encoded snapshot under `{prefix}:{state key}` and its
/// log of changes since in the list `{prefix}:{state key}:log`.
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
    /// Connects to `url`; keys are `{prefix}:{state key}`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CrdtError> {
        let client = redis::Client::open(url)?;
        let conn = ConnectionManager::new(client).await?;
        Ok(RedisStateStore { conn, prefix: prefix.to_string() })
    }

    /// The Redis key of the snapshot under state key `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}:{}", self.prefix, key)
    }

    /// The Redis key of the log (a list) under state key `key`.
    pub fn log_key(&self, key: &str) -> String {
        format!("{}:{}:log", self.prefix, key)
    }

    /// Deletes the snapshot and the log saved under state key `key` (a
    /// replica retired for good).
    pub async fn remove(&self, key: &str) -> Result<(), CrdtError> {
        let mut conn = self.conn.clone();
        let _: u64 = conn.del(&[self.key(key), self.log_key(key)]).await?;
        Ok(())
    }
}

impl StateStore for RedisStateStore {
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CrdtError> {
        let mut conn = self.conn.clone();
        Ok(conn.get(self.key(key)).await?)
    }

    async fn save(&self, key: &str, state: &[u8]) -> Result<(), CrdtError> {
        let mut conn = self.conn.clone();
        let () = redis::pipe()
            .atomic()
            .set(self.key(key), state)
            .ignore()
            .del(self.log_key(key))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn append(&self, key: &str, records: &[Vec<u8>]) -> Result<(), CrdtError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let _: u64 = conn.rpush(self.log_key(key), records).await?;
        Ok(())
    }

    async fn load_log(&self, key: &str) -> Result<Vec<Vec<u8>>, CrdtError> {
        let mut conn = self.conn.clone();
        Ok(conn.lrange(self.log_key(key), 0, -1).await?)
    }
}
