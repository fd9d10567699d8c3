//! A cell's two processes share its SQLite file, and at start both create
//! their tables and recover their replicas: one can find the file locked by
//! the other's write for longer than SQLite's busy timeout (seen in the fault
//! campaign as a process that exited at start with "database is locked").
//! [`retry_locked`] makes such a start step again, for a bounded time: the
//! table creations only (idempotent, `IF NOT EXISTS`); reads do not wait for
//! a writer in WAL mode.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::DemoError;

/// How long a start step is retried while the file is locked.
const WITHIN: Duration = Duration::from_secs(20);

/// Whether `e` is SQLite's "database is locked" (SQLITE_BUSY, code 5),
/// through whichever crate's error it reached us.
fn is_locked(e: &DemoError) -> bool {
    let text = e.to_string();
    text.contains("database is locked") || text.contains("(code: 5)")
}

/// Runs `step` until it succeeds, fails otherwise, or [`WITHIN`] has passed
/// with the file locked (then its last error).
pub(crate) async fn retry_locked<T, F, Fut>(what: &str, mut step: F) -> Result<T, DemoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DemoError>>,
{
    let started = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        match step().await {
            Err(e) if is_locked(&e) && started.elapsed() < WITHIN => {
                tracing::warn!(step = what, error = %e, "the cell's database is locked; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_locked_step_is_made_again_and_another_error_is_not() {
        let mut calls = 0;
        let out = retry_locked("t", || {
            calls += 1;
            let n = calls;
            async move { if n < 3 { Err(DemoError::Other("error returned from database: (code: 5) database is locked".into())) } else { Ok(n) } }
        })
        .await
        .unwrap();
        assert_eq!(out, 3);
        let mut calls = 0;
        let err = retry_locked("t", || {
            calls += 1;
            async { Err::<(), _>(DemoError::Other("no such table".into())) }
        })
        .await;
        assert!(err.is_err());
        assert_eq!(calls, 1);
    }
}
