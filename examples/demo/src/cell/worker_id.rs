//! The cell process's idgen worker id: leased from etcd when `ETCD_ENDPOINTS`
//! is set (renewed in the background, released at exit, the previous
//! holders' high-water mark respected, so a process restarted with its clock
//! behind never reissues an id), else the slot the orchestrator gave it.

use std::time::Duration;

use crate::error::DemoError;

/// The lease's TTL: a killed process's worker id is free again after it.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
const TTL: Duration = Duration::from_secs(10);

/// The etcd key prefix of a run's leased worker ids (under the run's prefix,
/// which the orchestrator deletes at the end).
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) fn lease_prefix(run_id: &str) -> String {
    format!("/cellsdk/demo/{run_id}/idgen")
}

/// The ids of this process and what holds its worker id (keep it alive: the
/// lease is released when it drops).
pub(crate) struct WorkerIds {
    /// The generator.
    pub(crate) ids: idgen::Generator,
    /// The lease, when the worker id is leased.
    #[cfg(feature = "etcd")]
    _lease: Option<idgen::WorkerLease>,
}

/// A generator for `datacenter`: a leased worker id when `eps` names etcd
/// (retried until one is free: a restarted process waits out its old lease
/// at most one TTL), else `slot`.
#[cfg_attr(not(feature = "etcd"), allow(unused_variables))]
pub(crate) async fn worker_ids(
    eps: Option<crate::etcd::Endpoints>,
    run_id: &str,
    datacenter: u32,
    slot: u32,
) -> Result<WorkerIds, DemoError> {
    let layout = idgen::Layout::seed();
    let Some(eps) = eps else {
        return Ok(WorkerIds {
            ids: idgen::Generator::try_new(layout, datacenter, slot)?,
            #[cfg(feature = "etcd")]
            _lease: None,
        });
    };
    #[cfg(feature = "etcd")]
    {
        let opts = idgen::LeaseOptions::try_new(lease_prefix(run_id), layout, datacenter)?.with_ttl(TTL);
        let mut wait = Duration::from_millis(200);
        loop {
            let leased = match etcd_client::Client::connect(&eps, None).await {
                Ok(client) => idgen::WorkerLease::etcd(client, opts.clone()).await.map_err(DemoError::from),
                Err(e) => Err(DemoError::Other(format!("etcd: {e}"))),
            };
            match leased {
                // (idgen logs the worker id it leased)
                Ok(lease) => return Ok(WorkerIds { ids: lease.generator()?, _lease: Some(lease) }),
                Err(e) => {
                    tracing::warn!(error = %e, "no idgen worker id leased yet; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
    #[cfg(not(feature = "etcd"))]
    match eps {}
}

#[cfg(all(test, feature = "etcd"))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Two processes of one datacenter lease different worker ids; a
    /// released worker id keeps the high-water mark its next holder starts
    /// above.
    #[tokio::test]
    async fn processes_lease_distinct_worker_ids_and_leave_their_high_water_mark() {
        let etcd = std::env::var("CELL_TEST_ETCD_ENDPOINTS")
            .expect("CELL_TEST_ETCD_ENDPOINTS must name an etcd (scripts/test starts a private one and sets it)");
        let eps: Vec<String> = etcd.split(',').map(String::from).collect();
        let run_id = format!("lease-test-{}", std::process::id());
        let a = worker_ids(Some(eps.clone()), &run_id, 1, 0).await.unwrap();
        let b = worker_ids(Some(eps.clone()), &run_id, 1, 0).await.unwrap();
        assert_ne!(a.ids.worker(), b.ids.worker(), "two live processes share a worker id");
        let last = (0..1000).map(|_| a.ids.next_id().unwrap()).max().unwrap();
        let worker = a.ids.worker();
        a._lease.unwrap().release().await.unwrap();
        let mut client = etcd_client::Client::connect(&eps, None).await.unwrap();
        let hwm = client.get(format!("{}/1/{worker}/hwm", lease_prefix(&run_id)), None).await.unwrap();
        let hwm: u64 = std::str::from_utf8(hwm.kvs()[0].value()).unwrap().parse().unwrap();
        assert!(hwm >= idgen::Layout::seed().decode(last.get()).timestamp_ms, "the next holder of {worker} would start below {last:?}");
        drop(b);
        crate::etcd::forget(&eps, &run_id).await.unwrap();
    }
}
