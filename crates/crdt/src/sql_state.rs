//! [`SqlStateStore`] (feature `sql`): replica state in a SQL table, on the
//! same `sqlx::Any` pool as the [`Outbox`], so a cell keeps its replica state
//! beside its business rows (MySQL/MariaDB, PostgreSQL or SQLite).
//!
//! One row per cell: `cell` (primary key) and `state` (the encoded
//! [`Replica::snapshot`](crate::Replica::snapshot)); a save replaces the row.

use cellctx::CellId;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::error::CrdtError;
use crate::outbox::{Dialect, MAX_TABLE_LEN, Outbox, config_error};
use crate::state::StateStore;

/// Saves each cell's encoded replica state in one row of a SQL table. Clones
/// share the pool.
#[derive(Debug, Clone)]
pub struct SqlStateStore {
    pool: AnyPool,
    dialect: Dialect,
    table: String,
}

impl SqlStateStore {
    /// Uses an existing pool of the given dialect and `table` (letters, digits
    /// and `_`, at most 60 bytes).
    pub fn new(pool: AnyPool, dialect: Dialect, table: &str) -> Result<Self, CrdtError> {
        sqldialect::check_identifier(table, MAX_TABLE_LEN).map_err(|e| config_error("state table", e))?;
        Ok(SqlStateStore { pool, dialect, table: table.to_string() })
    }

    /// Uses the outbox's pool (and database) with `table`.
    pub fn for_outbox(outbox: &Outbox, table: &str) -> Result<Self, CrdtError> {
        Self::new(outbox.pool().clone(), outbox.dialect(), table)
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if missing.
    pub async fn migrate(&self) -> Result<(), CrdtError> {
        let blob = self.dialect.blob_type();
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (cell VARCHAR(64) NOT NULL PRIMARY KEY, state {blob} NOT NULL)",
            self.table
        );
        sqlx::query(&ddl).execute(&self.pool).await?;
        Ok(())
    }

    /// Saves `cell`'s state on `conn`, e.g. inside a transaction of the
    /// caller's (`&mut *tx`), replacing the previous one.
    pub async fn save_on(&self, conn: &mut AnyConnection, cell: &CellId, state: &[u8]) -> Result<(), CrdtError> {
        let sql = self.upsert_sql();
        sqlx::query(&sql).bind(cell.as_str()).bind(state.to_vec()).execute(conn).await?;
        Ok(())
    }

    fn upsert_sql(&self) -> String {
        let (t, p) = (&self.table, self.dialect.placeholders(2));
        match self.dialect {
            Dialect::MySql => {
                format!("INSERT INTO {t} (cell, state) VALUES ({p}) ON DUPLICATE KEY UPDATE state = VALUES(state)")
            }
            Dialect::Postgres | Dialect::Sqlite => {
                format!("INSERT INTO {t} (cell, state) VALUES ({p}) ON CONFLICT (cell) DO UPDATE SET state = excluded.state")
            }
        }
    }
}

impl StateStore for SqlStateStore {
    async fn load(&self, cell: &CellId) -> Result<Option<Vec<u8>>, CrdtError> {
        let sql = format!("SELECT state FROM {} WHERE cell = {}", self.table, self.dialect.placeholder(1));
        let row = sqlx::query(&sql).bind(cell.as_str()).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<Vec<u8>, _>("state")?),
            None => None,
        })
    }

    async fn save(&self, cell: &CellId, state: &[u8]) -> Result<(), CrdtError> {
        let sql = self.upsert_sql();
        sqlx::query(&sql).bind(cell.as_str()).bind(state.to_vec()).execute(&self.pool).await?;
        Ok(())
    }
}
