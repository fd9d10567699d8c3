//! The executor: runs sagas forward, turns them back, resumes them from the log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellctx::CellContext;
use futures_util::StreamExt;
use opentelemetry::metrics::Meter;
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::definition::Saga;
use crate::error::Error;
use crate::log::{
    Retention, SagaChange, SagaLog, SagaRecord, SagaState, StepRecord, StepState, Write, now_ms,
};
use crate::metrics::Metrics;
use crate::outcome::{Outcome, RecoveryReport};
use crate::step::{BoxFuture, Phase, StepContext};
use crate::xid::{XidSource, validate_xid};

/// The default lease: 30 s (renewed every 10 s while a saga runs).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// How many sagas one recovery pass takes from the log at most.
const RECOVERY_BATCH: usize = 256;

/// Runs sagas and resumes unfinished ones from the [`SagaLog`].
///
/// Each executor has an owner id (random by default; give a stable one, such
/// as the pod name, with [`with_owner`](Self::with_owner) so a restarted process
/// takes its own sagas back at once instead of waiting for their leases to
/// expire). Two live executors must not share an owner id. Cheap to clone;
/// clones share the registry and the in-process set of running sagas.
#[derive(Clone)]
pub struct Executor {
    log: SagaLog,
    xids: Arc<dyn XidSource>,
    owner: Arc<str>,
    lease: Duration,
    sagas: Arc<HashMap<String, Saga>>,
    metrics: Metrics,
    concurrency: usize,
    active: Arc<Mutex<HashSet<String>>>,
    retention: Option<Retention>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("owner", &self.owner)
            .field("lease", &self.lease)
            .field("sagas", &self.sagas.keys().collect::<Vec<_>>())
            .field("log", &self.log)
            .field("xids", &self.xids)
            .finish_non_exhaustive()
    }
}

/// A step half that failed for good: its last error, and whether any attempt
/// timed out (then the action may have taken effect downstream).
#[derive(Debug)]
struct StepFailure {
    error: String,
    maybe_applied: bool,
}

/// Removes a saga from the in-process running set when its driver ends or is dropped.
struct Active {
    set: Arc<Mutex<HashSet<String>>>,
    xid: String,
}

impl Drop for Active {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.xid);
    }
}

impl Executor {
    /// An executor on `log`, taking XIDs from `xids` (an [`idgen::Generator`]).
    pub fn new(log: SagaLog, xids: impl XidSource) -> Self {
        Executor {
            log,
            xids: Arc::new(xids),
            owner: format!("exec-{:016x}", rand::random::<u64>()).into(),
            lease: DEFAULT_LEASE,
            sagas: Arc::new(HashMap::new()),
            metrics: Metrics::new(&opentelemetry::global::meter("saga")),
            concurrency: 8,
            active: Arc::new(Mutex::new(HashSet::new())),
            retention: None,
        }
    }

    /// Registers a definition: the executor starts sagas of it and resumes them
    /// from the log. Two definitions of one name are an error.
    pub fn register(mut self, saga: Saga) -> Result<Self, Error> {
        let sagas = Arc::make_mut(&mut self.sagas);
        if sagas.contains_key(saga.name()) {
            return Err(Error::InvalidConfig(format!(
                "saga {:?} is registered twice",
                saga.name()
            )));
        }
        sagas.insert(saga.name().to_string(), saga);
        Ok(self)
    }

    /// Sets the owner id (1 to 128 visible ASCII bytes).
    pub fn with_owner(mut self, owner: impl Into<String>) -> Result<Self, Error> {
        let owner = owner.into();
        cellctx::validate_token(&owner)
            .map_err(|e| Error::InvalidConfig(format!("owner {owner:?}: {e}")))?;
        self.owner = owner.into();
        Ok(self)
    }

    /// Sets the lease (at least 30 ms; default [`DEFAULT_LEASE`]). A saga whose
    /// executor died is resumed by another one after this long; a running saga
    /// renews it every third of it.
    pub fn with_lease(mut self, lease: Duration) -> Result<Self, Error> {
        if lease < Duration::from_millis(30) {
            return Err(Error::InvalidConfig(format!(
                "lease {lease:?} is shorter than 30 ms"
            )));
        }
        self.lease = lease;
        Ok(self)
    }

