//! The durable saga log on MySQL/MariaDB, PostgreSQL or SQLite (sqlx).
//!
//! Two tables (names take an optional prefix): `<prefix>saga_log`, one row per
//! saga (definition name, input JSON, state, lease), and `<prefix>saga_step`, one
//! row per step (state, attempts, output JSON, last error).
//!
//! **Dialects.** The log holds a [`LogPool`]: one of sqlx's three concrete pools,
//! not `AnyPool`. The `Any` driver maps MySQL `TEXT` to a blob that does not decode
//! as `String`, and installing its drivers is process-global; a small enum with
//! per-dialect statements (see [`Dialect`]) avoids both.
//!
//! **Retention.** Finished sagas (`committed`, `compensated`) are deleted
//! after an age and/or beyond a count by [`SagaLog::prune`] with a
//! [`Retention`] (or by [`Executor::run_recovery`](crate::Executor::run_recovery)
//! when the executor has one, [`Executor::with_retention`](crate::Executor::with_retention)).
//! `stuck` and live sagas are never deleted. The index
//! `<prefix>saga_log_finished (state, updated_ms)` serves it; on MySQL/MariaDB
//! it is created with the table only (tables made by an older `migrate` need
//! it added by hand).
//!
//! **Leases.** Every saga row carries an owner and a lease expiry. An executor
//! takes a saga with one conditional `UPDATE` (free, expired, or already its own)
//! that works the same on the three databases, and every later write is fenced
//! on the owner inside a transaction, which also renews the lease. An executor
//! that lost its lease gets [`Error::LeaseLost`] on its next write and stops.
//! Expiry compares wall clocks of the executors: keep them within a fraction of
//! the lease (NTP does).

mod record;
mod sql;

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sqlx::Row;
use sqlx::mysql::MySqlPool;
use sqlx::postgres::PgPool;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

pub use record::{SagaRecord, SagaState, StepRecord, StepState};
pub use retention::{DEFAULT_PRUNE_BATCH, Retention};
pub use sql::Dialect;

use crate::error::Error;
use sql::Statements;

/// A connection pool of one of the supported databases.
///
/// Build it from your own pool (`LogPool::from(pg_pool)`) to share it with the
/// service, or let [`SagaLog::connect`] open one from a URL.
#[derive(Debug, Clone)]
pub enum LogPool {
    /// MySQL or MariaDB.
    MySql(MySqlPool),
    /// PostgreSQL.
    Postgres(PgPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

impl From<MySqlPool> for LogPool {
    fn from(p: MySqlPool) -> Self {
        LogPool::MySql(p)
    }
}

impl From<PgPool> for LogPool {
    fn from(p: PgPool) -> Self {
        LogPool::Postgres(p)
    }
}

impl From<SqlitePool> for LogPool {
    fn from(p: SqlitePool) -> Self {
        LogPool::Sqlite(p)
    }
}

impl LogPool {
    /// The pool's dialect.
    pub fn dialect(&self) -> Dialect {
        match self {
            LogPool::MySql(_) => Dialect::MySql,
            LogPool::Postgres(_) => Dialect::Postgres,
            LogPool::Sqlite(_) => Dialect::Sqlite,
        }
    }
}

/// Runs `$body` with `$p` bound to the concrete pool (the body is expanded once
/// per dialect, so sqlx's types line up in each arm).
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            LogPool::MySql($p) => $body,
            LogPool::Postgres($p) => $body,
            LogPool::Sqlite($p) => $body,
        }
    };
}

// After `on_pool!`: the macro is in scope from its definition on.
mod retention;

/// The durable saga log. Cheap to clone (a pool handle and the statements).
///
/// ```no_run
/// # async fn f() -> Result<(), saga::Error> {
/// let log = saga::SagaLog::connect("postgres://postgres@127.0.0.1/test")
///     .await?
///     .with_table_prefix("orders_")?;
/// log.migrate().await?; // CREATE TABLE IF NOT EXISTS orders_saga_log, orders_saga_step
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct SagaLog {
    pool: LogPool,
    sql: std::sync::Arc<Statements>,
}

/// A row as read, before it is checked.
struct RawSaga {
    xid: String,
    name: String,
    input: String,
    state: String,
    step_count: i64,
    owner: Option<String>,
    lease_until: i64,
    failed_step: Option<i64>,
    error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
}

