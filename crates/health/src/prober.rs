//! [`CellProber`]: probes peer cells and publishes their health.

use std::net::SocketAddr;
use std::time::Duration;

use cellctx::CellId;

use crate::error::HealthError;
use crate::hub::HealthHub;
use crate::probe::{HttpProbe, ProbeSpec, TcpProbe};
use crate::scheduler::{Scheduler, SchedulerHandle};

/// Weight of a peer's `/healthz` verdict in its score; its TCP endpoints share 30.
const HEALTHZ_WEIGHT: u32 = 70;
const TCP_WEIGHT_TOTAL: u32 = 30;

/// A peer cell: the base URL of its health handler and its TCP endpoints.
#[derive(Debug, Clone)]
pub struct PeerCell {
    cell: CellId,
    base_url: String,
    tcp: Vec<SocketAddr>,
}

impl PeerCell {
    /// A peer whose handler answers at `{base_url}/healthz?cell={cell}`.
    pub fn new(cell: CellId, base_url: impl Into<String>) -> Self {
        PeerCell { cell, base_url: base_url.into(), tcp: Vec::new() }
    }

    /// Adds an endpoint checked by a TCP connect.
    pub fn with_tcp(mut self, addr: SocketAddr) -> Self {
        self.tcp.push(addr);
        self
    }

    /// The peer's cell.
    pub fn cell(&self) -> &CellId {
        &self.cell
    }
}

/// Polls every peer cell's `/healthz` plus a TCP check of each of its endpoints
/// and publishes per-cell health through a [`HealthHub`] (which the failover
/// and gslb crates subscribe to).
///
/// A peer's score: its `/healthz` probe weighs 70 and its TCP endpoints share
/// 30, so a peer whose `/healthz` fails scores at most 30 and is unhealthy with
/// the default threshold; a peer whose endpoints fail while `/healthz` answers
/// scores 70.
#[derive(Debug)]
pub struct CellProber {
    hub: HealthHub,
    peers: Vec<PeerCell>,
    interval: Duration,
    timeout: Duration,
    max_concurrency: usize,
}

impl CellProber {
    /// A prober publishing to `hub` (interval 5 s, timeout 2 s, 16 at once).
    pub fn new(hub: &HealthHub) -> Self {
        CellProber {
            hub: hub.clone(),
            peers: Vec::new(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            max_concurrency: 16,
        }
    }

    /// Adds a peer.
    pub fn with_peer(mut self, peer: PeerCell) -> Self {
        self.peers.push(peer);
        self
    }

    /// Interval of every check.
    pub fn with_interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Timeout of every check.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks running at once.
    pub fn with_max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// The probe specs this prober runs.
    pub fn specs(&self) -> Result<Vec<ProbeSpec>, HealthError> {
        let mut specs = Vec::new();
        for peer in &self.peers {
            let base = peer.base_url.trim_end_matches('/');
            let url = format!("{base}/healthz?cell={}", peer.cell);
            let http = HttpProbe::try_new(&url)?;
            specs.push(self.tune(ProbeSpec::new(peer.cell.clone(), "healthz", http).with_weight(HEALTHZ_WEIGHT)));
            let n = u32::try_from(peer.tcp.len()).unwrap_or(u32::MAX).max(1);
            for addr in &peer.tcp {
                let spec = ProbeSpec::new(peer.cell.clone(), format!("tcp:{addr}"), TcpProbe::new(*addr))
                    .with_weight((TCP_WEIGHT_TOTAL / n).max(1));
                specs.push(self.tune(spec));
            }
        }
        Ok(specs)
    }

    fn tune(&self, spec: ProbeSpec) -> ProbeSpec {
        spec.with_interval(self.interval).with_timeout(self.timeout)
    }

    /// Registers every check and starts them.
    pub fn start(self) -> Result<SchedulerHandle, HealthError> {
        let mut scheduler = Scheduler::try_new(&self.hub, self.max_concurrency)?;
        let specs = self.specs()?;
        for spec in &specs {
            spec.validate()?;
        }
        for spec in specs {
            scheduler.add(spec)?;
        }
        Ok(scheduler.start())
    }
}
