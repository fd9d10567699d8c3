//! [`Controller`]: the background task that carries the engine's decisions
//! into the routing table through a [`SwitchBackend`], with SLA switch phases.
//!
//! See [`Controller`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use cellrouter::TableStore;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::audit::{AuditRecord, AuditStatus, Retention, epoch_ms};
use crate::backend::{ReconcileReport, SwitchBackend, SwitchOutcome, Term};
use crate::change::{Change, SwitchRequest};
use crate::driver::EngineHandle;
use crate::engine::{CellPhase, Decision, Plan};
use crate::error::Error;
use crate::retry::RetryPolicy;
use crate::sla::{ApplyPhase, SlaTracker};

/// What the controller did (see [`ControllerHandle::events`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ControllerEvent {
    /// This controller won the leadership: from now on it acts.
    Elected {
        /// Its term.
        term: Term,
    },
    /// This controller lost the leadership (lease not renewed, or a write
    /// fenced off): it stops acting and campaigns again.
    Deposed {
        /// The term it held.
        term: Term,
        /// Why.
        reason: String,
    },
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
    /// A switch attempt failed (a [`Retrying`](Self::Retrying) follows).
    Failed {
        /// The cell.
        cell: CellId,
        /// The error.
        error: String,
    },
    /// A failed switch is tried again after `delay` (re-derived from the
    /// engine's plan at that time).
    Retrying {
        /// The cell.
        cell: CellId,
        /// Attempts failed so far.
        attempt: u32,
        /// The backoff before the next one.
        delay: Duration,
    },
    /// A reconcile settled intents left between the steps of a switch.
    Reconciled(ReconcileReport),
    /// The controller missed `missed` decisions and resynchronised the table
    /// from the engine's plan.
    Resynced {
        /// Decisions missed.
        missed: u64,
    },
}

/// Why the leader's loop ended.
enum Exit {
    Closed,
    Deposed(String),
}

/// A failed switch waiting for its next attempt.
struct Pending {
    req: SwitchRequest,
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    attempt: u32,
    due: Instant,
}

/// Aborts a task when dropped (the renewal dies with the controller).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
/// The four durations go to the [`SlaTracker`] ([`Controller::with_sla`]);
/// an apply wait that runs out is [`ApplyPhase::TimedOut`].
///
/// **One controller acts at a time.** Every controller on the same store
/// campaigns for the backend's leadership ([`SwitchBackend::campaign`]); the
/// followers ignore decisions. The leader renews its lease every third of
/// the TTL in its own task and steps down when a renewal fails or none
/// succeeded for two thirds of the TTL (before the lease can expire, as
/// Kubernetes leader election does); a leader killed or paused stops
/// renewing and another takes over once the lease expires. Every table
/// write is fenced with the leader's term, so a deposed leader's late write
/// is refused and its intent rolled back.
///
/// **On election** the leader reconciles the audit table (settling intents
/// a dead leader left between its steps) and brings every cell's table state
/// in line with its engine's plan (level-triggered: drained, awaiting or
/// ramping cells down, serving cells active).
///
/// **Failures**: a failed switch triggers a reconcile at once and is tried
/// again after a capped exponential backoff with jitter ([`RetryPolicy`]),
/// re-derived from the plan at that time (a cell that recovered meanwhile is
/// failed back instead), until it succeeds or a new decision about the cell
/// replaces it. A drain refused by the cap of the stored table
/// ([`Error::DrainCap`]) is retried the same way.
///
/// **Continuously**, the leader reconciles every
/// [`with_reconcile_every`](Self::with_reconcile_every) (default 30 s) and
/// then prunes the audit table ([`Retention`], by default 90 days and
/// 100 000 rows; intents whose outcome is missing are never pruned). If the controller
/// falls behind the decision stream (a lagged broadcast), it re-derives every
/// cell's table state from the plan.
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
/// let row = loop {
///     // `Elected` first (a lone controller wins at once), then the switch
///     if let ControllerEvent::Switched(row) = events.recv().await? {
///         break row;
///     }
/// };
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
    reconcile_every: Duration,
    retry: RetryPolicy,
    retention: Option<Retention>,
    metrics: Metrics,
}

