//! `demo controller`: the failover controller as a process of its own. It
//! builds the first routing table from the cells' endpoints, serves the
//! table in force, takes the gateways' outcomes and the probers' views over
//! HTTP, and once every prober has seen every cell healthy, runs the decision
//! engine and `failover::Controller` (see [`crate::control`]).
//!
//! HTTP API (`--listen`):
//! - `GET /table[?after=V]`: the routing table in force (long poll past `V`);
//! - `POST /outcomes`: a gateway's per-cell counts since its last report;
//! - `POST /probes/{prober}`: a prober's view of every cell;
//! - `GET /audit`: every audit row (`failover::audit::AuditRecord`, JSON);
//! - `GET /admin/status`: table version, whether the engine runs, the term
//!   it leads in (`null` while it does not), the probers heard;
//! - `GET /metrics`: Prometheus text;
//! - with `DEMO_CLOCK_ADMIN=1` (the fault campaign): `POST /admin/clock`
//!   and `POST`/`DELETE /admin/crash` (see [`crate::crash_admin`]).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use cellctx::CellId;
use failover::{ControllerEvent, ControllerHandle, DecisionEngine, EngineHandle, OutcomeReporter};
use tokio::sync::Mutex;

use super::Common;
use super::wire::{CellView, Outcomes};
use crate::config::DemoConfig;
use crate::control::{self, ControlPlane};
use crate::error::DemoError;

/// Arguments of `demo controller`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ControllerArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    /// The controller's API and `/metrics`.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub(crate) listen: SocketAddr,
    /// This controller's name (audit rows, election); unique per controller.
    #[arg(long, default_value = "controller-0")]
    pub(crate) name: String,
    /// Its idgen worker id (audit transaction ids); unique per controller.
    #[arg(long, default_value_t = 1000)]
    pub(crate) worker: u32,
    /// One cell's instance URLs, `ID=URL[,URL...]`; once per cell of the config.
    #[arg(long = "endpoints", value_name = "ID=URL[,URL...]", required = true)]
    pub(crate) endpoints: Vec<String>,
    /// Routers besides the cells that a switch waits for: each gateway's
    /// `/admin/status` URL (comma separated).
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    pub(crate) router_status: Vec<String>,
    /// The audit table's database [default: `DEMO_AUDIT_URL`, else a SQLite
    /// file `audit.db` in --dir].
    #[arg(long, value_name = "URL")]
    pub(crate) audit_url: Option<String>,
    /// Working directory (the default audit database).
    #[arg(long, default_value = ".")]
    pub(crate) dir: PathBuf,
    /// Also write every table in force to this file (for processes on this
    /// host that read `--table-file`).
    #[arg(long, value_name = "FILE")]
    pub(crate) table_file: Option<PathBuf>,
}

