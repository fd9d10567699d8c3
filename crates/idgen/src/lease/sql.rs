//! Worker leases in a SQL table (feature `sql`): the lease in the database a
//! service already has (MySQL/MariaDB, PostgreSQL or SQLite), for
//! deployments without Redis or etcd.
//!
//! One row per (id space, datacenter, worker): `holder` (the holder's token,
//! NULL when free), `expires_ms` and `hwm_ms` (the high-water mark). Expiry
//! is judged by the **database's clock** (`expires_ms` is written and
//! compared as the database reads the time), as Redis and etcd judge their
//! TTLs by theirs, so a holder's skewed clock cannot shorten another's
//! lease. SQLite has no server: its "database clock" is the system clock of
//! the process running the statement, so processes sharing a SQLite file
//! must share a host (they do: the file is local).
//!
//! Taking a worker id is a compare-and-set on the row (free or expired, and
//! the high-water mark as read), so two processes racing for one id cannot
//! both win.

use std::sync::Arc;

use sqldialect::Dialect;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Row};

use super::{Acquired, Backend, LeaseOptions, WorkerLease, token};
use crate::Error;
use crate::clock::Clock;

/// Longest table name accepted (every dialect's identifier limit is above).
const MAX_TABLE_LEN: usize = 60;

/// A SQL table of worker leases. Clones share the pool.
///
/// ```no_run
/// # async fn run() -> Result<(), idgen::Error> {
/// use idgen::{Layout, LeaseOptions, SqlDialect, SqlLeases, WorkerLease};
///
/// sqlx::any::install_default_drivers();
/// let pool = sqlx::AnyPool::connect("sqlite://leases.db?mode=rwc").await?;
/// let table = SqlLeases::try_new(pool, SqlDialect::Sqlite, "idgen_leases")?;
/// table.migrate().await?;
/// let lease = WorkerLease::sql(&table, LeaseOptions::try_new("orders", Layout::seed(), 3)?).await?;
/// let ids = lease.generator()?;
/// println!("{}", ids.next_id()?);
/// lease.release().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SqlLeases {
    pool: AnyPool,
    dialect: Dialect,
    table: String,
}

impl SqlLeases {
    /// Leases kept in `table` (letters, digits and `_`, at most 60 bytes) of
    /// the pool's database, written in `dialect`.
    ///
    /// # Errors
    /// [`Error::InvalidLease`] for a table name that is not a plain identifier.
    pub fn try_new(pool: AnyPool, dialect: Dialect, table: &str) -> Result<Self, Error> {
        sqldialect::check_identifier(table, MAX_TABLE_LEN).map_err(|_| {
            Error::InvalidLease("lease table: letters, digits and '_' only, at most 60 bytes")
        })?;
        Ok(SqlLeases {
            pool,
            dialect,
            table: table.to_string(),
        })
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if missing.
    pub async fn migrate(&self) -> Result<(), Error> {
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (space VARCHAR(190) NOT NULL, datacenter BIGINT NOT NULL, \
             worker BIGINT NOT NULL, holder VARCHAR(96) NULL, expires_ms BIGINT NOT NULL, hwm_ms BIGINT NOT NULL, \
             PRIMARY KEY (space, datacenter, worker))",
            self.table
        );
        sqlx::query(&ddl).execute(&self.pool).await?;
        Ok(())
    }

    /// Deletes every record of the id space `prefix` (leases and high-water
    /// marks: only for a space no process will issue ids in again, such as a
    /// finished test run's).
    pub async fn forget(&self, prefix: &str) -> Result<u64, Error> {
        let sql = self.sql(&format!("DELETE FROM {} WHERE space = ?", self.table));
        Ok(sqlx::query(&sql)
            .bind(prefix)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// The database's clock in Unix ms, as an SQL expression.
    fn now(&self) -> &'static str {
        match self.dialect {
            Dialect::MySql => "CAST(UNIX_TIMESTAMP(CURRENT_TIMESTAMP(3)) * 1000 AS SIGNED)",
            Dialect::Postgres => "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            Dialect::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
        }
    }

    /// `sql` with `{now}` replaced by the database's clock and `?` numbered
    /// for the dialect.
    fn sql(&self, sql: &str) -> String {
        self.dialect.numbered(&sql.replace("{now}", self.now()))
    }
}

struct SqlBackend {
    leases: SqlLeases,
    space: String,
    datacenter: i64,
    token: String,
    ttl_ms: i64,
    clock: Arc<dyn Clock>,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SqlBackend {
    /// `WHERE` of this backend's row (binds: space, datacenter, worker).
    const ROW: &'static str = "space = ? AND datacenter = ? AND worker = ?";
    /// The row is free: nobody holds it, or the holder's lease ran out by the database's clock.
    const FREE: &'static str = "(holder IS NULL OR expires_ms < {now})";

    /// `query` with this backend's row key bound next, in [`Self::ROW`]'s order.
    fn bind_row<'q>(&'q self, query: Query<'q, Any, AnyArguments<'q>>, worker: u32) -> Query<'q, Any, AnyArguments<'q>> {
        query.bind(&self.space).bind(self.datacenter).bind(i64::from(worker))
    }

