//! [`TcpProbe`]: an L4 connect check.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{Probe, ProbeFuture, ProbeKind, ProbeOutcome};

/// Connects to an address and closes the connection (the seed's L4 check).
#[derive(Debug, Clone)]
pub struct TcpProbe {
    addr: SocketAddr,
}

impl TcpProbe {
    /// A probe of `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        TcpProbe { addr }
    }

    /// The probed address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Probe for TcpProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Tcp
    }

    fn check(&self) -> ProbeFuture<'_> {
        Box::pin(async move {
            match TcpStream::connect(self.addr).await {
                Ok(_) => ProbeOutcome::up(),
                Err(e) => ProbeOutcome::down(format!("connect {}: {e}", self.addr)),
            }
        })
    }
}
