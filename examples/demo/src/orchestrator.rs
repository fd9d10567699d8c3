//! The one-command run: start the cells as child processes, the control plane
//! and the gateway in this process, drive load, kill a cell, restart it, wait
//! for failback and replication, then report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use cellctx::CellId;
use indicatif::{ProgressBar, ProgressStyle};

use crate::cell::pb;
use crate::config::DemoConfig;
use crate::control::{self, ControlPlane};
use crate::error::DemoError;
use crate::gateway::{self, Gateway};
use crate::load::{Load, User};
use crate::report;

/// Arguments of the default command.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
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
}

/// A cell's child process.
struct CellProc {
    id: String,
    ports: Vec<u16>,
    child: Option<Child>,
}

fn free_port() -> Result<u16, DemoError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Launch<'a> {
    exe: PathBuf,
    config: &'a Path,
    run_dir: &'a Path,
    table_file: Option<PathBuf>,
    kafka: &'a str,
    topic: &'a str,
    run_id: &'a str,
}

impl Launch<'_> {
    fn spawn(&self, id: &str, ports: &[u16]) -> Result<Child, DemoError> {
        let dir = self.run_dir.join(id);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("cell.log"))?;
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut cmd = Command::new(&self.exe);
        cmd.arg("cell")
            .args(["--id", id, "--dir"])
            .arg(&dir)
            .arg("--config")
            .arg(self.config)
            .args(["--ports", &ports.join(","), "--kafka", self.kafka, "--topic", self.topic, "--run-id", self.run_id]);
        if let Some(t) = &self.table_file {
            cmd.arg("--table-file").arg(t);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        Ok(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?)
    }
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

/// Each cell's state over gRPC (`demo.v1.Posts/State`).
async fn states(procs: &[CellProc]) -> BTreeMap<String, Option<(String, u64)>> {
    let mut out = BTreeMap::new();
    for p in procs {
        let url = format!("http://127.0.0.1:{}", p.ports[0]);
        let got = async {
            let mut c = pb::posts_client::PostsClient::connect(url).await.ok()?;
            let r = c.state(pb::StateRequest {}).await.ok()?.into_inner();
            Some((r.json, r.digest))
        };
        out.insert(p.id.clone(), tokio::time::timeout(Duration::from_secs(2), got).await.ok().flatten());
    }
    out
}

async fn pending_outbox(client: &gateway::HttpClient, procs: &[CellProc]) -> i64 {
    let mut total = 0;
    for p in procs {
        let url = format!("http://127.0.0.1:{}/admin/status", p.ports[0]);
        total += match gateway::get_json(client, &url, Duration::from_millis(500)).await {
            Ok(j) => j["pending_outbox"].as_i64().unwrap_or(1).max(0),
            Err(_) => 1,
        };
    }
    total
}

