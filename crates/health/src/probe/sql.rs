//! [`SqlProbe`]: `SELECT 1` latency plus the pool's water level.

use sqlx::{MySqlPool, PgPool, SqlitePool};

use super::{Probe, ProbeFuture, ProbeKind, ProbeOutcome, WaterLevel};

/// Runs `SELECT 1` through a sqlx pool and reports the pool's water level
/// (size, idle, in use, max) read just before the query.
///
/// An exhausted pool makes the query fail with the pool's acquire timeout, so
/// give the pool an `acquire_timeout` shorter than the probe's timeout.
#[derive(Debug, Clone)]
pub struct SqlProbe {
    pool: Pool,
}

#[derive(Debug, Clone)]
enum Pool {
    MySql(MySqlPool),
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

macro_rules! water {
    ($p:expr) => {{
        let size = $p.size();
        let idle = u32::try_from($p.num_idle()).unwrap_or(u32::MAX).min(size);
        WaterLevel { size, idle, in_use: size - idle, max: $p.options().get_max_connections() }
    }};
}

impl SqlProbe {
    /// Probes a MySQL/MariaDB pool.
    pub fn mysql(pool: MySqlPool) -> Self {
        SqlProbe { pool: Pool::MySql(pool) }
    }

    /// Probes a PostgreSQL pool.
    pub fn postgres(pool: PgPool) -> Self {
        SqlProbe { pool: Pool::Postgres(pool) }
    }

    /// Probes a SQLite pool.
    pub fn sqlite(pool: SqlitePool) -> Self {
        SqlProbe { pool: Pool::Sqlite(pool) }
    }

    /// The pool's current water level.
    pub fn water_level(&self) -> WaterLevel {
        match &self.pool {
            Pool::MySql(p) => water!(p),
            Pool::Postgres(p) => water!(p),
            Pool::Sqlite(p) => water!(p),
        }
    }

    async fn run(&self) -> ProbeOutcome {
        let level = self.water_level();
        let q = sqlx::query("SELECT 1");
        let res = match &self.pool {
            Pool::MySql(p) => q.execute(p).await.map(|_| ()),
            Pool::Postgres(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
            Pool::Sqlite(p) => sqlx::query("SELECT 1").execute(p).await.map(|_| ()),
        };
        match res {
            Ok(()) => ProbeOutcome::up().with_water_level(level),
            Err(e) => ProbeOutcome::down(format!("SELECT 1: {e}")).with_water_level(level),
        }
    }
}

impl Probe for SqlProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Sql
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(self.run())
    }
}
