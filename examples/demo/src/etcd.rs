//! The routing table and the atomic switch in etcd, when `ETCD_ENDPOINTS` is
//! set. Built only with the `etcd` feature (`etcd-client` needs `protoc` to
//! build); without it, setting `ETCD_ENDPOINTS` is a configuration error.

use crate::error::DemoError;

/// The etcd endpoints of the run (`ETCD_ENDPOINTS`).
#[cfg(feature = "etcd")]
pub(crate) type Endpoints = Vec<String>;

/// Without the `etcd` feature there are never endpoints: the type has no values.
#[cfg(not(feature = "etcd"))]
#[derive(Debug)]
pub(crate) enum Endpoints {}

/// `ETCD_ENDPOINTS` (comma separated), when set.
///
/// # Errors
/// [`DemoError::Config`] when it is set but the demo was built without the
/// `etcd` feature.
pub(crate) fn endpoints() -> Result<Option<Endpoints>, DemoError> {
    let Ok(v) = std::env::var("ETCD_ENDPOINTS") else { return Ok(None) };
    let eps: Vec<String> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    if eps.is_empty() {
        return Ok(None);
    }
    #[cfg(feature = "etcd")]
    return Ok(Some(eps));
    #[cfg(not(feature = "etcd"))]
    Err(DemoError::Config(
        "ETCD_ENDPOINTS is set but this demo was built without etcd: run `cargo run --release -p demo --features etcd` (needs protoc)".into(),
    ))
}

/// The etcd key of a run's routing table.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) fn table_key(run_id: &str) -> String {
    format!("/cellsdk/demo/{run_id}/routing-table")
}

#[cfg(feature = "etcd")]
mod enabled {
    use std::sync::Arc;

    use cellrouter::{RoutingTable, TableStore};
    use failover::SwitchBackend;
    use failover::audit::AuditLog;

    use crate::error::DemoError;

    /// Publishes `table` under the run's key (unless a controller that
    /// started earlier did: its table may have moved on), feeds `store` from
    /// it and opens the atomic switch over etcd (`actor`: this controller in
    /// the election and the audit rows).
    #[allow(clippy::too_many_arguments)] // the switch's parts, each made once by `ControlPlane::start`
    pub(crate) async fn switch(
        eps: Vec<String>,
        run_id: &str,
        table: &RoutingTable,
        store: &TableStore,
        audit: AuditLog,
        ids: idgen::Generator,
        max_drained: Option<std::num::NonZeroUsize>,
        actor: &str,
    ) -> Result<Arc<dyn SwitchBackend>, DemoError> {
        let key = super::table_key(run_id);
        let mut client = etcd_client::Client::connect(&eps, None).await.map_err(|e| DemoError::Other(format!("etcd: {e}")))?;
        match cellrouter::source::publish(&mut client, &key, table).await {
            Ok(_) => {}
            // another controller of the run published first
            Err(cellrouter::Error::Invalid(cellrouter::InvalidTable::StaleVersion { .. })) => {}
            Err(e) => return Err(e.into()),
        }
        spawn_source(eps.clone(), run_id, store)?;
        let mut switch = failover::AtomicSwitch::connect(&eps, audit, ids)
            .await?
            .with_table_key(key)
            .with_prefix(format!("/cellsdk/demo/{run_id}/failover"))
            .with_actor(actor);
        if let Some(cap) = max_drained {
            switch = switch.with_max_drained(cap);
        }
        Ok(Arc::new(switch))
    }

    /// Deletes every key of the run (its table, locks, election and markers).
    pub(crate) async fn forget(eps: &[String], run_id: &str) -> Result<(), DemoError> {
        let mut client = etcd_client::Client::connect(eps, None).await.map_err(|e| DemoError::Other(format!("etcd: {e}")))?;
        let prefix = format!("/cellsdk/demo/{run_id}/");
        client
            .delete(prefix, Some(etcd_client::DeleteOptions::new().with_prefix()))
            .await
            .map_err(|e| DemoError::Other(format!("etcd: {e}")))?;
        Ok(())
    }

    /// Feeds `store` from the run's table key.
    pub(crate) fn spawn_source(eps: Vec<String>, run_id: &str, store: &TableStore) -> Result<(), DemoError> {
        let source = cellrouter::source::EtcdSource::try_new(eps)?.with_key(super::table_key(run_id));
        tokio::spawn(cellrouter::source::TableSource::run(source, store.clone()));
        Ok(())
    }
}

#[cfg(feature = "etcd")]
pub(crate) use enabled::{forget, spawn_source, switch};
