//! [`SqlStateStore`] (feature `sql`): replica state in a SQL table, on the
//! same `sqlx::Any` pool as the [`Outbox`], so a cell keeps its replica state
//! beside its business rows (MySQL/MariaDB, PostgreSQL or SQLite).
//!
//! One row per replica in `{table}`: `cell` (primary key: the replica's
//! [`state_key`](crate::Replica::state_key)) and `state` (the
//! encoded [`Replica::snapshot`](crate::Replica::snapshot)); a save replaces
//! the row and, in the same transaction, deletes that key's rows of the log
//! table `{table}_log` (`id`, `cell`, `rec`: one row per change appended
//! since the snapshot).

use sqlx::{AnyConnection, AnyPool, Row};

use crate::error::CrdtError;
use crate::outbox::{Dialect, MAX_TABLE_LEN, Outbox, config_error, values_list};
use crate::state::StateStore;

/// Saves each replica's encoded state in one row of a SQL table (plus its log). Clones
/// share the pool.
#[derive(Debug, Clone)]
pub struct SqlStateStore {
    pool: AnyPool,
    dialect: Dialect,
    table: String,
    log: String,
}

/// Rows per `INSERT` of the log (keeps every dialect under its bound-parameter limit).
const LOG_ROWS_PER_INSERT: usize = 200;

impl SqlStateStore {
    /// Uses an existing pool of the given dialect and `table` (letters, digits
    /// and `_`, at most 60 bytes).
    pub fn new(pool: AnyPool, dialect: Dialect, table: &str) -> Result<Self, CrdtError> {
        sqldialect::check_identifier(table, MAX_TABLE_LEN).map_err(|e| config_error("state table", e))?;
        let log = format!("{table}_log");
        sqldialect::check_identifier(&log, MAX_TABLE_LEN + 4).map_err(|e| config_error("state log table", e))?;
        Ok(SqlStateStore { pool, dialect, table: table.to_string(), log })
    }

    /// Uses the outbox's pool (and database) with `table`.
    pub fn for_outbox(outbox: &Outbox, table: &str) -> Result<Self, CrdtError> {
        Self::new(outbox.pool().clone(), outbox.dialect(), table)
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The log table's name (`{table}_log`).
    pub fn log_table(&self) -> &str {
        &self.log
    }

    /// Creates the tables if missing.
    pub async fn migrate(&self) -> Result<(), CrdtError> {
        let blob = self.dialect.blob_type();
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (cell VARCHAR(64) NOT NULL PRIMARY KEY, state {blob} NOT NULL)",
            self.table
        );
        sqlx::query(&ddl).execute(&self.pool).await?;
        let id = match self.dialect {
            Dialect::MySql => "BIGINT AUTO_INCREMENT PRIMARY KEY",
            Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        let ddl = format!("CREATE TABLE IF NOT EXISTS {} (id {id}, cell VARCHAR(64) NOT NULL, rec {blob} NOT NULL)", self.log);
        sqlx::query(&ddl).execute(&self.pool).await?;
        Ok(())
    }

    /// Saves the snapshot under `key` on `conn`, e.g. inside a transaction of the
    /// caller's (`&mut *tx`), replacing the previous one and emptying the log.
    pub async fn save_on(&self, conn: &mut AnyConnection, key: &str, state: &[u8]) -> Result<(), CrdtError> {
        let sql = self.upsert_sql();
        sqlx::query(&sql).bind(key).bind(state.to_vec()).execute(&mut *conn).await?;
        let sql = format!("DELETE FROM {} WHERE cell = {}", self.log, self.dialect.placeholder(1));
        sqlx::query(&sql).bind(key).execute(&mut *conn).await?;
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
    async fn load(&self, key: &str) -> Result<Option<Vec<u8>>, CrdtError> {
        let sql = format!("SELECT state FROM {} WHERE cell = {}", self.table, self.dialect.placeholder(1));
        let row = sqlx::query(&sql).bind(key).fetch_optional(&self.pool).await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<Vec<u8>, _>("state")?),
            None => None,
        })
    }

    async fn save(&self, key: &str, state: &[u8]) -> Result<(), CrdtError> {
        let mut tx = self.pool.begin().await?;
        self.save_on(&mut tx, key, state).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn append(&self, key: &str, records: &[Vec<u8>]) -> Result<(), CrdtError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in records.chunks(LOG_ROWS_PER_INSERT) {
            let values = values_list(self.dialect, chunk.len(), 2);
            let sql = format!("INSERT INTO {} (cell, rec) VALUES {values}", self.log);
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q.bind(key).bind(r.clone());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn load_log(&self, key: &str) -> Result<Vec<Vec<u8>>, CrdtError> {
        let sql = format!("SELECT rec FROM {} WHERE cell = {} ORDER BY id", self.log, self.dialect.placeholder(1));
        let rows = sqlx::query(&sql).bind(key).fetch_all(&self.pool).await?;
        rows.iter().map(|r| r.try_get::<Vec<u8>, _>("rec").map_err(CrdtError::from)).collect()
    }
}
