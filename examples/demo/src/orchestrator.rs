//! The one-command run: start the cells as child processes, the control plane
//! and the gateway in this process, drive load, kill a cell, restart it, wait
//! for failback and replication, then report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cellctx::CellId;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cells::{Action, Cells, Launch};
use crate::config::DemoConfig;
use crate::control::{self, ControlPlane};
use crate::error::DemoError;
use crate::gateway::{self, Gateway};
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
    /// Where this process serves `GET /metrics` (gateway, controller, probers).
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
}

fn free_port() -> Result<u16, DemoError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn wait_ready(client: &gateway::HttpClient, port: u16, within: Duration) -> Result<(), DemoError> {
    let deadline = Instant::now() + within;
    let url = format!("http://127.0.0.1:{port}/admin/status");
    while Instant::now() < deadline {
        if gateway::get_json(client, &url, Duration::from_millis(300)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(DemoError::Other(format!("cell on port {port} not ready within {within:?}")))
}

/// Runs the demo; returns the report.
pub(crate) async fn run(args: RunArgs, kafka: String, topic: String, run_dir: PathBuf) -> Result<(), DemoError> {
    let cfg = DemoConfig::load(args.config.as_deref())?;
    let planned = args.kill.clone().unwrap_or_else(|| cfg.cells[0].id.clone());
    if cfg.cell(&planned).is_none() {
        return Err(DemoError::Config(format!("--kill {planned:?}: no such cell (cells: {})", cfg.cell_ids().join(", "))));
    }
    if args.duration.is_some_and(|d| d < 4) {
        return Err(DemoError::Config("--duration must be at least 4 s".into()));
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

    // ports and the initial table
    let mut ports = Vec::new();
    for c in &cfg.cells {
        ports.push((c.id.clone(), (0..c.instances).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?));
    }
    let port_of = |cell: &str, i: u16| -> u16 {
        ports.iter().find(|(id, _)| id == cell).and_then(|(_, p)| p.get(usize::from(i))).copied().unwrap_or(0)
    };
    let table = cfg.routing_table(&|cell, i| format!("http://127.0.0.1:{}", port_of(cell, i)))?;
    let status_urls = ports.iter().map(|(id, _)| format!("http://127.0.0.1:{}/admin/status", port_of(id, 0))).collect();
    let audit_url = match std::env::var("DEMO_AUDIT_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => format!("sqlite://{}?mode=rwc", run_dir.join("audit.db").display()),
    };
    let control = ControlPlane::start(table.clone(), &run_dir, &run_id, &audit_url, status_urls, std::num::NonZeroUsize::new(cfg.rules.max_drained))
        .await?;

    // who is who: the users' identity provider and the gateway -> cell hop key
    let idp = crate::identity::DemoIdp::generate()?;
    let (hop_key, hop_key_file) = crate::identity::new_hop_key(&run_dir)?;
    let who = crate::identity::RunIdentity { idp, hop_key };

    // the cells
    let launch = Launch {
        exe: std::env::current_exe()?,
        config: config_path,
        run_dir: run_dir.clone(),
        table_file: control.table_file(),
        kafka,
        topic,
        run_id,
        hop_key_file,
    };
    let cells = Arc::new(Mutex::new(Cells::spawn(launch, ports)?));
    let result = drive(&args, &cfg, &planned, &cells, &control, &table, console.as_ref(), &who).await;
    if let Ok(mut c) = cells.lock() {
        c.shutdown();
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
    control: &Arc<ControlPlane>,
    table: &cellrouter::RoutingTable,
    console: Option<&ui::Console>,
    who: &crate::identity::RunIdentity,
) -> Result<(), DemoError> {
    let client = gateway::http_client();
    let (run_dir, list) = match cells.lock() {
        Ok(c) => (c.run_dir().to_path_buf(), c.list()),
        Err(_) => return Err(DemoError::Other("cells lock poisoned".into())),
    };
    for (id, ports, _) in &list {
        for port in ports {
            wait_ready(&client, *port, Duration::from_secs(30)).await.map_err(|e| {
                DemoError::Other(format!("cell {id}: {e} (log: {})", run_dir.join(id).join("cell.log").display()))
            })?;
        }
    }
    // probers first; the engine starts once every prober sees every cell healthy
    let (hubs, _probers) = control::start_probers(cfg, table)?;
    // SLA gap attribution: which probe was down when
    let probe_log = hubs.first().map(crate::probe_log::ProbeLog::record).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !hubs.iter().all(|h| {
        let s = h.snapshot();
        s.cells().count() == cfg.cells.len() && s.all_healthy()
    }) {
        if Instant::now() > deadline {
            return Err(DemoError::Other("probers never saw every cell healthy".into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (engine, controller) = control::start_controller(cfg, &hubs, control).await?;

    // the gateway
    let gw = Arc::new(Gateway::try_new(
        control.gateway_store.clone(),
        cfg.breakers()?,
        cfg.outlier()?,
        engine.reporter(),
        Duration::from_millis(cfg.load.request_timeout_ms),
        cellctx::auth::EdgeAuth::new(who.idp.authenticator()?),
        who.hop_key.clone(),
    )?
    .with_retry(&cfg.retry)?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gw_url = format!("http://{}", listener.local_addr()?);
    let gateway = tower::make::Shared::new(gw.clone().service()?);
    // where each process's Prometheus metrics are (stderr, so --json's last stdout line stays the report)
    eprintln!("demo: metrics orchestrator {}", crate::telemetry::serve(args.metrics_addr).await?);
    eprintln!("demo: gateway {gw_url}");
    for (id, port) in first_ports(cells) {
        eprintln!("demo: metrics cell {id} http://127.0.0.1:{port}/metrics");
    }
    tokio::spawn(async move { axum::serve(listener, gateway).await });

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
            let token = who.idp.token(&key, &r.name)?;
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
    } else {
        scheduled(args, planned, cells, &load, control, t0).await?;
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
    let ports = first_ports(cells);
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
        retries: gw.retry_report(),
    });
    drop(controller);
    drop(engine);
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
    control: &ControlPlane,
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
        bar.set_message(format!("{} requests, table v{}", load.done(), control.gateway_store.version().unwrap_or(0)));
    }
    bar.finish_and_clear();
    Ok(())
}