/// Runs the demo; returns the report.
pub(crate) async fn run(args: RunArgs, kafka: String, topic: String, run_dir: PathBuf) -> Result<(), DemoError> {
    let cfg = DemoConfig::load(args.config.as_deref())?;
    let killed = args.kill.clone().unwrap_or_else(|| cfg.cells[0].id.clone());
    if cfg.cell(&killed).is_none() {
        return Err(DemoError::Config(format!("--kill {killed:?}: no such cell (cells: {})", cfg.cell_ids().join(", "))));
    }
    if args.duration < 4 {
        return Err(DemoError::Config("--duration must be at least 4 s".into()));
    }
    let run_id = format!("r{}", std::process::id());
    let config_path = run_dir.join("demo.yaml");
    match &args.config {
        Some(p) => std::fs::copy(p, &config_path).map(|_| ())?,
        None => std::fs::write(&config_path, crate::config::DEFAULT_YAML)?,
    }

    // ports and the initial table
    let mut procs = Vec::new();
    for c in &cfg.cells {
        let ports = (0..c.instances).map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
        procs.push(CellProc { id: c.id.clone(), ports, child: None });
    }
    let table = cfg.routing_table(&|cell, i| {
        let p = procs.iter().find(|p| p.id == cell).and_then(|p| p.ports.get(usize::from(i))).copied().unwrap_or(0);
        format!("http://127.0.0.1:{p}")
    })?;
    let status_urls = procs.iter().map(|p| format!("http://127.0.0.1:{}/admin/status", p.ports[0])).collect();
    let audit_url = match std::env::var("DEMO_AUDIT_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => format!("sqlite://{}?mode=rwc", run_dir.join("audit.db").display()),
    };
    let control = ControlPlane::start(table.clone(), &run_dir, &run_id, &audit_url, status_urls).await?;

    // the cells
    let launch = Launch {
        exe: std::env::current_exe()?,
        config: &config_path,
        run_dir: &run_dir,
        table_file: control.table_file(),
        kafka: &kafka,
        topic: &topic,
        run_id: &run_id,
    };
    for p in &mut procs {
        p.child = Some(launch.spawn(&p.id, &p.ports)?);
    }
    let client = gateway::http_client();
    let result = drive(&args, &cfg, &killed, &launch, &mut procs, &control, &client, &table, &run_dir).await;
    for p in &mut procs {
        if let Some(mut c) = p.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    args: &RunArgs,
    cfg: &DemoConfig,
    killed: &str,
    launch: &Launch<'_>,
    procs: &mut [CellProc],
    control: &Arc<ControlPlane>,
    client: &gateway::HttpClient,
    table: &cellrouter::RoutingTable,
    run_dir: &Path,
) -> Result<(), DemoError> {
    for p in procs.iter() {
        for port in &p.ports {
            wait_ready(client, *port, Duration::from_secs(30)).await.map_err(|e| {
                DemoError::Other(format!("cell {}: {e} (log: {})", p.id, run_dir.join(&p.id).join("cell.log").display()))
            })?;
        }
    }
    // probers first; the engine starts once every prober sees every cell healthy
    let (hubs, _probers) = control::start_probers(cfg, table)?;
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
    )?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gw_url = format!("http://{}", listener.local_addr()?);
    let gateway = tower::make::Shared::new(gw.service()?);
    // where each process's Prometheus metrics are (stderr, so --json's last stdout line stays the report)
    eprintln!("demo: metrics orchestrator {}", crate::telemetry::serve(args.metrics_addr).await?);
    for p in procs.iter() {
        eprintln!("demo: metrics cell {} http://127.0.0.1:{}/metrics", p.id, p.ports[0]);
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
            users.push(User { key, region: r.name.clone(), home, failover });
        }
    }
    let t0 = Instant::now();
    let t0_wall = SystemTime::now();
    let load = Load { users: Arc::new(users), records: Arc::new(Mutex::new(Vec::new())), t0 };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let runner = {
        let load = load.clone();
        let client = client.clone();
        let mix = (cfg.load.like_percent, cfg.load.comment_percent);
        let timeout = Duration::from_millis(cfg.load.request_timeout_ms);
        let rps = args.rps;
        tokio::spawn(async move { load.run(client, gw_url, rps, mix, timeout, stop_rx).await })
    };

    let duration = Duration::from_secs(args.duration);
    let kill_at = duration.mul_f64(0.3);
    let restart_at = kill_at + Duration::from_secs_f64((args.duration as f64 * 0.25).max(1.5));
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new(args.duration) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len}s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut kill_ms, mut restart_ms) = (None, None);
    let proc_idx = procs.iter().position(|p| p.id == killed).unwrap_or(0);
    while t0.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let el = t0.elapsed();
        if kill_ms.is_none() && el >= kill_at {
            if let Some(c) = procs[proc_idx].child.as_mut() {
                c.kill()?; // SIGKILL
                kill_ms = Some(t0.elapsed().as_millis() as u64);
                let _ = c.wait();
            }
            procs[proc_idx].child = None;
            bar.println(format!("killed cell {killed} (SIGKILL)"));
        }
        if kill_ms.is_some() && restart_ms.is_none() && el >= restart_at {
            procs[proc_idx].child = Some(launch.spawn(killed, &procs[proc_idx].ports)?);
            restart_ms = Some(t0.elapsed().as_millis() as u64);
            bar.println(format!("restarted cell {killed}"));
        }
        bar.set_position(el.as_secs());
        bar.set_message(format!("{} requests, table v{}", load.done(), control.gateway_store.version().unwrap_or(0)));
    }
    let _ = stop_tx.send(true);
    let _ = runner.await;
    bar.finish_and_clear();

    // failback (if not yet), then replication drains and the cells converge
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !report::failed_back(&control.audit_rows().await?, killed) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = states(procs).await;
    loop {
        let digests: std::collections::HashSet<u64> = last.values().flatten().map(|(_, d)| *d).collect();
        let all = last.values().all(Option::is_some);
        if (all && digests.len() == 1 && pending_outbox(client, procs).await == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        last = states(procs).await;
    }
    let records = load.records.lock().map(|v| v.clone()).unwrap_or_default();
    let rep = report::compute(report::Inputs {
        cells: cfg.cell_ids(),
        users: &load.users,
        records: &records,
        t0: t0_wall,
        killed: killed.to_string(),
        kill_ms: kill_ms.unwrap_or(0),
        restart_ms: restart_ms.unwrap_or(0),
        audit: control.audit_rows().await?,
        states: last,
    });
    drop(controller);
    drop(engine);
    if args.json {
        println!("{}", serde_json::to_string(&rep).map_err(|e| DemoError::Other(e.to_string()))?);
    } else {
        report::print_human(&rep);
    }
    Ok(())
}