/// `ID=URL[,URL...]` flags -> endpoints per cell; every cell of `cfg` must
/// have some, and no other cell may be named.
pub(crate) fn parse_endpoints(cfg: &DemoConfig, flags: &[String]) -> Result<HashMap<String, Vec<String>>, DemoError> {
    let mut out = HashMap::new();
    for f in flags {
        let (id, urls) = f.split_once('=').ok_or_else(|| DemoError::Config(format!("--endpoints {f:?}: expected ID=URL[,URL...]")))?;
        if cfg.cell(id).is_none() {
            return Err(DemoError::Config(format!("--endpoints {f:?}: no cell {id:?} in the config")));
        }
        let urls: Vec<String> = urls.split(',').map(|u| u.trim().trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() || urls.iter().any(|u| !u.starts_with("http://")) {
            return Err(DemoError::Config(format!("--endpoints {f:?}: give one or more http:// URLs")));
        }
        if out.insert(id.to_string(), urls).is_some() {
            return Err(DemoError::Config(format!("--endpoints: cell {id} given twice")));
        }
    }
    if let Some(missing) = cfg.cells.iter().find(|c| !out.contains_key(&c.id)) {
        return Err(DemoError::Config(format!("--endpoints: none for cell {}", missing.id)));
    }
    Ok(out)
}

/// One prober's view: each cell and whether it is healthy.
type View = Vec<(CellId, bool)>;

/// Before the engine runs: the engine, and the probers' latest views.
struct Waiting {
    engine: Option<DecisionEngine>,
    views: BTreeMap<String, View>,
}

/// The engine and the controller, once running.
struct Running {
    engine: EngineHandle,
    _controller: ControllerHandle,
}

/// What the handlers share.
struct Ctl {
    cfg: DemoConfig,
    control: Arc<ControlPlane>,
    reporter: OutcomeReporter,
    cells: Vec<CellId>,
    /// The engine before it runs; the probers' views heard so far.
    waiting: Mutex<Waiting>,
    running: tokio::sync::OnceCell<Running>,
    /// The term this controller leads in, 0 while it does not.
    leading: Arc<AtomicU64>,
}

/// Runs the controller until the process ends.
pub(crate) async fn run(args: ControllerArgs) -> Result<(), DemoError> {
    let cfg = args.common.start()?;
    let endpoints = parse_endpoints(&cfg, &args.endpoints)?;
    let table = cfg.routing_table_with(&|c| endpoints.get(&c.id).cloned().unwrap_or_default())?;
    let audit_url = match args.audit_url.clone().or_else(|| std::env::var("DEMO_AUDIT_URL").ok()) {
        Some(u) if !u.is_empty() => u,
        _ => {
            std::fs::create_dir_all(&args.dir)?;
            format!("sqlite://{}?mode=rwc", args.dir.join("audit.db").display())
        }
    };
    // the routers a switch waits for: every cell (its first instance) and every gateway
    let mut status_urls: Vec<String> = table.cells.iter().filter_map(|c| c.endpoints.first()).map(|e| format!("{e}/admin/status")).collect();
    status_urls.extend(super::base_urls(&args.router_status));
    let max_drained = std::num::NonZeroUsize::new(cfg.rules.max_drained);
    let arm = crate::crash_admin::Arm::default();
    let crash = (std::env::var(crate::clock_admin::ENV).as_deref() == Ok("1")).then(|| arm.clone());
    let control = ControlPlane::start(
        table.clone(),
        args.table_file.clone(),
        &args.common.run_id,
        &audit_url,
        status_urls,
        max_drained,
        (&args.name, args.worker),
        crash,
    )
    .await?;
    let engine = control::engine(&cfg)?;
    let ctl = Arc::new(Ctl {
        reporter: engine.reporter(),
        cells: table.cells.iter().map(|c| c.id.clone()).collect(),
        cfg,
        control,
        waiting: Mutex::new(Waiting { engine: Some(engine), views: BTreeMap::new() }),
        running: tokio::sync::OnceCell::new(),
        leading: Arc::new(AtomicU64::new(0)),
    });
    let app = axum::Router::new()
        .route("/table", get(super::table::serve_table).with_state(ctl.control.store.clone()))
        .route("/outcomes", post(outcomes))
        .route("/probes/{prober}", post(probes))
        .route("/audit", get(audit))
        .route("/admin/status", get(status))
        .with_state(ctl)
        .merge(crate::telemetry::router())
        .merge(crate::clock_admin::router())
        .merge(crate::crash_admin::router(arm));
    super::serve(super::bind("controller", args.listen).await?, app).await
}

async fn outcomes(State(ctl): State<Arc<Ctl>>, Json(o): Json<Outcomes>) -> StatusCode {
    for (cell, c) in o {
        match CellId::new(&cell) {
            Ok(id) if ctl.cells.contains(&id) => ctl.reporter.report_counts(&id, c.ok, c.err),
            _ => return StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
    StatusCode::NO_CONTENT
}

async fn probes(State(ctl): State<Arc<Ctl>>, Path(prober): Path<String>, Json(views): Json<Vec<CellView>>) -> Response {
    let mut view = Vec::new();
    for v in views {
        match CellId::new(&v.cell) {
            Ok(id) if ctl.cells.contains(&id) => view.push((id, v.healthy)),
            _ => return (StatusCode::UNPROCESSABLE_ENTITY, format!("no cell {:?}", v.cell)).into_response(),
        }
    }
    if let Some(r) = ctl.running.get() {
        ctl.waiting.lock().await.views.insert(prober.clone(), view.clone());
        return match r.engine.observe(&prober, view).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        };
    }
    match start_when_ready(&ctl, prober, view).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the controller did not start");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

/// Keeps `prober`'s view; starts the engine and the controller once every
/// prober of the config has seen every cell healthy (a cell still starting
/// is not a cell to drain).
async fn start_when_ready(ctl: &Ctl, prober: String, view: View) -> Result<(), DemoError> {
    let mut w = ctl.waiting.lock().await;
    w.views.insert(prober, view);
    let healthy = |v: &View| ctl.cells.iter().all(|c| v.iter().any(|(id, h)| id == c && *h));
    let ready = w.views.values().filter(|v| healthy(v)).count() >= ctl.cfg.rules.probers;
    if !ready || ctl.running.get().is_some() {
        return Ok(());
    }
    let Some(engine) = w.engine.take() else { return Ok(()) };
    let views: Vec<_> = w.views.iter().map(|(p, v)| (p.clone(), v.clone())).collect();
    let (engine, controller) = control::start_controller(&ctl.cfg, engine, &views, &ctl.control).await?;
    tracing::info!(probers = views.len(), "every prober sees every cell healthy: the controller runs");
    tokio::spawn(follow_leadership(controller.events(), ctl.leading.clone()));
    let _ = ctl.running.set(Running { engine, _controller: controller });
    Ok(())
}

/// Keeps `leading` at the term this controller leads in (0 when it does not).
async fn follow_leadership(mut events: tokio::sync::broadcast::Receiver<ControllerEvent>, leading: Arc<AtomicU64>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(ControllerEvent::Elected { term }) => leading.store(term.get(), Ordering::Relaxed),
            Ok(ControllerEvent::Deposed { .. }) => leading.store(0, Ordering::Relaxed),
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}

async fn audit(State(ctl): State<Arc<Ctl>>) -> Response {
    match ctl.control.audit_rows().await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn status(State(ctl): State<Arc<Ctl>>) -> Response {
    let probers: Vec<String> = ctl.waiting.lock().await.views.keys().cloned().collect();
    Json(serde_json::json!({
        "role": "controller",
        "table_version": ctl.control.store.version(),
        "engine": ctl.running.get().is_some(),
        "leader_term": Some(ctl.leading.load(Ordering::Relaxed)).filter(|t| *t > 0),
        "probers": probers,
    }))
    .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked_against_the_config() {
        let cfg = DemoConfig::load(None).unwrap();
        let ok = ["beijing=http://10.0.0.1:7001,http://10.0.0.1:7002", "shanghai=http://10.0.0.2:7001", "shenzhen=http://10.0.0.3:7001/"];
        let flags: Vec<String> = ok.iter().map(ToString::to_string).collect();
        let eps = parse_endpoints(&cfg, &flags).unwrap();
        assert_eq!(eps["beijing"], ["http://10.0.0.1:7001", "http://10.0.0.1:7002"]);
        assert_eq!(eps["shenzhen"], ["http://10.0.0.3:7001"]);
        let table = cfg.routing_table_with(&|c| eps[&c.id].clone()).unwrap();
        assert_eq!(table.cells[0].endpoints.len(), 2);
        assert_eq!(table.cells[1].endpoints, ["http://10.0.0.2:7001"]);

        let err = |flags: &[&str]| {
            let flags: Vec<String> = flags.iter().map(ToString::to_string).collect();
            parse_endpoints(&cfg, &flags).unwrap_err().to_string()
        };
        assert!(err(&ok[..2]).contains("none for cell shenzhen"));
        assert!(err(&[ok[0], ok[1], ok[2], "mars=http://x:1"]).contains("no cell \"mars\""));
        assert!(err(&[ok[0], ok[0]]).contains("given twice"));
        assert!(err(&["beijing"]).contains("ID=URL"));
        assert!(err(&["beijing=ftp://x"]).contains("http://"));
    }
}
