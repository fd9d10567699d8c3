//! The executor: walks a schedule's starts and heals against the run's real
//! processes, through the seams a deployment has (signals, the proxies on
//! the cells' links, `POST /admin/clock`, the mock broker's down and up).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chaos::{Fault, FaultKind, Link, LinkFault, Process, Step};
use testkit::proxy::LinkMode;

use super::Plan;
use super::proxies::Side;
use crate::cells::Cells;
use crate::children::Roles;
use crate::clock_admin::ClockOffset;
use crate::error::DemoError;
use crate::gateway::HttpClient;

/// The run's processes and where they listen, as the executor reaches them.
pub(crate) struct Targets<'a> {
    pub(crate) cells: &'a Mutex<Cells>,
    pub(crate) roles: &'a mut Roles,
    /// Controllers' base URLs, by index.
    pub(crate) controllers: &'a [String],
    /// The gateway's base URL.
    pub(crate) gateway: &'a str,
    /// Probers' base URLs, by index.
    pub(crate) probers: &'a [String],
    pub(crate) client: HttpClient,
}

/// What the executor did, per fault kind.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(crate) struct Applied {
    /// Faults injected.
    pub(crate) applied: BTreeMap<&'static str, usize>,
    /// Faults not injected, with why (a target already down, a link without a proxy).
    pub(crate) skipped: Vec<String>,
}

/// Walks `plan`'s schedule from `t0` to `t0 + duration`, then heals everything.
pub(crate) async fn execute(plan: &mut Plan<'_>, t: &mut Targets<'_>, t0: Instant, duration: Duration) -> Applied {
    let mut done = Applied::default();
    // which faults took effect (a heal undoes only those)
    let mut live = vec![false; plan.schedule.faults.len()];
    // fault index -> the controller armed by it
    let mut leader_killed: BTreeMap<usize, usize> = BTreeMap::new();
    // copies of every process's state: a stale restart goes back to the one before its step
    let mut backups = super::stale::Backups::default();
    let stale = plan.schedule.faults.iter().any(|f| matches!(f.kind, FaultKind::StaleRestart { .. }));
    if stale {
        backups.take(t.cells).await;
    }
    for (at, step) in plan.schedule.steps() {
        tokio::time::sleep_until((t0 + at).into()).await;
        let (i, start) = match step {
            Step::Start(i) => (i, true),
            Step::Heal(i) => (i, false),
        };
        let fault = plan.schedule.faults[i].clone();
        if start {
            let acted = act(plan, t, i, &fault, &mut leader_killed, &backups, true).await;
            if stale {
                backups.take(t.cells).await;
            }
            match acted {
                Ok(()) => {
                    live[i] = true;
                    *done.applied.entry(fault.kind.name()).or_default() += 1;
                    eprintln!("chaos: +{:>6} ms start {}", at.as_millis(), describe(&fault));
                }
                Err(e) => done.skipped.push(format!("{} at {} ms: {e}", fault.kind.name(), at.as_millis())),
            }
        } else if live[i] {
            let healed = act(plan, t, i, &fault, &mut leader_killed, &backups, false).await;
            if let Err(DemoError::NoSwitchWhileArmed) = healed {
                // armed, but no switch passed the point: the fault did not happen
                if let Some(n) = done.applied.get_mut(fault.kind.name()) {
                    *n -= 1;
                }
                done.skipped.push(format!("{} at {} ms: no switch while armed", fault.kind.name(), fault.at.as_millis()));
            } else if let Err(e) = healed {
                eprintln!("chaos: heal of {} failed: {e} (healed at the end)", describe(&fault));
            } else {
                eprintln!("chaos: +{:>6} ms heal  {}", at.as_millis(), fault.kind.name());
            }
        }
    }
    tokio::time::sleep_until((t0 + duration).into()).await;
    heal_all(plan, t).await;
    done
}

fn describe(f: &Fault) -> String {
    serde_json::to_string(&f.kind).unwrap_or_else(|_| f.kind.name().to_string())
}

fn lock<'a>(cells: &'a Mutex<Cells>) -> Result<std::sync::MutexGuard<'a, Cells>, DemoError> {
    cells.lock().map_err(|_| DemoError::Other("cells lock poisoned".into()))
}

