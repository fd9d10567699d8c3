//! [`Controller`]: the background task that carries the engine's decisions
//! into the routing table through a [`SwitchBackend`], with SLA switch phases.
//!
//! See [`Controller`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cellctx::CellId;
use cellrouter::TableStore;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::{AuditRecord, AuditStatus, epoch_ms};
use crate::backend::{ReconcileReport, SwitchBackend, SwitchOutcome};
use crate::change::{Change, SwitchRequest};
use crate::driver::EngineHandle;
use crate::engine::{CellPhase, Decision, Plan};
use crate::error::Error;
use crate::sla::SlaTracker;

/// What the controller did with one decision (see [`ControllerHandle::events`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ControllerEvent {
    /// The table was switched; the audit row (committed, or applied when
    /// routers were given and ran it in time).
    Switched(Box<AuditRecord>),
    /// The change was already in force: nothing written.
    NoChange {
        /// The cell.
        cell: CellId,
        /// The table version in force.
        version: u64,
    },
    /// The switch failed (the engine's plan and the table disagree until the
    /// next decision about the cell).
    Failed {
        /// The cell.
        cell: CellId,
        /// The error.
        error: String,
    },
    /// The controller missed `missed` decisions and resynchronised the table
    /// from the engine's plan.
    Resynced {
        /// Decisions missed.
        missed: u64,
    },
}

/// Drives a [`SwitchBackend`] from the engine's decisions.
///
/// For each decision on [`EngineHandle::decisions`]:
///
/// - **detect / decide**: the decision's own instants (when the bad signal
///   started, when the engine decided), turned into wall-clock times by
///   [`SwitchRequest::from_decision`];
/// - **commit**: the backend's audited switch (intent row, table write,
///   commit row); a drain becomes `Change::Drain`, a finished failback
///   `Change::Failback`; ramp steps and refused drains change no table;
/// - **apply**: the wait until every router store given with
///   [`Controller::with_router`] runs the new version, then the row is stamped
///   `applied`.
///
/// The four durations go to the [`SlaTracker`] ([`Controller::with_sla`]).
/// On start the backend's `reconcile` settles intents left by a crash. If the
/// controller falls behind the decision stream (a lagged broadcast), it
/// re-derives every cell's table state from the engine's current plan.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use cellctx::CellId;
/// use cellrouter::{Cell, CellState, RoutingTable, TableStore};
/// use failover::audit::AuditLog;
/// use failover::sla::{SlaConfig, SlaTracker};
/// use failover::{CellSpec, Controller, ControllerEvent, DecisionConfig, DecisionEngine, LocalSwitch, spawn_engine};
///
/// let (a, b, eu): (CellId, CellId, CellId) = ("a".parse()?, "b".parse()?, "eu".parse()?);
/// let mut cell_a = Cell::new(a.clone(), eu.clone(), "http://127.0.0.1:1");
/// cell_a.failover = vec![b.clone()];
/// let table = RoutingTable::uniform(eu.clone(), vec![cell_a, Cell::new(b.clone(), eu, "http://127.0.0.1:2")], 64);
/// let store = TableStore::with_table(table.clone())?;
/// let dir = tempfile::tempdir()?;
/// let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
/// let audit = AuditLog::connect(&url, "failover_audit").await?;
/// let switch = LocalSwitch::new(store.clone(), audit, idgen::Generator::try_new(idgen::Layout::seed(), 0, 1)?);
///
/// let engine = DecisionEngine::try_new(DecisionConfig::new(), CellSpec::from_table(&table, 10.0))?;
/// let engine = spawn_engine(engine, Vec::new(), Duration::from_secs(1));
/// let sla = Arc::new(SlaTracker::try_new(SlaConfig::default())?);
/// let controller = Controller::new(switch).with_sla(sla.clone()).with_router(store.clone()).spawn(&engine).await?;
/// let mut events = controller.events();
///
/// engine.drain(&a).await?; // an operator drain goes through the same path
/// let ControllerEvent::Switched(row) = events.recv().await? else { unreachable!() };
/// assert_eq!(row.to, "state=down");
/// assert_eq!(store.current().unwrap().cell(&a).unwrap().state, CellState::Down);
/// assert_eq!(sla.report().switches.count, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Controller<B> {
    backend: Arc<B>,
    sla: Option<Arc<SlaTracker>>,
    routers: Vec<TableStore>,
    apply_wait: Duration,
    rule: String,
}

impl<B: SwitchBackend> Controller<B> {
    /// A controller switching through `backend`. Defaults: no SLA tracker, no
    /// router to wait for, apply wait 5 s, rule name `decision-engine`.
    pub fn new(backend: B) -> Self {
        Controller {
            backend: Arc::new(backend),
            sla: None,
            routers: Vec::new(),
            apply_wait: Duration::from_secs(5),
            rule: "decision-engine".into(),
        }
    }

    /// Records each switch's phases in `sla`.
    pub fn with_sla(mut self, sla: Arc<SlaTracker>) -> Self {
        self.sla = Some(sla);
        self
    }

    /// Adds a router's table store: a switch is `applied` once every such
    /// store runs its version. Without any, rows stay `committed` and the
    /// apply phase is zero.
    pub fn with_router(mut self, store: TableStore) -> Self {
        self.routers.push(store);
        self
    }

    /// How long to wait for routers to apply a switch (default 5 s).
    pub fn with_apply_wait(mut self, wait: Duration) -> Self {
        self.apply_wait = wait;
        self
    }

