//! Worker leases against the real Redis, a real (private) etcd, and a SQL
//! table in SQLite, MariaDB and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(any(feature = "redis", feature = "etcd", feature = "sql"))]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idgen::{Clock, Error, Generator, Layout, LeaseOptions, ManualClock, SystemClock, WorkerLease};

/// 2 worker ids per datacenter: contention is easy to set up.
fn two_workers() -> Layout {
    Layout::try_new(41, 3, 5, 1, 14).unwrap()
}

/// A single worker id per datacenter.
fn one_worker() -> Layout {
    Layout::try_new(41, 3, 5, 0, 15).unwrap()
}

fn ids(g: &Generator, n: usize) -> Vec<u64> {
    (0..n).map(|_| g.next_id().unwrap().get()).collect()
}

/// Two leasers never hold the same worker id; a third finds none free; after
/// one stops renewing, its id is taken over only once its deadline (last
/// renewal + TTL) has passed, when its generator already refuses; the new
/// holder's ids are above everything the old one issued.
async fn exclusive_then_takeover<F, Fut>(acquire: F, ttl: Duration)
where
    F: Fn(LeaseOptions) -> Fut,
    Fut: Future<Output = Result<WorkerLease, Error>>,
{
    let prefix = testkit::unique("idgen-excl");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::new());
    let opts = LeaseOptions::try_new(prefix, two_workers(), 4).unwrap().with_ttl(ttl).with_clock(clock.clone());

    let a = acquire(opts.clone()).await.unwrap();
    let b = acquire(opts.clone()).await.unwrap();
    assert_ne!(a.worker(), b.worker(), "two leasers hold the same worker id");
    assert!(matches!(
        acquire(opts.clone()).await,
        Err(Error::NoWorkerAvailable { datacenter: 4, workers: 2 })
    ));
    let (ga, gb) = (a.generator().unwrap(), b.generator().unwrap());
    let layout = two_workers();
    let a_ids = ids(&ga, 100);
    assert!(a_ids.iter().all(|&id| layout.decode(id).worker == a.worker()));
    assert!(ids(&gb, 100).iter().all(|&id| layout.decode(id).worker == b.worker()));

    // Renewals keep the lease valid well past one TTL.
    tokio::time::sleep(ttl + ttl / 2).await;
    assert!(a.is_valid() && b.is_valid());
    let a_ids = ids(&ga, 100);
    let a_worker = a.worker();

    // A freezes: no more renewals, no release.
    let a_deadline = a.valid_until_ms();
    a.abandon();
    assert!(matches!(acquire(opts.clone()).await, Err(Error::NoWorkerAvailable { .. })));

    let started = Instant::now();
    let c = loop {
        match acquire(opts.clone()).await {
            Ok(c) => break c,
            Err(Error::NoWorkerAvailable { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("acquire failed: {e}"),
        }
        assert!(started.elapsed() < ttl * 3, "abandoned worker id never became free");
    };
    let taken_at = clock.now_ms();
    assert_eq!(c.worker(), a_worker);
    assert!(taken_at >= a_deadline, "taken over at {taken_at}, before the old deadline {a_deadline}");
    assert!(matches!(ga.try_next_id(), Err(Error::LeaseExpired)), "old holder still issues");
    let a_last = *a_ids.last().unwrap();
    assert!(c.floor_ms() > layout.decode(a_last).timestamp_ms);
    let gc = c.generator().unwrap();
    assert!(ids(&gc, 100).iter().all(|&id| id > a_last));
    assert!(b.is_valid(), "the other holder was disturbed");
    b.release().await.unwrap();
    c.release().await.unwrap();
}

/// Dropping a lease frees the worker id at once (long before the TTL) and
/// records the exact high-water mark; a holder restarted with its clock rolled
/// back starts above it, or refuses, but never reissues.
async fn release_and_rollback<F, Fut>(acquire: F, ttl: Duration)
where
    F: Fn(LeaseOptions) -> Fut,
    Fut: Future<Output = Result<WorkerLease, Error>>,
{
    let prefix = testkit::unique("idgen-rel");
    let layout = one_worker();
    let opts = LeaseOptions::try_new(prefix, layout, 1).unwrap().with_ttl(ttl);

    let a = acquire(opts.clone()).await.unwrap();
    let ga = a.generator().unwrap();
    let a_ids = ids(&ga, 2_000);
    let a_last = *a_ids.last().unwrap();
    drop(a);
    assert!(matches!(ga.try_next_id(), Err(Error::LeaseExpired)), "released lease still issues");

    // The drop releases in the background: the worker id is free long before the TTL.
    let started = Instant::now();
    let b = loop {
        match acquire(opts.clone()).await {
            Ok(b) => break b,
            Err(Error::NoWorkerAvailable { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("acquire failed: {e}"),
        }
        assert!(started.elapsed() < ttl / 2, "dropped lease was not released");
    };
    assert!(b.floor_ms() > layout.decode(a_last).timestamp_ms);
    b.release().await.unwrap();

    // A restart whose clock is 5 s behind the last id issued.
    let behind = ManualClock::new(layout.decode(a_last).timestamp_ms - 5_000);
    let rolled = opts.clone().with_clock(Arc::new(behind.clone()));
    let c = acquire(rolled.clone()).await.unwrap();
    assert!(matches!(c.generator().unwrap().try_next_id(), Err(Error::ClockMovedBackwards { .. })));
    c.release().await.unwrap();
    let d = acquire(rolled.with_max_behind(Duration::from_secs(60))).await.unwrap();
    let gd = d.generator().unwrap();
    let d_ids: Vec<u64> = (0..50).map(|_| gd.try_next_id().unwrap().get()).collect();
    assert!(d_ids.iter().all(|&id| id > a_last), "reissued an old id after a clock rollback");
    d.release().await.unwrap();
}

/// Waits until the generator refuses; returns the error.
async fn wait_refusal(g: &Generator, within: Duration) -> Error {
    let started = Instant::now();
    loop {
        match g.try_next_id() {
            Ok(_) | Err(Error::WouldBlock) => {}
            Err(e) => return e,
        }
        assert!(started.elapsed() < within, "generator kept issuing ids");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(feature = "redis")]
mod redis_lease {
    use super::*;
    use redis::AsyncCommands;
    use redis::aio::ConnectionManager;

    async fn conn() -> ConnectionManager {
        let url = testkit::redis_url();
        let client = redis::Client::open(url.as_str()).unwrap();
        client
            .get_connection_manager()
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} does not answer: {e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exclusive_and_takeover_only_after_ttl() {
        let c = conn().await;
        exclusive_then_takeover(|o| WorkerLease::redis(c.clone(), o), Duration::from_millis(900)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_releases_and_high_water_mark_survives_rollback() {
        let c = conn().await;
        release_and_rollback(|o| WorkerLease::redis(c.clone(), o), Duration::from_secs(30)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_lease_refuses_to_issue() {
        let mut c = conn().await;
        let prefix = testkit::unique("idgen-lost");
        let opts = LeaseOptions::try_new(prefix.clone(), one_worker(), 2)
            .unwrap()
            .with_ttl(Duration::from_millis(900));
        let lease = WorkerLease::redis(c.clone(), opts).await.unwrap();
        let g = lease.generator().unwrap();
        g.next_id().unwrap();
        // Someone else's token in the record (an operator, a split brain).
        let key = format!("{prefix}:{{2:0}}:lease");
        let _: () = c.set(&key, "intruder").await.unwrap();
        let err = wait_refusal(&g, Duration::from_secs(3)).await;
        assert!(matches!(err, Error::LeaseLost), "{err}");
        assert!(lease.is_lost());
        // Dropping a lost lease leaves the intruder's record alone.
        drop(lease);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v: String = c.get(&key).await.unwrap();
        assert_eq!(v, "intruder");
        let _: () = c.del(&key).await.unwrap();
    }

    #[tokio::test]
    async fn invalid_options_are_rejected() {
        assert!(matches!(LeaseOptions::try_new("", Layout::seed(), 0), Err(Error::InvalidLease(_))));
        assert!(matches!(LeaseOptions::try_new("p", Layout::seed(), 8), Err(Error::OutOfRange { .. })));
        let opts = LeaseOptions::try_new("p", Layout::seed(), 0).unwrap().with_ttl(Duration::from_millis(10));
        assert!(matches!(WorkerLease::redis(conn().await, opts).await, Err(Error::InvalidLease(_))));
    }
}

#[cfg(feature = "etcd")]
mod etcd_lease {
    use super::*;
    use etcd_client::Client;
    use testkit::EtcdServer;

    async fn client(server: &EtcdServer) -> Client {
        Client::connect([server.endpoint()], None)
            .await
            .unwrap_or_else(|e| panic!("etcd at {} does not answer: {e}", server.endpoint()))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exclusive_and_takeover_only_after_ttl() {
        let server = EtcdServer::start();
        let c = client(&server).await;
        exclusive_then_takeover(|o| WorkerLease::etcd(c.clone(), o), Duration::from_secs(2)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_releases_and_high_water_mark_survives_rollback() {
        let server = EtcdServer::start();
        let c = client(&server).await;
        release_and_rollback(|o| WorkerLease::etcd(c.clone(), o), Duration::from_secs(30)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn generator_refuses_once_renewals_fail_for_a_ttl() {
        let mut server = EtcdServer::start();
        let c = client(&server).await;
        let opts = LeaseOptions::try_new(testkit::unique("idgen-down"), one_worker(), 3)
            .unwrap()
            .with_ttl(Duration::from_secs(2));
        let lease = WorkerLease::etcd(c, opts).await.unwrap();
        let g = lease.generator().unwrap();
        g.next_id().unwrap();
        let deadline = lease.valid_until_ms();
        server.stop();
        let err = wait_refusal(&g, Duration::from_secs(5)).await;
        assert!(matches!(err, Error::LeaseExpired), "{err}");
        assert!(g.clock().now_ms() >= deadline);
        assert!(!lease.is_valid());
        lease.abandon();
    }

    #[tokio::test]
    async fn ttl_below_etcd_minimum_is_rejected() {
        let server = EtcdServer::start();
        let opts = LeaseOptions::try_new("p", Layout::seed(), 0).unwrap().with_ttl(Duration::from_secs(1));
        assert!(matches!(WorkerLease::etcd(client(&server).await, opts).await, Err(Error::InvalidLease(_))));
    }
}

#[cfg(feature = "sql")]
mod sql_lease {
    use super::*;
    use idgen::{SqlDialect, SqlLeases};
    use sqlx::AnyPool;

    /// A fresh lease table in `url`'s database (dropped by [`drop_table`]).
    async fn table(url: &str) -> SqlLeases {
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(url)
            .await
            .unwrap_or_else(|e| panic!("{url} does not answer: {e}"));
        let dialect = SqlDialect::from_url(url).unwrap();
        let t = SqlLeases::try_new(
            pool,
            dialect,
            &testkit::unique("idgen_leases").replace('-', "_"),
        )
        .unwrap();
        t.migrate().await.unwrap();
        t
    }

    async fn drop_table(t: &SqlLeases, url: &str) {
        let pool = AnyPool::connect(url).await.unwrap();
        sqlx::query(&format!("DROP TABLE {}", t.table()))
            .execute(&pool)
            .await
            .unwrap();
    }

    fn sqlite_url(dir: &tempfile::TempDir) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("leases.db").display()
        )
    }

    /// Every dialect: exclusive, taken over only after the TTL by the
    /// database's clock, the high-water mark kept across release and rollback.
    async fn laws(url: &str) {
        let t = table(url).await;
        exclusive_then_takeover(|o| WorkerLease::sql(&t, o), Duration::from_millis(900)).await;
        release_and_rollback(|o| WorkerLease::sql(&t, o), Duration::from_secs(30)).await;
        drop_table(&t, url).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_leases_keep_the_laws() {
        let dir = tempfile::tempdir().unwrap();
        laws(&sqlite_url(&dir)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mariadb_leases_keep_the_laws() {
        laws(&testkit::mysql_url()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_leases_keep_the_laws() {
        laws(&testkit::postgres_url()).await;
    }

    /// A row whose holder changed under the lease (an operator, a split
    /// brain) stops its generators; the release leaves the other holder's row
    /// alone; `forget` deletes the id space's rows.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lost_lease_refuses_to_issue() {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir);
        let t = table(&url).await;
        let prefix = testkit::unique("idgen-lost");
        let opts = LeaseOptions::try_new(prefix.clone(), one_worker(), 2)
            .unwrap()
            .with_ttl(Duration::from_millis(900));
        let lease = WorkerLease::sql(&t, opts).await.unwrap();
        let g = lease.generator().unwrap();
        g.next_id().unwrap();
        let pool = AnyPool::connect(&url).await.unwrap();
        let set = format!(
            "UPDATE {} SET holder = 'intruder' WHERE space = ?",
            t.table()
        );
        sqlx::query(&set)
            .bind(&prefix)
            .execute(&pool)
            .await
            .unwrap();
        let err = wait_refusal(&g, Duration::from_secs(3)).await;
        assert!(matches!(err, Error::LeaseLost), "{err}");
        drop(lease);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let holder: String =
            sqlx::query_scalar(&format!("SELECT holder FROM {} WHERE space = ?", t.table()))
                .bind(&prefix)
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(holder, "intruder");
        assert_eq!(t.forget(&prefix).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn a_table_name_that_is_not_an_identifier_is_rejected() {
        sqlx::any::install_default_drivers();
        let pool = sqlx::any::AnyPoolOptions::new()
            .connect_lazy("sqlite::memory:")
            .unwrap();
        assert!(matches!(
            SqlLeases::try_new(pool, SqlDialect::Sqlite, "leases; DROP TABLE x"),
            Err(Error::InvalidLease(_))
        ));
    }
}
