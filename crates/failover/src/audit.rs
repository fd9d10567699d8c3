//! [`AuditLog`]: the switch audit table, through `sqlx` (MySQL/MariaDB,
//! PostgreSQL, SQLite via the `Any` driver).
//!
//! One row per switch, written as an *intent* before the routing table is
//! touched, then moved to `committed` (the table write succeeded), `applied`
//! (routers run the new table) or `rolled_back` (the write did not happen).
//! [`AtomicSwitch::reconcile`](crate::AtomicSwitch::reconcile) settles intents
//! left by a controller that died between the steps. [`AuditLog::prune`]
//! bounds the table by age and/or row count ([`Retention`]) and never deletes
//! an intent whose outcome is missing.
//!
//! ```sql
//! CREATE TABLE failover_audit (
//!   tx_id VARCHAR(32) PRIMARY KEY,      -- idgen id, decimal
//!   flow VARCHAR(255), from_state VARCHAR(255), to_state VARCHAR(255),
//!   reason VARCHAR(1024), rule_name VARCHAR(255), actor VARCHAR(255),
//!   status VARCHAR(16),                 -- intent | committed | applied | rolled_back
//!   version_before BIGINT, version_after BIGINT,
//!   detected_at_ms BIGINT, decided_at_ms BIGINT,   -- ms since the Unix epoch
//!   intent_at_ms BIGINT,
//!   committed_at_ms BIGINT NULL, applied_at_ms BIGINT NULL,
//!   note VARCHAR(1024) NULL
//! )
//! ```

use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::error::Error;
use crate::sla::{ApplyPhase, SwitchPhases};

/// The SQL dialect of the audit database (shared with the SDK's other durable logs).
pub use sqldialect::Dialect;

/// The mark a forced switch's `reason` carries: the drain cap was not applied
/// to it, so an audit reader does not count it against the cap.
pub const FORCED: &str = "[forced: drain cap not applied]";

/// The longest audit table name.
const MAX_TABLE_LEN: usize = 64;

fn config_error(e: sqldialect::Error) -> Error {
    Error::Config(format!("audit log: {e}"))
}

/// Where a switch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditStatus {
    /// Written before the table; the switch may or may not happen.
    Intent,
    /// The table write succeeded.
    Committed,
    /// Routers run the new table.
    Applied,
    /// The table write did not happen.
    RolledBack,
}

impl AuditStatus {
    /// The value stored in the `status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditStatus::Intent => "intent",
            AuditStatus::Committed => "committed",
            AuditStatus::Applied => "applied",
            AuditStatus::RolledBack => "rolled_back",
        }
    }

    fn parse(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "intent" => AuditStatus::Intent,
            "committed" => AuditStatus::Committed,
            "applied" => AuditStatus::Applied,
            "rolled_back" => AuditStatus::RolledBack,
            other => return Err(Error::Config(format!("unknown audit status {other:?}"))),
        })
    }
}

/// One audit row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Transaction id (an idgen id, decimal).
    pub tx_id: String,
    /// The flow or cell switched.
    pub flow: String,
    /// State before (e.g. `state=active`).
    pub from: String,
    /// State after (e.g. `state=down`).
    pub to: String,
    /// Why.
    pub reason: String,
    /// The rule that decided it (`manual` for operators).
    pub rule: String,
    /// Who switched (controller or operator name).
    pub actor: String,
    /// Where the switch is.
    pub status: AuditStatus,
    /// Routing table version before.
    pub version_before: u64,
    /// Routing table version after.
    pub version_after: u64,
    /// When the problem was detected (ms since the Unix epoch).
    pub detected_at_ms: u64,
    /// When the switch was decided.
    pub decided_at_ms: u64,
    /// When the intent row was written (lock held, change prepared).
    pub intent_at_ms: u64,
    /// When the table write committed.
    pub committed_at_ms: Option<u64>,
    /// When routers applied the table.
    pub applied_at_ms: Option<u64>,
    /// Outcome notes (why rolled back, who reconciled).
    pub note: Option<String>,
}

