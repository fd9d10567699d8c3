//! The transactional outbox (feature `sql`): a Debezium-shaped table on
//! MySQL/MariaDB, PostgreSQL or SQLite through `sqlx::Any`.
//!
//! Columns: `id` (auto-increment; the event's sequence number), `aggregatetype`,
//! `aggregateid` (the object id, used as the Kafka key), `type` (the delta
//! kind), `payload` (the encoded delta) — the shape Debezium's outbox event
//! router reads — plus `origin` (the cell), `hlc` (the change's HLC timestamp),
//! `context` (the `cellctx` headers as JSON) and `sent` (0 until the relay has
//! published the row).
//!
//! The service writes its business row and [`Outbox::enqueue`]s the change in
//! one transaction; [`Relay`](crate::kafka::Relay) publishes and marks rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::error::CrdtError;
use crate::hlc::Timestamp;
use crate::codec;
use crate::replica::{Change, Delta, Replica, Store};
use crate::state::StateStore;

pub use crate::retention::Retention;

/// The SQL dialect of the outbox database (shared with the state table and
/// the SDK's other durable logs).
pub use sqldialect::Dialect;

/// A configuration error of the outbox or state table: bad URL scheme or table name.
pub(crate) fn config_error(what: &str, e: sqldialect::Error) -> CrdtError {
    CrdtError::Config(format!("{what}: {e}"))
}

impl Replica {
    /// Recovers a restarted cell in one step, before it takes local writes:
    /// restores the snapshot `state` holds for this cell (if any) and the log
    /// of changes after it ([`Replica::restore_from`]), then
    /// re-applies this cell's own outbox rows written after it (see
    /// [`Outbox::replay_into`]); returns how many rows were replayed. The
    /// replica stays locked throughout, and afterwards counts as restored, so
    /// `kafka::Replicator::start` does not restore the older snapshot again.
    ///
    /// # Errors
    /// The state store's or the database's error, or a snapshot or own outbox
    /// row that does not decode.
    pub async fn recover<S: StateStore>(&self, state: &S, outbox: &Outbox) -> Result<u64, CrdtError> {
        let mut store = self.lock_store().await;
        self.restore_locked_from(&mut store, state).await?;
        outbox.replay_locked(self, &mut store).await
    }
}

/// One outbox row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Row id: the event's sequence number at its origin.
    pub id: i64,
    /// Debezium `aggregatetype`.
    pub aggregate_type: String,
    /// Debezium `aggregateid`: the object id.
    pub aggregate_id: String,
    /// Debezium `type`: the delta kind.
    pub event_type: String,
    /// Debezium `payload`: the encoded delta.
    pub payload: Vec<u8>,
    /// The origin cell.
    pub origin: String,
    /// HLC timestamp of the change.
    pub hlc: Timestamp,
    /// The `cellctx` headers captured when the change was written.
    pub context: BTreeMap<String, String>,
}

/// The outbox table. Clones share the pool and the relay wake-up.
#[derive(Debug, Clone)]
pub struct Outbox {
    pool: AnyPool,
    table: String,
    dialect: Dialect,
    wake: Arc<tokio::sync::Notify>,
}

impl Outbox {
    /// Connects to `url` and uses `table` (letters, digits and `_`, at most 60 bytes).
    pub async fn connect(url: &str, table: &str) -> Result<Self, CrdtError> {
        install_default_drivers();
        let dialect = Dialect::from_url(url).map_err(|e| config_error("outbox", e))?;
        let pool = AnyPoolOptions::new().max_connections(4).connect(url).await?;
        Self::new(pool, dialect, table)
    }

    /// Uses an existing pool of the given dialect.
    pub fn new(pool: AnyPool, dialect: Dialect, table: &str) -> Result<Self, CrdtError> {
        sqldialect::check_identifier(table, MAX_TABLE_LEN).map_err(|e| config_error("outbox", e))?;
        Ok(Outbox { pool, table: table.to_string(), dialect, wake: Arc::new(tokio::sync::Notify::new()) })
    }

