//! The control plane of a controller process (`demo controller`): the routing
//! table in force (this process's store, served at `GET /table` and written
//! to a file when asked; or etcd when `ETCD_ENDPOINTS` is set) and the
//! failover controller: probers' views -> decision engine ->
//! `failover::Controller` -> audited switch (`failover::LocalSwitch`, or
//! `failover::AtomicSwitch` over etcd, where several controllers elect one
//! leader). Also the probers of a prober process.

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
    /// The table in force in this process (the switch writes it, or it
    /// follows etcd).
    pub(crate) store: TableStore,
    /// Per remote router (each cell, each gateway), a store that follows
    /// `store` once the router reports running that version (or cannot be
    /// reached: a dead process runs nothing).
    router_stores: Vec<TableStore>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("audit", &self.backend.audit().table()).finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Publishes `table` (version 1, unless etcd holds the run's table
    /// already) and opens the audit log (`audit_url`). `status_urls` are
    /// the routers' `/admin/status` a switch waits for; `table_file`, when
    /// given, gets every table in force; `actor` names this controller in
    /// the audit rows, `worker` is its idgen worker id (unique per controller);
    /// `crash`, when given, can kill this process in a switch (the campaign's).
    #[allow(clippy::too_many_arguments)] // the control plane's parts, each given once by `demo controller`
    pub(crate) async fn start(
        table: RoutingTable,
        table_file: Option<PathBuf>,
        run_id: &str,
        audit_url: &str,
        status_urls: Vec<String>,
        max_drained: Option<std::num::NonZeroUsize>,
        (actor, worker): (&str, u32),
        crash: Option<crate::crash_admin::Arm>,
    ) -> Result<Arc<Self>, DemoError> {
        let audit = AuditLog::connect(audit_url, &format!("demo_{run_id}_audit")).await?;
        let ids = idgen::Generator::try_new(idgen::Layout::seed(), 0, worker)?;
        let store = TableStore::new();
        let backend: Arc<dyn SwitchBackend> = match crate::etcd::endpoints()? {
            #[cfg(feature = "etcd")]
            Some(eps) => crate::etcd::switch(eps, run_id, &table, &store, audit, ids, max_drained, actor).await?,
            #[cfg(not(feature = "etcd"))]
            Some(never) => match never {},
            None => {
                // the switch writes this process's store; the others follow it over HTTP (or its file)
                store.store(table)?;
                let mut switch = LocalSwitch::new(store.clone(), audit, ids).with_actor(actor);
                // the drain cap is checked against the stored table at commit, whatever the engine thinks
                if let Some(cap) = max_drained {
                    switch = switch.with_max_drained(cap);
                }
                Arc::new(switch)
            }
        };
        // the fault campaign's `POST /admin/crash` kills this process at a point of a switch
        let backend: Arc<dyn SwitchBackend> = match crash {
            Some(arm) => Arc::new(crate::crash_admin::Crashing::new(backend, arm)),
            None => backend,
        };
        if let Some(file) = table_file {
            if let Some(t) = store.current() {
                cellrouter::source::persist(t.table(), &file)?;
            }
            tokio::spawn(persist_on_change(store.clone(), file));
        }
        let client = crate::gateway::http_client();
        let router_stores = status_urls.into_iter().map(|url| follow_router(store.clone(), url, client.clone())).collect();
        Ok(Arc::new(ControlPlane { backend, store, router_stores }))
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

/// A store standing for a router process (a cell, a gateway) in the
/// controller's apply wait: it takes `source`'s table once the process's
/// `/admin/status` reports that version, or at once when it does not answer
/// (a dead process runs nothing and is not waited for).
fn follow_router(source: TableStore, status_url: String, client: crate::gateway::HttpClient) -> TableStore {
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

/// One prober: a health hub probing every cell of `table` (each instance's
/// TCP port, the first instance's `/healthz`).
pub(crate) fn start_prober(cfg: &DemoConfig, table: &RoutingTable) -> Result<(HealthHub, SchedulerHandle), DemoError> {
    let r = &cfg.rules;
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
    let handle = prober.start()?;
    Ok((hub, handle))
}

/// The decision engine of `cfg` (not running yet: see [`start_controller`]).
pub(crate) fn engine(cfg: &DemoConfig) -> Result<DecisionEngine, DemoError> {
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
    Ok(DecisionEngine::try_new(cfg.decision_config()?, specs)?)
}

/// The failover controller: `engine`, fed the probers' `views` so far, runs
/// in its own task (the probers' later views and the gateways' outcomes
/// reach it through the handle); its decisions are carried out by
/// `failover::Controller` through the control plane's switch; a switch is
/// `applied` once every live router runs its table.
pub(crate) async fn start_controller(
    cfg: &DemoConfig,
    mut engine: DecisionEngine,
    views: &[(String, Vec<(CellId, bool)>)],
    control: &ControlPlane,
) -> Result<(EngineHandle, ControllerHandle), DemoError> {
    let now = tokio::time::Instant::now();
    for (prober, view) in views {
        for (cell, healthy) in view {
            engine.observe(prober, cell, *healthy, now);
        }
    }
    let engine = failover::spawn_engine(engine, Vec::new(), Duration::from_millis(cfg.rules.tick_ms));
    let mut controller = Controller::new(control.backend.clone())
        .with_rule("demo-rules")
        .with_apply_wait(Duration::from_secs(5))
        .with_router(control.store.clone());
    for store in &control.router_stores {
        controller = controller.with_router(store.clone());
    }
    let handle = controller.spawn(&engine).await?;
    Ok((engine, handle))
}
