//! Retention: deleting finished sagas from the log after an age and/or past
//! a count, so the two tables do not grow forever.

use std::time::Duration;

use sqlx::Row;

use super::{LogPool, SagaLog, now_ms, to_i64};
use crate::error::Error;

/// Default number of sagas deleted per statement batch.
pub const DEFAULT_PRUNE_BATCH: usize = 500;

/// How long finished sagas stay in the log.
///
/// Only `committed` and `compensated` sagas are ever deleted (with their step
/// rows): live sagas are still driven, and `stuck` ones wait for an operator.
/// A saga's age is measured from its last write (`updated_ms`, the time it
/// finished) by the pruning process's wall clock.
///
/// ```
/// use std::time::Duration;
/// use saga::Retention;
///
/// // Keep a week of finished sagas, and never more than 100,000 of them.
/// let r = Retention::try_new(Some(Duration::from_secs(7 * 86_400)), Some(100_000))?;
/// assert_eq!(r.max_count(), Some(100_000));
/// # Ok::<(), saga::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    max_age: Option<Duration>,
    max_count: Option<usize>,
    batch: usize,
}

impl Retention {
    /// Deletes finished sagas older than `max_age` and/or beyond the newest
    /// `max_count`. At least one bound must be given; an age must be at least
    /// 1 ms (a count of 0 deletes every finished saga).
    pub fn try_new(max_age: Option<Duration>, max_count: Option<usize>) -> Result<Self, Error> {
        if max_age.is_none() && max_count.is_none() {
            return Err(Error::InvalidConfig("retention needs a max age or a max count".into()));
        }
        if max_age.is_some_and(|a| a < Duration::from_millis(1)) {
            return Err(Error::InvalidConfig("retention max age must be at least 1 ms".into()));
        }
        Ok(Retention { max_age, max_count, batch: DEFAULT_PRUNE_BATCH })
    }

    /// How many sagas one delete statement removes at most (1..=10,000;
    /// default [`DEFAULT_PRUNE_BATCH`]): a pass loops over batches, keeping
    /// each transaction short.
    pub fn with_batch(mut self, batch: usize) -> Result<Self, Error> {
        if !(1..=10_000).contains(&batch) {
            return Err(Error::InvalidConfig(format!("retention batch {batch} is not in 1..=10000")));
        }
        self.batch = batch;
        Ok(self)
    }

    /// The age bound.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The count bound.
    pub fn max_count(&self) -> Option<usize> {
        self.max_count
    }

    /// The batch size.
    pub fn batch(&self) -> usize {
        self.batch
    }
}

impl SagaLog {
    /// Deletes the finished sagas `retention` does not keep, with their step
    /// rows, in batches (one transaction each); returns how many sagas were
    /// deleted. Safe to run from several processes at once.
    pub async fn prune(&self, retention: &Retention) -> Result<u64, Error> {
        let mut deleted = 0;
        if let Some(age) = retention.max_age {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
            let before = now_ms().saturating_sub(age_ms);
            loop {
                let xids = self.select_xids(&self.sql.finished_before, before, to_i64(retention.batch)).await?;
                deleted += self.delete(&xids).await?;
                if xids.len() < retention.batch {
                    break;
                }
            }
        }
        if let Some(keep) = retention.max_count {
            loop {
                let xids =
                    self.select_xids(&self.sql.finished_beyond, to_i64(retention.batch), to_i64(keep)).await?;
                let n = self.delete(&xids).await?;
                deleted += n;
                // Stop when nothing is beyond the bound, or when a concurrent
                // pruner took the rows we saw.
                if xids.len() < retention.batch || n == 0 {
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(table = %self.sql.saga_table, deleted, "saga log pruned");
        }
        Ok(deleted)
    }

    async fn select_xids(&self, sql: &str, a: i64, b: i64) -> Result<Vec<String>, Error> {
        let xids = on_pool!(&self.pool, |p| {
            let rows = sqlx::query(sql).bind(a).bind(b).fetch_all(p).await?;
            rows.iter().map(|r| r.try_get::<String, _>("xid")).collect::<Result<Vec<_>, _>>()?
        });
        Ok(xids)
    }

    /// Deletes the step rows, then the saga rows still finished, in one
    /// transaction; returns how many saga rows went.
    async fn delete(&self, xids: &[String]) -> Result<u64, Error> {
        if xids.is_empty() {
            return Ok(0);
        }
        let (steps, sagas) = (self.sql.delete_steps(xids.len()), self.sql.delete_sagas(xids.len()));
        let n = on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await?;
            let mut q = sqlx::query(&steps);
            for x in xids {
                q = q.bind(x);
            }
            q.execute(&mut *tx).await?;
            let mut q = sqlx::query(&sagas);
            for x in xids {
                q = q.bind(x);
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            tx.commit().await?;
            n
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bounds_are_validated() {
        assert!(matches!(Retention::try_new(None, None), Err(Error::InvalidConfig(_))));
        assert!(matches!(Retention::try_new(Some(Duration::ZERO), None), Err(Error::InvalidConfig(_))));
        let r = Retention::try_new(None, Some(0)).unwrap();
        assert_eq!((r.max_age(), r.max_count(), r.batch()), (None, Some(0), DEFAULT_PRUNE_BATCH));
        assert!(matches!(r.with_batch(0), Err(Error::InvalidConfig(_))));
        assert!(matches!(r.with_batch(10_001), Err(Error::InvalidConfig(_))));
        assert_eq!(r.with_batch(7).unwrap().batch(), 7);
    }
}