    async fn is_holder(&self, worker: u32) -> Result<bool, Error> {
        let sql = self.leases.sql(&format!(
            "SELECT holder FROM {} WHERE {}",
            self.leases.table,
            Self::ROW
        ));
        let row = self
            .bind_row(sqlx::query(&sql), worker)
            .fetch_optional(&self.leases.pool)
            .await?;
        let holder: Option<String> = match row {
            Some(r) => r.try_get("holder")?,
            None => None,
        };
        Ok(holder.as_deref() == Some(self.token.as_str()))
    }
}

impl Backend for SqlBackend {
    async fn acquire(&mut self, worker: u32) -> Result<Option<Acquired>, Error> {
        let (t, pool) = (&self.leases.table, &self.leases.pool);
        let insert = match self.leases.dialect {
            Dialect::MySql => {
                "INSERT IGNORE INTO {t} (space, datacenter, worker, holder, expires_ms, hwm_ms) VALUES (?, ?, ?, NULL, 0, 0)"
            }
            Dialect::Postgres | Dialect::Sqlite => {
                "INSERT INTO {t} (space, datacenter, worker, holder, expires_ms, hwm_ms) VALUES (?, ?, ?, NULL, 0, 0) ON CONFLICT DO NOTHING"
            }
        };
        let insert = self.leases.sql(&insert.replace("{t}", t));
        self.bind_row(sqlx::query(&insert), worker)
            .execute(pool)
            .await?;

        let read = self.leases.sql(&format!(
            "SELECT hwm_ms FROM {t} WHERE {} AND {}",
            Self::ROW,
            Self::FREE
        ));
        let Some(row) = self
            .bind_row(sqlx::query(&read), worker)
            .fetch_optional(pool)
            .await?
        else {
            return Ok(None);
        };
        let prior: i64 = row.try_get("hwm_ms")?;
        let prior_ms = u64::try_from(prior)
            .map_err(|_| Error::CorruptRecord(format!("high-water mark {prior}")))?;
        // read before the lease's TTL starts, as the other backends do
        let now = self.clock.now_ms();
        let ceiling = prior_ms
            .saturating_add(1)
            .max(now)
            .saturating_add(self.ttl_ms.unsigned_abs());
        let take = self.leases.sql(&format!(
            "UPDATE {t} SET holder = ?, expires_ms = {{now}} + ?, hwm_ms = ? WHERE {} AND {} AND hwm_ms = ?",
            Self::ROW,
            Self::FREE
        ));
        let taken = self
            .bind_row(
                sqlx::query(&take).bind(&self.token).bind(self.ttl_ms).bind(to_i64(ceiling)),
                worker,
            )
            .bind(prior)
            .execute(pool)
            .await?;
        Ok((taken.rows_affected() == 1).then_some(Acquired {
            prior_ms,
            valid_from_ms: now,
        }))
    }

    async fn renew(&mut self, worker: u32, ceiling_ms: u64) -> Result<bool, Error> {
        let sql = self.leases.sql(&format!(
            "UPDATE {} SET expires_ms = {{now}} + ?, hwm_ms = CASE WHEN hwm_ms < ? THEN ? ELSE hwm_ms END \
             WHERE {} AND holder = ?",
            self.leases.table,
            Self::ROW
        ));
        let c = to_i64(ceiling_ms);
        let done = self
            .bind_row(sqlx::query(&sql).bind(self.ttl_ms).bind(c).bind(c), worker)
            .bind(&self.token)
            .execute(&self.leases.pool)
            .await?;
        // MySQL counts changed rows, not matched ones: a renewal that changed
        // nothing (same millisecond, same ceiling) is still ours if we hold it
        Ok(done.rows_affected() == 1 || self.is_holder(worker).await?)
    }

    async fn release(&mut self, worker: u32, record_ms: u64) -> Result<(), Error> {
        let sql = self.leases.sql(&format!(
            "UPDATE {} SET holder = NULL, expires_ms = 0, hwm_ms = ? WHERE {} AND holder = ?",
            self.leases.table,
            Self::ROW
        ));
        self.bind_row(sqlx::query(&sql).bind(to_i64(record_ms)), worker)
            .bind(&self.token)
            .execute(&self.leases.pool)
            .await?;
        Ok(())
    }

    async fn give_up(&mut self) {}
}

impl WorkerLease {
    /// Leases a free worker id of `opts`' datacenter from a SQL table
    /// ([`SqlLeases`], created with [`SqlLeases::migrate`]); `opts`' prefix
    /// names the id space (a column of the table).
    ///
    /// Errors with [`Error::NoWorkerAvailable`] when every worker id is held,
    /// [`Error::Sql`] when the database fails, [`Error::InvalidLease`] for a
    /// TTL under 300 ms. Must be called inside a tokio runtime (the renewal
    /// task is spawned on it).
    pub async fn sql(leases: &SqlLeases, opts: LeaseOptions) -> Result<WorkerLease, Error> {
        let ttl_ms = opts.ttl_ms()?;
        let backend = SqlBackend {
            leases: leases.clone(),
            space: opts.prefix.clone(),
            datacenter: i64::from(opts.datacenter),
            token: token(),
            ttl_ms: to_i64(ttl_ms),
            clock: Arc::clone(&opts.clock),
        };
        WorkerLease::acquire_with(backend, opts).await
    }
}
