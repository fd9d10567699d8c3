//! [`Retention`] (feature `sql`): pruning outbox rows Kafka has acknowledged.

use std::time::Duration;

use sqlx::Row;

use crate::error::CrdtError;
use crate::hlc::Timestamp;
use crate::outbox::Outbox;

/// How many sent outbox rows to keep, by age and/or count.
///
/// A row is pruned only when all of these hold: the relay has had Kafka
/// acknowledge it (`sent = 1`; pending rows are never pruned); it is stamped
/// at or before the replica's last durable snapshot
/// ([`Replica::durable_ts`](crate::Replica::durable_ts)), so recovery never
/// needs it; and it is older than `max_age` or beyond the newest `max_rows`
/// sent rows.
///
/// ```
/// use std::time::Duration;
/// use crdt::outbox::Retention;
/// let r = Retention::try_new(Some(Duration::from_secs(3600)), Some(100_000)).unwrap();
/// assert_eq!(r.max_rows(), Some(100_000));
/// assert!(Retention::try_new(None, None).is_err()); // unbounded: not a retention
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Retention {
    max_age: Option<Duration>,
    max_rows: Option<u64>,
}

impl Retention {
    /// Keeps sent rows younger than `max_age` (by their HLC time) and/or the
    /// newest `max_rows` sent rows; at least one bound is required.
    pub fn try_new(max_age: Option<Duration>, max_rows: Option<u64>) -> Result<Self, CrdtError> {
        if max_age.is_none() && max_rows.is_none() {
            return Err(CrdtError::Config("outbox retention needs a max age or a max row count".into()));
        }
        Ok(Retention { max_age, max_rows })
    }

    /// The age bound.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The count bound.
    pub fn max_rows(&self) -> Option<u64> {
        self.max_rows
    }
}

impl Outbox {
    /// Deletes the sent rows `retention` lets go that are stamped at or
    /// before `durable` (the replica's last durable snapshot, see
    /// [`Replica::durable_ts`](crate::Replica::durable_ts)); `now_ms` is the
    /// wall clock the age bound is measured against. Returns how many rows
    /// were deleted.
    pub async fn prune(&self, retention: &Retention, durable: Timestamp, now_ms: u64) -> Result<u64, CrdtError> {
        if durable == Timestamp::ZERO {
            return Ok(0);
        }
        let t = self.table();
        let mut bounds = Vec::new();
        if let Some(age) = retention.max_age {
            let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
            let cutoff = Timestamp::new(now_ms.saturating_sub(age_ms), 0);
            bounds.push(format!("hlc < {}", ts_i64(cutoff)));
        }
        if let Some(rows) = retention.max_rows {
            let sql = format!("SELECT id FROM {t} WHERE sent = 1 ORDER BY id DESC LIMIT 1 OFFSET {rows}");
            if let Some(row) = sqlx::query(&sql).fetch_optional(self.pool()).await? {
                let id: i64 = row.try_get("id")?;
                bounds.push(format!("id <= {id}"));
            }
        }
        if bounds.is_empty() {
            return Ok(0);
        }
        let sql = format!("DELETE FROM {t} WHERE sent = 1 AND hlc <= {} AND ({})", ts_i64(durable), bounds.join(" OR "));
        let deleted = sqlx::query(&sql).execute(self.pool()).await?.rows_affected();
        if deleted > 0 {
            tracing::debug!(table = t, deleted, "crdt outbox pruned");
        }
        Ok(deleted)
    }
}

fn ts_i64(ts: Timestamp) -> i64 {
    i64::try_from(ts.0).unwrap_or(i64::MAX)
}
