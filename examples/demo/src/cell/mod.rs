//! One cell process (`demo cell --id beijing ...`): the comments-and-likes
//! service on its instance ports, replication through the outbox and Kafka,
//! its routing table from the control plane (etcd, a controller's `GET
//! /table` or its table file), `/healthz` from its probes.

#[cfg(feature = "binlog")]
mod binlog;
mod cache;
mod grpc;
pub(crate) mod http;
pub(crate) mod issued;
mod locked;
mod posts;
mod storage;
mod worker_id;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cellctx::CellId;
use cellrouter::TableStore;
use crdt::Replica;
use crdt::sql_state::SqlStateStore;
use crdt::kafka::{Relay, Replicator};
use health::{FnProbe, HealthHub, ProbeKind, ProbeOutcome, ProbeSpec, Scheduler, ScorePolicy};

pub(crate) use grpc::pb;

use crate::config::DemoConfig;
use crate::error::DemoError;

/// Arguments of `demo cell`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CellArgs {
    /// The cell id (one of the config's cells).
    #[arg(long)]
    pub(crate) id: String,
    /// The config file (the orchestrator passes the one it runs).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Working directory (SQLite file, log).
    #[arg(long)]
    pub(crate) dir: PathBuf,
    /// One port per instance.
    #[arg(long, value_delimiter = ',')]
    pub(crate) ports: Vec<u16>,
    /// Where the routing table comes from (ignored with `ETCD_ENDPOINTS`).
    #[command(flatten)]
    pub(crate) table: crate::roles::table::TableArgs,
    /// The address the instance ports listen on (`0.0.0.0` to serve other hosts).
    #[arg(long, default_value = "127.0.0.1")]
    pub(crate) listen_host: std::net::IpAddr,
    /// This process's slot, unique among every process of the deployment: its
    /// replica's site and state key (its idgen worker id is leased: from
    /// etcd, else from the run's store) [default: the cell's position in the config].
    #[arg(long)]
    pub(crate) worker: Option<u32>,
    /// Exit when the parent process does (the orchestrator sets it).
    #[arg(long)]
    pub(crate) exit_with_parent: bool,
    /// Kafka bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    pub(crate) kafka: String,
    /// The replication topic (the same for every cell of a deployment).
    #[arg(long, default_value = "demo-crdt")]
    pub(crate) topic: String,
    /// Run id: prefixes tables, consumer groups and keys in shared servers
    /// (the same for every process of a deployment).
    #[arg(long, default_value = "demo")]
    pub(crate) run_id: String,
    /// The key of the gateway's signed hops: the cell takes a context only
    /// from a request signed with it.
    #[arg(long)]
    pub(crate) hop_key_file: PathBuf,
}

/// The prefix of a cell's tables in its database (shared servers hold several runs and cells).
pub(crate) fn table_prefix(run_id: &str, cell: &str) -> String {
    format!("demo_{}_{}_", run_id, cell.replace('-', "_"))
}

/// A cell's database: `DEMO_DATABASE_URL`, else a SQLite file in its directory.
pub(crate) fn database_url(dir: &std::path::Path) -> String {
    match std::env::var("DEMO_DATABASE_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => format!("sqlite://{}?mode=rwc", dir.join("cell.db").display()),
    }
}

/// The table a cell's processes keep their replicas' states in.
pub(crate) fn state_table(prefix: &str) -> String {
    format!("{prefix}replica_state")
}

