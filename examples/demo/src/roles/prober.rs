//! `demo prober`: one independent prober as a process of its own. It probes
//! every cell of the routing table (each instance's TCP port, the first
//! instance's `/healthz`) and sends its view of every cell to every
//! controller (`POST /probes/{name}`) when it changes and at every probe
//! interval (a view the engine stops hearing goes stale). On `--listen`:
//! `GET /metrics` and `GET /admin/status` (its view).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::routing::get;
use cellrouter::TableStore;

use super::Common;
use super::table::TableArgs;
use super::wire::{self, CellView};
use crate::error::DemoError;

/// Arguments of `demo prober`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ProberArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) table: TableArgs,
    /// This prober's name; unique per prober (the engine counts a quorum of them).
    #[arg(long, default_value = "prober-0")]
    pub(crate) name: String,
    /// The controllers' base URLs (comma separated): each gets the views.
    #[arg(long, value_delimiter = ',', value_name = "URL", required = true)]
    pub(crate) controllers: Vec<String>,
    /// `/metrics` and `/admin/status`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub(crate) listen: SocketAddr,
}

/// Runs the prober until the process ends.
pub(crate) async fn run(args: ProberArgs) -> Result<(), DemoError> {
    let cfg = args.common.start()?;
    let store = TableStore::new();
    args.table.follow(&args.common.run_id, &store).await?;
    let table = store.current().ok_or_else(|| DemoError::Other("no routing table".into()))?.table().clone();
    let (hub, _probes) = crate::control::start_prober(&cfg, &table)?;
    let status_hub = hub.clone();
    let app = axum::Router::new()
        .route(
            "/admin/status",
            get(move || std::future::ready(Json(serde_json::json!({ "role": "prober", "view": view(&status_hub) })))),
        )
        .merge(crate::telemetry::router())
        .merge(crate::clock_admin::router());
    let listener = super::bind("prober", args.listen).await?;
    tokio::spawn(super::serve(listener, app));

    let controllers = super::base_urls(&args.controllers);
    let path = format!("/probes/{}", args.name);
    let client = crate::gateway::http_client();
    let every = Duration::from_millis(cfg.rules.probe_interval_ms);
    let mut rx = hub.subscribe();
    loop {
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return Ok(()) },
            _ = tokio::time::sleep(every) => {}
        }
        let v = view(&hub);
        if !v.is_empty() {
            wire::post_all(&client, &controllers, &path, &v, every.max(Duration::from_millis(250))).await;
        }
    }
}

/// The hub's verdict on every cell it has heard of.
fn view(hub: &health::HealthHub) -> Vec<CellView> {
    hub.snapshot().cells().map(|c| CellView { cell: c.cell.to_string(), healthy: c.healthy }).collect()
}
