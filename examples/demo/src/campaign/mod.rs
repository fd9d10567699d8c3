//! `demo chaos`: the fault campaign against the real processes of a run.
//! For each seed a [`chaos::Schedule`] is drawn over the run's topology and
//! the normal orchestrated run executes it ([`executor`]) instead of its one
//! scheduled kill; after the heal, the [`chaos::checker`] judges the run from
//! the load's history, every cell's state and the audit rows. One line per
//! schedule, then one JSON object as the last stdout line; the command fails
//! naming every seed whose invariants broke, and `--seed N` replays one.
//!
//! What this one-machine run can do: `--processes-per-cell` processes per
//! cell (2 by default) sharing the cell's SQLite file (or
//! `DEMO_DATABASE_URL`), each serving its share of the cell's instance ports
//! with its own idgen worker id and its own replica, each checked on its
//! own; the partition of a cell's link to
//! everyone else (gateway and prober links alike, through the proxies in
//! front of it; with etcd, the controllers reach etcd through a proxy too, so
//! their store link can be cut; a cell's Kafka link is not proxied, so those
//! draws are skipped and counted), kill_leader only
//! with several controllers in etcd (a lone controller restarted without etcd
//! would publish its first table again): the leader is armed to `kill -9`
//! itself at the drawn point of its next switch (`POST /admin/crash`), and a
//! window that no switch passed is skipped and counted; kafka_down only
//! with the in-process mock broker; redis_down only with `DEMO_REDIS_URL`
//! (through a proxy in front of Redis); stale_restart writes a copy of the
//! process's state taken at an earlier step back before it starts again
//! ([`stale`]).

pub(crate) mod evidence;
pub(crate) mod executor;
pub(crate) mod proxies;
pub(crate) mod stale;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chaos::checker::{self, Evidence, Verdict};
use chaos::{FaultKind, Schedule, ScheduleConfig, Topology};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde::Serialize;

use crate::config::DemoConfig;
use crate::error::DemoError;
use crate::orchestrator::RunArgs;

/// Arguments of `demo chaos`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChaosArgs {
    /// The first schedule's seed [default: random]; the next ones are seed+1, seed+2, ...
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Schedules to run back to back.
    #[arg(long, default_value_t = 1)]
    pub(crate) schedules: u64,
    /// Seconds of load per schedule (at least 10; faults heal 5 s before the end).
    #[arg(long, default_value_t = 60)]
    pub(crate) duration: u64,
    /// Requests per second.
    #[arg(long, default_value_t = 100)]
    pub(crate) rps: u32,
    /// Fault kinds (comma separated) [default: every kind this run supports].
    #[arg(long, value_delimiter = ',')]
    pub(crate) kinds: Vec<String>,
    /// Controller processes (more than one needs ETCD_ENDPOINTS).
    #[arg(long, default_value_t = 1)]
    pub(crate) controllers: u16,
    /// Processes per cell (they share the cell's storage; at most the
    /// cell's instances).
    #[arg(long, default_value_t = 2)]
    pub(crate) processes_per_cell: usize,
    /// Config file (default: the embedded demo.yaml).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Print each seed's schedule (JSON, one line per seed) and run nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

/// One schedule to run, and what the run fills in.
pub(crate) struct Plan<'a> {
    pub(crate) schedule: Schedule,
    /// The run's cells, in config order.
    pub(crate) cells: Vec<String>,
    /// The in-process mock broker, when the run uses it.
    pub(crate) kafka: Option<&'a MockCluster<'static, DefaultProducerContext>>,
    /// The proxies in front of the cells (started by the run).
    pub(crate) proxies: proxies::Proxies,
    /// Set by the run once judged.
    pub(crate) outcome: Option<Outcome>,
}

impl<'a> Plan<'a> {
    /// A plan for `schedule`.
    pub(crate) fn new(schedule: Schedule, cells: Vec<String>, kafka: Option<&'a MockCluster<'static, DefaultProducerContext>>) -> Self {
        Plan { schedule, cells, kafka, proxies: proxies::Proxies::default(), outcome: None }
    }

    /// Judges the healed run and keeps the outcome; `replicas` names every
    /// cell process (`cell/index`), each of which must hold every
    /// acknowledged write.
    pub(crate) fn judge(
        &mut self,
        applied: executor::Applied,
        history: &[chaos::history::Record],
        replicas: &[String],
        views: &BTreeMap<String, checker::CellView>,
        audit: &[failover::audit::AuditRecord],
        cfg: &DemoConfig,
    ) {
        let drain_cap = cfg.rules.max_drained;
        let mut verdict = checker::check(Evidence { history, cells: views, all_cells: replicas, audit, drain_cap });
        verdict.misrouted = checker::misrouted(history, &pinned(cfg));
        self.outcome = Some(Outcome { seed: self.schedule.seed, faults: self.schedule.faults.clone(), applied, verdict, load: Load::default() });
    }

