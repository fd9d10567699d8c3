//! [`FaultProxy`]: a TCP proxy on a loopback port in front of one upstream,
//! whose link can be cut, blackholed or slowed while connections are open: the
//! seam through which fault tests partition one link (gateway -> cell, cell ->
//! Kafka, controller -> etcd) without a test-only branch in the code under test.
//!
//! | mode | new connections | open connections |
//! |---|---|---|
//! | [`LinkMode::Pass`] | forwarded | bytes flow both ways |
//! | [`LinkMode::Refuse`] | accepted, then closed at once (the client sees EOF or a reset) | closed |
//! | [`LinkMode::Blackhole`] | accepted, never answered | bytes are read and dropped, nothing is answered |
//! | [`LinkMode::Delay`] | forwarded | each chunk is held for the delay, both ways |
//!
//! The mode applies to connections already open as well as new ones: a
//! blackholed connection stays open and silent (what a partition looks like to
//! TCP), and comes back to life when the mode returns to `Pass`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the link does (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// Forward everything.
    Pass,
    /// Close every connection.
    Refuse,
    /// Accept and read, never answer.
    Blackhole,
    /// Forward each chunk after this delay.
    Delay(Duration),
}

/// A running proxy; it stops when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<LinkMode>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    ///
    /// # Errors
    /// When no loopback port can be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, rx) = watch::channel(LinkMode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                let _ = client.set_nodelay(true);
                tokio::spawn(serve(client, upstream, rx.clone()));
            }
        });
        Ok(FaultProxy { addr, mode, accepted, task })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes what the link does, for open and new connections.
    pub fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One client connection: wait out a refused or blackholed link, then pump
/// both directions under the current mode.
async fn serve(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<LinkMode>) {
    let Some((mut cr, mut cw, mut ur, mut uw)) = connect(client, upstream, &mut mode).await else { return };
    let a = pump(&mut cr, &mut uw, mode.clone());
    let b = pump(&mut ur, &mut cw, mode);
    tokio::select! {
        _ = a => {}
        _ = b => {}
    }
}

/// The two halves of a client connection and of its upstream connection.
pub(crate) type Halves = (OwnedReadHalf, OwnedWriteHalf, OwnedReadHalf, OwnedWriteHalf);

/// Connects `client` to `upstream` once the link lets it ([`link_open`]);
/// `None` when the link is refused or either side goes away (dropping the
/// client's stream closes it).
pub(crate) async fn connect(client: TcpStream, upstream: SocketAddr, mode: &mut watch::Receiver<LinkMode>) -> Option<Halves> {
    let (mut cr, cw) = client.into_split();
    if !link_open(&mut cr, mode).await {
        return None;
    }
    let up = TcpStream::connect(upstream).await.ok()?;
    let _ = up.set_nodelay(true);
    let (ur, uw) = up.into_split();
    Some((cr, cw, ur, uw))
}

/// Waits while the link is blackholed (what the client sends meanwhile is
/// read and dropped: a blackholed link connects upstream only once it
/// heals); false when it is refused or the client or proxy goes away.
async fn link_open<R: AsyncReadExt + Unpin>(client: &mut R, mode: &mut watch::Receiver<LinkMode>) -> bool {
    loop {
        let current = *mode.borrow_and_update();
        match current {
            LinkMode::Refuse => return false,
            LinkMode::Blackhole => {
                let mut sink = [0u8; 4096];
                tokio::select! {
                    r = client.read(&mut sink) => if matches!(r, Ok(0) | Err(_)) { return false },
                    c = mode.changed() => if c.is_err() { return false },
                }
            }
            LinkMode::Pass | LinkMode::Delay(_) => return true,
        }
    }
}

/// Copies `from` to `to` chunk by chunk, obeying the mode at each chunk.
async fn pump<R, W>(from: &mut R, to: &mut W, mut mode: watch::Receiver<LinkMode>)
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            c = mode.changed() => {
                if c.is_err() || *mode.borrow() == LinkMode::Refuse {
                    return;
                }
                continue;
            }
        };
        // the mode when the chunk arrived decides its fate
        let current = *mode.borrow_and_update();
        match current {
            LinkMode::Refuse => return,
            LinkMode::Blackhole => continue, // read and dropped
            LinkMode::Delay(d) => tokio::time::sleep(d).await,
            LinkMode::Pass => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte it reads.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn pass_forwards_bytes_both_ways() {
        let p = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello cell").await, b"hello cell");
        assert_eq!(p.accepted(), 1);
    }

    #[tokio::test]
    async fn refuse_closes_new_and_open_connections() {
        let p = FaultProxy::start(echo_server().await).await.unwrap();
        let mut open = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut open, b"x").await, b"x");
        p.set(LinkMode::Refuse);
        let mut buf = [0u8; 8];
        // the open connection is closed by the proxy (EOF or reset)
        let r = open.read(&mut buf).await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        let mut fresh = TcpStream::connect(p.addr()).await.unwrap();
        let r = fresh.read(&mut buf).await;
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert_eq!(p.mode(), LinkMode::Refuse);
    }

    #[tokio::test(start_paused = true)]
    async fn blackhole_answers_nothing_until_the_link_heals() {
        let p = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"before").await, b"before");
        p.set(LinkMode::Blackhole);
        s.write_all(b"lost").await.unwrap();
        let mut buf = [0u8; 16];
        let silent = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await;
        assert!(silent.is_err(), "a blackholed link answers nothing: {silent:?}");
        // a new connection is accepted but silent too
        let mut fresh = TcpStream::connect(p.addr()).await.unwrap();
        fresh.write_all(b"hello?").await.unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(30), fresh.read(&mut buf)).await.is_err());
        // healed: the same connections work again; what was sent meanwhile is gone
        p.set(LinkMode::Pass);
        assert_eq!(roundtrip(&mut s, b"after").await, b"after");
        assert_eq!(roundtrip(&mut fresh, b"late").await, b"late");
    }

    #[tokio::test(start_paused = true)]
    async fn delay_holds_each_chunk() {
        let p = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(p.addr()).await.unwrap();
        p.set(LinkMode::Delay(Duration::from_millis(500)));
        let t0 = tokio::time::Instant::now();
        assert_eq!(roundtrip(&mut s, b"slow").await, b"slow");
        // one hold each way, on the paused clock
        assert!(t0.elapsed() >= Duration::from_millis(1000), "{:?}", t0.elapsed());
    }
}
