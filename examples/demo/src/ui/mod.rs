//! The live console (`demo --ui`): a page served on loopback that shows the
//! run as it happens (server-sent events from the orchestrator) and kills and
//! restarts cells through the same [`Cells`] the scheduled run uses.

pub(crate) mod assets;
mod routes;
mod shares;
mod snapshot;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use crate::cells::Cells;
use crate::control_view::ControlView;
use crate::error::DemoError;
use crate::replication::Readings;
use crate::stats::Stats;

/// What the console reads once the run is live.
#[derive(Debug)]
pub(crate) struct Live {
    /// The cells' processes (kill, restart, events).
    pub(crate) cells: Arc<Mutex<Cells>>,
    /// The load generator's counters.
    pub(crate) stats: Stats,
    /// The routing table in force and the audit log (from the controllers).
    pub(crate) control: ControlView,
    /// The cells' replication, read once a second.
    pub(crate) replication: Readings,
    /// When the load started.
    pub(crate) t0_wall: SystemTime,
}

/// The console's shared state.
#[derive(Debug)]
struct UiState {
    live: OnceLock<Live>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// The running console.
#[derive(Debug)]
pub(crate) struct Console {
    state: Arc<UiState>,
}

impl Console {
    /// Binds `addr` (default `127.0.0.1:0`; loopback only), prints the URL
    /// as a line of stdout and serves the console in the background.
    pub(crate) async fn serve(addr: Option<SocketAddr>) -> Result<Self, DemoError> {
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        if !addr.ip().is_loopback() {
            return Err(DemoError::Config(format!("--ui-addr {addr}: the console serves loopback addresses only")));
        }
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let bound = listener.local_addr()?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "console: http://{bound}/")?;
        out.flush()?;
        let state = Arc::new(UiState { live: OnceLock::new(), stop: tokio::sync::watch::Sender::new(false) });
        let app = routes::router(state.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "console server stopped");
            }
        });
        Ok(Console { state })
    }

    /// The run is live: the page shows it from now on.
    pub(crate) fn go_live(&self, live: Live) {
        let _ = self.state.live.set(live);
    }

    /// Resolves once the operator pressed stop.
    pub(crate) async fn stopped(&self) {
        let mut rx = self.state.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_console_serves_loopback_only() {
        let err = Console::serve(Some("0.0.0.0:0".parse().unwrap())).await.unwrap_err();
        assert!(matches!(err, DemoError::Config(_)), "{err}");
    }
}