/// The controller's instruments (meter `failover`), looked up once.
#[derive(Debug, Clone)]
struct Metrics {
    leader: opentelemetry::metrics::Gauge<u64>,
    retries: opentelemetry::metrics::Counter<u64>,
}

impl Metrics {
    fn new() -> Self {
        let m = opentelemetry::global::meter("failover");
        Metrics {
            leader: m.u64_gauge("failover.controller.leader").with_description("1 while this controller leads, else 0").build(),
            retries: m.u64_counter("failover.switch.retries").with_description("Failed switches scheduled for another attempt").build(),
        }
    }
}

impl<B: SwitchBackend> Controller<B> {
    /// A controller switching through `backend`. Defaults: no SLA tracker, no
    /// router to wait for, apply wait 5 s, rule name `decision-engine`,
    /// reconcile every 30 s, [`RetryPolicy::default`], [`Retention::default`]
    /// (90 days, 100 000 rows).
    pub fn new(backend: B) -> Self {
        Controller {
            backend: Arc::new(backend),
            sla: None,
            routers: Vec::new(),
            apply_wait: Duration::from_secs(5),
            rule: "decision-engine".into(),
            reconcile_every: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            retention: Some(Retention::default()),
            metrics: Metrics::new(),
        }
    }

    /// How often the leader reconciles the audit table (and prunes it, with
    /// a retention). Zero is invalid.
    pub fn with_reconcile_every(mut self, every: Duration) -> Result<Self, Error> {
        if every.is_zero() {
            return Err(Error::Config("reconcile interval must be positive".into()));
        }
        self.reconcile_every = every;
        Ok(self)
    }