    /// Adds to the judged outcome how many requests the load generator sent
    /// of the `planned` ones (fewer: its host starved it, and a thin
    /// verdict says so rather than the cells).
    pub(crate) fn note_load(&mut self, sent: usize, planned: u64) {
        if let Some(o) = self.outcome.as_mut() {
            o.load = Load { sent, planned };
        }
    }

    /// Adds to the judged outcome the verdict on every cell process's issued
    /// ids (per run of a process, in order).
    pub(crate) fn judge_issued(&mut self, issued: &BTreeMap<String, Vec<u64>>) {
        if let Some(o) = self.outcome.as_mut() {
            o.verdict.add_issued(issued);
        }
    }
}

/// The cells each compliance-pinned region's users may be served by: its
/// own and its allowed regions' cells.
pub(crate) fn pinned(cfg: &DemoConfig) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    cfg.regions
        .iter()
        .filter(|r| !r.compliance.is_empty())
        .map(|r| {
            let cells = cfg.cells.iter().filter(|c| c.region == r.name || r.allowed_regions.contains(&c.region)).map(|c| c.id.clone()).collect();
            (r.name.clone(), cells)
        })
        .collect()
}

/// One schedule's result.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Outcome {
    pub(crate) seed: u64,
    /// The schedule drawn.
    pub(crate) faults: Vec<chaos::Fault>,
    /// What was injected.
    #[serde(flatten)]
    pub(crate) applied: executor::Applied,
    pub(crate) verdict: Verdict,
    /// The load the schedule ran under.
    pub(crate) load: Load,
}

/// The load generator's requests in one schedule.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Load {
    /// Requests sent (each a tick of `--rps`; a tick the generator's own
    /// process was too busy for is skipped, not sent late).
    pub(crate) sent: usize,
    /// `--rps` times `--duration`.
    pub(crate) planned: u64,
}

/// The kinds this run can inject, and the ones it cannot with why.
pub(crate) fn supported(controllers: u16, etcd: bool, mock_kafka: bool, redis: bool) -> (Vec<&'static str>, BTreeMap<&'static str, &'static str>) {
    let mut no = BTreeMap::new();
    if !redis {
        no.insert("redis_down", "the cells use no Redis cache (set DEMO_REDIS_URL)");
    }
    if controllers < 2 || !etcd {
        no.insert("kill_leader", "needs --controllers 2+ with etcd (a lone controller restarted without etcd republishes its first table)");
    }
    if !mock_kafka {
        no.insert("kafka_down", "KAFKA_BOOTSTRAP is set: the broker is not the run's to take down");
    }
    let yes = FaultKind::NAMES.iter().copied().filter(|k| !no.contains_key(k)).collect();
    (yes, no)
}

/// Waits (at most `within`) until every cell of `cells` is active in the
/// controllers' table: the failback after the heal.
pub(crate) async fn wait_restored(control: &crate::control_view::ControlView, cells: &[String], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let table = control.store.current().map(|t| t.table().clone());
        let views = evidence::views(&cells.iter().map(|c| (c.clone(), Some((String::new(), 0)))).collect(), table.as_ref());
        if views.values().all(|v| v.active) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("chaos: not every cell back in the table within {within:?}");
}

/// The campaign's JSON line.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    schedules: &'a [Outcome],
    kinds: &'a [&'static str],
    unsupported: &'a BTreeMap<&'static str, &'static str>,
    processes_per_cell: usize,
    failed_seeds: Vec<u64>,
    ok: bool,
}

