//! The multi-cell demo: three cells of a comments-and-likes service, an edge
//! gateway and a failover controller on loopback; one cell is killed under
//! load, traffic fails over, the cell comes back, traffic fails back, and a
//! report shows the switch and that no acknowledged write was lost.
//!
//! ```text
//! cargo run --release -p demo                       # 30 s run, human report
//! cargo run -p demo -- --duration 8 --json          # short run, JSON last line
//! cargo run --release -p demo -- --ui               # live console; kill/restart cells by hand
//! cargo run -p demo -- --report run.html            # also a self-contained HTML report
//! demo cell --id beijing ...                        # one cell (spawned by the demo)
//! ```
//!
//! Environment: `KAFKA_BOOTSTRAP` (a real Kafka instead of the in-process
//! mock cluster), `DEMO_DATABASE_URL` (MySQL/MariaDB or Postgres instead of a
//! SQLite file per cell), `DEMO_REDIS_URL` (read cache), `ETCD_ENDPOINTS` (the
//! routing table and switch locks in etcd), `DEMO_AUDIT_URL` (audit table),
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (push metrics over OTLP/HTTP as well as
//! serving them at `/metrics`), `CELLSDK_CLOCK_OFFSET_MS` (run this process
//! with its wall clock that far ahead, or behind when negative: the skew the
//! SDK's ids, HLC and audit instants then see, through `cellclock`).

mod budget;
mod cell;
mod cells;
mod config;
mod control;
mod error;
mod etcd;
mod gateway;
mod html_report;
mod identity;
mod load;
mod orchestrator;
mod probe_log;
mod replication;
mod report;
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
    /// Run one cell (the demo spawns these itself).
    Cell(cell::CellArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cellclock::init_from_env() {
        eprintln!("demo: {e}");
        return std::process::ExitCode::FAILURE;
    }
    let verbose = matches!(cli.command, Some(Cmd::Cell(_)));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(if verbose { "info" } else { "error" }));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let telemetry = match &cli.command {
        Some(Cmd::Cell(args)) => telemetry::init("cell", Some(&args.id)),
        None => telemetry::init("orchestrator", None),
    };
    let result = telemetry.and_then(|t| {
        let r = match cli.command {
            Some(Cmd::Cell(args)) => runtime().and_then(|rt| rt.block_on(cell::run(args))),
            None => orchestrate(cli.run),
        };
        t.shutdown();
        r
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, error::DemoError> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Kafka (a mock cluster in this process unless `KAFKA_BOOTSTRAP`), then the run.
fn orchestrate(args: orchestrator::RunArgs) -> Result<(), error::DemoError> {
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
    let result = runtime()?.block_on(orchestrator::run(args, bootstrap, topic, run_dir.path().to_path_buf()));
    if keep {
        let kept = run_dir.keep();
        eprintln!("demo: run directory kept at {}", kept.display());
    }
    result
}