    /// Records metrics on `meter` instead of the global meter named `saga`.
    pub fn with_meter(mut self, meter: &Meter) -> Self {
        self.metrics = Metrics::new(meter);
        self
    }

    /// How many sagas one recovery pass drives at once (default 8, at least 1).
    pub fn with_recovery_concurrency(mut self, n: usize) -> Result<Self, Error> {
        if n == 0 {
            return Err(Error::InvalidConfig(
                "recovery concurrency must be at least 1".into(),
            ));
        }
        self.concurrency = n;
        Ok(self)
    }

    /// Prunes finished sagas beyond `retention` on every
    /// [`run_recovery`](Self::run_recovery) pass (default: never).
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// The retention applied by [`run_recovery`](Self::run_recovery), if any.
    pub fn retention(&self) -> Option<&Retention> {
        self.retention.as_ref()
    }

    /// Deletes the finished sagas the executor's retention does not keep
    /// ([`SagaLog::prune`]) and counts them in `saga.log.pruned`; `Ok(0)`
    /// without a retention.
    pub async fn prune(&self) -> Result<u64, Error> {
        let Some(retention) = &self.retention else { return Ok(0) };
        let n = self.log.prune(retention).await?;
        self.metrics.pruned(n);
        Ok(n)
    }

    /// The owner id written in the lease column.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The log.
    pub fn log(&self) -> &SagaLog {
        &self.log
    }

    /// Starts a saga of definition `saga` with `input` and drives it to an end.
    ///
    /// The saga is written to the log (leased to this executor) before its first
    /// action, so if this future is dropped or the process dies, recovery
    /// resumes it. Steps run inside a [`cellctx`] scope whose context is the
    /// caller's current one (if any) with [`CellContext::xid`] set.
    ///
    /// An `Err` is a failure of the machinery (log, lease), not of a step: the
    /// saga stays in the log and is resumed by recovery.
    pub async fn start<I: Serialize + ?Sized>(
        &self,
        saga: &str,
        input: &I,
    ) -> Result<Outcome, Error> {
        let def = self.definition(saga)?;
        let input = serde_json::to_value(input)?;
        let xid = self.new_xid()?;
        let Some(_active) = self.claim(&xid) else {
            return Err(Error::LeaseLost { xid });
        };
        let names: Vec<&str> = def.steps.iter().map(|s| &*s.name).collect();
        self.log
            .insert(
                &xid,
                &def.name,
                &input,
                &names,
                Some(&self.owner),
                self.lease,
            )
            .await?;
        self.metrics.started(&def.name);
        tracing::debug!(xid = %xid, saga = %def.name, "saga started");
        let now = now_ms();
        let rec = SagaRecord {
            xid,
            name: def.name.to_string(),
            input,
            state: SagaState::Running,
            owner: Some(self.owner.to_string()),
            lease_until_ms: 0,
            failed_step: None,
            error: None,
            created_ms: now,
            updated_ms: now,
            steps: def
                .steps
                .iter()
                .map(|s| StepRecord {
                    name: s.name.to_string(),
                    state: StepState::Pending,
                    attempts: 0,
                    output: None,
                    error: None,
                })
                .collect(),
        };
        self.drive(&def, rec, cellctx::current()).await
    }

    /// Writes a saga to the log without running it (unleased): the next
    /// [`recover`](Self::recover) pass of any executor runs it. Returns its XID.
    pub async fn enqueue<I: Serialize + ?Sized>(
        &self,
        saga: &str,
        input: &I,
    ) -> Result<String, Error> {
        let def = self.definition(saga)?;
        let input = serde_json::to_value(input)?;
        let xid = self.new_xid()?;
        let names: Vec<&str> = def.steps.iter().map(|s| &*s.name).collect();
        self.log
            .insert(&xid, &def.name, &input, &names, None, self.lease)
            .await?;
        self.metrics.started(&def.name);
        Ok(xid)
    }