/// The role process name and base URL of a non-cell process.
fn role_of(t: &Targets<'_>, p: &Process, cells: &[String]) -> Option<(String, String)> {
    match p {
        Process::Cell { .. } => None,
        Process::Gateway => Some(("gateway".into(), t.gateway.to_string())),
        Process::Controller { index } => t.controllers.get(*index).map(|u| (format!("controller-{index}"), u.clone())),
        Process::Prober { cell } => {
            let i = cells.iter().position(|c| c == cell)? % t.probers.len().max(1);
            t.probers.get(i).map(|u| (format!("prober-{i}"), u.clone()))
        }
    }
}

/// A process's base URL for `POST /admin/clock` (a cell: its first port, directly).
fn clock_url(t: &Targets<'_>, p: &Process, cells: &[String]) -> Result<String, DemoError> {
    match p {
        Process::Cell { cell, index } => {
            let name = crate::cells::replica_name(cell, *index);
            let list = lock(t.cells)?.processes();
            let port = list.iter().find(|(n, _, _)| *n == name).map(|(_, port, _)| *port);
            port.map(|p| format!("http://127.0.0.1:{p}")).ok_or(DemoError::UnknownCell(name))
        }
        other => role_of(t, other, cells).map(|(_, u)| u).ok_or_else(|| DemoError::Other(format!("no process {other:?}"))),
    }
}

async fn set_clock(t: &Targets<'_>, base: &str, offset_ms: i64) -> Result<(), DemoError> {
    let url = format!("{base}/admin/clock");
    crate::roles::wire::post_json(&t.client, &url, &ClockOffset { offset_ms }, Duration::from_secs(1)).await
}

/// The controller that reports itself leader (`leader_term` in `/admin/status`).
async fn leader(t: &Targets<'_>) -> Result<usize, DemoError> {
    for (i, url) in t.controllers.iter().enumerate() {
        let status = crate::gateway::get_json(&t.client, &format!("{url}/admin/status"), Duration::from_millis(500)).await;
        if status.is_ok_and(|j| j["leader_term"].as_u64().is_some()) {
            return Ok(i);
        }
    }
    Err(DemoError::Other("no controller reports itself leader".into()))
}

fn link_mode(f: LinkFault) -> LinkMode {
    match f {
        LinkFault::Drop => LinkMode::Refuse,
        LinkFault::Blackhole => LinkMode::Blackhole,
        LinkFault::Delay { ms } => LinkMode::Delay(Duration::from_millis(ms)),
    }
}

/// The cell and its proxied link that `link` is (the front proxies sit in
/// front of the cell: gateway->cell and prober->cell are both its link to
/// everyone else).
fn proxied_cell(link: &Link) -> Result<(Side, &str), DemoError> {
    match link {
        Link::GatewayCell { cell } | Link::ProberCell { cell } => Ok((Side::Front, cell)),
        Link::CellKafka { cell } => Ok((Side::Kafka, cell)),
        Link::ControllerStore => Err(DemoError::Other("no proxy on the controllers' store link without etcd (the table store is the controller's)".into())),
    }
}