/// Runs the campaign; `run_one` is one orchestrated run of a schedule (the
/// mock broker lives on the caller's thread).
pub(crate) fn run(args: &ChaosArgs, run_one: &dyn Fn(RunArgs, Schedule, Vec<String>) -> Result<Option<Outcome>, DemoError>) -> Result<(), DemoError> {
    let cfg = DemoConfig::load(args.config.as_deref())?;
    let etcd = crate::etcd::endpoints()?.is_some();
    let mock = std::env::var("KAFKA_BOOTSTRAP").map_or(true, |b| b.is_empty());
    let redis = std::env::var("DEMO_REDIS_URL").is_ok_and(|u| !u.is_empty());
    let (yes, no) = supported(args.controllers, etcd, mock, redis);
    let kinds: Vec<&'static str> = match args.kinds.is_empty() {
        true => yes.clone(),
        false => {
            let mut out = Vec::new();
            for k in &args.kinds {
                if let Some(why) = no.get(k.as_str()) {
                    return Err(DemoError::Config(format!("--kinds {k}: {why}")));
                }
                out.push(*yes.iter().find(|y| **y == k).ok_or_else(|| DemoError::Config(format!("--kinds {k}: no such kind (kinds: {})", FaultKind::NAMES.join(", "))))?);
            }
            out
        }
    };
    let cells = cfg.cell_ids();
    let topo = Topology::try_new(cells.clone(), args.processes_per_cell, usize::from(args.controllers))
        .map_err(|e| DemoError::Config(e.to_string()))?
        .with_redis(redis);
    let sched_cfg = ScheduleConfig::try_new(Duration::from_secs(args.duration))
        .and_then(|c| c.with_kinds(kinds.iter().copied()))
        .map_err(|e| DemoError::Config(format!("--duration/--kinds: {e}")))?;
    let first = args.seed.unwrap_or_else(rand::random);
    println!("seed {first}");
    let mut outcomes = Vec::new();
    for seed in first..first.saturating_add(args.schedules) {
        let schedule = Schedule::generate(seed, &topo, &sched_cfg);
        if args.dry_run {
            println!("{}", serde_json::to_string(&schedule).map_err(|e| DemoError::Other(e.to_string()))?);
            continue;
        }
        eprintln!("chaos: seed {seed}: {} faults", schedule.faults.len());
        let run = RunArgs {
            duration: Some(args.duration),
            rps: args.rps,
            kill: None,
            json: true,
            config: args.config.clone(),
            metrics_addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ui: false,
            ui_addr: None,
            report: None,
            controllers: args.controllers,
            replication: None,
            processes_per_cell: args.processes_per_cell,
        };
        let outcome = run_one(run, schedule, cells.clone())
            .map_err(|e| DemoError::Other(format!("seed {seed}: the run failed: {e}")))?
            .ok_or_else(|| DemoError::Other(format!("seed {seed}: the run gave no verdict")))?;
        println!("{}", line(&outcome));
        outcomes.push(outcome);
    }
    if args.dry_run {
        return Ok(());
    }
    finish(&outcomes, &kinds, &no, args)
}

/// Prints the JSON line; an error naming the seeds whose invariants broke.
pub(crate) fn finish(outcomes: &[Outcome], kinds: &[&'static str], no: &BTreeMap<&'static str, &'static str>, args: &ChaosArgs) -> Result<(), DemoError> {
    let failed: Vec<u64> = outcomes.iter().filter(|o| !o.verdict.ok()).map(|o| o.seed).collect();
    let summary = Summary { schedules: outcomes, kinds, unsupported: no, processes_per_cell: args.processes_per_cell, failed_seeds: failed.clone(), ok: failed.is_empty() };
    println!("{}", serde_json::to_string(&summary).map_err(|e| DemoError::Other(e.to_string()))?);
    if failed.is_empty() {
        return Ok(());
    }
    let seeds: Vec<String> = failed.iter().map(u64::to_string).collect();
    let kinds = if args.kinds.is_empty() { String::new() } else { format!(" --kinds {}", args.kinds.join(",")) };
    Err(DemoError::Other(format!(
        "invariants broke in seed(s) {}; replay one with: demo chaos --seed N --duration {} --rps {} --controllers {} --processes-per-cell {}{kinds}",
        seeds.join(", "),
        args.duration,
        args.rps,
        args.controllers,
        args.processes_per_cell
    )))
}

/// One schedule's line.
fn line(o: &Outcome) -> String {
    let v = &o.verdict;
    let faults: Vec<String> = o.applied.applied.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let unavail: Vec<String> = v.longest_unavailable_ms.iter().map(|(r, ms)| format!("{r}={ms}ms")).collect();
    format!(
        "seed {}: faults [{}] skipped {}; acked {}, failed {}, lost {}, diverged {}, ids issued {}, duplicate ids {}, unordered ids {}, audit anomalies {}, not restored {}, misrouted {}; longest unavailable [{}]: {}",
        o.seed,
        faults.join(" "),
        o.applied.skipped.len(),
        v.acked,
        v.failed,
        v.lost.len(),
        v.diverged.len(),
        v.issued,
        v.duplicate_ids.len(),
        v.unordered_ids.len(),
        v.audit.len(),
        v.not_restored.len(),
        v.misrouted.len(),
        unavail.join(" "),
        if v.ok() { "ok" } else { "BROKEN" }
    )
}

#[cfg(test)]
mod tests;
