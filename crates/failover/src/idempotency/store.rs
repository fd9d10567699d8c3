//! [`IdempotencyStore`]: the table of answered idempotency keys in a cell's
//! own database (MySQL/MariaDB, PostgreSQL, SQLite through `sqlx`'s `Any`
//! driver and `sqldialect`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::audit::epoch_ms;
use crate::error::Error;

use sqldialect::Dialect;

/// The longest table name.
const MAX_TABLE_LEN: usize = 64;
/// The longest key (fits a MySQL `VARCHAR` primary key in utf8mb4).
pub const MAX_KEY_LEN: usize = 191;

/// A response kept for a key, replayed to its duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    /// The HTTP status.
    pub status: u16,
    /// The `content-type`, if any.
    pub content_type: Option<String>,
    /// The body.
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Counts {
    replayed: AtomicU64,
    recorded: AtomicU64,
}

/// What an [`IdempotencyStore`] did since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdempotencyStats {
    /// Duplicates answered with the stored response (writes not applied again).
    pub replayed: u64,
    /// Keys recorded.
    pub recorded: u64,
}

/// The idempotency table: one row per answered key.
///
/// ```sql
/// CREATE TABLE idempotency (
///   idem_key VARCHAR(191) PRIMARY KEY,
///   status INT NOT NULL, content_type VARCHAR(255) NULL, body BLOB NOT NULL,
///   created_at_ms BIGINT NOT NULL
/// )
/// ```
///
/// Record a write's key **in the write's own transaction**
/// ([`record_in`](Self::record_in)): then the key exists exactly when the
/// write does, and a duplicate that arrives after the connection broke
/// finds it. [`IdempotencyLayer`](super::IdempotencyLayer) records the
/// response itself (after the handler) for handlers that do not; that second
/// write can be lost if the process dies between the two.
#[derive(Debug, Clone)]
pub struct IdempotencyStore {
    pool: AnyPool,
    dialect: Dialect,
    table: Arc<str>,
    counts: Arc<Counts>,
}

fn config_error(e: sqldialect::Error) -> Error {
    Error::Config(format!("idempotency store: {e}"))
}

impl IdempotencyStore {
    /// Connects to `url` and creates `table` if missing.
    pub async fn connect(url: &str, table: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url).map_err(config_error)?;
        let pool = AnyPoolOptions::new().max_connections(4).connect(url).await?;
        let s = Self::try_new(pool, dialect, table)?;
        s.ensure_table().await?;
        Ok(s)
    }

    /// A store on an existing pool (the cell's own); `table` must be a plain
    /// SQL identifier. Call [`ensure_table`](Self::ensure_table) once.
    pub fn try_new(pool: AnyPool, dialect: Dialect, table: &str) -> Result<Self, Error> {
        sqldialect::check_identifier(table, MAX_TABLE_LEN).map_err(config_error)?;
        Ok(IdempotencyStore { pool, dialect, table: table.into(), counts: Arc::default() })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if missing.
    pub async fn ensure_table(&self) -> Result<(), Error> {
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (idem_key VARCHAR({MAX_KEY_LEN}) NOT NULL PRIMARY KEY, status INT NOT NULL, \
             content_type VARCHAR(255) NULL, body {} NOT NULL, created_at_ms BIGINT NOT NULL)",
            self.table,
            self.dialect.blob_type()
        );
        sqlx::query(&ddl).execute(&self.pool).await?;
        Ok(())
    }

    /// The response stored for `key`.
    pub async fn lookup(&self, key: &str) -> Result<Option<StoredResponse>, Error> {
        let sql = format!("SELECT status, content_type, body FROM {} WHERE idem_key = {}", self.table, self.dialect.placeholder(1));
        let row = sqlx::query(&sql).bind(key.to_string()).fetch_optional(&self.pool).await?;
        row.map(|r| {
            Ok(StoredResponse {
                status: u16::try_from(r.try_get::<i32, _>(0)?).unwrap_or(500),
                content_type: r.try_get(1)?,
                body: r.try_get(2)?,
            })
        })
        .transpose()
    }

    fn insert_sql(&self) -> String {
        format!(
            "INSERT INTO {} (idem_key, status, content_type, body, created_at_ms) VALUES ({})",
            self.table,
            self.dialect.placeholders(5)
        )
    }

    fn check_key(key: &str) -> Result<(), Error> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(Error::Config(format!("idempotency key of {} bytes (1..={MAX_KEY_LEN})", key.len())));
        }
        Ok(())
    }

    /// Records `key`'s response on `conn`, typically inside the transaction
    /// that applies the write, so both commit or neither. Fails on a key
    /// already recorded (the caller's transaction then rolls back: a
    /// concurrent duplicate won).
    pub async fn record_in(&self, conn: &mut AnyConnection, key: &str, resp: &StoredResponse) -> Result<(), Error> {
        Self::check_key(key)?;
        let sql = self.insert_sql();
        sqlx::query(&sql)
            .bind(key.to_string())
            .bind(i32::from(resp.status))
            .bind(resp.content_type.clone())
            .bind(resp.body.clone())
            .bind(epoch_ms(SystemTime::now()) as i64)
            .execute(conn)
            .await?;
        self.counts.recorded.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Records `key`'s response on the store's own pool; `false` when the key
    /// was already recorded.
    pub async fn record(&self, key: &str, resp: &StoredResponse) -> Result<bool, Error> {
        Self::check_key(key)?;
        let mut conn = self.pool.acquire().await?;
        match self.record_in(&mut conn, key, resp).await {
            Ok(()) => Ok(true),
            Err(e) => match self.lookup(key).await? {
                Some(_) => Ok(false),
                None => Err(e),
            },
        }
    }

    /// Deletes keys recorded more than `age` ago (duplicates older than a
    /// client's retry horizon cannot come); the number deleted.
    pub async fn prune(&self, age: Duration) -> Result<u64, Error> {
        let cutoff = epoch_ms(SystemTime::now()).saturating_sub(age.as_millis() as u64);
        let sql = format!("DELETE FROM {} WHERE created_at_ms < {}", self.table, self.dialect.placeholder(1));
        Ok(sqlx::query(&sql).bind(cutoff as i64).execute(&self.pool).await?.rows_affected())
    }

    /// Counts a duplicate answered from the store.
    pub(crate) fn count_replay(&self) {
        self.counts.replayed.fetch_add(1, Ordering::Relaxed);
    }

    /// What the store did since it was made.
    pub fn stats(&self) -> IdempotencyStats {
        IdempotencyStats {
            replayed: self.counts.replayed.load(Ordering::Relaxed),
            recorded: self.counts.recorded.load(Ordering::Relaxed),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}
