//! The in-process control plane: the routing table in force (a file the cells
//! watch, or etcd when `ETCD_ENDPOINTS` is set), the atomic audited switch, and
//! the failover controller: probers -> decision engine -> switch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cellctx::CellId;
use cellrouter::{RoutingTable, TableStore};
use failover::audit::{AuditLog, AuditRecord, AuditStatus, epoch_ms};
use failover::{CellSpec, Change, Decision, DecisionEngine, EngineHandle};
use health::{CellProber, HealthHub, PeerCell, ScorePolicy, SchedulerHandle};
use tokio::sync::Mutex;

use crate::config::DemoConfig;
use crate::error::DemoError;

/// `ETCD_ENDPOINTS` (comma separated), when set.
pub(crate) fn etcd_endpoints() -> Option<Vec<String>> {
    let v = std::env::var("ETCD_ENDPOINTS").ok()?;
    let eps: Vec<String> = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    (!eps.is_empty()).then_some(eps)
}

/// The etcd key of a run's routing table.
pub(crate) fn etcd_table_key(run_id: &str) -> String {
    format!("/cellsdk/demo/{run_id}/routing-table")
}

/// One switch as the controller saw it (wall-clock stamps).
#[derive(Debug, Clone)]
pub(crate) struct SwitchEvent {
    pub(crate) change: Change,
    pub(crate) version: u64,
    pub(crate) detected_at: SystemTime,
    pub(crate) intent_at: SystemTime,
    pub(crate) committed_at: SystemTime,
    pub(crate) applied_at: SystemTime,
}

/// Where the table goes when it changes.
enum Backend {
    /// The in-memory table, persisted to a file the cells watch.
    Memory { table: Mutex<RoutingTable>, file: PathBuf },
    /// etcd, through the failover crate's atomic switch.
    Etcd { switch: Box<failover::AtomicSwitch> },
}

/// The control plane.
pub(crate) struct ControlPlane {
    backend: Backend,
    audit: AuditLog,
    ids: idgen::Generator,
    /// The gateway's table store (the first router to apply a switch).
    pub(crate) gateway_store: TableStore,
    /// `/admin/status` URLs of every cell (apply check).
    status_urls: Vec<String>,
    client: crate::gateway::HttpClient,
    events: parking_lot_free::Events,
}

/// A tiny shared list (std mutex; never held across an await).
mod parking_lot_free {
    use std::sync::{Arc, Mutex};

    use super::SwitchEvent;

    #[derive(Debug, Clone, Default)]
    pub(crate) struct Events(Arc<Mutex<Vec<SwitchEvent>>>);

    impl Events {
        pub(crate) fn push(&self, e: SwitchEvent) {
            if let Ok(mut v) = self.0.lock() {
                v.push(e);
            }
        }
        pub(crate) fn all(&self) -> Vec<SwitchEvent> {
            self.0.lock().map(|v| v.clone()).unwrap_or_default()
        }
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane").field("audit", &self.audit.table()).finish_non_exhaustive()
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
    ) -> Result<Arc<Self>, DemoError> {
        let audit = AuditLog::connect(audit_url, &format!("demo_{run_id}_audit")).await?;
        let ids = idgen::Generator::try_new(idgen::Layout::seed(), 0, 1000)?;
        let gateway_store = TableStore::new();
        let backend = match etcd_endpoints() {
            Some(eps) => {
                let key = etcd_table_key(run_id);
                let mut client = etcd_client::Client::connect(&eps, None).await.map_err(|e| DemoError::Other(format!("etcd: {e}")))?;
                cellrouter::source::publish(&mut client, &key, &table).await?;
                let source = cellrouter::source::EtcdSource::try_new(eps.clone())?.with_key(key.clone());
                tokio::spawn(cellrouter::source::TableSource::run(source, gateway_store.clone()));
                let switch = failover::AtomicSwitch::connect(&eps, audit.clone(), ids.clone())
                    .await?
                    .with_table_key(key)
                    .with_prefix(format!("/cellsdk/demo/{run_id}/failover"))
                    .with_actor("demo-controller");
                Backend::Etcd { switch: Box::new(switch) }
            }
            None => {
                let file = run_dir.join("table.json");
                cellrouter::source::persist(&table, &file)?;
                gateway_store.store(table.clone())?;
                Backend::Memory { table: Mutex::new(table), file }
            }
        };
        Ok(Arc::new(ControlPlane {
            backend,
            audit,
            ids,
            gateway_store,
            status_urls,
            client: crate::gateway::http_client(),
            events: Default::default(),
        }))
    }

    /// The path of the table file (in-memory mode).
    pub(crate) fn table_file(&self) -> Option<PathBuf> {
        match &self.backend {
            Backend::Memory { file, .. } => Some(file.clone()),
            Backend::Etcd { .. } => None,
        }
    }

    /// Every switch so far.
    pub(crate) fn events(&self) -> Vec<SwitchEvent> {
        self.events.all()
    }

    /// Every audit row.
    pub(crate) async fn audit_rows(&self) -> Result<Vec<AuditRecord>, DemoError> {
        Ok(self.audit.all().await?)
    }

