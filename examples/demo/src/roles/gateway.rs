//! `demo gateway`: the edge gateway ([`crate::gateway::Gateway`]) as a
//! process of its own: it follows the routing table, checks users' tokens
//! against the identity provider's key set, signs its hops to the cells with
//! the hop key, and reports its per-cell outcomes to every controller.
//!
//! On `--listen`: users' requests (everything not below), `GET /metrics`,
//! and `GET /admin/status` (the table version it runs: a switch waits for it;
//! what its retries did).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::routing::get;
use cellrouter::TableStore;
use failover::OutcomeReporter;

use super::Common;
use super::table::TableArgs;
use super::wire::{self, OutcomeCounts, Outcomes};
use crate::error::DemoError;
use crate::gateway::{Gateway, HttpClient};

/// Arguments of `demo gateway`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct GatewayArgs {
    #[command(flatten)]
    pub(crate) common: Common,
    #[command(flatten)]
    pub(crate) table: TableArgs,
    /// Users' requests, `/metrics` and `/admin/status`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// The controllers' base URLs (comma separated): each gets the outcomes.
    #[arg(long, value_delimiter = ',', value_name = "URL", required = true)]
    pub(crate) controllers: Vec<String>,
    /// The key the gateway signs its hops to the cells with (`hop.key`).
    #[arg(long)]
    pub(crate) hop_key_file: PathBuf,
    /// The identity provider's public key set (`jwks.json`): users' tokens must verify against it.
    #[arg(long)]
    pub(crate) jwks_file: PathBuf,
}

/// Runs the gateway until the process ends.
pub(crate) async fn run(args: GatewayArgs) -> Result<(), DemoError> {
    let cfg = args.common.start()?;
    let store = TableStore::new();
    args.table.follow(&args.common.run_id, &store).await?;
    let reporter = OutcomeReporter::default();
    let auth = cellctx::auth::EdgeAuth::new(crate::identity::authenticator_from_file(&args.jwks_file)?);
    let gw = Arc::new(Gateway::try_new(
        store.clone(),
        cfg.breakers()?,
        cfg.outlier()?,
        reporter.clone(),
        Duration::from_millis(cfg.load.request_timeout_ms),
        auth,
        crate::identity::read_hop_key(&args.hop_key_file)?,
    )?
    .with_retry(&cfg.retry)?);
    let every = Duration::from_millis(cfg.rules.tick_ms);
    tokio::spawn(ship_outcomes(reporter, super::base_urls(&args.controllers), crate::gateway::http_client(), every));
    let app = axum::Router::new()
        .route(
            "/admin/status",
            get({
                let gw = gw.clone();
                move || {
                    let status = serde_json::json!({
                        "role": "gateway",
                        "table_version": store.version(),
                        "retries": gw.retry_report(),
                    });
                    std::future::ready(Json(status))
                }
            }),
        )
        .merge(crate::telemetry::router())
        .merge(crate::clock_admin::router())
        .fallback_service(gw.service()?);
    super::serve(super::bind("gateway", args.listen).await?, app).await
}

/// Every `every`, sends the outcomes counted since the last time to every controller.
async fn ship_outcomes(reporter: OutcomeReporter, controllers: Vec<String>, client: HttpClient, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let counts = reporter.take_counts();
        if counts.is_empty() {
            continue;
        }
        let body: Outcomes = counts.into_iter().map(|(cell, (ok, err))| (cell.to_string(), OutcomeCounts { ok, err })).collect();
        wire::post_all(&client, &controllers, "/outcomes", &body, every.max(Duration::from_millis(500))).await;
    }
}