    /// The backoff of failed switches.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Prunes the audit table after each periodic reconcile with `retention`.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Never prunes the audit table (an external job keeps it bounded).
    pub fn without_retention(mut self) -> Self {
        self.retention = None;
        self
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

    /// Carries one decision through the backend (which must hold the
    /// leadership). `Ok(None)` for decisions that change no table (ramp
    /// steps, refused drains, failback ready).
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
                let (record, apply) = self.wait_applied(*record).await?;
                if let (Some(sla), Some(mut phases)) = (&self.sla, record.phases()) {
                    phases.apply = apply;
                    sla.record_switch(phases);
                }
                Ok(ControllerEvent::Switched(Box::new(record)))
            }
        }
    }

    async fn wait_applied(&self, mut record: AuditRecord) -> Result<(AuditRecord, ApplyPhase), Error> {
        if self.routers.is_empty() {
            return Ok((record, ApplyPhase::NotTracked));
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
            return Ok((record, ApplyPhase::TimedOut(self.apply_wait)));
        }
        let at = epoch_ms(cellclock::now());
        if self.backend.audit().mark_applied(&record.tx_id, at).await? {
            record.status = AuditStatus::Applied;
            record.applied_at_ms = Some(at);
        }
        let apply = record.phases().map(|p| p.apply).unwrap_or(ApplyPhase::NotTracked);
        Ok((record, apply))
    }

    /// The change `plan` wants for `cell`: drained, awaiting or ramping cells
    /// down, serving cells active.
    fn wanted(plan: &Plan, cell: &CellId) -> Option<Change> {
        plan.get(cell).map(|alloc| match alloc.phase {
            CellPhase::Serving => Change::Failback(cell.clone()),
            _ => Change::Drain(cell.clone()),
        })
    }

    /// Subscribes to `engine`'s decisions and runs in its own task:
    /// campaigns, and while leading reconciles, switches and retries (see
    /// [`Controller`]). Dropping the handle stops it (a killed controller:
    /// its lease runs out).
    pub async fn spawn(self, engine: &EngineHandle) -> Result<ControllerHandle, Error> {
        let decisions = engine.decisions();
        let plan = engine.plan_watch();
        let (events, first) = broadcast::channel(256);
        let tx = events.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let backend = self.backend.clone();
        let leader = self.metrics.leader.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = self.run_loop(decisions, plan, tx) => {}
                // a dropped handle (Err) is a kill, not a shutdown: no resign
                Ok(()) = stopped => {
                    leader.record(0, &[]);
                    if let Err(e) = backend.resign().await {
                        tracing::warn!(error = %e, "resign on shutdown failed; the lease will expire");
                    }
                }
            }
        });
        Ok(ControllerHandle { events, first: std::sync::Mutex::new(Some(first)), stop: Some(stop), task })
    }

    async fn run_loop(
        self,
        mut decisions: broadcast::Receiver<Decision>,
        plan: watch::Receiver<Arc<Plan>>,
        events: broadcast::Sender<ControllerEvent>,
    ) {
        let mut campaign_delays = self.retry.delays();
        loop {
            // Follower: campaign; decisions are the leader's business (the
            // plan is read on election), but the latest switch asked for each
            // cell is kept so its reason and instants survive the election.
            let mut heard: HashMap<CellId, SwitchRequest> = HashMap::new();
            let term = {
                let campaign = self.backend.campaign();
                tokio::pin!(campaign);
                loop {
                    tokio::select! {
                        r = &mut campaign => match r {
                            Ok(term) => break term,
                            Err(e) => {
                                let delay = campaign_delays.next().unwrap_or(self.reconcile_every);
                                tracing::warn!(error = %e, ?delay, "campaign failed; trying again");
                                tokio::time::sleep(delay).await;
                                campaign.set(self.backend.campaign());
                            }
                        },
                        d = decisions.recv() => match d {
                            Ok(d) => {
                                if let Some(req) = SwitchRequest::from_decision(&d, &self.rule) {
                                    heard.insert(d.cell().clone(), req);
                                }
                            }
                            Err(RecvError::Lagged(_)) => heard.clear(),
                            Err(RecvError::Closed) => return,
                        },
                    }
                }
            };
            campaign_delays = self.retry.delays();
            tracing::info!(%term, "controller elected");
            let _ = events.send(ControllerEvent::Elected { term });
            self.metrics.leader.record(1, &[]);
            let (lost_tx, lost_rx) = oneshot::channel();
            let _renewal = AbortOnDrop(tokio::spawn(renew_loop(self.backend.clone(), term, lost_tx)));
            match self.lead(&mut decisions, &plan, &events, lost_rx, heard).await {
                Exit::Closed => {
                    self.metrics.leader.record(0, &[]);
                    let _ = self.backend.resign().await;
                    return;
                }
                Exit::Deposed(reason) => {
                    tracing::warn!(%term, %reason, "controller deposed");
                    // best effort: a held lease is given up so the next campaign starts clean
                    let _ = tokio::time::timeout(self.backend.lease_ttl(), self.backend.resign()).await;
                    let _ = events.send(ControllerEvent::Deposed { term, reason });
                    self.metrics.leader.record(0, &[]);
                }
            }
        }
    }

    /// The leader's loop: until the engine stops or the leadership is lost.
    async fn lead(
        &self,
        decisions: &mut broadcast::Receiver<Decision>,
        plan: &watch::Receiver<Arc<Plan>>,
        events: &broadcast::Sender<ControllerEvent>,
        mut lost: oneshot::Receiver<String>,
        mut heard: HashMap<CellId, SwitchRequest>,
    ) -> Exit {
        let mut pending: HashMap<CellId, Pending> = HashMap::new();
        if let Err(why) = self.reconcile(events, false).await {
            return Exit::Deposed(why);
        }
        let current = plan.borrow().clone();
        if let Err(why) = self.resync(&current, &mut pending, events, false, &mut heard).await {
            return Exit::Deposed(why);
        }
        let mut ticks = tokio::time::interval_at(Instant::now() + self.reconcile_every, self.reconcile_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let due = pending.values().map(|p| p.due).min();
            let step = tokio::select! {
                why = &mut lost => return Exit::Deposed(why.unwrap_or_else(|_| "lease renewal stopped".into())),
                d = decisions.recv() => match d {
                    Ok(d) => match SwitchRequest::from_decision(&d, &self.rule) {
                        Some(req) => {
                            pending.remove(d.cell());
                            self.attempt(req, None, &mut pending, events).await
                        }
                        None => Ok(()),
                    },
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "controller fell behind the decisions; resyncing from the plan");
                        let _ = events.send(ControllerEvent::Resynced { missed });
                        let current = plan.borrow().clone();
                        self.resync(&current, &mut pending, events, true, &mut HashMap::new()).await
                    }
                    Err(RecvError::Closed) => return Exit::Closed,
                },
                _ = sleep_until_opt(due) => {
                    let now = Instant::now();
                    let ready: Vec<CellId> = pending.iter().filter(|(_, p)| p.due <= now).map(|(c, _)| c.clone()).collect();
                    let current = plan.borrow().clone();
                    let mut res = Ok(());
                    for cell in ready {
                        let Some(p) = pending.remove(&cell) else { continue };
                        let req = match Self::wanted(&current, &cell) {
                            Some(change) if change != p.req.change => SwitchRequest::new(change)
                                .with_reason("retry: re-derived from the engine's plan")
                                .with_rule(self.rule.clone()),
                            _ => p.req.clone(),
                        };
                        res = self.attempt(req, Some(p), &mut pending, events).await;
                        if res.is_err() {
                            break;
                        }
                    }
                    res
                },
                _ = ticks.tick() => self.reconcile(events, true).await,
            };
            if let Err(why) = step {
                return Exit::Deposed(why);
            }
        }
    }

    /// One switch attempt; a failure reconciles at once and schedules the
    /// next attempt. `Err` only when the leadership is lost.
    async fn attempt(
        &self,
        req: SwitchRequest,
        prior: Option<Pending>,
        pending: &mut HashMap<CellId, Pending>,
        events: &broadcast::Sender<ControllerEvent>,
    ) -> Result<(), String> {
        let cell = req.change.flow().clone();
        match self.run(req.clone()).await {
            Ok(e) => {
                let _ = events.send(e);
                Ok(())
            }
            Err(Error::NotLeader(why)) => Err(why),
            Err(e) => {
                tracing::error!(%cell, change = ?req.change, error = %e, "switch failed");
                let _ = events.send(ControllerEvent::Failed { cell: cell.clone(), error: e.to_string() });
                self.reconcile(events, false).await?;
                let (mut delays, attempt) = match prior {
                    Some(p) => (p.delays, p.attempt + 1),
                    None => (Box::new(self.retry.delays()) as Box<dyn Iterator<Item = Duration> + Send>, 1),
                };
                let delay = delays.next().unwrap_or(self.reconcile_every);
                let _ = events.send(ControllerEvent::Retrying { cell: cell.clone(), attempt, delay });
                self.metrics.retries.add(1, &[opentelemetry::KeyValue::new("cell", cell.to_string())]);
                pending.insert(cell, Pending { req, delays, attempt, due: Instant::now() + delay });
                Ok(())
            }
        }
    }

    /// Brings every cell's table state in line with `plan`; failures are
    /// retried. `NoChange` events only when `report_unchanged`. A request in
    /// `heard` for the same change is used as is (its reason and instants).
    async fn resync(
        &self,
        plan: &Plan,
        pending: &mut HashMap<CellId, Pending>,
        events: &broadcast::Sender<ControllerEvent>,
        report_unchanged: bool,
        heard: &mut HashMap<CellId, SwitchRequest>,
    ) -> Result<(), String> {
        for cell in plan.cells.keys() {
            let Some(change) = Self::wanted(plan, cell) else { continue };
            pending.remove(cell);
            let req = match heard.remove(cell) {
                Some(req) if req.change == change => req,
                _ => SwitchRequest::new(change).with_reason("resync from the engine's plan").with_rule(self.rule.clone()),
            };
            if !report_unchanged
                && let Ok(dry) = self.backend.dry_run(&req.change).await
                && !dry.changes
            {
                continue;
            }
            self.attempt(req, None, pending, events).await?;
        }
        Ok(())
    }

    /// Reconciles (and prunes, when `prune` and a retention is set). `Err`
    /// only when the leadership is lost.
    async fn reconcile(&self, events: &broadcast::Sender<ControllerEvent>, prune: bool) -> Result<(), String> {
        match self.backend.reconcile().await {
            Ok(report) => {
                if !report.committed.is_empty() || !report.rolled_back.is_empty() {
                    tracing::info!(committed = ?report.committed, rolled_back = ?report.rolled_back, "switch intents reconciled");
                    let _ = events.send(ControllerEvent::Reconciled(report));
                }
            }
            Err(Error::NotLeader(why)) => return Err(why),
            Err(e) => tracing::warn!(error = %e, "reconcile failed; trying again later"),
        }
        if prune && let Some(retention) = &self.retention {
            match self.backend.audit().prune(retention, cellclock::now()).await {
                Ok(n) if n > 0 => tracing::info!(rows = n, "audit rows pruned"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "audit pruning failed"),
            }
        }
        Ok(())
    }
}

