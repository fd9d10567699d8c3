//! The engine's background task: ticks the [`DecisionEngine`], follows the
//! health streams of several probers and publishes the plan and decisions.

use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use health::HealthSnapshot;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::engine::{Decision, DecisionEngine, Plan};
use crate::error::Error;
use crate::outcome::OutcomeReporter;

enum Command {
    Drain(CellId, oneshot::Sender<Result<Decision, Error>>),
    Approve(CellId, oneshot::Sender<Result<Decision, Error>>),
    Observe(String, Vec<(CellId, bool)>),
}

/// The handle of a running engine (see [`spawn_engine`]). Dropping it stops the task.
#[derive(Debug)]
pub struct EngineHandle {
    plan: watch::Receiver<Arc<Plan>>,
    decisions: broadcast::Sender<Decision>,
    commands: mpsc::Sender<Command>,
    reporter: OutcomeReporter,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Drain(c, _) => write!(f, "Drain({c})"),
            Command::Approve(c, _) => write!(f, "Approve({c})"),
            Command::Observe(p, v) => write!(f, "Observe({p}, {} cells)", v.len()),
        }
    }
}

/// Runs `engine` in its own task: every `interval` it ticks; every snapshot on
/// a prober's stream (`(name, health::HealthHub::subscribe())`) is recorded as
/// that prober's view. The request path reads [`EngineHandle::plan`].
pub fn spawn_engine(
    mut engine: DecisionEngine,
    probers: Vec<(String, watch::Receiver<Arc<HealthSnapshot>>)>,
    interval: Duration,
) -> EngineHandle {
    let (plan_tx, plan_rx) = watch::channel(Arc::new(engine.plan()));
    let (dec_tx, _) = broadcast::channel(1024);
    let (cmd_tx, mut cmd_rx) = mpsc::channel::<Command>(16);
    let reporter = engine.reporter();
    let decisions = dec_tx.clone();
    let (view_tx, mut view_rx) = mpsc::channel::<(String, Arc<HealthSnapshot>)>(64);
    let mut forwarders = Vec::new();
    for (name, mut rx) in probers {
        let tx = view_tx.clone();
        forwarders.push(tokio::spawn(async move {
            loop {
                let snap = rx.borrow_and_update().clone();
                if tx.send((name.clone(), snap)).await.is_err() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        }));
    }
    drop(view_tx);
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut views_open = true;
        loop {
            let mut out = Vec::new();
            tokio::select! {
                _ = tick.tick() => out = engine.tick(Instant::now()),
                v = view_rx.recv(), if views_open => match v {
                    Some((name, snap)) => engine.observe_snapshot(&name, &snap, Instant::now()),
                    None => views_open = false,
                },
                c = cmd_rx.recv() => match c {
                    Some(Command::Drain(cell, reply)) => {
                        let r = engine.force_drain(&cell, Instant::now());
                        if let Ok(d) = &r { out.push(d.clone()); }
                        let _ = reply.send(r);
                    }
                    Some(Command::Approve(cell, reply)) => {
                        let r = engine.approve_failback(&cell, Instant::now());
                        if let Ok(d) = &r { out.push(d.clone()); }
                        let _ = reply.send(r);
                    }
                    Some(Command::Observe(prober, view)) => {
                        let now = Instant::now();
                        for (cell, healthy) in view {
                            engine.observe(&prober, &cell, healthy, now);
                        }
                    }
                    None => break,
                },
            }
            if !out.is_empty() {
                plan_tx.send_replace(Arc::new(engine.plan()));
                for d in out {
                    let _ = dec_tx.send(d);
                }
            }
        }
        for f in forwarders {
            f.abort();
        }
    });
    EngineHandle { plan: plan_rx, decisions, commands: cmd_tx, reporter, task }
}

impl EngineHandle {
    /// The plan in force (updated after every decision).
    pub fn plan(&self) -> Arc<Plan> {
        self.plan.borrow().clone()
    }

    /// A watch of plans.
    pub fn plan_watch(&self) -> watch::Receiver<Arc<Plan>> {
        self.plan.clone()
    }

    /// Decisions taken from now on.
    pub fn decisions(&self) -> broadcast::Receiver<Decision> {
        self.decisions.subscribe()
    }

    /// The outcome reporter for the request path.
    pub fn reporter(&self) -> OutcomeReporter {
        self.reporter.clone()
    }

    /// Drains `cell` now (manual operation).
    pub async fn drain(&self, cell: &CellId) -> Result<Decision, Error> {
        self.call(|tx| Command::Drain(cell.clone(), tx)).await
    }

    /// Starts the failback of `cell` (manual operation).
    pub async fn approve_failback(&self, cell: &CellId) -> Result<Decision, Error> {
        self.call(|tx| Command::Approve(cell.clone(), tx)).await
    }

    /// Records `prober`'s view of the cells (`(cell, healthy)`) as of now: a
    /// prober that does not run in this process (another host reporting over
    /// the network) feeds the engine as a local one's snapshots do. A view
    /// ages like theirs: resend it at the probe interval.
    pub async fn observe(&self, prober: &str, view: Vec<(CellId, bool)>) -> Result<(), Error> {
        let stopped = || Error::Config("the engine task has stopped".into());
        self.commands.send(Command::Observe(prober.to_string(), view)).await.map_err(|_| stopped())
    }

    async fn call(&self, make: impl FnOnce(oneshot::Sender<Result<Decision, Error>>) -> Command) -> Result<Decision, Error> {
        let (tx, rx) = oneshot::channel();
        let stopped = || Error::Config("the engine task has stopped".into());
        self.commands.send(make(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}
