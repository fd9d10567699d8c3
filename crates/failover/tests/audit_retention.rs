//! Audit retention on MariaDB, PostgreSQL and SQLite: settled rows go by age
//! and count, an intent whose outcome is missing stays.
#![cfg(feature = "sql")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use failover::Error;
use failover::audit::{AuditLog, AuditRecord, AuditStatus, Retention, epoch_ms};

fn row(tx: u64, intent_at_ms: u64) -> AuditRecord {
    AuditRecord {
        tx_id: tx.to_string(),
        flow: "a".into(),
        from: "state=active".into(),
        to: "state=down".into(),
        reason: "test".into(),
        rule: "r".into(),
        actor: "me".into(),
        status: AuditStatus::Intent,
        version_before: tx,
        version_after: tx + 1,
        detected_at_ms: intent_at_ms,
        decided_at_ms: intent_at_ms,
        intent_at_ms,
        committed_at_ms: None,
        applied_at_ms: None,
        note: None,
    }
}

async fn ids(log: &AuditLog) -> Vec<String> {
    log.all().await.unwrap().into_iter().map(|r| r.tx_id).collect()
}

async fn retention_on(url: &str) {
    let table = testkit::unique("fo_retain").replace('-', "_");
    let log = AuditLog::connect(url, &table).await.unwrap();
    let now = SystemTime::now();
    let (old, young) = (epoch_ms(now) - 2 * 3_600_000, epoch_ms(now) - 60_000);
    // 9 (> 8 digits: numeric order differs from text order) .. 1006
    let rows = [(9, old), (1001, old), (1002, old), (1003, old), (1004, old), (1005, young), (1006, young)];
    for (tx, at) in rows {
        log.insert_intent(&row(tx, at)).await.unwrap();
    }
    // 9 and 1001 stay intents (outcome missing), old as they are.
    assert!(log.mark_committed("1002", old + 5, None).await.unwrap());
    assert!(log.mark_rolled_back("1003", "conflict").await.unwrap());
    assert!(log.mark_committed("1004", old + 5, None).await.unwrap());
    assert!(log.mark_applied("1004", old + 9).await.unwrap());
    assert!(log.mark_committed("1005", young + 5, None).await.unwrap());

    // Age: settled rows older than an hour go, the old intents stay.
    let by_age = Retention::try_new(Some(Duration::from_secs(3600)), None).unwrap();
    assert_eq!(log.prune(&by_age, now).await.unwrap(), 3);
    assert_eq!(ids(&log).await, ["9", "1001", "1005", "1006"]);
    assert_eq!(log.prune(&by_age, now).await.unwrap(), 0);

    // Count: the newest row is kept; of the others only the settled one goes.
    let by_count = Retention::try_new(None, Some(1)).unwrap();
    assert_eq!(log.prune(&by_count, now).await.unwrap(), 1);
    assert_eq!(ids(&log).await, ["9", "1001", "1006"]);
    let left = log.all().await.unwrap();
    assert!(left.iter().all(|r| r.status == AuditStatus::Intent), "{left:?}");
    // Even a bound of one row a day later never deletes an intent.
    let later = now + Duration::from_secs(86_400);
    let both = Retention::try_new(Some(Duration::from_secs(1)), Some(1)).unwrap();
    assert_eq!(log.prune(&both, later).await.unwrap(), 0);
    assert_eq!(log.pending().await.unwrap().len(), 3);
    let pool = sqlx::AnyPool::connect(url).await.unwrap();
    sqlx::query(&format!("DROP TABLE {table}")).execute(&pool).await.unwrap();
}

#[tokio::test]
async fn retention_prunes_settled_rows_on_mariadb_postgres_and_sqlite() {
    retention_on(&testkit::mysql_url()).await;
    retention_on(&testkit::postgres_url()).await;
    let dir = tempfile::tempdir().unwrap();
    retention_on(&format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display())).await;
}

#[test]
fn a_retention_without_a_bound_or_with_a_zero_bound_is_refused() {
    assert!(matches!(Retention::try_new(None, None), Err(Error::Config(_))));
    assert!(matches!(Retention::try_new(Some(Duration::ZERO), None), Err(Error::Config(_))));
    assert!(matches!(Retention::try_new(None, Some(0)), Err(Error::Config(_))));
}
