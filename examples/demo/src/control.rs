//! The in-process control plane: the routing table in force (a file the cells
//! watch, or etcd when `ETCD_ENDPOINTS` is set) and the failover controller:
//! probers -> decision engine -> `failover::Controller` -> audited switch
//! (`failover::LocalSwitch`, or `failover::AtomicSwitch` over etcd).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use cellrouter::{RoutingTable, TableStore};
use failover::audit::{AuditLog, AuditRecord};
use failover::{CellSpec, Controller, ControllerHandle, DecisionEngine, EngineHandle, LocalSwitch, SwitchBackend};
use health::{CellProber, HealthHub, PeerCell, ScorePolicy, SchedulerHandle};

use crate::config::DemoConfig;
use crate::error::DemoError;

/// The control plane: the switch backend and the routers a switch waits for.
pub(crate) struct ControlPlane {
    backend: Arc<dyn SwitchBackend>,
    /// The gateway's table store (the first router to apply a switch).
    pub(crate) gateway_store: TableStore,
    /// Per cell, a store that follows the gateway's once the cell reports
    /// running that version (or cannot be reached: a dead cell runs nothing).
    cell_stores: Vec<TableStore>,
    table_file: Option<PathBuf>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("audit", &self.backend.audit().table()).finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Publishes `table` (version 1) and opens the audit log (`audit_url`).
    pub(crate) async fn start(
        table: RoutingTable,
        run_dir: &std::path::Path,
        run_id: &str,
        audit_url: &str,
        status_urls: Vec<String>,
        max_drained: Option<std::num::NonZeroUsize>,
    ) -> Result<Arc<Self>, DemoError> {
        let audit = AuditLog::connect(audit_url, &format!("demo_{run_id}_audit")).await?;
        let ids = idgen::Generator::try_new(idgen::Layout::seed(), 0, 1000)?;
        let gateway_store = TableStore::new();
        let (backend, table_file): (Arc<dyn SwitchBackend>, _) = match crate::etcd::endpoints()? {
            #[cfg(feature = "etcd")]
            Some(eps) => (crate::etcd::switch(eps, run_id, &table, &gateway_store, audit, ids, max_drained).await?, None),
            #[cfg(not(feature = "etcd"))]
            Some(never) => match never {},
            None => {
                // the switch writes the gateway's store; the cells read its file
                let file = run_dir.join("table.json");
                cellrouter::source::persist(&table, &file)?;
                gateway_store.store(table)?;
                tokio::spawn(persist_on_change(gateway_store.clone(), file.clone()));
                let mut switch = LocalSwitch::new(gateway_store.clone(), audit, ids).with_actor("demo-controller");
                // the drain cap is checked against the stored table at commit, whatever the engine thinks
                if let Some(cap) = max_drained {
                    switch = switch.with_max_drained(cap);
                }
                (Arc::new(switch), Some(file))
            }
        };
        let client = crate::gateway::http_client();
        let cell_stores = status_urls.into_iter().map(|url| follow_cell(gateway_store.clone(), url, client.clone())).collect();
        Ok(Arc::new(ControlPlane { backend, gateway_store, cell_stores, table_file }))
    }

    /// The path of the table file (in-memory mode).
    pub(crate) fn table_file(&self) -> Option<PathBuf> {
        self.table_file.clone()
    }

    /// Every audit row.
    pub(crate) async fn audit_rows(&self) -> Result<Vec<AuditRecord>, DemoError> {
        Ok(self.backend.audit().all().await?)
    }
}

/// Writes every table the store applies to `file` (the cells' `FileSource`).
async fn persist_on_change(store: TableStore, file: PathBuf) {
    let mut rx = store.subscribe();
    while rx.changed().await.is_ok() {
        let current = rx.borrow_and_update().clone();
        if let Some(t) = current
            && let Err(e) = cellrouter::source::persist(t.table(), &file)
        {
            tracing::error!(error = %e, "routing table file not written");
        }
    }
}

/// A store standing for a cell process in the controller's apply wait: it
/// takes `source`'s table once the cell's `/admin/status` reports that
/// version, or at once when the cell does not answer (a dead cell runs
/// nothing and is not waited for).
fn follow_cell(source: TableStore, status_url: String, client: crate::gateway::HttpClient) -> TableStore {
    let mirror = TableStore::new();
    let out = mirror.clone();
    tokio::spawn(async move {
        let mut rx = source.subscribe();
        loop {
            if let Some(t) = source.current()
                && mirror.version().is_none_or(|v| v < t.version())
            {
                let runs = match crate::gateway::get_json(&client, &status_url, Duration::from_millis(200)).await {
                    Ok(j) => j["table_version"].as_u64().is_some_and(|v| v >= t.version()),
                    Err(_) => true,
                };
                if runs {
                    let _ = mirror.store(t.table().clone());
                } else {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                continue;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    out
}

/// The probers: `n` independent health hubs probing every cell.
pub(crate) fn start_probers(
    cfg: &DemoConfig,
    table: &RoutingTable,
) -> Result<(Vec<HealthHub>, Vec<SchedulerHandle>), DemoError> {
    let r = &cfg.rules;
    let mut hubs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..r.probers {
        let hub = HealthHub::try_new(ScorePolicy::default().with_window(3))?;
        let mut prober = CellProber::new(&hub)
            .with_interval(Duration::from_millis(r.probe_interval_ms))
            .with_timeout(Duration::from_millis(r.probe_timeout_ms));
        for c in &table.cells {
            let Some(first) = c.endpoints.first() else { continue };
            let mut peer = PeerCell::new(c.id.clone(), first.clone());
            for ep in &c.endpoints {
                if let Some(addr) = ep.strip_prefix("http://").and_then(|a| a.parse().ok()) {
                    peer = peer.with_tcp(addr);
                }
            }
            prober = prober.with_peer(peer);
        }
        handles.push(prober.start()?);
        hubs.push(hub);
    }
    Ok((hubs, handles))
}

/// The failover controller: the decision engine fed by the probers and the
/// gateway's outcomes, its decisions carried out by `failover::Controller`
/// through the control plane's switch; a switch is `applied` once the gateway
/// and every live cell run its table.
pub(crate) async fn start_controller(
    cfg: &DemoConfig,
    hubs: &[HealthHub],
    control: &ControlPlane,
) -> Result<(EngineHandle, ControllerHandle), DemoError> {
    let specs = cfg
        .cells
        .iter()
        .map(|c| -> Result<CellSpec, DemoError> {
            let id = |s: &str| CellId::new(s).map_err(|e| DemoError::Config(e.to_string()));
            Ok(CellSpec::new(id(&c.id)?)
                .with_failover(c.failover.iter().map(|f| id(f)).collect::<Result<Vec<_>, _>>()?)
                .with_headroom_rps(c.headroom_rps))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let engine = DecisionEngine::try_new(cfg.decision_config()?, specs)?;
    let probers = hubs.iter().enumerate().map(|(i, h)| (format!("prober-{i}"), h.subscribe())).collect();
    let engine = failover::spawn_engine(engine, probers, Duration::from_millis(cfg.rules.tick_ms));
    let mut controller = Controller::new(control.backend.clone())
        .with_rule("demo-rules")
        .with_apply_wait(Duration::from_secs(5))
        .with_router(control.gateway_store.clone());
    for store in &control.cell_stores {
        controller = controller.with_router(store.clone());
    }
    let handle = controller.spawn(&engine).await?;
    Ok((engine, handle))
}
