//! [`KafkaFaultProxy`]: the [`FaultProxy`](crate::FaultProxy) of one
//! client's link to a Kafka cluster. A Kafka client connects to the brokers
//! the cluster advertises, not to its bootstrap address, so a plain TCP proxy
//! in front of the bootstrap would see only the first request. This one
//! listens once per broker and rewrites the broker addresses in `Metadata`
//! and `FindCoordinator` responses to its own listeners: a client that
//! bootstraps through it ([`KafkaFaultProxy::bootstrap`]) talks to every
//! broker through it, and one [`LinkMode`] cuts, blackholes or slows that
//! client's whole link while other clients' links stay up.
//!
//! The modes work per frame rather than per chunk: a blackholed link drops
//! whole requests and responses (the client times them out and reconnects),
//! a delayed one holds each frame, a refused one closes every connection.
//! Leader hints in `Produce` and `Fetch` responses (KIP-951) are not
//! rewritten: a cluster whose partition leaders move may point the client
//! past the proxy.
//!
//! ```no_run
//! # async fn run(brokers: Vec<std::net::SocketAddr>) -> std::io::Result<()> {
//! use testkit::{KafkaFaultProxy, LinkMode};
//! let link = KafkaFaultProxy::start(&brokers).await?;
//! let bootstrap = link.bootstrap(); // give this client `bootstrap.servers = bootstrap`
//! link.set(LinkMode::Blackhole); // its requests now go unanswered
//! # Ok(()) }
//! ```

mod wire;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::proxy::{LinkMode, connect};

/// The (broker, listener) pairs of one proxy.
type Routes = Arc<Vec<(SocketAddr, SocketAddr)>>;

/// A client's proxied link to a Kafka cluster; it stops when dropped.
#[derive(Debug)]
pub struct KafkaFaultProxy {
    routes: Routes,
    mode: watch::Sender<LinkMode>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KafkaFaultProxy {
    /// Listens on a free loopback port per broker of `brokers` (the
    /// cluster's advertised addresses).
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(brokers: &[SocketAddr]) -> std::io::Result<KafkaFaultProxy> {
        let mut listeners = Vec::new();
        for b in brokers {
            let l = TcpListener::bind("127.0.0.1:0").await?;
            listeners.push((*b, l));
        }
        let routes: Routes = Arc::new(listeners.iter().map(|(b, l)| l.local_addr().map(|a| (*b, a))).collect::<Result<_, _>>()?);
        let (mode, rx) = watch::channel(LinkMode::Pass);
        let tasks = listeners
            .into_iter()
            .map(|(broker, listener)| {
                let (routes, rx) = (routes.clone(), rx.clone());
                tokio::spawn(async move {
                    while let Ok((client, _)) = listener.accept().await {
                        let _ = client.set_nodelay(true);
                        tokio::spawn(serve(client, broker, routes.clone(), rx.clone()));
                    }
                })
            })
            .collect();
        Ok(KafkaFaultProxy { routes, mode, tasks })
    }

    /// The `bootstrap.servers` the proxied client is to use.
    pub fn bootstrap(&self) -> String {
        self.routes.iter().map(|(_, l)| l.to_string()).collect::<Vec<_>>().join(",")
    }

    /// Changes what the link does, for open and new connections.
    pub fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }
}

impl Drop for KafkaFaultProxy {
    fn drop(&mut self) {
        self.tasks.iter().for_each(tokio::task::JoinHandle::abort);
    }
}

/// The listener that stands for the broker advertised as `host:port`.
fn route(routes: &[(SocketAddr, SocketAddr)], host: &str, port: i32) -> Option<SocketAddr> {
    let ip: Option<IpAddr> = if host == "localhost" { Some(IpAddr::from([127, 0, 0, 1])) } else { host.parse().ok() };
    routes.iter().find(|(b, _)| Some(b.ip()) == ip && i32::from(b.port()) == port).map(|(_, l)| *l)
}

/// One client connection to `broker`.
async fn serve(client: TcpStream, broker: SocketAddr, routes: Routes, mut mode: watch::Receiver<LinkMode>) {
    let Some((mut cr, mut cw, mut ur, mut uw)) = connect(client, broker, &mut mode).await else { return };
    // each request's (API key, version) by correlation id, for its response
    let asked: Arc<Mutex<HashMap<i32, (i16, i16)>>> = Arc::default();
    let requests = {
        let asked = asked.clone();
        pump(&mut cr, &mut uw, mode.clone(), move |frame| {
            if let (Some((key, version, correlation)), Ok(mut a)) = (wire::request_header(&frame), asked.lock()) {
                a.insert(correlation, (key, version));
            }
            frame
        })
    };
    let responses = pump(&mut ur, &mut cw, mode, move |frame| {
        let asked = wire::response_correlation(&frame).and_then(|c| asked.lock().ok()?.remove(&c));
        match asked {
            Some((key, version)) if wire::rewritten(key) => {
                wire::rewrite_response(key, version, &frame, &|h, p| route(&routes, h, p)).unwrap_or(frame)
            }
            _ => frame,
        }
    });
    tokio::select! {
        _ = requests => {}
        _ = responses => {}
    }
}

/// Copies `from` to `to` frame by frame through `edit`, obeying the mode at
/// each frame.
async fn pump<R, W>(from: &mut R, to: &mut W, mut mode: watch::Receiver<LinkMode>, mut edit: impl FnMut(Vec<u8>) -> Vec<u8>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        while let Some(frame) = wire::take_frame(&mut buf) {
            // the mode when the frame arrived decides its fate
            let current = *mode.borrow_and_update();
            match current {
                LinkMode::Refuse => return,
                LinkMode::Blackhole => continue, // read and dropped whole
                LinkMode::Delay(d) => tokio::time::sleep(d).await,
                LinkMode::Pass => {}
            }
            if to.write_all(&edit(frame)).await.is_err() {
                return;
            }
        }
        tokio::select! {
            r = from.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            },
            c = mode.changed() => {
                if c.is_err() || *mode.borrow() == LinkMode::Refuse {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_routed_by_address() {
        let b = SocketAddr::from(([127, 0, 0, 1], 9092));
        let l = SocketAddr::from(([127, 0, 0, 1], 40000));
        let routes = vec![(b, l)];
        assert_eq!(route(&routes, "127.0.0.1", 9092), Some(l));
        assert_eq!(route(&routes, "localhost", 9092), Some(l));
        assert_eq!(route(&routes, "127.0.0.1", 9093), None);
        assert_eq!(route(&routes, "kafka-0.example", 9092), None);
    }
}
