//! The multi-cell demo: three cells of a comments-and-likes service, an edge
//! gateway, a failover controller and its probers, each a process of its
//! own; one cell is killed under load, traffic fails over, the cell comes
//! back, traffic fails back, and a report shows the switch and that no
//! acknowledged write was lost.
//!
//! ```text
//! cargo run --release -p demo                       # 30 s run, human report
//! cargo run -p demo -- --duration 8 --json          # short run, JSON last line
//! cargo run --release -p demo -- --ui               # live console; kill/restart cells by hand
//! cargo run -p demo -- --report run.html            # also a self-contained HTML report
//! ```
//!
//! The run command (no subcommand) is an orchestrator: it starts every role
//! below as a child process of this binary on loopback, drives load at the
//! gateway process over HTTP and reads the table and the audit rows from the
//! controller. The same subcommands deploy the roles across hosts (the
//! README's "Deploying across hosts"; `demo <role> --help` for every flag):
//!
//! ```text
//! demo keys --dir keys                              # hop.key, idp.key, jwks.json for a deployment
//! demo controller --endpoints ID=URL,... [--router-status URL] --listen ADDR
//!                                                   # table authority, decision engine, audited switch
//! demo cell --id ID --ports P,... --dir DIR --hop-key-file keys/hop.key [--table-url URL]
//! demo prober --name NAME --controllers URL,... [--table-url URL]
//! demo gateway --controllers URL,... --hop-key-file keys/hop.key --jwks-file keys/jwks.json [--table-url URL]
//! demo token --idp-key keys/idp.key --user U --region R   # a user's bearer token
//! demo kafka-mock                                   # an in-memory Kafka for one machine
//! demo chaos --seed N [--schedules K] [--duration S] [--rps R] [--kinds a,b]
//!                                                   # a seeded fault campaign, judged by the checker
//! ```
//!
//! Roles find each other by flags: the controller is given each cell's
//! endpoints and builds the first routing table; the others follow it in
//! etcd (`ETCD_ENDPOINTS`) or at a controller's `GET /table` (long poll);
//! the gateway (`POST /outcomes`) and the probers (`POST /probes/{name}`)
//! report to every controller over HTTP; with etcd, several controllers
//! elect one leader. Every role process serves `GET /metrics`.
//!
//! Environment: `KAFKA_BOOTSTRAP` (a real Kafka instead of the in-process
//! mock cluster), `DEMO_DATABASE_URL` (MySQL/MariaDB or Postgres instead of a
//! SQLite file per cell), `DEMO_REDIS_URL` (read cache), `ETCD_ENDPOINTS` (the
//! routing table and switch locks in etcd; the `etcd` feature),
//! `DEMO_AUDIT_URL` (audit table), `OTEL_EXPORTER_OTLP_ENDPOINT` (push metrics
//! over OTLP/HTTP as well as serving them at `/metrics`),
//! `CELLSDK_CLOCK_OFFSET_MS` (run this process with its wall clock that far
//! ahead, or behind when negative: the skew the SDK's ids, HLC and audit
//! instants then see, through `cellclock`), `DEMO_CLOCK_ADMIN=1` (every role
//! also serves `POST /admin/clock {"offset_ms": N}` to step that clock while
//! it runs; the campaign sets it on its processes).

mod budget;
mod campaign;
mod cell;
mod cells;
mod children;
mod clock_admin;
mod crash_admin;
mod config;
mod control;
mod control_view;
mod error;
mod etcd;
mod gateway;
mod html_report;
mod identity;
mod load;
mod mock_kafka;
mod orchestrator;
mod probe_log;
mod replication;
mod report;
mod roles;
mod telemetry;
mod stats;
mod ui;

use clap::{Parser, Subcommand};