impl AuditRecord {
    /// The phase durations (see [`SwitchPhases`] for the instants); `None`
    /// before the commit. The apply is [`ApplyPhase::Applied`] when the row
    /// is stamped `applied`, else [`ApplyPhase::NotTracked`] (the controller
    /// turns an apply wait that ran out into [`ApplyPhase::TimedOut`]).
    pub fn phases(&self) -> Option<SwitchPhases> {
        let c = self.committed_at_ms?;
        let ms = |a: u64, b: u64| Duration::from_millis(b.saturating_sub(a));
        Some(SwitchPhases {
            detect: ms(self.detected_at_ms, self.decided_at_ms),
            decide: ms(self.decided_at_ms, self.intent_at_ms),
            commit: ms(self.intent_at_ms, c),
            apply: self.applied_at_ms.map(|a| ApplyPhase::Applied(ms(c, a))).unwrap_or(ApplyPhase::NotTracked),
        })
    }
}

/// How long settled audit rows are kept ([`AuditLog::prune`]).
///
/// A row is pruned when it is settled (`committed`, `applied` or
/// `rolled_back`) and either older than the age bound (by its intent time)
/// or not among the newest `max_rows` rows of the table. An intent whose
/// outcome is missing is never pruned, whatever its age: reconcile still
/// has to settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    max_age: Option<Duration>,
    max_rows: Option<NonZeroUsize>,
}

impl Default for Retention {
    /// 90 days and 100 000 rows (the [`Controller`](crate::Controller)'s default).
    fn default() -> Self {
        Retention { max_age: Some(Duration::from_secs(90 * 86_400)), max_rows: NonZeroUsize::new(100_000) }
    }
}

impl Retention {
    /// Keeps rows younger than `max_age` (when given) and the newest
    /// `max_rows` (when given); at least one bound, neither zero.
    pub fn try_new(max_age: Option<Duration>, max_rows: Option<usize>) -> Result<Self, Error> {
        if max_age.is_none() && max_rows.is_none() {
            return Err(Error::Config("audit retention needs an age or a row bound".into()));
        }
        if max_age.is_some_and(|a| a.is_zero()) {
            return Err(Error::Config("audit retention age must be positive".into()));
        }
        let max_rows = match max_rows {
            Some(n) => Some(NonZeroUsize::new(n).ok_or_else(|| Error::Config("audit retention rows must be positive".into()))?),
            None => None,
        };
        Ok(Retention { max_age, max_rows })
    }

    /// The age bound.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The row bound.
    pub fn max_rows(&self) -> Option<NonZeroUsize> {
        self.max_rows
    }
}

/// Milliseconds since the Unix epoch.
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The audit table.
#[derive(Debug, Clone)]
pub struct AuditLog {
    pool: AnyPool,
    dialect: Dialect,
    table: String,
}

const COLUMNS: &str = "tx_id, flow, from_state, to_state, reason, rule_name, actor, status, version_before, \
                       version_after, detected_at_ms, decided_at_ms, intent_at_ms, committed_at_ms, applied_at_ms, note";

impl AuditLog {
    /// Connects to `url` (MySQL/MariaDB, Postgres or SQLite) and uses `table`
    /// (letters, digits and `_`, at most 64), creating it if missing.
    pub async fn connect(url: &str, table: &str) -> Result<Self, Error> {
        sqlx::any::install_default_drivers();
        let dialect = Dialect::from_url(url).map_err(config_error)?;
        let pool = AnyPoolOptions::new().max_connections(4).connect(url).await?;
        let log = Self::new(pool, dialect, table)?;
        log.ensure_table().await?;
        Ok(log)
    }