    /// The pool (use it for the business rows too, so both share a transaction).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The dialect.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Creates the table (and its pending-rows index) if missing.
    pub async fn migrate(&self) -> Result<(), CrdtError> {
        let t = &self.table;
        let id = match self.dialect {
            Dialect::MySql => "BIGINT AUTO_INCREMENT PRIMARY KEY",
            Dialect::Postgres => "BIGSERIAL PRIMARY KEY",
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        let blob = self.dialect.blob_type();
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {t} (id {id}, aggregatetype VARCHAR(255) NOT NULL, \
             aggregateid VARCHAR(255) NOT NULL, type VARCHAR(255) NOT NULL, payload {blob} NOT NULL, \
             origin VARCHAR(64) NOT NULL, hlc BIGINT NOT NULL, context TEXT NOT NULL, \
             sent SMALLINT NOT NULL DEFAULT 0)"
        );
        sqlx::query(&ddl).execute(&self.pool).await?;
        let index = match self.dialect {
            Dialect::MySql => format!("CREATE INDEX {t}_pending ON {t} (sent, id)"),
            _ => format!("CREATE INDEX IF NOT EXISTS {t}_pending ON {t} (sent, id)"),
        };
        if let Err(e) = sqlx::query(&index).execute(&self.pool).await {
            // MySQL has no IF NOT EXISTS for indexes: a duplicate is fine
            let dup = e.as_database_error().and_then(|d| d.code()).is_some_and(|c| c == "42000" || c == "1061");
            if !(self.dialect == Dialect::MySql && dup) {
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Writes `change` into the outbox on `conn` (pass the business
    /// transaction: `&mut *tx`). The current `cellctx` context, if any, is
    /// stored with it and travels in the Kafka headers.
    pub async fn enqueue(&self, conn: &mut AnyConnection, change: &Change) -> Result<(), CrdtError> {
        let payload = change.payload()?;
        let context = serde_json::to_string(&current_context_headers()).unwrap_or_else(|_| "{}".into());
        let sql = format!(
            "INSERT INTO {} (aggregatetype, aggregateid, type, payload, origin, hlc, context) VALUES ({})",
            self.table,
            self.dialect.placeholders(7)
        );
        sqlx::query(&sql)
            .bind(change.aggregate_type.as_str())
            .bind(change.aggregate_id.as_str())
            .bind(change.delta.event_type())
            .bind(payload)
            .bind(change.origin.as_str())
            .bind(hlc_to_i64(change.ts))
            .bind(context)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Writes `changes` into the outbox on `conn` in as few statements as the
    /// dialect's bound-parameter limit allows ([`enqueue`](Self::enqueue) for
    /// a batch: one round trip per [`ROWS_PER_INSERT`] rows, ids in the
    /// order given).
    pub async fn enqueue_all(&self, conn: &mut AnyConnection, changes: &[Change]) -> Result<(), CrdtError> {
        let context = serde_json::to_string(&current_context_headers()).unwrap_or_else(|_| "{}".into());
        for chunk in changes.chunks(ROWS_PER_INSERT) {
            let values = values_list(self.dialect, chunk.len(), 7);
            let sql = format!(
                "INSERT INTO {} (aggregatetype, aggregateid, type, payload, origin, hlc, context) VALUES {values}",
                self.table
            );
            let mut q = sqlx::query(&sql);
            for change in chunk {
                q = q
                    .bind(change.aggregate_type.as_str())
                    .bind(change.aggregate_id.as_str())
                    .bind(change.delta.event_type())
                    .bind(change.payload()?)
                    .bind(change.origin.as_str())
                    .bind(hlc_to_i64(change.ts))
                    .bind(context.as_str());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Tells a [`Relay`](crate::kafka::Relay) in this process (sharing a clone of
    /// this outbox) that a transaction with outbox rows committed, so it
    /// publishes now instead of at its next poll. Optional: without it rows go
    /// out at the next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Up to `limit` rows not yet sent, oldest first.
    pub async fn pending(&self, limit: u32) -> Result<Vec<OutboxRow>, CrdtError> {
        let sql = format!(
            "SELECT id, aggregatetype, aggregateid, type, payload, origin, hlc, context FROM {} \
             WHERE sent = 0 ORDER BY id LIMIT {limit}",
            self.table
        );
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                // MySQL through `Any` reports TEXT as BLOB: accept both
                let context: String = match r.try_get::<String, _>("context") {
                    Ok(s) => s,
                    Err(_) => String::from_utf8_lossy(&r.try_get::<Vec<u8>, _>("context")?).into_owned(),
                };
                Ok(OutboxRow {
                    id: r.try_get("id")?,
                    aggregate_type: r.try_get("aggregatetype")?,
                    aggregate_id: r.try_get("aggregateid")?,
                    event_type: r.try_get("type")?,
                    payload: r.try_get("payload")?,
                    origin: r.try_get("origin")?,
                    hlc: Timestamp(u64::try_from(r.try_get::<i64, _>("hlc")?).unwrap_or(0)),
                    context: serde_json::from_str(&context).unwrap_or_default(),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(CrdtError::from)
    }

    /// Marks rows as sent; returns how many changed.
    pub async fn mark_sent(&self, ids: &[i64]) -> Result<u64, CrdtError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        let sql = format!("UPDATE {} SET sent = 1 WHERE id IN ({list})", self.table);
        Ok(sqlx::query(&sql).execute(&self.pool).await?.rows_affected())
    }

    /// Re-applies `replica`'s own changes from this outbox (rows whose `origin`
    /// is its cell, sent or not) stamped after the snapshot it was restored
    /// from (every own row when it was not restored); returns how many rows.
    ///
    /// A restarted cell must do this before it takes new local writes: a
    /// counter delta carries the cell's running total, so a write computed
    /// from a snapshot older than the cell's last writes would carry a smaller
    /// total, and every replica (joining by maximum) would drop it. The
    /// replica stays locked for the whole replay, so no local write
    /// interleaves; applying is idempotent, so replaying twice is harmless.
    /// [`Replica::recover`] does load, restore and replay in one step.
    ///
    /// # Errors
    /// A database error, or an own row that does not decode (nothing after it
    /// is applied; the cell should not start writing).
    pub async fn replay_into(&self, replica: &Replica) -> Result<u64, CrdtError> {
        let mut store = replica.lock_store().await;
        self.replay_locked(replica, &mut store).await
    }

    async fn replay_locked(&self, replica: &Replica, store: &mut Store) -> Result<u64, CrdtError> {
        const PAGE: i64 = 512;
        let after = hlc_to_i64(replica.replay_after());
        let sql = format!(
            "SELECT id, aggregateid, type, payload, hlc FROM {} WHERE origin = {} AND hlc > {} AND id > {} \
             ORDER BY id LIMIT {PAGE}",
            self.table,
            self.dialect.placeholder(1),
            self.dialect.placeholder(2),
            self.dialect.placeholder(3),
        );
        let mut last_id = 0i64;
        let mut replayed = 0u64;
        loop {
            let rows = sqlx::query(&sql)
                .bind(replica.cell().as_str())
                .bind(after)
                .bind(last_id)
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
                let id: i64 = r.try_get("id")?;
                let object: String = r.try_get("aggregateid")?;
                let event_type: String = r.try_get("type")?;
                let payload: Vec<u8> = r.try_get("payload")?;
                let ts = Timestamp(u64::try_from(r.try_get::<i64, _>("hlc")?).unwrap_or(0));
                let delta: Delta = codec::decode(&payload)?;
                if delta.event_type() != event_type {
                    return Err(CrdtError::Corrupt(format!(
                        "outbox row {id}: type {event_type:?} but payload is {}",
                        delta.event_type()
                    )));
                }
                replica.apply_own(store, &object, ts, &delta)?;
                last_id = id;
                replayed += 1;
            }
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < PAGE {
                break;
            }
        }
        replica.mark_recovered();
        tracing::info!(cell = %replica.cell(), replayed, "crdt replica replayed its own outbox");
        Ok(replayed)
    }

    /// Number of rows not yet sent.
    pub async fn pending_count(&self) -> Result<i64, CrdtError> {
        let sql = format!("SELECT COUNT(*) AS n FROM {} WHERE sent = 0", self.table);
        Ok(sqlx::query(&sql).fetch_one(&self.pool).await?.try_get("n")?)
    }
}

/// Rows per `INSERT` of [`Outbox::enqueue_all`] (7 bound parameters each:
/// under every dialect's limit).
pub const ROWS_PER_INSERT: usize = 100;

/// The longest outbox or state table name.
pub(crate) const MAX_TABLE_LEN: usize = 60;

/// `rows` parenthesised groups of `cols` placeholders, numbered on, for a
/// multi-row `INSERT ... VALUES`.
pub(crate) fn values_list(dialect: Dialect, rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let p: Vec<_> = (1..=cols).map(|c| dialect.placeholder(r * cols + c)).collect();
            format!("({})", p.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn hlc_to_i64(ts: Timestamp) -> i64 {
    i64::try_from(ts.0).unwrap_or(i64::MAX)
}

/// The current `cellctx` context as HTTP header names and values.
fn current_context_headers() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(ctx) = cellctx::current() else { return out };
    let mut map = http::HeaderMap::new();
    if let Err(e) = cellctx::inject(&ctx, &cellctx::HeaderNames::default(), &mut map) {
        tracing::warn!(error = %e, "cell context not stored with the outbox row");
        return out;
    }
    for (k, v) in &map {
        if let Ok(v) = v.to_str() {
            out.insert(k.as_str().to_string(), v.to_string());
        }
    }
    out
}