    /// The rule name written in audit rows (default `decision-engine`).
    pub fn with_rule(mut self, rule: impl Into<String>) -> Self {
        self.rule = rule.into();
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Carries one decision through the backend. `Ok(None)` for decisions that
    /// change no table (ramp steps, refused drains, failback ready).
    pub async fn apply(&self, decision: &Decision) -> Result<Option<ControllerEvent>, Error> {
        match SwitchRequest::from_decision(decision, &self.rule) {
            Some(req) => self.run(req).await.map(Some),
            None => Ok(None),
        }
    }

    async fn run(&self, req: SwitchRequest) -> Result<ControllerEvent, Error> {
        let cell = req.change.flow().clone();
        match self.backend.switch(req).await? {
            SwitchOutcome::NoChange { version } => Ok(ControllerEvent::NoChange { cell, version }),
            SwitchOutcome::Committed(record) => {
                let record = self.wait_applied(*record).await?;
                if let (Some(sla), Some(phases)) = (&self.sla, record.phases()) {
                    sla.record_switch(phases);
                }
                Ok(ControllerEvent::Switched(Box::new(record)))
            }
        }
    }

    async fn wait_applied(&self, mut record: AuditRecord) -> Result<AuditRecord, Error> {
        if self.routers.is_empty() {
            return Ok(record);
        }
        let target = record.version_after;
        let all = futures_util::future::join_all(self.routers.iter().map(|store| {
            let mut rx = store.subscribe();
            async move {
                loop {
                    if store.version().is_some_and(|v| v >= target) {
                        return true;
                    }
                    if rx.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }));
        let reached = tokio::time::timeout(self.apply_wait, all).await.is_ok_and(|r| r.iter().all(|ok| *ok));
        if !reached {
            tracing::warn!(tx = %record.tx_id, version = target, wait = ?self.apply_wait, "routers did not apply the switch in time");
            return Ok(record);
        }
        let at = epoch_ms(SystemTime::now());
        if self.backend.audit().mark_applied(&record.tx_id, at).await? {
            record.status = AuditStatus::Applied;
            record.applied_at_ms = Some(at);
        }
        Ok(record)
    }

    /// Brings every cell's table state in line with `plan`: drained, awaiting
    /// or ramping cells down, serving cells active.
    async fn resync(&self, plan: &Plan) -> Vec<ControllerEvent> {
        let mut out = Vec::new();
        for (cell, alloc) in &plan.cells {
            let change = match alloc.phase {
                CellPhase::Serving => Change::Failback(cell.clone()),
                _ => Change::Drain(cell.clone()),
            };
            let req = SwitchRequest::new(change).with_reason("resync from the engine's plan").with_rule(self.rule.clone());
            out.push(self.run(req).await.unwrap_or_else(|e| ControllerEvent::Failed { cell: cell.clone(), error: e.to_string() }));
        }
        out
    }

    /// Subscribes to `engine`'s decisions, reconciles the backend's pending
    /// intents, then runs in its own task. Dropping the handle stops it.
    pub async fn spawn(self, engine: &EngineHandle) -> Result<ControllerHandle, Error> {
        let decisions = engine.decisions();
        let plan = engine.plan_watch();
        let reconciled = self.backend.reconcile().await?;
        if !reconciled.committed.is_empty() || !reconciled.rolled_back.is_empty() {
            tracing::info!(committed = ?reconciled.committed, rolled_back = ?reconciled.rolled_back, "switch intents reconciled");
        }
        let (events, _) = broadcast::channel(256);
        let tx = events.clone();
        let task = tokio::spawn(self.run_loop(decisions, plan, tx));
        Ok(ControllerHandle { events, reconciled, task })
    }

    async fn run_loop(
        self,
        mut decisions: broadcast::Receiver<Decision>,
        plan: watch::Receiver<Arc<Plan>>,
        events: broadcast::Sender<ControllerEvent>,
    ) {
        loop {
            let out = match decisions.recv().await {
                Ok(d) => match self.apply(&d).await {
                    Ok(Some(e)) => vec![e],
                    Ok(None) => Vec::new(),
                    Err(e) => {
                        tracing::error!(cell = %d.cell(), action = d.action(), error = %e, "switch failed");
                        vec![ControllerEvent::Failed { cell: d.cell().clone(), error: e.to_string() }]
                    }
                },
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "controller fell behind the decisions; resyncing from the plan");
                    let current = plan.borrow().clone();
                    let mut v = vec![ControllerEvent::Resynced { missed }];
                    v.extend(self.resync(&current).await);
                    v
                }
                Err(RecvError::Closed) => return,
            };
            for e in out {
                let _ = events.send(e);
            }
        }
    }
}

/// The handle of a running [`Controller`]. Dropping it stops the task.
#[derive(Debug)]
pub struct ControllerHandle {
    events: broadcast::Sender<ControllerEvent>,
    reconciled: ReconcileReport,
    task: JoinHandle<()>,
}

impl ControllerHandle {
    /// What the controller does from now on.
    pub fn events(&self) -> broadcast::Receiver<ControllerEvent> {
        self.events.subscribe()
    }

    /// What the start-up reconcile settled.
    pub fn reconciled(&self) -> &ReconcileReport {
        &self.reconciled
    }

    /// Whether the task still runs (it ends when the engine stops).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

impl Drop for ControllerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