    /// An audit log on an existing pool (call [`ensure_table`](Self::ensure_table)).
    pub fn new(pool: AnyPool, dialect: Dialect, table: &str) -> Result<Self, Error> {
        sqldialect::check_identifier(table, MAX_TABLE_LEN).map_err(config_error)?;
        Ok(AuditLog { pool, dialect, table: table.to_string() })
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table if it does not exist.
    pub async fn ensure_table(&self) -> Result<(), Error> {
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (\
             tx_id VARCHAR(32) NOT NULL PRIMARY KEY, flow VARCHAR(255) NOT NULL, \
             from_state VARCHAR(255) NOT NULL, to_state VARCHAR(255) NOT NULL, reason VARCHAR(1024) NOT NULL, \
             rule_name VARCHAR(255) NOT NULL, actor VARCHAR(255) NOT NULL, status VARCHAR(16) NOT NULL, \
             version_before BIGINT NOT NULL, version_after BIGINT NOT NULL, detected_at_ms BIGINT NOT NULL, \
             decided_at_ms BIGINT NOT NULL, intent_at_ms BIGINT NOT NULL, committed_at_ms BIGINT NULL, applied_at_ms BIGINT NULL, note VARCHAR(1024) NULL)",
            self.table
        );
        sqlx::query(&ddl).execute(&self.pool).await?;
        Ok(())
    }

    /// Writes the intent row (status `intent`).
    pub async fn insert_intent(&self, r: &AuditRecord) -> Result<(), Error> {
        let sql = format!("INSERT INTO {} ({COLUMNS}) VALUES ({})", self.table, self.dialect.placeholders(16));
        sqlx::query(&sql)
            .bind(r.tx_id.clone())
            .bind(r.flow.clone())
            .bind(r.from.clone())
            .bind(r.to.clone())
            .bind(r.reason.clone())
            .bind(r.rule.clone())
            .bind(r.actor.clone())
            .bind(AuditStatus::Intent.as_str())
            .bind(r.version_before as i64)
            .bind(r.version_after as i64)
            .bind(r.detected_at_ms as i64)
            .bind(r.decided_at_ms as i64)
            .bind(r.intent_at_ms as i64)
            .bind(r.committed_at_ms.map(|v| v as i64))
            .bind(r.applied_at_ms.map(|v| v as i64))
            .bind(r.note.clone())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves an intent to `committed`; false when the row was not an intent.
    pub async fn mark_committed(&self, tx_id: &str, at_ms: u64, note: Option<&str>) -> Result<bool, Error> {
        let d = self.dialect;
        let sql = format!(
            "UPDATE {} SET status = 'committed', committed_at_ms = {}, note = {} WHERE tx_id = {} AND status = 'intent'",
            self.table,
            d.placeholder(1),
            d.placeholder(2),
            d.placeholder(3)
        );
        let res =
            sqlx::query(&sql).bind(at_ms as i64).bind(note.map(str::to_string)).bind(tx_id.to_string()).execute(&self.pool).await?;
        Ok(res.rows_affected() == 1)
    }

    /// Moves a committed row to `applied`; false when it was not committed.
    pub async fn mark_applied(&self, tx_id: &str, at_ms: u64) -> Result<bool, Error> {
        let d = self.dialect;
        let sql = format!(
            "UPDATE {} SET status = 'applied', applied_at_ms = {} WHERE tx_id = {} AND status = 'committed'",
            self.table,
            d.placeholder(1),
            d.placeholder(2)
        );
        let res = sqlx::query(&sql).bind(at_ms as i64).bind(tx_id.to_string()).execute(&self.pool).await?;
        Ok(res.rows_affected() == 1)
    }

    /// Moves an intent to `rolled_back` with a note; false when it was not an intent.
    pub async fn mark_rolled_back(&self, tx_id: &str, note: &str) -> Result<bool, Error> {
        let d = self.dialect;
        let sql = format!(
            "UPDATE {} SET status = 'rolled_back', note = {} WHERE tx_id = {} AND status = 'intent'",
            self.table,
            d.placeholder(1),
            d.placeholder(2)
        );
        let res = sqlx::query(&sql).bind(note.to_string()).bind(tx_id.to_string()).execute(&self.pool).await?;
        Ok(res.rows_affected() == 1)
    }

    /// The row of `tx_id`.
    pub async fn get(&self, tx_id: &str) -> Result<Option<AuditRecord>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE tx_id = {}", self.table, self.dialect.placeholder(1));
        let row = sqlx::query(&sql).bind(tx_id.to_string()).fetch_optional(&self.pool).await?;
        row.map(|r| decode(&r)).transpose()
    }

