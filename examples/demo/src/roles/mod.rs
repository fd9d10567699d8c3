//! The demo's roles as processes of their own (`demo gateway`, `demo
//! controller`, `demo prober`; `demo cell` is [`crate::cell`]): what they
//! share is how they get the routing table ([`table`]), how they talk to
//! each other over HTTP ([`wire`]) and the flags every role takes
//! ([`Common`]).
//!
//! How the roles find each other: addresses are flags. The controller is told
//! each cell's endpoints (`--endpoints ID=URL,...`) and builds the first
//! routing table from them; everyone else reads the table in force from etcd
//! (`ETCD_ENDPOINTS`) or, without etcd, from a controller's `GET /table`
//! (long poll) or a table file it writes. The gateway and the probers are
//! told the controllers' URLs and report to every one of them over HTTP
//! (`POST /outcomes`, `POST /probes/{name}`); only the leading controller
//! switches, the others keep their engines warm.

pub(crate) mod controller;
pub(crate) mod gateway;
pub(crate) mod prober;
pub(crate) mod table;
pub(crate) mod wire;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::DemoConfig;
use crate::error::DemoError;

/// Flags every role takes.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Common {
    /// The config file (default: the embedded demo.yaml); every process of a
    /// deployment must run the same one.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Run id: names the audit table, the etcd keys and the Kafka consumer
    /// groups a deployment shares (the same on every host).
    #[arg(long, default_value = "demo")]
    pub(crate) run_id: String,
    /// Exit when the parent process does (set by the orchestrator, so no
    /// role outlives the run that spawned it).
    #[arg(long)]
    pub(crate) exit_with_parent: bool,
}

impl Common {
    /// The config, and the parent watch started when asked for.
    pub(crate) fn start(&self) -> Result<DemoConfig, DemoError> {
        if self.exit_with_parent {
            exit_with_parent();
        }
        DemoConfig::load(self.config.as_deref())
    }
}

/// Exits the process once its parent is gone.
pub(crate) fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if std::os::unix::process::parent_id() != parent {
                std::process::exit(0);
            }
        }
    });
}

/// Binds `addr` and says where (stderr: `demo: <role> listening on http://ADDR`).
pub(crate) async fn bind(role: &str, addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, DemoError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("demo: {role} listening on http://{}", listener.local_addr()?);
    Ok(listener)
}

/// Serves `app` on `listener` until the process ends.
pub(crate) async fn serve(listener: tokio::net::TcpListener, app: axum::Router) -> Result<(), DemoError> {
    axum::serve(listener, app).await?;
    Ok(())
}

/// Base URLs without a trailing `/`.
pub(crate) fn base_urls(urls: &[String]) -> Vec<String> {
    urls.iter().map(|u| u.trim_end_matches('/').to_string()).filter(|u| !u.is_empty()).collect()
}
