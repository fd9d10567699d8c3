//! The cell process's idgen worker id, always leased: from etcd when
//! `ETCD_ENDPOINTS` is set, else from a table in the run's own store
//! (`DEMO_DATABASE_URL`, or a SQLite file beside the cells' directories that
//! every process of the run shares). The lease is renewed in the background
//! and released at exit, and a new holder starts above the previous
//! holders' high-water mark, so a process restarted with its clock behind
//! (or stepped back) never reissues an id. The lease lives in the store the
//! writes need anyway: it adds no dependency that can fail on its own.

use std::path::Path;
use std::time::Duration;

use crate::error::DemoError;

/// The lease's TTL: a killed process's worker id is free again after it.
const TTL: Duration = Duration::from_secs(10);

/// How long one attempt to lease may take.
const ATTEMPT: Duration = Duration::from_secs(5);

/// How far the clock may fall behind the last id before the generator
/// refuses: a process counts on from its last id through a clock step back
/// of up to a minute (the seed layout holds 1,024 ids per millisecond; past
/// them it awaits the clock).
const MAX_BEHIND: Duration = Duration::from_secs(60);

/// The key prefix (etcd) and id space (SQL) of a run's leased worker ids
/// (under the run's etcd prefix, which the orchestrator deletes at the end).
pub(crate) fn lease_prefix(run_id: &str) -> String {
    format!("/cellsdk/demo/{run_id}/idgen")
}

/// The run's lease table: `DEMO_DATABASE_URL`'s database, else the SQLite
/// file `idgen-leases.db` in `run_dir`.
fn lease_table(run_dir: &Path, run_id: &str) -> (String, String) {
    let url = match std::env::var("DEMO_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => format!(
            "sqlite://{}?mode=rwc",
            run_dir.join("idgen-leases.db").display()
        ),
    };
    (
        url,
        format!("demo_{}_idgen_leases", run_id.replace('-', "_")),
    )
}

/// The ids of this process and what holds its worker id (keep it alive: the
/// lease is released when it drops).
pub(crate) struct WorkerIds {
    /// The generator.
    pub(crate) ids: idgen::Generator,
    _lease: idgen::WorkerLease,
}