struct RawStep {
    idx: i64,
    name: String,
    state: String,
    attempts: i64,
    output: Option<String>,
    error: Option<String>,
}

/// How a fenced write changes the saga row.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SagaChange<'a> {
    /// Only renew the lease.
    Renew,
    /// Set the state (running/compensating) and the failure that caused it.
    State {
        state: SagaState,
        failed_step: Option<usize>,
        error: Option<&'a str>,
    },
    /// Set a final state and release the lease.
    Finish(SagaState),
}

/// One fenced write: the saga row change plus, optionally, one step row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Write<'a> {
    pub(crate) xid: &'a str,
    pub(crate) owner: &'a str,
    pub(crate) lease: Duration,
    pub(crate) change: SagaChange<'a>,
    pub(crate) step: Option<(usize, &'a StepRecord)>,
}

/// Milliseconds since the Unix epoch by the local clock.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn lease_until(lease: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

fn to_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl SagaLog {
    /// A log on `pool`, with no table prefix (tables `saga_log` and `saga_step`).
    pub fn new(pool: impl Into<LogPool>) -> Self {
        let pool = pool.into();
        let sql = Statements::new(pool.dialect(), "");
        SagaLog {
            pool,
            sql: std::sync::Arc::new(sql),
        }
    }

    /// Opens a pool from a URL: `mysql://` or `mariadb://`, `postgres://` or
    /// `postgresql://`, `sqlite:` (the file is created when missing; an in-memory
    /// database, `sqlite::memory:`, gets one connection that is never closed, as
    /// each connection would otherwise see its own empty database).
    pub async fn connect(url: &str) -> Result<Self, Error> {
        let (scheme, rest) = url.split_once(':').unwrap_or((url, ""));
        let dialect = Dialect::from_url(url).map_err(|_| Error::UnsupportedUrl(scheme.to_string()))?;
        let pool: LogPool = match dialect {
            // `mariadb:` names the same driver
            Dialect::MySql => MySqlPool::connect(&format!("mysql:{rest}")).await?.into(),
            Dialect::Postgres => PgPool::connect(url).await?.into(),
            Dialect::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)?.create_if_missing(true);
                let memory = url.contains(":memory:") || url.contains("mode=memory");
                let pool = if memory {
                    SqlitePoolOptions::new()
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .connect_with(opts)
                        .await?
                } else {
                    SqlitePoolOptions::new().connect_with(opts).await?
                };
                pool.into()
            }
        };
        Ok(SagaLog::new(pool))
    }

    /// Prefixes the table names (at most 32 bytes of letters, digits and `_`,
    /// not starting with a digit), e.g. `orders_` gives `orders_saga_log` and `orders_saga_step`.
    pub fn with_table_prefix(mut self, prefix: &str) -> Result<Self, Error> {
        sql::validate_prefix(prefix)?;
        self.sql = std::sync::Arc::new(Statements::new(self.pool.dialect(), prefix));
        Ok(self)
    }

    /// Creates the two tables and the state index when missing.
    pub async fn migrate(&self) -> Result<(), Error> {
        for stmt in &self.sql.create {
            on_pool!(&self.pool, |p| {
                sqlx::query(stmt).execute(p).await?;
            });
        }
        Ok(())
    }

    /// The pool.
    pub fn pool(&self) -> &LogPool {
        &self.pool
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.pool.dialect()
    }

    /// The saga table's name (`<prefix>saga_log`).
    pub fn saga_table(&self) -> &str {
        &self.sql.saga_table
    }

    /// The step table's name (`<prefix>saga_step`).
    pub fn step_table(&self) -> &str {
        &self.sql.step_table
    }

    /// Reads a saga and its steps. [`Error::NotFound`] when absent,
    /// [`Error::MalformedRow`] when the rows do not parse.
    pub async fn load(&self, xid: &str) -> Result<SagaRecord, Error> {
        let (raw, steps) = on_pool!(&self.pool, |p| {
            let row = sqlx::query(&self.sql.load_saga)
                .bind(xid)
                .fetch_optional(p)
                .await?;
            let Some(row) = row else {
                return Err(Error::NotFound(xid.to_string()));
            };
            let raw = RawSaga {
                xid: row.try_get("xid")?,
                name: row.try_get("saga_name")?,
                input: row.try_get("input_json")?,
                state: row.try_get("state")?,
                step_count: row.try_get("step_count")?,
                owner: row.try_get("owner_id")?,
                lease_until: row.try_get("lease_until")?,
                failed_step: row.try_get("failed_step")?,
                error: row.try_get("error_text")?,
                created_ms: row.try_get("created_ms")?,
                updated_ms: row.try_get("updated_ms")?,
            };
            let rows = sqlx::query(&self.sql.load_steps)
                .bind(xid)
                .fetch_all(p)
                .await?;
            let mut steps = Vec::with_capacity(rows.len());
            for row in rows {
                steps.push(RawStep {
                    idx: row.try_get("step_idx")?,
                    name: row.try_get("step_name")?,
                    state: row.try_get("state")?,
                    attempts: row.try_get("attempts")?,
                    output: row.try_get("output_json")?,
                    error: row.try_get("error_text")?,
                });
            }
            (raw, steps)
        });
        parse(raw, steps)
    }

    /// The XIDs of stuck sagas, oldest first.
    pub async fn list_stuck(&self) -> Result<Vec<String>, Error> {
        let xids = on_pool!(&self.pool, |p| {
            let rows = sqlx::query(&self.sql.list_stuck).fetch_all(p).await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>("xid"))
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(xids)
    }

    /// Inserts a new saga (state `running`, every step `pending`) in one
    /// transaction, leased to `owner` or unowned.
    pub(crate) async fn insert(
        &self,
        xid: &str,
        name: &str,
        input: &Value,
        steps: &[&str],
        owner: Option<&str>,
        lease: Duration,
    ) -> Result<(), Error> {
        let input = serde_json::to_string(input)?;
        let now = now_ms();
        let until = if owner.is_some() {
            lease_until(lease)
        } else {
            0
        };
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(&self.sql.insert_saga)
                .bind(xid)
                .bind(name)
                .bind(&input)
                .bind(to_i64(steps.len()))
                .bind(owner)
                .bind(until)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            for (i, step) in steps.iter().enumerate() {
                sqlx::query(&self.sql.insert_step)
                    .bind(xid)
                    .bind(to_i64(i))
                    .bind(*step)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Takes the lease on a live saga that is free, expired or already `owner`'s.
    pub(crate) async fn acquire(
        &self,
        xid: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, Error> {
        let until = lease_until(lease);
        let now = now_ms();
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(&self.sql.acquire)
                .bind(owner)
                .bind(until)
                .bind(xid)
                .bind(owner)
                .bind(now)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// Gives a lease up (after a malformed row was found).
    pub(crate) async fn release(&self, xid: &str, owner: &str) -> Result<(), Error> {
        on_pool!(&self.pool, |p| {
            sqlx::query(&self.sql.release)
                .bind(xid)
                .bind(owner)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Renews the lease; [`Error::LeaseLost`] when it is no longer ours.
    pub(crate) async fn renew(&self, xid: &str, owner: &str, lease: Duration) -> Result<(), Error> {
        let until = lease_until(lease);
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(&self.sql.renew)
                .bind(until)
                .bind(xid)
                .bind(owner)
                .execute(p)
                .await?
                .rows_affected()
        });
        if n == 1 {
            Ok(())
        } else {
            Err(Error::LeaseLost {
                xid: xid.to_string(),
            })
        }
    }

    /// One fenced write in a transaction: the saga row (only if `owner` still
    /// holds it, renewing the lease) and optionally a step row.
    pub(crate) async fn write(&self, w: Write<'_>) -> Result<(), Error> {
        let now = now_ms();
        let until = lease_until(w.lease);
        let step = match w.step {
            Some((i, st)) => {
                let output = st.output.as_ref().map(serde_json::to_string).transpose()?;
                Some((
                    to_i64(i),
                    st.state.as_str(),
                    i64::from(st.attempts),
                    output,
                    st.error.clone(),
                ))
            }
            None => None,
        };
        let fenced = on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            let q = match w.change {
                SagaChange::Renew => sqlx::query(&self.sql.renew)
                    .bind(until)
                    .bind(w.xid)
                    .bind(w.owner),
                SagaChange::State {
                    state,
                    failed_step,
                    error,
                } => sqlx::query(&self.sql.set_state)
                    .bind(state.as_str())
                    .bind(failed_step.map(to_i64))
                    .bind(error)
                    .bind(until)
                    .bind(now)
                    .bind(w.xid)
                    .bind(w.owner),
                SagaChange::Finish(state) => sqlx::query(&self.sql.finish)
                    .bind(state.as_str())
                    .bind(now)
                    .bind(w.xid)
                    .bind(w.owner),
            };
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n == 1 {
                if let Some((idx, state, attempts, output, error)) = &step {
                    sqlx::query(&self.sql.update_step)
                        .bind(*state)
                        .bind(*attempts)
                        .bind(output.as_deref())
                        .bind(error.as_deref())
                        .bind(now)
                        .bind(w.xid)
                        .bind(*idx)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                true
            } else {
                tx.rollback().await?;
                false
            }
        });
        if fenced {
            Ok(())
        } else {
            Err(Error::LeaseLost {
                xid: w.xid.to_string(),
            })
        }
    }

    /// Live sagas this owner may take: free, expired, or already its own.
    pub(crate) async fn candidates(&self, owner: &str, limit: usize) -> Result<Vec<String>, Error> {
        let now = now_ms();
        let xids = on_pool!(&self.pool, |p| {
            let rows = sqlx::query(&self.sql.candidates)
                .bind(owner)
                .bind(now)
                .bind(to_i64(limit))
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| r.try_get::<String, _>("xid"))
                .collect::<Result<Vec<_>, _>>()?
        });
        Ok(xids)
    }

    /// Turns a stuck saga back to `compensating`, leased to `owner` in the same
    /// statement; false when it is not stuck.
    pub(crate) async fn unstick(
        &self,
        xid: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<bool, Error> {
        let now = now_ms();
        let until = lease_until(lease);
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(&self.sql.unstick)
                .bind(owner)
                .bind(until)
                .bind(now)
                .bind(xid)
                .execute(p)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }
}

fn malformed(xid: &str, reason: impl Into<String>) -> Error {
    Error::MalformedRow {
        xid: xid.to_string(),
        reason: reason.into(),
    }
}

fn parse(raw: RawSaga, steps: Vec<RawStep>) -> Result<SagaRecord, Error> {
    let xid = raw.xid.as_str();
    let input =
        serde_json::from_str(&raw.input).map_err(|e| malformed(xid, format!("input_json: {e}")))?;
    let state = SagaState::from_str(&raw.state).map_err(|e| malformed(xid, e))?;
    if usize::try_from(raw.step_count).ok() != Some(steps.len()) {
        return Err(malformed(
            xid,
            format!(
                "step_count is {} but {} step rows exist",
                raw.step_count,
                steps.len()
            ),
        ));
    }
    let failed_step = match raw.failed_step {
        None => None,
        Some(i) => match usize::try_from(i) {
            Ok(i) if i < steps.len() => Some(i),
            _ => return Err(malformed(xid, format!("failed_step {i} out of range"))),
        },
    };
    let mut out = Vec::with_capacity(steps.len());
    for (pos, s) in steps.into_iter().enumerate() {
        if usize::try_from(s.idx).ok() != Some(pos) {
            return Err(malformed(
                xid,
                format!("step rows are not numbered 0..n (found {} at {pos})", s.idx),
            ));
        }
        let state = StepState::from_str(&s.state)
            .map_err(|e| malformed(xid, format!("step {pos}: {e}")))?;
        let attempts = u32::try_from(s.attempts)
            .map_err(|_| malformed(xid, format!("step {pos}: attempts {}", s.attempts)))?;
        let output = s
            .output
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(|e| malformed(xid, format!("step {pos}: output_json: {e}")))?;
        out.push(StepRecord {
            name: s.name,
            state,
            attempts,
            output,
            error: s.error,
        });
    }
    Ok(SagaRecord {
        xid: raw.xid,
        name: raw.name,
        input,
        state,
        owner: raw.owner,
        lease_until_ms: raw.lease_until,
        failed_step,
        error: raw.error,
        created_ms: raw.created_ms,
        updated_ms: raw.updated_ms,
        steps: out,
    })
}