/// Injects fault `i` (`start`) or heals it.
async fn act(
    plan: &mut Plan<'_>,
    t: &mut Targets<'_>,
    i: usize,
    f: &Fault,
    leader_killed: &mut BTreeMap<usize, usize>,
    backups: &super::stale::Backups,
    start: bool,
) -> Result<(), DemoError> {
    let cells = plan.cells.clone();
    let role = |t: &Targets<'_>, p: &Process| role_of(t, p, &cells).map(|(n, _)| n).ok_or_else(|| DemoError::Other(format!("no process {p:?}")));
    match &f.kind {
        FaultKind::KillProcess { process: Process::Cell { cell, index } } => {
            let mut c = lock(t.cells)?;
            if start { c.kill_process(cell, *index) } else { c.restart_process(cell, *index) }.map(|_| ())
        }
        FaultKind::KillCell { cell } => {
            let mut c = lock(t.cells)?;
            if start { c.kill(cell) } else { c.restart(cell) }.map(|_| ())
        }
        FaultKind::KillProcess { process } if start => Err(DemoError::Other(format!("kill_process of {process:?}: only cell processes"))),
        // the leader is armed to kill itself at the drawn point of its next
        // switch (`POST /admin/crash`); at the heal it is restarted if it died
        FaultKind::KillLeader { point } if start => {
            let index = leader(t).await?;
            let url = format!("{}/admin/crash", t.controllers[index]);
            crate::roles::wire::post_json(&t.client, &url, &crate::crash_admin::CrashAt { point: *point }, Duration::from_secs(1)).await?;
            leader_killed.insert(i, index);
            Ok(())
        }
        FaultKind::KillLeader { .. } => {
            let Some(index) = leader_killed.remove(&i) else { return Ok(()) };
            let name = format!("controller-{index}");
            if t.roles.reap(&name)? {
                return t.roles.restart(&name);
            }
            if let Some(base) = t.controllers.get(index) {
                let req = http::Request::delete(format!("{base}/admin/crash")).body(http_body_util::Full::default());
                if let Ok(req) = req {
                    let _ = tokio::time::timeout(Duration::from_secs(1), t.client.request(req)).await;
                }
            }
            Err(DemoError::NoSwitchWhileArmed)
        }
        FaultKind::Pause { process: Process::Cell { cell, index } } => {
            let mut c = lock(t.cells)?;
            if start { c.pause_process(cell, *index) } else { c.resume_process(cell, *index) }.map(|_| ())
        }
        FaultKind::Pause { process } => {
            let name = role(t, process)?;
            t.roles.pause(&name, start)
        }
        FaultKind::Partition { link: Link::ControllerStore, fault } => plan.proxies.store_fault(i, start.then(|| link_mode(*fault))),
        FaultKind::Partition { link, fault } => {
            let (side, cell) = proxied_cell(link)?;
            if start {
                plan.proxies.fault(side, cell, i, link_mode(*fault))
            } else {
                plan.proxies.heal(side, cell, i);
                Ok(())
            }
        }
        FaultKind::ClockStep { process, offset_ms } => {
            set_clock(t, &clock_url(t, process, &cells)?, if start { *offset_ms } else { 0 }).await
        }
        FaultKind::KafkaDown => match (plan.kafka, start) {
            (Some(m), true) => Ok(m.broker_down(1)?),
            (Some(m), false) => Ok(m.broker_up(1)?),
            (None, _) => Err(DemoError::Other("no mock broker (KAFKA_BOOTSTRAP is set)".into())),
        },
        FaultKind::RedisDown => plan.proxies.redis(start),
        FaultKind::StaleRestart { process: Process::Cell { cell, index } } => {
            if !start {
                return lock(t.cells)?.restart_process(cell, *index).map(|_| ());
            }
            let name = crate::cells::replica_name(cell, *index);
            if !backups.has(&name) {
                return Err(DemoError::Other(format!("no earlier copy of {name}'s state")));
            }
            lock(t.cells)?.kill_process(cell, *index)?;
            // killed: a failed write-back still restarts it at the heal, from its own state
            if let Err(e) = backups.restore(t.cells, &name).await {
                eprintln!("chaos: state of {name} not set back: {e}");
            }
            Ok(())
        }
        FaultKind::StaleRestart { process } if start => Err(DemoError::Other(format!("stale_restart of {process:?}: only cell processes"))),
        FaultKind::KillProcess { .. } | FaultKind::StaleRestart { .. } => Ok(()),
    }
}

/// Everything back: killed processes restarted, paused ones continued, links
/// passing, the broker up, every clock at true time.
async fn heal_all(plan: &mut Plan<'_>, t: &mut Targets<'_>) {
    plan.proxies.heal_all();
    if let Some(m) = plan.kafka
        && let Err(e) = m.broker_up(1)
    {
        eprintln!("chaos: broker up: {e}");
    }
    if let Err(e) = t.roles.heal_all() {
        eprintln!("chaos: role processes: {e}");
    }
    let dead: Vec<String> = match lock(t.cells) {
        Ok(mut c) => {
            if let Err(e) = c.resume_all() {
                eprintln!("chaos: resume: {e}");
            }
            c.list().into_iter().filter(|(_, _, alive)| !alive).map(|(id, _, _)| id).collect()
        }
        Err(_) => Vec::new(),
    };
    for id in dead {
        if let Err(e) = lock(t.cells).and_then(|mut c| c.restart(&id)) {
            eprintln!("chaos: restart {id}: {e}");
        }
    }
    // every clock back to true time; a process just restarted may take a moment to listen
    let processes = lock(t.cells).map(|c| c.processes()).unwrap_or_default();
    let mut targets: Vec<String> = processes.iter().map(|(_, port, _)| format!("http://127.0.0.1:{port}")).collect();
    targets.extend(t.controllers.iter().cloned());
    targets.push(t.gateway.to_string());
    targets.extend(t.probers.iter().cloned());
    for base in targets {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Err(e) = set_clock(t, &base, 0).await {
            if Instant::now() > deadline {
                eprintln!("chaos: clock of {base} not reset: {e}");
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