/// A generator for `datacenter` on a leased worker id (retried until one is
/// free: a restarted process waits out its old lease at most one TTL). The
/// run's directory holds the SQLite lease table when neither etcd nor
/// `DEMO_DATABASE_URL` is set.
pub(crate) async fn worker_ids(
    eps: Option<crate::etcd::Endpoints>,
    run_dir: &Path,
    run_id: &str,
    datacenter: u32,
) -> Result<WorkerIds, DemoError> {
    let opts =
        idgen::LeaseOptions::try_new(lease_prefix(run_id), idgen::Layout::seed(), datacenter)?
            .with_ttl(TTL)
            .with_max_behind(MAX_BEHIND);
    let (url, table) = lease_table(run_dir, run_id);
    let mut wait = Duration::from_millis(200);
    loop {
        let attempt = async {
            match &eps {
                Some(eps) => lease_etcd(eps, opts.clone()).await,
                None => lease_sql(&url, &table, opts.clone()).await,
            }
        };
        // an attempt stuck on a busy store is abandoned and made again
        let leased = tokio::time::timeout(ATTEMPT, attempt)
            .await
            .unwrap_or_else(|_| Err(DemoError::Other(format!("no answer from the lease store within {ATTEMPT:?}"))));
        match leased {
            // (idgen logs the worker id it leased)
            Ok(lease) => {
                return Ok(WorkerIds {
                    ids: lease.generator()?,
                    _lease: lease,
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "no idgen worker id leased yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn lease_sql(
    url: &str,
    table: &str,
    opts: idgen::LeaseOptions,
) -> Result<idgen::WorkerLease, DemoError> {
    sqlx::any::install_default_drivers();
    let dialect = idgen::SqlDialect::from_url(url).map_err(|e| DemoError::Config(e.to_string()))?;
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let leases = idgen::SqlLeases::try_new(pool, dialect, table)?;
    leases.migrate().await?;
    Ok(idgen::WorkerLease::sql(&leases, opts).await?)
}

#[cfg(feature = "etcd")]
async fn lease_etcd(
    eps: &[String],
    opts: idgen::LeaseOptions,
) -> Result<idgen::WorkerLease, DemoError> {
    let client = etcd_client::Client::connect(eps, None)
        .await
        .map_err(|e| DemoError::Other(format!("etcd: {e}")))?;
    Ok(idgen::WorkerLease::etcd(client, opts).await?)
}

#[cfg(not(feature = "etcd"))]
async fn lease_etcd(
    eps: &crate::etcd::Endpoints,
    _opts: idgen::LeaseOptions,
) -> Result<idgen::WorkerLease, DemoError> {
    match *eps {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Two processes of one datacenter lease different worker ids from the
    /// run's SQLite lease table; a released worker id keeps the high-water
    /// mark its next holder starts above.
    #[tokio::test]
    async fn processes_lease_distinct_worker_ids_from_the_runs_own_store() {
        let run_dir = tempfile::tempdir().unwrap();
        let run_id = "lease-test";
        let a = worker_ids(None, run_dir.path(), run_id, 1).await.unwrap();
        let b = worker_ids(None, run_dir.path(), run_id, 1).await.unwrap();
        assert_ne!(
            a.ids.worker(),
            b.ids.worker(),
            "two live processes share a worker id"
        );
        let last = (0..1000).map(|_| a.ids.next_id().unwrap()).max().unwrap();
        let worker = a.ids.worker();
        a._lease.release().await.unwrap();
        let (url, table) = lease_table(run_dir.path(), run_id);
        let pool = sqlx::AnyPool::connect(&url).await.unwrap();
        let hwm: i64 = sqlx::query_scalar(&format!(
            "SELECT hwm_ms FROM {table} WHERE datacenter = 1 AND worker = ?"
        ))
        .bind(i64::from(worker))
        .fetch_one(&pool)
        .await
        .unwrap();
        let last_ms = idgen::Layout::seed().decode(last.get()).timestamp_ms;
        assert!(
            u64::try_from(hwm).unwrap() >= last_ms,
            "the next holder of {worker} would start below {last:?}"
        );
        drop(b);
    }

    /// The same with etcd: the high-water mark is in etcd under the run's prefix.
    #[cfg(feature = "etcd")]
    #[tokio::test]
    async fn processes_lease_distinct_worker_ids_and_leave_their_high_water_mark() {
        let etcd = std::env::var("CELL_TEST_ETCD_ENDPOINTS")
            .expect("CELL_TEST_ETCD_ENDPOINTS must name an etcd (scripts/test starts a private one and sets it)");
        let eps: Vec<String> = etcd.split(',').map(String::from).collect();
        let run_id = format!("lease-test-{}", std::process::id());
        let run_dir = tempfile::tempdir().unwrap();
        let a = worker_ids(Some(eps.clone()), run_dir.path(), &run_id, 1)
            .await
            .unwrap();
        let b = worker_ids(Some(eps.clone()), run_dir.path(), &run_id, 1)
            .await
            .unwrap();
        assert_ne!(
            a.ids.worker(),
            b.ids.worker(),
            "two live processes share a worker id"
        );
        let last = (0..1000).map(|_| a.ids.next_id().unwrap()).max().unwrap();
        let worker = a.ids.worker();
        a._lease.release().await.unwrap();
        let mut client = etcd_client::Client::connect(&eps, None).await.unwrap();
        let hwm = client
            .get(format!("{}/1/{worker}/hwm", lease_prefix(&run_id)), None)
            .await
            .unwrap();
        let hwm: u64 = std::str::from_utf8(hwm.kvs()[0].value())
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            hwm >= idgen::Layout::seed().decode(last.get()).timestamp_ms,
            "the next holder of {worker} would start below {last:?}"
        );
        drop(b);
        crate::etcd::forget(&eps, &run_id).await.unwrap();
    }
}
