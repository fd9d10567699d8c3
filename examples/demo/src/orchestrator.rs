//! The one-command run: every role as a child process of this binary,
//! started through the same subcommands a deployment across hosts uses
//! (`demo controller`, `demo cell`, `demo prober`, `demo gateway`), on
//! loopback; then load at the gateway process over HTTP, a cell killed and
//! restarted, failback and replication waited for, and the report, whose
//! audit rows and table versions come from the controllers over the wire.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cellctx::CellId;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cells::{Action, Cells, Launch};
use crate::children::{RoleLaunch, Roles};
use crate::config::DemoConfig;
use crate::control_view::ControlView;
use crate::error::DemoError;
use crate::gateway;
use crate::load::{Load, User};
use crate::replication::{pending_outbox, states};
use crate::stats::Stats;
use crate::{html_report, report, ui};

/// Seconds of load when neither `--duration` nor `--ui` is given.
const DEFAULT_DURATION_S: u64 = 30;

/// Arguments of the default command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Seconds of load [default: 30; with --ui: until stopped from the console or Ctrl-C].
    #[arg(long)]
    pub(crate) duration: Option<u64>,
    /// Requests per second (all users together).
    #[arg(long, default_value_t = 150)]
    pub(crate) rps: u32,
    /// The cell to kill (default: the first cell).
    #[arg(long)]
    pub(crate) kill: Option<String>,
    /// Print one JSON object as the last line of stdout (no progress bar).
    #[arg(long)]
    pub(crate) json: bool,
    /// Config file (default: the embedded demo.yaml).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Where this process serves `GET /metrics` (the load generator's).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) metrics_addr: std::net::SocketAddr,
    /// Serve the live console (its URL is the first line of stdout); the
    /// operator kills and restarts cells, nothing is scheduled.
    #[arg(long)]
    pub(crate) ui: bool,
    /// The console's address (loopback only) [default: 127.0.0.1 on a free port].
    #[arg(long, requires = "ui")]
    pub(crate) ui_addr: Option<SocketAddr>,
    /// Also write the run's report as one self-contained HTML file.
    #[arg(long, value_name = "FILE.html")]
    pub(crate) report: Option<PathBuf>,
    /// Where the cells' changes are captured [default: the config's, outbox]:
    /// `binlog` needs `DEMO_DATABASE_URL` on MySQL/MariaDB with the binlog on.
    #[arg(long, value_enum)]
    pub(crate) replication: Option<crate::config::Replication>,
    /// Controller processes; they elect one leader, so more than one needs
    /// etcd (`ETCD_ENDPOINTS`).
    #[arg(long, default_value_t = 1)]
    pub(crate) controllers: u16,
    /// Processes per cell, sharing the cell's storage, each serving its
    /// share of the cell's instance ports with its own idgen worker id (at
    /// most the cell's `instances`).
    #[arg(long, default_value_t = 1)]
    pub(crate) processes_per_cell: usize,
}

/// Ports for the run's processes, each held open (so neither a later
/// reservation nor a proxy of the run can get it) until the processes are
/// about to bind them: two ports asked of the kernel one after the other,
/// each released at once, could be the same one (a cell and the gateway on
/// one port: the second could not listen).
#[derive(Debug, Default)]
struct Reserved(Vec<std::net::TcpListener>);

impl Reserved {
    fn port(&mut self) -> Result<u16, DemoError> {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = l.local_addr()?.port();
        self.0.push(l);
        Ok(port)
    }

    /// Lets the processes bind them.
    fn release(self) {}
}