async fn sleep_until_opt(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Renews the leadership every third of the TTL; reports its loss (a
/// refused renewal, or none for two thirds of the TTL) and stops.
async fn renew_loop<B: SwitchBackend>(backend: Arc<B>, term: Term, lost: oneshot::Sender<String>) {
    let ttl = backend.lease_ttl();
    let every = ttl / 3;
    let deadline = ttl * 2 / 3;
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let left = deadline.saturating_sub(last_ok.elapsed());
        let why = match tokio::time::timeout(left, backend.renew()).await {
            Ok(Ok(t)) if t == term => {
                last_ok = Instant::now();
                continue;
            }
            Ok(Ok(t)) => format!("the leadership moved to term {t}"),
            Ok(Err(Error::NotLeader(why))) => why,
            Ok(Err(e)) if last_ok.elapsed() < deadline => {
                tracing::warn!(%term, error = %e, "lease renewal failed; trying again");
                continue;
            }
            Ok(Err(e)) => format!("no renewal within the deadline: {e}"),
            Err(_) => "no renewal within the deadline".to_string(),
        };
        let _ = lost.send(why);
        return;
    }
}

/// The handle of a running [`Controller`]. Dropping it stops the task (its
/// lease then runs out); [`shutdown`](Self::shutdown) resigns first.
#[derive(Debug)]
pub struct ControllerHandle {
    events: broadcast::Sender<ControllerEvent>,
    first: std::sync::Mutex<Option<broadcast::Receiver<ControllerEvent>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl ControllerHandle {
    /// What the controller does: the first call sees every event since
    /// [`Controller::spawn`] (its election included), later calls the events
    /// from then on.
    pub fn events(&self) -> broadcast::Receiver<ControllerEvent> {
        match self.first.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(rx) => rx,
            None => self.events.subscribe(),
        }
    }

    /// Stops the controller and gives its leadership up at once, so a
    /// follower takes over without waiting for the lease to expire (as
    /// Kubernetes' `ReleaseOnCancel`). A switch in flight is abandoned where
    /// it is: the next leader's reconcile settles it. Dropping the handle
    /// instead stops the task without resigning (like a crash).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
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