    /// Takes one saga from the log and drives it to an end. A saga already
    /// finished gives its outcome; one leased by another live executor gives
    /// [`Error::LeaseLost`].
    pub async fn resume(&self, xid: &str) -> Result<Outcome, Error> {
        let Some(_active) = self.claim(xid) else {
            return Err(Error::LeaseLost {
                xid: xid.to_string(),
            });
        };
        if !self.log.acquire(xid, &self.owner, self.lease).await? {
            let rec = self.log.load(xid).await?;
            return match outcome_of(&rec) {
                Some(outcome) => Ok(outcome),
                None => Err(Error::LeaseLost {
                    xid: xid.to_string(),
                }),
            };
        }
        self.drive_acquired(xid).await
    }

    /// Turns a stuck saga back to compensating and drives it (after an operator
    /// fixed what made its compensation fail). [`Error::WrongState`] when it is
    /// not stuck.
    pub async fn resume_stuck(&self, xid: &str) -> Result<Outcome, Error> {
        let Some(_active) = self.claim(xid) else {
            return Err(Error::LeaseLost {
                xid: xid.to_string(),
            });
        };
        if !self.log.unstick(xid, &self.owner, self.lease).await? {
            let rec = self.log.load(xid).await?;
            return Err(Error::WrongState {
                xid: xid.to_string(),
                state: rec.state.to_string(),
                expected: "stuck",
            });
        }
        self.drive_acquired(xid).await
    }

    /// One recovery pass: takes the unfinished sagas that are free, whose lease
    /// expired, or that carry this executor's owner id (but are not running in
    /// this process), and drives each forward or backward, as the log says.
    ///
    /// Never panics on a bad row: malformed rows and unknown definitions are
    /// reported in [`RecoveryReport::errors`], counted in `saga.log.malformed`,
    /// logged, and left in place.
    pub async fn recover(&self) -> RecoveryReport {
        let mut report = RecoveryReport::default();
        let xids = match self.log.candidates(&self.owner, RECOVERY_BATCH).await {
            Ok(xids) => xids,
            Err(e) => {
                tracing::warn!(error = %e, "saga recovery: cannot list candidates");
                report.errors.push(e);
                return report;
            }
        };
        let results: Vec<Result<Option<Outcome>, Error>> = futures_util::stream::iter(xids)
            .map(|xid| async move { self.recover_one(&xid).await })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for r in results {
            match r {
                Ok(Some(o)) => report.resumed.push(o),
                Ok(None) => report.skipped += 1,
                Err(e) => report.errors.push(e),
            }
        }
        report
    }

    /// Runs [`recover`](Self::recover) every `every`, forever, and
    /// [`prune`](Self::prune) after each pass when a retention is set; spawn
    /// it once per executor.
    pub async fn run_recovery(&self, every: Duration) {
        loop {
            let report = self.recover().await;
            if let Err(e) = self.prune().await {
                tracing::warn!(error = %e, "saga log retention pass failed");
            }
            if !report.resumed.is_empty() || !report.errors.is_empty() {
                tracing::info!(
                    resumed = report.resumed.len(),
                    errors = report.errors.len(),
                    "saga recovery pass"
                );
            }
            tokio::time::sleep(every).await;
        }
    }

    async fn recover_one(&self, xid: &str) -> Result<Option<Outcome>, Error> {
        let Some(_active) = self.claim(xid) else {
            return Ok(None);
        };
        if !self.log.acquire(xid, &self.owner, self.lease).await? {
            return Ok(None);
        }
        let outcome = self.drive_acquired(xid).await?;
        Ok(Some(outcome))
    }

    /// Loads a saga whose lease we hold and drives it; gives the lease back when
    /// the row cannot be used.
    async fn drive_acquired(&self, xid: &str) -> Result<Outcome, Error> {
        let prepared = match self.log.load(xid).await {
            Ok(rec) => self
                .definition(&rec.name)
                .and_then(|def| check_shape(&def, &rec).map(|()| (def, rec))),
            Err(e) => Err(e),
        };
        let (def, rec) = match prepared {
            Ok(p) => p,
            Err(e) => {
                if matches!(e, Error::MalformedRow { .. } | Error::UnknownSaga(_)) {
                    self.metrics.malformed();
                    tracing::error!(xid = %xid, error = %e, "saga log row cannot be resumed; left for an operator");
                }
                if let Err(release) = self.log.release(xid, &self.owner).await {
                    tracing::warn!(xid = %xid, error = %release, "cannot release saga lease");
                }
                return Err(e);
            }
        };
        self.metrics.recovered(&def.name);
        tracing::info!(xid = %xid, saga = %def.name, state = %rec.state, "resuming saga from the log");
        self.drive(&def, rec, None).await
    }