    /// Every row, oldest first (by tx id, which grows with time).
    pub async fn all(&self) -> Result<Vec<AuditRecord>, Error> {
        let sql = format!("SELECT {COLUMNS} FROM {} ORDER BY tx_id", self.table);
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await?;
        let mut out: Vec<AuditRecord> = rows.iter().map(decode).collect::<Result<_, _>>()?;
        out.sort_by_key(|r| r.tx_id.parse::<u64>().unwrap_or(0));
        Ok(out)
    }

    /// Deletes the settled rows `retention` no longer keeps, as of `now`;
    /// returns how many. Intents are never deleted (the delete itself also
    /// guards on the status).
    pub async fn prune(&self, retention: &Retention, now: SystemTime) -> Result<u64, Error> {
        let sql = format!("SELECT tx_id, status, intent_at_ms FROM {}", self.table);
        let mut rows: Vec<(String, String, i64)> = sqlx::query(&sql)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok::<_, Error>((r.try_get("tx_id")?, r.try_get("status")?, r.try_get("intent_at_ms")?)))
            .collect::<Result<_, _>>()?;
        // newest first: by tx id (idgen ids grow with time), then intent time
        rows.sort_by_key(|(tx, _, at)| std::cmp::Reverse((tx.parse::<u64>().unwrap_or(0), *at)));
        let cutoff = retention.max_age.map(|a| epoch_ms(now).saturating_sub(a.as_millis() as u64) as i64);
        let keep = retention.max_rows.map_or(usize::MAX, NonZeroUsize::get);
        let doomed: Vec<String> = rows
            .into_iter()
            .enumerate()
            .filter(|(rank, (_, status, at))| {
                status != AuditStatus::Intent.as_str() && (*rank >= keep || cutoff.is_some_and(|c| *at < c))
            })
            .map(|(_, (tx, _, _))| tx)
            .collect();
        let mut deleted = 0;
        for chunk in doomed.chunks(200) {
            let sql = format!(
                "DELETE FROM {} WHERE status <> 'intent' AND tx_id IN ({})",
                self.table,
                self.dialect.placeholders(chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for tx in chunk {
                q = q.bind(tx.clone());
            }
            deleted += q.execute(&self.pool).await?.rows_affected();
        }
        Ok(deleted)
    }

    /// Rows still in `intent`.
    pub async fn pending(&self) -> Result<Vec<AuditRecord>, Error> {
        Ok(self.all().await?.into_iter().filter(|r| r.status == AuditStatus::Intent).collect())
    }
}

fn decode(r: &AnyRow) -> Result<AuditRecord, Error> {
    let u = |v: i64| v.max(0) as u64;
    let status: String = r.try_get("status")?;
    Ok(AuditRecord {
        tx_id: r.try_get("tx_id")?,
        flow: r.try_get("flow")?,
        from: r.try_get("from_state")?,
        to: r.try_get("to_state")?,
        reason: r.try_get("reason")?,
        rule: r.try_get("rule_name")?,
        actor: r.try_get("actor")?,
        status: AuditStatus::parse(&status)?,
        version_before: u(r.try_get("version_before")?),
        version_after: u(r.try_get("version_after")?),
        detected_at_ms: u(r.try_get("detected_at_ms")?),
        decided_at_ms: u(r.try_get("decided_at_ms")?),
        intent_at_ms: u(r.try_get("intent_at_ms")?),
        committed_at_ms: r.try_get::<Option<i64>, _>("committed_at_ms")?.map(u),
        applied_at_ms: r.try_get::<Option<i64>, _>("applied_at_ms")?.map(u),
        note: r.try_get("note")?,
    })
}
