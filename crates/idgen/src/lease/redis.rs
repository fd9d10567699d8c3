//! Worker leases in Redis: `SET lease token NX PX ttl`, renewed with `PEXPIRE`
//! by the holder only, and a persistent high-water-mark key beside it. Each
//! step is one Lua script, so ownership check and write are atomic.
//!
//! Keys, for prefix `p`, datacenter `d`, worker `w` (one hash slot per worker):
//! `p:{d:w}:lease` (value: holder token, with a TTL) and `p:{d:w}:hwm`
//! (decimal Unix ms, no TTL).

use std::sync::Arc;

use redis::Script;
use redis::aio::ConnectionManager;

use super::{Acquired, Backend, LeaseOptions, WorkerLease, token};
use crate::clock::Clock;
use crate::Error;

/// KEYS: lease, hwm. ARGV: token, ttl_ms, now_ms.
/// Returns -1 when taken, else the prior high-water mark; records the ceiling.
const ACQUIRE: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
local raw = redis.call('GET', KEYS[2])
local prior = 0
if raw then
  prior = tonumber(raw)
  if prior == nil then
    redis.call('DEL', KEYS[1])
    return redis.error_reply('corrupt idgen high-water mark')
  end
end
local floor = prior + 1
local now = tonumber(ARGV[3])
if now > floor then floor = now end
redis.call('SET', KEYS[2], string.format('%d', floor + tonumber(ARGV[2])))
return prior
";

/// KEYS: lease, hwm. ARGV: token, ttl_ms, ceiling_ms. 1 renewed, 0 not ours.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local h = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
if tonumber(ARGV[3]) > h then redis.call('SET', KEYS[2], ARGV[3]) end
return 1
";

/// KEYS: lease, hwm. ARGV: token, record_ms. 1 released, 0 not ours.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
";

pub(crate) struct RedisBackend {
    conn: ConnectionManager,
    prefix: String,
    datacenter: u32,
    token: String,
    ttl_ms: u64,
    clock: Arc<dyn Clock>,
    acquire: Script,
    renew: Script,
    release: Script,
}

impl RedisBackend {
    fn keys(&self, worker: u32) -> (String, String) {
        let base = format!("{}:{{{}:{}}}", self.prefix, self.datacenter, worker);
        (format!("{base}:lease"), format!("{base}:hwm"))
    }
}

impl Backend for RedisBackend {
    async fn acquire(&mut self, worker: u32) -> Result<Option<Acquired>, Error> {
        let (lease, hwm) = self.keys(worker);
        let now = self.clock.now_ms();
        let prior: i64 = self
            .acquire
            .key(lease)
            .key(hwm)
            .arg(&self.token)
            .arg(self.ttl_ms)
            .arg(now)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(u64::try_from(prior).ok().map(|prior_ms| Acquired { prior_ms, valid_from_ms: now }))
    }

    async fn renew(&mut self, worker: u32, ceiling_ms: u64) -> Result<bool, Error> {
        let (lease, hwm) = self.keys(worker);
        let ok: i64 = self
            .renew
            .key(lease)
            .key(hwm)
            .arg(&self.token)
            .arg(self.ttl_ms)
            .arg(ceiling_ms)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(ok == 1)
    }

    async fn release(&mut self, worker: u32, record_ms: u64) -> Result<(), Error> {
        let (lease, hwm) = self.keys(worker);
        let _: i64 = self
            .release
            .key(lease)
            .key(hwm)
            .arg(&self.token)
            .arg(record_ms)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(())
    }

    async fn give_up(&mut self) {}
}

impl WorkerLease {
    /// Leases a free worker id of `opts`' datacenter from Redis.
    ///
    /// Errors with [`Error::NoWorkerAvailable`] when every worker id is held,
    /// [`Error::Redis`] when Redis fails, [`Error::InvalidLease`] for a TTL
    /// under 300 ms. Must be called inside a tokio runtime (the renewal task
    /// is spawned on it).
    pub async fn redis(conn: ConnectionManager, opts: LeaseOptions) -> Result<WorkerLease, Error> {
        let ttl_ms = opts.ttl_ms()?;
        let backend = RedisBackend {
            conn,
            prefix: opts.prefix.clone(),
            datacenter: opts.datacenter,
            token: token(),
            ttl_ms,
            clock: Arc::clone(&opts.clock),
            acquire: Script::new(ACQUIRE),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
        };
        WorkerLease::acquire_with(backend, opts).await
    }
}