    /// The atomic, audited switch: lock, prepare (intent row), commit (table
    /// write + row `committed`), apply (every live router runs it; row `applied`).
    /// `Ok(None)` when the change was already in force.
    pub(crate) async fn switch(
        &self,
        change: Change,
        reason: &str,
        detected_at: SystemTime,
        decided_at: SystemTime,
    ) -> Result<Option<SwitchEvent>, DemoError> {
        let (record, intent_at, committed_at) = match &self.backend {
            Backend::Memory { table, file } => {
                let mut current = table.lock().await; // the flow lock
                let mut next = current.clone();
                let (from, to) = change.apply(&mut next)?;
                if from == to {
                    return Ok(None);
                }
                next.version = current.version + 1;
                next.validate().map_err(|e| DemoError::Other(format!("switch: {e}")))?;
                let intent_at = SystemTime::now();
                let record = AuditRecord {
                    tx_id: self.ids.next_id()?.to_string(),
                    flow: change.flow().to_string(),
                    from,
                    to,
                    reason: reason.to_string(),
                    rule: "demo-rules".into(),
                    actor: "demo-controller".into(),
                    status: AuditStatus::Intent,
                    version_before: current.version,
                    version_after: next.version,
                    detected_at_ms: epoch_ms(detected_at),
                    decided_at_ms: epoch_ms(decided_at),
                    intent_at_ms: epoch_ms(intent_at),
                    committed_at_ms: None,
                    applied_at_ms: None,
                    note: None,
                };
                self.audit.insert_intent(&record).await?;
                // commit: the cells' file, then the gateway's store
                if let Err(e) = cellrouter::source::persist(&next, file) {
                    self.audit.mark_rolled_back(&record.tx_id, &e.to_string()).await?;
                    return Err(e.into());
                }
                self.gateway_store.store(next.clone())?;
                let committed_at = SystemTime::now();
                self.audit.mark_committed(&record.tx_id, epoch_ms(committed_at), None).await?;
                *current = next;
                (record, intent_at, committed_at)
            }
            Backend::Etcd { switch } => {
                let req = failover::SwitchRequest::new(change.clone())
                    .with_reason(reason)
                    .with_rule("demo-rules")
                    .with_times(detected_at, decided_at);
                match switch.switch(req).await? {
                    failover::SwitchOutcome::Committed(record) => {
                        let ms = |v: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(v);
                        let committed = ms(record.committed_at_ms.unwrap_or(record.intent_at_ms));
                        ((*record).clone(), ms(record.intent_at_ms), committed)
                    }
                    _ => return Ok(None),
                }
            }
        };
        let version = record.version_after;
        self.wait_applied(version).await;
        let applied_at = SystemTime::now();
        self.audit.mark_applied(&record.tx_id, epoch_ms(applied_at)).await?;
        let ev = SwitchEvent { change, version, detected_at, intent_at, committed_at, applied_at };
        self.events.push(ev.clone());
        Ok(Some(ev))
    }

    /// Waits (at most 3 s) until the gateway and every reachable cell run `version`.
    async fn wait_applied(&self, version: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        loop {
            let mut all = self.gateway_store.version().is_some_and(|v| v >= version);
            if all {
                for url in &self.status_urls {
                    // a dead cell runs nothing: only live cells are waited for
                    if let Ok(j) = crate::gateway::get_json(&self.client, url, Duration::from_millis(200)).await {
                        all &= j["table_version"].as_u64().is_some_and(|v| v >= version);
                    }
                }
            }
            if all || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
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

fn wall(at: tokio::time::Instant) -> SystemTime {
    SystemTime::now() - tokio::time::Instant::now().saturating_duration_since(at)
}

/// The failover controller: the decision engine fed by the probers and the
/// gateway's outcomes, its decisions carried out by the switch.
pub(crate) fn start_controller(
    cfg: &DemoConfig,
    hubs: &[HealthHub],
    control: Arc<ControlPlane>,
) -> Result<EngineHandle, DemoError> {
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
    let handle = failover::spawn_engine(engine, probers, Duration::from_millis(cfg.rules.tick_ms));
    let mut decisions = handle.decisions();
    tokio::spawn(async move {
        loop {
            let d = match decisions.recv().await {
                Ok(d) => d,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let result = match &d {
                Decision::Drain { cell, reason, detected_at, decided_at } => {
                    control.switch(Change::Drain(cell.clone()), &format!("{reason:?}"), wall(*detected_at), wall(*decided_at)).await
                }
                Decision::FailbackStep { cell, share, at } if *share >= 1.0 => {
                    let t = wall(*at);
                    control.switch(Change::Failback(cell.clone()), "recovered", t, t).await
                }
                Decision::Restored { cell, at } => {
                    let t = wall(*at);
                    control.switch(Change::Failback(cell.clone()), "recovered", t, t).await
                }
                _ => Ok(None),
            };
            match result {
                Ok(Some(ev)) => tracing::info!(change = ?ev.change, version = ev.version, "switched"),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, decision = d.action(), "switch failed"),
            }
        }
    });
    Ok(handle)
}