fn loopback(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

/// Waits until `GET url` answers JSON for which `ok` holds, or fails naming `what`.
async fn wait_for(
    client: &gateway::HttpClient,
    what: &str,
    url: &str,
    within: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if gateway::get_json(client, url, Duration::from_millis(300)).await.is_ok_and(|j| ok(&j)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DemoError::Other(format!("{what} not ready within {within:?}")))
}

/// The processes of a run and where they listen.
struct Topology {
    controllers: Vec<String>,
    gateway: String,
    probers: Vec<String>,
}

/// Runs the demo; returns the report.
/// With a `plan` (the fault campaign, [`crate::campaign`]), the cells sit
/// behind proxies, the roles mount `POST /admin/clock`, the plan's schedule
/// runs instead of the one kill and the plan gets the checker's verdict
/// instead of the report.
pub(crate) async fn run(
    args: RunArgs,
    kafka: String,
    topic: String,
    run_dir: PathBuf,
    mut plan: Option<&mut crate::campaign::Plan<'_>>,
) -> Result<(), DemoError> {
    let cfg = DemoConfig::load(args.config.as_deref())?;
    let planned = args.kill.clone().unwrap_or_else(|| cfg.cells[0].id.clone());
    if cfg.cell(&planned).is_none() {
        return Err(DemoError::Config(format!("--kill {planned:?}: no such cell (cells: {})", cfg.cell_ids().join(", "))));
    }
    if args.duration.is_some_and(|d| d < 4) {
        return Err(DemoError::Config("--duration must be at least 4 s".into()));
    }
    let etcd = crate::etcd::endpoints()?.is_some();
    if args.controllers == 0 || (args.controllers > 1 && !etcd) {
        return Err(DemoError::Config(
            "--controllers: at least 1, and more than 1 needs ETCD_ENDPOINTS (the controllers elect their leader in etcd)".into(),
        ));
    }
    // the console first: its URL is the first line of stdout
    let console = match args.ui {
        true => Some(ui::Console::serve(args.ui_addr).await?),
        false => None,
    };
    let run_id = format!("r{}", std::process::id());
    let config_path = run_dir.join("demo.yaml");
    match &args.config {
        Some(p) => std::fs::copy(p, &config_path).map(|_| ())?,
        None => std::fs::write(&config_path, crate::config::DEFAULT_YAML)?,
    }
    // replication: --replication overrides the config the cells read; checked before any cell starts
    if let Some(mode) = args.replication {
        crate::config::set_replication(&config_path, mode)?;
    }
    let replication = args.replication.unwrap_or(cfg.replication);
    replication.check(crate::config::database_url().as_deref())?;
    let cfg = DemoConfig { replication, ..cfg };
    #[cfg(feature = "etcd")]
    let role_run_id = run_id.clone();
    let role = RoleLaunch { exe: std::env::current_exe()?, config: config_path, run_id, run_dir: run_dir.clone(), clock_admin: plan.is_some() };

    // who is who: the users' identity provider and the gateway -> cell hop key
    let idp = crate::identity::DemoIdp::generate()?;
    let (_, jwks_file) = idp.save(&run_dir)?;
    let (_, hop_key_file) = crate::identity::new_hop_key(&run_dir)?;

    // every port up front: each role is told the others' addresses
    let mut reserved = Reserved::default();
    let mut ports = Vec::new();
    for c in &cfg.cells {
        ports.push((c.id.clone(), (0..c.instances).map(|_| reserved.port()).collect::<Result<Vec<_>, _>>()?));
    }
    let top = Topology {
        controllers: (0..args.controllers).map(|_| reserved.port().map(loopback)).collect::<Result<_, _>>()?,
        gateway: loopback(reserved.port()?),
        probers: (0..cfg.rules.probers).map(|_| reserved.port().map(loopback)).collect::<Result<_, _>>()?,
    };
    let audit_url = match std::env::var("DEMO_AUDIT_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => format!("sqlite://{}?mode=rwc", run_dir.join("audit.db").display()),
    };
    let client = gateway::http_client();
    let mut roles = Roles::new(role.clone());
    if let Some(p) = plan.as_deref_mut() {
        let mut proxies = crate::campaign::proxies::Proxies::start(&ports).await?;
        if let Some(url) = std::env::var("DEMO_REDIS_URL").ok().filter(|u| !u.is_empty()) {
            proxies = proxies.with_redis(&url).await?;
        }
        // each cell's link to the broker the run owns
        if p.kafka.is_some() {
            proxies = proxies.with_kafka(&kafka).await?;
        }
        // the controllers' link to etcd (the first endpoint)
        match crate::etcd::endpoints()? {
            #[cfg(feature = "etcd")]
            Some(eps) => {
                if let Some(first) = eps.first() {
                    proxies = proxies.with_store(first).await?;
                }
            }
            #[cfg(not(feature = "etcd"))]
            Some(never) => match never {},
            None => {}
        }
        p.proxies = proxies;
    }

    // the proxies hold their ports: the processes may bind theirs now
    reserved.release();

    // the controllers, one after the other (the first publishes the table)
    let mut ctl_args = vec!["--router-status".to_string(), format!("{}/admin/status", top.gateway), "--audit-url".into(), audit_url];
    for (id, p) in &ports {
        let proxied = plan.as_deref().and_then(|plan| plan.proxies.urls(id));
        let urls: Vec<String> = proxied.unwrap_or_else(|| p.iter().map(|p| loopback(*p)).collect());
        ctl_args.extend(["--endpoints".to_string(), format!("{id}={}", urls.join(","))]);
    }
    for (i, url) in top.controllers.iter().enumerate() {
        let name = format!("controller-{i}");
        let mut a = ctl_args.clone();
        let listen = url.trim_start_matches("http://").to_string();
        a.extend(["--listen".into(), listen, "--name".into(), name.clone(), "--worker".into(), (1000 + i).to_string()]);
        a.extend(["--dir".into(), run_dir.join(&name).display().to_string()]);
        let store: Vec<(String, String)> =
            plan.as_deref().and_then(|p| p.proxies.store_endpoint()).map(|e| ("ETCD_ENDPOINTS".to_string(), e.to_string())).into_iter().collect();
        roles.spawn_with_env(&name, "controller", &a, &store)?;
        wait_for(&client, &name, &format!("{url}/admin/status"), Duration::from_secs(30), |_| true)
            .await
            .map_err(|e| DemoError::Other(format!("{e} (log: {})", roles.log(&name).display())))?;
    }
    let table_url = (!etcd).then(|| format!("{}/table", top.controllers[0]));
    let table_flags: Vec<String> = table_url.iter().flat_map(|u| ["--table-url".to_string(), u.clone()]).collect();

    // the cells
    let redis_url = plan.as_deref().and_then(|p| p.proxies.redis_url().map(str::to_owned));
    let kafka_by_cell = plan.as_deref().map(|p| p.proxies.kafka_bootstrap()).unwrap_or_default();
    let launch = Launch { role, table_url: table_url.clone(), kafka, kafka_by_cell, topic, hop_key_file: hop_key_file.clone(), redis_url };
    let cells = Arc::new(Mutex::new(Cells::spawn(launch, ports, args.processes_per_cell)?));
    let result = async {
        let list = cells.lock().map(|c| c.processes()).map_err(|_| DemoError::Other("cells lock poisoned".into()))?;
        for (name, port, _) in &list {
            let (id, index) = name.split_once('/').unwrap_or((name, "0"));
            let log = run_dir.join(id).join(crate::cells::log_name(index.parse().unwrap_or(0)));
            wait_for(&client, &format!("cell {name}"), &format!("{}/admin/status", loopback(*port)), Duration::from_secs(30), |_| true)
                .await
                .map_err(|e| {
                    // the run directory goes with the run: keep the log's end in the error
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
                    DemoError::Other(format!("{e} (log: {}; its last lines:\n{})", log.display(), tail.join("\n")))
                })?;
        }
        // the probers and the gateway; the controllers start deciding once every prober saw every cell healthy
        let controllers = top.controllers.join(",");
        for (i, url) in top.probers.iter().enumerate() {
            let mut a = vec!["--name".to_string(), format!("prober-{i}"), "--controllers".into(), controllers.clone()];
            a.extend(["--listen".into(), url.trim_start_matches("http://").to_string()]);
            a.extend(table_flags.iter().cloned());
            roles.spawn(&format!("prober-{i}"), "prober", &a)?;
        }
        let mut a = vec!["--listen".to_string(), top.gateway.trim_start_matches("http://").to_string(), "--controllers".into(), controllers];
        a.extend(["--hop-key-file".into(), hop_key_file.display().to_string(), "--jwks-file".into(), jwks_file.display().to_string()]);
        a.extend(table_flags.iter().cloned());
        roles.spawn("gateway", "gateway", &a)?;
        wait_for(&client, "gateway", &format!("{}/admin/status", top.gateway), Duration::from_secs(30), |_| true)
            .await
            .map_err(|e| DemoError::Other(format!("{e} (log: {})", roles.log("gateway").display())))?;
        for (i, url) in top.controllers.iter().enumerate() {
            let engine = |j: &serde_json::Value| j["engine"].as_bool() == Some(true);
            wait_for(&client, "the probers' first views", &format!("{url}/admin/status"), Duration::from_secs(15), engine).await.map_err(|e| {
                DemoError::Other(format!("{e}: no controller decisions (logs: {})", roles.log(&format!("controller-{i}")).display()))
            })?;
        }
        let control = ControlView::follow(top.controllers.clone(), client.clone());
        drive(&args, &cfg, &planned, &cells, control, &top, console.as_ref(), &idp, &mut roles, plan).await
    }
    .await;
    if let Ok(mut c) = cells.lock() {
        c.shutdown();
    }
    if result.is_err()
        && let Some((name, status)) = roles.exited()
    {
        eprintln!("demo: {name} exited ({status}); its log: {}", roles.log(&name).display());
    }
    roles.shutdown();
    // the run's keys in a shared etcd go with it
    #[cfg(feature = "etcd")]
    if let Some(eps) = crate::etcd::endpoints()?
        && let Err(e) = crate::etcd::forget(&eps, &role_run_id).await
    {
        eprintln!("demo: the run's etcd keys were not deleted: {e}");
    }
    result
}

/// The cells' first instance ports.
fn first_ports(cells: &Mutex<Cells>) -> Vec<(String, u16)> {
    let list = cells.lock().map(|c| c.list()).unwrap_or_default();
    list.into_iter().filter_map(|(id, ports, _)| ports.first().map(|p| (id, *p))).collect()
}

/// The cell the report is about (the first one killed, else the planned one)
/// and when it was killed and restarted.
fn reported_kill(cells: &Mutex<Cells>, planned: &str) -> (String, Option<u64>, Option<u64>) {
    let events = cells.lock().map(|c| c.events().to_vec()).unwrap_or_default();
    let first = events.iter().find(|e| e.action == Action::Kill);
    let killed = first.map_or_else(|| planned.to_string(), |e| e.cell.clone());
    let kill_ms = first.map(|e| e.at_ms);
    let restart_ms = kill_ms.and_then(|k| {
        events.iter().find(|e| e.action == Action::Restart && e.cell == killed && e.at_ms >= k).map(|e| e.at_ms)
    });
    (killed, kill_ms, restart_ms)
}

/// Waits for the run's end: `duration`, or with the console and no
/// duration, its stop button or Ctrl-C.
async fn until_stopped(console: Option<&ui::Console>, t0: Instant, duration: Option<Duration>) {
    let stop = async {
        match console {
            Some(c) => c.stopped().await,
            None => std::future::pending().await,
        }
    };
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep_until((t0 + d).into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = stop => {}
        _ = deadline => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[allow(clippy::too_many_arguments)] // the run's parts, each made once by `run`
async fn drive(
    args: &RunArgs,
    cfg: &DemoConfig,
    planned: &str,
    cells: &Arc<Mutex<Cells>>,
    control: ControlView,
    top: &Topology,
    console: Option<&ui::Console>,
    idp: &crate::identity::DemoIdp,
    roles: &mut Roles,
    mut plan: Option<&mut crate::campaign::Plan<'_>>,
) -> Result<(), DemoError> {
    let client = gateway::http_client();
    let mut rx = control.store.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|t| t.is_some()))
        .await
        .map_err(|_| DemoError::Other("the controller's routing table was not read within 10 s".into()))?
        .map_err(|e| DemoError::Other(e.to_string()))?;
    let table = control.store.current().ok_or_else(|| DemoError::Other("no routing table".into()))?.table().clone();
    let gw_url = top.gateway.clone();
    // SLA gap attribution: which probe was down when, seen by a prober of the orchestrator's own
    let (probe_hub, _probing) = crate::control::start_prober(cfg, &table)?;
    let probe_log = crate::probe_log::ProbeLog::record(&probe_hub);
    // where each process's Prometheus metrics are (stderr, so --json's last stdout line stays the report)
    eprintln!("demo: metrics orchestrator {}", crate::telemetry::serve(args.metrics_addr).await?);
    for (i, url) in top.controllers.iter().enumerate() {
        eprintln!("demo: metrics controller controller-{i} {url}/metrics");
    }
    eprintln!("demo: metrics gateway {gw_url}/metrics");
    for (i, url) in top.probers.iter().enumerate() {
        eprintln!("demo: metrics prober prober-{i} {url}/metrics");
    }
    for (id, port) in first_ports(cells) {
        eprintln!("demo: metrics cell {id} http://127.0.0.1:{port}/metrics");
    }
    eprintln!("demo: gateway {gw_url}");
    let table = &table;

    // users of every region, with their home and failover cells
    let compiled = table.clone().compile().map_err(|e| DemoError::Other(format!("routing table: {e}")))?;
    let mut users = Vec::new();
    for r in &cfg.regions {
        let region = CellId::new(&r.name).map_err(|e| DemoError::Config(e.to_string()))?;
        for i in 0..cfg.load.users_per_region {
            let key = format!("{}-user-{i}", r.name);
            let res = cellrouter::resolve_in(&compiled, &region, &key).map_err(|e| DemoError::Other(e.to_string()))?;
            let home = res.home.to_string();
            let failover = table.cell(res.home).and_then(|c| c.failover.first()).map(|c| c.to_string());
            let token = idp.token(&key, &r.name)?;
            users.push(User { key, region: r.name.clone(), home, failover, token });
        }
    }
    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    if let Ok(mut c) = cells.lock() {
        c.start_clock(t0);
    }
    let stats = Stats::new(cfg.cell_ids());
    let load = Load { users: Arc::new(users), records: Arc::new(Mutex::new(Vec::new())), stats: stats.clone(), t0 };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = {
        let load = load.clone();
        let client = client.clone();
        let mix = (cfg.load.like_percent, cfg.load.comment_percent);
        let timeout = Duration::from_millis(cfg.load.request_timeout_ms);
        let rps = args.rps;
        tokio::spawn(async move { load.run(client, gw_url, rps, mix, timeout, stop_rx).await })
    };
    let (readings, poller) = crate::replication::spawn_poller(cells.clone(), client.clone());
    let mut applied = None;
    if let Some(c) = console {
        c.go_live(ui::Live {
            cells: cells.clone(),
            stats: stats.clone(),
            control: control.clone(),
            replication: readings,
            t0_wall,
        });
    }

    if args.ui {
        if args.duration.is_none() {
            eprintln!("demo: running until you press \"Stop run\" in the console or Ctrl-C");
        }
        until_stopped(console, t0, args.duration.map(Duration::from_secs)).await;
    } else if let Some(p) = plan.as_deref_mut() {
        let mut targets = crate::campaign::executor::Targets {
            cells,
            roles,
            controllers: &top.controllers,
            gateway: &top.gateway,
            probers: &top.probers,
            client: client.clone(),
        };
        let duration = Duration::from_secs(args.duration.unwrap_or(DEFAULT_DURATION_S));
        applied = Some(crate::campaign::executor::execute(p, &mut targets, t0, duration).await);
    } else {
        scheduled(args, planned, cells, &load, &control, t0).await?;
    }
    let _ = stop_tx.send(true);
    let _ = runner.await;
    poller.abort();
    if let Ok(mut c) = cells.lock() {
        c.resume_all()?;
    }

    // failback (if restarted and not yet), then replication drains and the cells converge
    let (killed, kill_ms, restart_ms) = reported_kill(cells, planned);
    let all_alive = cells.lock().map(|c| c.list().iter().all(|(_, _, alive)| *alive)).unwrap_or(false);
    if restart_ms.is_some() {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !report::failed_back(&control.audit_rows().await?, &killed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // the campaign judges every process's replica; the report, each cell's first
    let ports = match plan.is_some() {
        true => cells.lock().map(|c| c.processes().into_iter().map(|(name, port, _)| (name, port)).collect()).unwrap_or_default(),
        false => first_ports(cells),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = states(&ports).await;
    loop {
        let digests: std::collections::HashSet<u64> = last.values().flatten().map(|(_, d)| *d).collect();
        let all = last.values().all(Option::is_some);
        // a cell left down never converges: no point waiting for it
        if !all_alive
            || (all && digests.len() == 1 && pending_outbox(&client, &ports).await == 0)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = states(&ports).await;
    }
    let records = load.records.lock().map(|v| v.clone()).unwrap_or_default();
    let audit = control.audit_rows().await?;
    if let Some(p) = plan {
        // liveness: every cell back in the table within the failback window
        crate::campaign::wait_restored(&control, &cfg.cell_ids(), Duration::from_secs(45)).await;
        let audit = control.audit_rows().await?;
        let history = crate::campaign::evidence::history(&records, &load.users, t0_wall);
        let table = control.store.current().map(|t| t.table().clone());
        let views = crate::campaign::evidence::views(&last, table.as_ref());
        let replicas: Vec<String> = ports.iter().map(|(name, _)| name.clone()).collect();
        p.judge(applied.unwrap_or_default(), &history, &replicas, &views, &audit, cfg);
        p.judge_issued(&crate::cell::issued::read(&crate::cell::issued::dir(roles.run_dir()))?);
        p.note_load(records.len(), u64::from(args.rps) * args.duration.unwrap_or(DEFAULT_DURATION_S));
        return Ok(());
    }
    let gw_status = gateway::get_json(&client, &format!("{}/admin/status", top.gateway), Duration::from_secs(2)).await?;
    let retries = serde_json::from_value(gw_status["retries"].clone())
        .map_err(|e| DemoError::Other(format!("the gateway's retry report: {e}")))?;
    let rep = report::compute(report::Inputs {
        cells: cfg.cell_ids(),
        users: &load.users,
        records: &records,
        t0: t0_wall,
        killed,
        kill_ms: kill_ms.unwrap_or(0),
        restart_ms: restart_ms.unwrap_or(0),
        audit,
        states: last,
        timeline: stats.timeline(),
        probes: probe_log.since(t0_wall),
        replication: cfg.replication,
        retries,
    });
    if let Some(path) = &args.report {
        let events = cells.lock().map(|c| c.events().to_vec()).unwrap_or_default();
        html_report::write(path, &rep, &stats.series(0), &events)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&rep).map_err(|e| DemoError::Other(e.to_string()))?);
    } else {
        report::print_human(&rep);
    }
    Ok(())
}

/// The scheduled run: kill the planned cell at 30 % of the run, restart it a
/// quarter of the run later.
async fn scheduled(
    args: &RunArgs,
    planned: &str,
    cells: &Mutex<Cells>,
    load: &Load,
    control: &ControlView,
    t0: Instant,
) -> Result<(), DemoError> {
    let secs = args.duration.unwrap_or(DEFAULT_DURATION_S);
    let duration = Duration::from_secs(secs);
    let kill_at = duration.mul_f64(0.3);
    let restart_at = kill_at + Duration::from_secs_f64((secs as f64 * 0.25).max(1.5));
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(secs) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut killed, mut restarted) = (false, false);
    let act = |f: &dyn Fn(&mut Cells) -> Result<u64, DemoError>| -> Result<u64, DemoError> {
        let mut c = cells.lock().map_err(|_| DemoError::Other("cells lock poisoned".into()))?;
        f(&mut c)
    };
    while t0.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let el = t0.elapsed();
        if !killed && el >= kill_at {
            act(&|c| c.kill(planned))?;
            killed = true;
            bar.println(format!("killed cell {planned} (SIGKILL)"));
        }
        if killed && !restarted && el >= restart_at {
            act(&|c| c.restart(planned))?;
            restarted = true;
            bar.println(format!("restarted cell {planned}"));
        }
        bar.set_position(el.as_secs());
        bar.set_message(format!("{} requests, table v{}", load.done(), control.store.version().unwrap_or(0)));
    }
    bar.finish_and_clear();
    Ok(())
}