/// Runs the cell until killed.
pub(crate) async fn run(args: CellArgs) -> Result<(), DemoError> {
    let cfg = DemoConfig::load(args.config.as_deref())?;
    let cc = cfg.cell(&args.id).ok_or_else(|| DemoError::Config(format!("no cell {:?} in the config", args.id)))?;
    let cell = CellId::new(&args.id).map_err(|e| DemoError::Config(e.to_string()))?;
    let datacenter = cfg.regions.iter().find(|r| r.name == cc.region).and_then(|r| r.datacenter).unwrap_or(0);
    let index = args.worker.unwrap_or_else(|| cfg.cells.iter().position(|c| c.id == args.id).unwrap_or(0) as u32);
    let prefix = table_prefix(&args.run_id, &args.id);

    // storage: SQLite in the cell's directory unless DEMO_DATABASE_URL names a server
    std::fs::create_dir_all(&args.dir)?;
    let url = database_url(&args.dir);
    let storage = locked::retry_locked("open the storage", || storage::Storage::open(&url, &prefix)).await?;

    // replication: restore the saved state and replay our own outbox before
    // anything else touches the replica, then consume and relay
    // the replica's site is per writer: this process's slot (unique in the
    // deployment; a leased worker id is unique only within its datacenter)
    let run_dir = args.dir.parent().unwrap_or(&args.dir);
    let worker = worker_id::worker_ids(crate::etcd::endpoints()?, run_dir, &args.run_id, datacenter).await?;
    let ids = issued::IssuedIds::open(worker.ids.clone(), &args.id, index)?;
    let replica = Arc::new(Replica::try_new(cell.clone(), index, Duration::from_secs(5))?);
    let state = SqlStateStore::for_outbox(&storage.outbox, &state_table(&prefix))?;
    locked::retry_locked("create the state tables", || async { Ok(state.migrate().await?) }).await?;
    let replayed = replica.recover(&state, &storage.outbox).await?;
    tracing::info!(cell = %cell, replayed, "replica recovered");
    // a consumer group per process: every replica must see every event, its own cell's other processes' too
    let group = format!("demo-{}-{}-w{index}", args.run_id, args.id);
    let replicator = Replicator::start(replica.clone(), &args.kafka, &args.topic, &group, state).await?;
    let _replicator = replicator.spawn();
    // sent rows are kept an hour (at most 100k), and never past the last durable snapshot
    let retention = crdt::outbox::Retention::try_new(Some(Duration::from_secs(3600)), Some(100_000))?;
    // --replication binlog: the business tables' binlog, not the outbox, carries this cell's writes
    if cfg.replication == crate::config::Replication::Binlog {
        #[cfg(feature = "binlog")]
        binlog::start(&url, &prefix, &storage, &cell, &args.kafka, &args.topic).await?;
        #[cfg(not(feature = "binlog"))]
        return Err(DemoError::BinlogNotBuilt);
    }
    let relay = Relay::new(storage.outbox.clone(), &args.kafka, &args.topic)?
        .with_poll_interval(Duration::from_millis(20))
        .with_retention(retention, replica.clone());
    tokio::spawn(async move { relay.run(std::future::pending()).await });

    // the routing table from the control plane
    let store = TableStore::new();
    args.table.follow(&args.run_id, &store).await?;

    // /healthz: the cell is healthy while its database answers
    let hub = HealthHub::try_new(ScorePolicy::default().with_window(3))?;
    let pool = storage.outbox.pool().clone();
    let db = FnProbe::new(move || {
        let pool = pool.clone();
        async move { sqlx::query("SELECT 1").execute(&pool).await.map(|_| ProbeOutcome::up()) }
    })
    .with_kind(ProbeKind::Sql);
    let _probes = Scheduler::try_new(&hub, 4)?
        .with_probe(ProbeSpec::new(cell.clone(), "db", db).with_interval(Duration::from_millis(100)))?
        .start();

    let cache = match std::env::var("DEMO_REDIS_URL") {
        Ok(u) if !u.is_empty() => Some(cache::Cache::connect(&u, format!("{prefix}post:")).await?),
        _ => None,
    };
    let posts = posts::Posts { cell: cell.clone(), replica, storage, ids, cache, replication: cfg.replication };
    let started_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let app = Arc::new(http::AppState { posts, store, started_ms });
    let hop_keys = crate::identity::read_hop_keys(&args.hop_key_file)?;
    let service = http::service(app, &hub, hop_keys)?;

    let mut servers = Vec::new();
    for port in &args.ports {
        let listener = tokio::net::TcpListener::bind((args.listen_host, *port)).await?;
        let make = tower::make::Shared::new(service.clone());
        servers.push(tokio::spawn(async move { axum::serve(listener, make).await }));
    }
    tracing::info!(cell = %cell, ports = ?args.ports, "cell serving");
    if args.exit_with_parent {
        crate::roles::exit_with_parent();
    }
    for s in servers {
        s.await.map_err(|e| DemoError::Other(e.to_string()))??;
    }
    Ok(())
}