    fn definition(&self, name: &str) -> Result<Saga, Error> {
        self.sagas
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownSaga(name.to_string()))
    }

    fn new_xid(&self) -> Result<String, Error> {
        let xid = self.xids.next_xid().map_err(Error::Xid)?;
        validate_xid(&xid)?;
        Ok(xid)
    }

    fn claim(&self, xid: &str) -> Option<Active> {
        let mut set = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if set.insert(xid.to_string()) {
            Some(Active {
                set: self.active.clone(),
                xid: xid.to_string(),
            })
        } else {
            None
        }
    }

    async fn write(
        &self,
        rec: &SagaRecord,
        change: SagaChange<'_>,
        step: Option<usize>,
    ) -> Result<(), Error> {
        let step = step.and_then(|i| rec.steps.get(i).map(|s| (i, s)));
        self.log
            .write(Write {
                xid: &rec.xid,
                owner: &self.owner,
                lease: self.lease,
                change,
                step,
            })
            .await
    }

    /// Drives a saga whose lease this executor holds, from the state `rec` says.
    async fn drive(
        &self,
        def: &Saga,
        mut rec: SagaRecord,
        base: Option<Arc<CellContext>>,
    ) -> Result<Outcome, Error> {
        let mut ctx = match base {
            Some(c) => (*c).clone(),
            None => CellContext::new(),
        };
        ctx.xid = cellctx::Token::try_from(rec.xid.as_str()).ok();
        let cell = Arc::new(ctx);
        let input = Arc::new(rec.input.clone());
        let n = def.steps.len();

        if rec.state == SagaState::Running {
            for i in 0..n {
                match rec.steps[i].state {
                    StepState::Done => continue,
                    StepState::Pending | StepState::Running => {}
                    other => {
                        // A forward saga with a step already failed or undone: the
                        // only safe way is back.
                        let error = format!(
                            "log had step {} {other} while the saga was running",
                            rec.steps[i].name
                        );
                        self.turn_back(&mut rec, i, error).await?;
                        break;
                    }
                }
                rec.steps[i].state = StepState::Running;
                self.write(&rec, SagaChange::Renew, Some(i)).await?;
                match self
                    .run_phase(def, &mut rec, i, Phase::Action, &cell, &input)
                    .await?
                {
                    Ok(output) => {
                        let st = &mut rec.steps[i];
                        st.state = StepState::Done;
                        st.output = Some(output);
                        st.error = None;
                        self.write(&rec, SagaChange::Renew, Some(i)).await?;
                    }
                    Err(StepFailure { error, maybe_applied }) => {
                        // A timed-out attempt may have taken effect downstream:
                        // such a step is compensated on the way back.
                        rec.steps[i].state =
                            if maybe_applied { StepState::TimedOut } else { StepState::Failed };
                        rec.steps[i].error = Some(error.clone());
                        self.turn_back(&mut rec, i, error).await?;
                        break;
                    }
                }
            }
            if rec.state == SagaState::Running {
                self.write(&rec, SagaChange::Finish(SagaState::Committed), None)
                    .await?;
                rec.state = SagaState::Committed;
                self.metrics.committed(&def.name);
                tracing::info!(xid = %rec.xid, saga = %def.name, "saga committed");
            }
        }

        if rec.state == SagaState::Compensating {
            for i in (0..n).rev() {
                let state = rec.steps[i].state;
                if !matches!(
                    state,
                    StepState::Done | StepState::TimedOut | StepState::Compensating
                ) {
                    continue;
                }
                if def.steps[i].compensation.is_none() {
                    if state == StepState::TimedOut {
                        // Nothing to undo with; the log keeps the uncertainty.
                        continue;
                    }
                    rec.steps[i].state = StepState::Compensated;
                    self.write(&rec, SagaChange::Renew, Some(i)).await?;
                    continue;
                }
                rec.steps[i].state = StepState::Compensating;
                self.write(&rec, SagaChange::Renew, Some(i)).await?;
                match self
                    .run_phase(def, &mut rec, i, Phase::Compensation, &cell, &input)
                    .await?
                {
                    Ok(_) => {
                        rec.steps[i].state = StepState::Compensated;
                        rec.steps[i].error = None;
                        self.write(&rec, SagaChange::Renew, Some(i)).await?;
                    }
                    Err(StepFailure { error, .. }) => {
                        rec.steps[i].error = Some(error.clone());
                        self.write(&rec, SagaChange::Finish(SagaState::Stuck), Some(i))
                            .await?;
                        rec.state = SagaState::Stuck;
                        self.metrics.stuck(&def.name);
                        tracing::error!(
                            xid = %rec.xid, saga = %def.name, step = %rec.steps[i].name,
                            attempts = rec.steps[i].attempts, error = %error,
                            "saga stuck: a compensation spent its retry budget; operator action needed"
                        );
                        break;
                    }
                }
            }
            if rec.state == SagaState::Compensating {
                self.write(&rec, SagaChange::Finish(SagaState::Compensated), None)
                    .await?;
                rec.state = SagaState::Compensated;
                self.metrics.compensated(&def.name);
                tracing::info!(xid = %rec.xid, saga = %def.name, "saga compensated");
            }
        }

        outcome_of(&rec).ok_or_else(|| Error::MalformedRow {
            xid: rec.xid.clone(),
            reason: format!("saga left in state {}", rec.state),
        })
    }

    /// Marks step `i` as the failure and the saga as compensating, in one write.
    async fn turn_back(&self, rec: &mut SagaRecord, i: usize, error: String) -> Result<(), Error> {
        tracing::warn!(xid = %rec.xid, saga = %rec.name, step = %rec.steps[i].name, error = %error, "saga step failed; compensating");
        let change = SagaChange::State {
            state: SagaState::Compensating,
            failed_step: Some(i),
            error: Some(&error),
        };
        self.write(rec, change, Some(i)).await?;
        rec.state = SagaState::Compensating;
        rec.failed_step = Some(i);
        rec.error = Some(error);
        Ok(())
    }

    /// Runs one half of step `i` with its timeout and retry policy, renewing the
    /// lease meanwhile. `Ok(Err(_))` is the step's last error once its budget is
    /// spent (and whether any attempt timed out); `Err(_)` is a failure of the
    /// log or the lease (the driver stops).
    async fn run_phase(
        &self,
        def: &Saga,
        rec: &mut SagaRecord,
        i: usize,
        phase: Phase,
        cell: &Arc<CellContext>,
        input: &Arc<Value>,
    ) -> Result<Result<Value, StepFailure>, Error> {
        let step = &def.steps[i];
        let policy = match phase {
            Phase::Action => step.retry,
            Phase::Compensation => step.compensation_retry,
        };
        let visible = |j: usize| j < i || (phase == Phase::Compensation && j == i);
        let outputs = Arc::new(
            def.steps
                .iter()
                .zip(&rec.steps)
                .enumerate()
                .map(|(j, (s, r))| {
                    (
                        s.name.clone(),
                        if visible(j) { r.output.clone() } else { None },
                    )
                })
                .collect::<Vec<_>>(),
        );
        let mut attempt = 0u32;
        let mut timed_out = false;
        loop {
            attempt += 1;
            rec.steps[i].attempts = rec.steps[i].attempts.saturating_add(1);
            let ctx = StepContext {
                xid: rec.xid.as_str().into(),
                saga: def.name.clone(),
                index: i,
                name: step.name.clone(),
                attempt,
                phase,
                input: input.clone(),
                outputs: outputs.clone(),
            };
            let fut: BoxFuture<Result<Value, crate::BoxError>> = match (phase, &step.compensation) {
                (Phase::Action, _) => (step.action)(ctx),
                (Phase::Compensation, Some(c)) => {
                    let f = c(ctx);
                    Box::pin(async move { f.await.map(|()| Value::Null) })
                }
                (Phase::Compensation, None) => Box::pin(async { Ok(Value::Null) }),
            };
            let started = Instant::now();
            let result = tokio::select! {
                r = tokio::time::timeout(step.timeout, cellctx::scope(cell.clone(), fut)) => r,
                e = self.heartbeat(&rec.xid) => return Err(e),
            };
            let (outcome, error) = match result {
                Ok(Ok(v)) => {
                    self.metrics
                        .step(&def.name, &step.name, phase, "ok", started.elapsed());
                    return Ok(Ok(v));
                }
                Ok(Err(e)) => ("error", e.to_string()),
                Err(_) => {
                    timed_out = true;
                    ("timeout", format!("attempt timed out after {:?}", step.timeout))
                }
            };
            self.metrics
                .step(&def.name, &step.name, phase, outcome, started.elapsed());
            tracing::warn!(
                xid = %rec.xid, saga = %def.name, step = %step.name, phase = phase.as_str(),
                attempt, error = %error, "saga step attempt failed"
            );
            rec.steps[i].error = Some(error.clone());
            if attempt >= policy.max_attempts() {
                return Ok(Err(StepFailure { error, maybe_applied: timed_out }));
            }
            self.write(rec, SagaChange::Renew, Some(i)).await?;
            tokio::select! {
                () = tokio::time::sleep(policy.backoff(attempt)) => {}
                e = self.heartbeat(&rec.xid) => return Err(e),
            }
        }
    }

    /// Renews the lease every third of it; returns only when the lease is lost
    /// (or the log stayed unreachable until it expired).
    async fn heartbeat(&self, xid: &str) -> Error {
        let every = self.lease / 3;
        let mut deadline = Instant::now() + self.lease;
        loop {
            tokio::time::sleep(every).await;
            match self.log.renew(xid, &self.owner, self.lease).await {
                Ok(()) => deadline = Instant::now() + self.lease,
                Err(e @ Error::LeaseLost { .. }) => return e,
                Err(e) if Instant::now() >= deadline => return e,
                Err(e) => {
                    tracing::warn!(xid = %xid, error = %e, "cannot renew saga lease; retrying")
                }
            }
        }
    }
}