/// Kill a cell under load and measure the switch.
#[derive(Debug, Parser)]
#[command(name = "demo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    run: orchestrator::RunArgs,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one cell process.
    Cell(cell::CellArgs),
    /// Run the edge gateway.
    Gateway(roles::gateway::GatewayArgs),
    /// Run a failover controller.
    Controller(roles::controller::ControllerArgs),
    /// Run one prober.
    Prober(roles::prober::ProberArgs),
    /// Write a deployment's keys (hop key, identity provider).
    Keys(identity::KeysArgs),
    /// Print a user's token.
    Token(identity::TokenArgs),
    /// Run an in-memory Kafka (one machine, no broker).
    KafkaMock(mock_kafka::KafkaMockArgs),
    /// A fault campaign: seeded schedules of kills, pauses, partitions,
    /// clock steps and broker outages against the run's processes, each
    /// judged by the checker.
    Chaos(campaign::ChaosArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cellclock::init_from_env() {
        eprintln!("demo: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let verbose = cli.command.is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if verbose { "info" } else { "error" }));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result = match cli.command {
        None => serve_role("orchestrator", None, || orchestrate(cli.run, None).map(|_| ())),
        Some(Cmd::Chaos(args)) => serve_role("orchestrator", None, || {
            campaign::run(&args, &|run, schedule, cells| orchestrate(run, Some((schedule, cells))))
        }),
        Some(Cmd::Cell(args)) => {
            let id = args.id.clone();
            serve_role("cell", Some(&id), || block_on(cell::run(args)))
        }
        Some(Cmd::Gateway(args)) => serve_role("gateway", None, || block_on(roles::gateway::run(args))),
        Some(Cmd::Controller(args)) => serve_role("controller", None, || block_on(roles::controller::run(args))),
        Some(Cmd::Prober(args)) => serve_role("prober", None, || block_on(roles::prober::run(args))),
        Some(Cmd::Keys(args)) => identity::keys(&args),
        Some(Cmd::Token(args)) => identity::token(&args),
        Some(Cmd::KafkaMock(args)) => mock_kafka::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs `body` with the process's telemetry (`role`, and the cell of a cell
/// process) installed first and flushed after.
fn serve_role(role: &str, cell: Option<&str>, body: impl FnOnce() -> Result<(), error::DemoError>) -> Result<(), error::DemoError> {
    let t = telemetry::init(role, cell)?;
    let r = body();
    t.shutdown();
    r
}

fn block_on(f: impl std::future::Future<Output = Result<(), error::DemoError>>) -> Result<(), error::DemoError> {
    runtime()?.block_on(f)
}

fn runtime() -> Result<tokio::runtime::Runtime, error::DemoError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Kafka (a mock cluster in this process unless `KAFKA_BOOTSTRAP`), then the
/// run; with a campaign's schedule, its verdict.
fn orchestrate(
    args: orchestrator::RunArgs,
    schedule: Option<(chaos::Schedule, Vec<String>)>,
) -> Result<Option<campaign::Outcome>, error::DemoError> {
    let topic = format!("demo-crdt-{}", std::process::id());
    // the mock cluster must outlive the run (it is not Send: kept on this thread)
    let (bootstrap, _mock) = match std::env::var("KAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => (b, None),
        _ => {
            let mock = rdkafka::mocking::MockCluster::new(1)?;
            mock.create_topic(&topic, 3, 1)?;
            (mock.bootstrap_servers(), Some(mock))
        }
    };
    let run_dir = tempfile::Builder::new().prefix("cell-demo-").tempdir()?;
    let keep = std::env::var_os("DEMO_KEEP_DIR").is_some();
    let mut plan = schedule.map(|(s, cells)| campaign::Plan::new(s, cells, _mock.as_ref()));
    let result = runtime()?.block_on(orchestrator::run(args, bootstrap, topic, run_dir.path().to_path_buf(), plan.as_mut()));
    if keep {
        let kept = run_dir.keep();
        eprintln!("demo: run directory kept at {}", kept.display());
    }
    result.map(|()| plan.and_then(|p| p.outcome))
}
