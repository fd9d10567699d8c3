//! The orchestrator's view of the control plane, read over the wire from the
//! controller processes: the routing table in force (followed from `GET
//! /table`) and the audit rows (`GET /audit`).

use std::time::Duration;

use cellrouter::TableStore;
use failover::audit::AuditRecord;

use crate::error::DemoError;
use crate::gateway::HttpClient;

/// What the report, the progress bar and the console read of the control plane.
#[derive(Debug, Clone)]
pub(crate) struct ControlView {
    /// The table in force, as the first controller serves it.
    pub(crate) store: TableStore,
    controllers: Vec<String>,
    client: HttpClient,
}

impl ControlView {
    /// Follows the table of `controllers[0]` (base URLs); audit rows come from
    /// the first controller that answers.
    pub(crate) fn follow(controllers: Vec<String>, client: HttpClient) -> Self {
        let store = TableStore::new();
        if let Some(first) = controllers.first() {
            tokio::spawn(crate::roles::table::follow_url(client.clone(), format!("{first}/table"), store.clone()));
        }
        ControlView { store, controllers, client }
    }

    /// Every audit row.
    pub(crate) async fn audit_rows(&self) -> Result<Vec<AuditRecord>, DemoError> {
        let mut last = DemoError::Other("no controller".into());
        for c in &self.controllers {
            match crate::roles::wire::get(&self.client, &format!("{c}/audit"), Duration::from_secs(5)).await {
                Ok(body) => return serde_json::from_slice(&body).map_err(|e| DemoError::Other(format!("{c}/audit: {e}"))),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}
