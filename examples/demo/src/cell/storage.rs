//! A cell's storage: cell-local SQL (SQLite file by default, MySQL/MariaDB or
//! Postgres by URL) holding the business rows and the crdt outbox in one
//! transaction (the replica's state sits beside them, see `crdt::SqlStateStore`).

use crdt::outbox::Outbox;

use crate::error::DemoError;

/// The cell's SQL tables.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    pub(crate) outbox: Outbox,
    pub(crate) likes: String,
    pub(crate) comments: String,
    /// The keys of the writes applied here, with their answers (duplicates
    /// are answered from it, not applied again).
    pub(crate) idempotency: failover::idempotency::IdempotencyStore,
}

impl Storage {
    /// Connects and creates the tables (`{prefix}likes`, `{prefix}comments`,
    /// `{prefix}outbox`).
    pub(crate) async fn open(url: &str, prefix: &str) -> Result<Self, DemoError> {
        let outbox = Outbox::connect(url, &format!("{prefix}outbox")).await?;
        if url.starts_with("sqlite:") {
            // readers (relay) do not block the writer
            sqlx::query("PRAGMA journal_mode=WAL").execute(outbox.pool()).await?;
        }
        outbox.migrate().await?;
        let idempotency =
            failover::idempotency::IdempotencyStore::try_new(outbox.pool().clone(), outbox.dialect(), &format!("{prefix}idempotency"))?;
        idempotency.ensure_table().await?;
        let s = Storage { outbox, likes: format!("{prefix}likes"), comments: format!("{prefix}comments"), idempotency };
        let ddl = [
            format!("CREATE TABLE IF NOT EXISTS {} (id VARCHAR(32) PRIMARY KEY, post VARCHAR(128) NOT NULL, user_id VARCHAR(128) NOT NULL)", s.likes),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (id VARCHAR(32) PRIMARY KEY, post VARCHAR(128) NOT NULL, user_id VARCHAR(128) NOT NULL, body TEXT NOT NULL)",
                s.comments
            ),
        ];
        for (table, q) in [&s.likes, &s.comments].into_iter().zip(ddl) {
            // a restarted cell finds its tables: no DDL statement then, which a
            // binlog relay reading them would have to stop at
            if sqlx::query(&format!("SELECT 1 FROM {table} WHERE 1 = 0")).execute(s.outbox.pool()).await.is_err() {
                sqlx::query(&q).execute(s.outbox.pool()).await?;
            }
        }
        Ok(s)
    }

    /// Placeholders of the dialect (`?` or `$n`).
    pub(crate) fn ph(&self, n: usize) -> String {
        let pg = self.outbox.dialect() == crdt::outbox::Dialect::Postgres;
        (1..=n).map(|i| if pg { format!("${i}") } else { "?".into() }).collect::<Vec<_>>().join(", ")
    }
}