/// Checks that the log's steps are the definition's steps.
fn check_shape(def: &Saga, rec: &SagaRecord) -> Result<(), Error> {
    let same = def.steps.len() == rec.steps.len()
        && def
            .steps
            .iter()
            .zip(&rec.steps)
            .all(|(d, r)| *d.name == *r.name);
    if same {
        Ok(())
    } else {
        let logged: Vec<&str> = rec.steps.iter().map(|s| s.name.as_str()).collect();
        let defined: Vec<&str> = def.steps.iter().map(|s| &*s.name).collect();
        Err(Error::MalformedRow {
            xid: rec.xid.clone(),
            reason: format!(
                "log has steps {logged:?} but definition {:?} has {defined:?}",
                def.name
            ),
        })
    }
}

/// The outcome of a saga in a final state; `None` while it is live.
fn outcome_of(rec: &SagaRecord) -> Option<Outcome> {
    let xid = rec.xid.clone();
    match rec.state {
        SagaState::Committed => {
            let outputs: BTreeMap<String, Value> = rec
                .steps
                .iter()
                .filter_map(|s| s.output.clone().map(|o| (s.name.clone(), o)))
                .collect();
            Some(Outcome::Committed { xid, outputs })
        }
        SagaState::Compensated => Some(Outcome::Compensated {
            xid,
            failed_step: rec
                .failed_step
                .and_then(|i| rec.steps.get(i))
                .map(|s| s.name.clone())
                .unwrap_or_default(),
            error: rec.error.clone().unwrap_or_default(),
        }),
        SagaState::Stuck => {
            let stuck = rec
                .steps
                .iter()
                .rev()
                .find(|s| s.state == StepState::Compensating);
            Some(Outcome::Stuck {
                xid,
                step: stuck.map(|s| s.name.clone()).unwrap_or_default(),
                error: stuck.and_then(|s| s.error.clone()).unwrap_or_default(),
            })
        }
        SagaState::Running | SagaState::Compensating => None,
    }
}
