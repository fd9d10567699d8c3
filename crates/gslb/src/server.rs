//! [`Server`]: runs a [`Responder`] on UDP (our receive loop: malformed packets
//! are dropped and counted) and TCP (hickory-server's `ServerFuture`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_proto::xfer::Protocol;
use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponse;
use hickory_server::server::{RequestHandler, ResponseHandler, ResponseInfo};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::error::GslbError;
use crate::responder::Responder;

/// Largest datagram read; a longer one is cut and fails to parse (dropped).
const RECV_BUFFER: usize = 4096;
/// UDP payload limit without EDNS (RFC 1035).
const PLAIN_UDP: u16 = 512;

/// Runs a [`Responder`] on UDP and TCP sockets, plus its background sync
/// ([`Responder::spawn_sync`]).
///
/// UDP goes through our own receive loop (`workers` tasks sharing each socket)
/// so that a packet that does not parse, or a response sent to us, is dropped
/// and counted in [`Stats::malformed`](crate::Stats::malformed) and
/// `gslb.malformed`; TCP goes through hickory-server's `ServerFuture` (which
/// answers a malformed TCP message `FORMERR` or closes the connection; those
/// are not counted).
#[derive(Debug)]
pub struct Server {
    responder: Responder,
    udp: Vec<SocketAddr>,
    tcp: Vec<SocketAddr>,
    workers: usize,
    tcp_timeout: Duration,
}

impl Server {
    /// A server for `responder` with no socket yet, 2 UDP workers per socket and
    /// a 5 s TCP idle timeout.
    pub fn new(responder: Responder) -> Self {
        Server {
            responder,
            udp: Vec::new(),
            tcp: Vec::new(),
            workers: 2,
            tcp_timeout: Duration::from_secs(5),
        }
    }

    /// Listens on UDP `addr` (port 0: any free port, see [`RunningServer::udp_addrs`]).
    pub fn with_udp(mut self, addr: SocketAddr) -> Self {
        self.udp.push(addr);
        self
    }

    /// Listens on TCP `addr`.
    pub fn with_tcp(mut self, addr: SocketAddr) -> Self {
        self.tcp.push(addr);
        self
    }

    /// Receive tasks per UDP socket (at least 1).
    pub fn with_udp_workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// TCP connection idle timeout.
    pub fn with_tcp_timeout(mut self, timeout: Duration) -> Self {
        self.tcp_timeout = timeout;
        self
    }

    /// Binds every socket and starts serving.
    pub async fn start(self) -> Result<RunningServer, GslbError> {
        if self.udp.is_empty() && self.tcp.is_empty() {
            return Err(GslbError::config("server: no UDP or TCP address"));
        }
        let mut tasks = Vec::new();
        let mut udp_addrs = Vec::new();
        for addr in &self.udp {
            let sock = UdpSocket::bind(addr)
                .await
                .map_err(|e| GslbError::io(format!("udp {addr}"), e))?;
            udp_addrs.push(
                sock.local_addr()
                    .map_err(|e| GslbError::io(format!("udp {addr}"), e))?,
            );
            let sock = Arc::new(sock);
            for _ in 0..self.workers {
                tasks.push(tokio::spawn(udp_loop(
                    Arc::clone(&sock),
                    self.responder.clone(),
                )));
            }
        }
        let mut tcp_addrs = Vec::new();
        let mut tcp = None;
        if !self.tcp.is_empty() {
            let mut server = ServerFuture::new(self.responder.clone());
            for addr in &self.tcp {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|e| GslbError::io(format!("tcp {addr}"), e))?;
                tcp_addrs.push(
                    l.local_addr()
                        .map_err(|e| GslbError::io(format!("tcp {addr}"), e))?,
                );
                server.register_listener(l, self.tcp_timeout);
            }
            tcp = Some(server);
        }
        let sync = self.responder.spawn_sync();
        tracing::info!(udp = ?udp_addrs, tcp = ?tcp_addrs, "gslb responder listening");
        Ok(RunningServer {
            udp_addrs,
            tcp_addrs,
            tasks,
            tcp,
            sync,
            responder: self.responder,
        })
    }
}

/// A started [`Server`]; stops serving on [`shutdown`](Self::shutdown) or drop.
pub struct RunningServer {
    udp_addrs: Vec<SocketAddr>,
    tcp_addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
    tcp: Option<ServerFuture<Responder>>,
    sync: JoinHandle<()>,
    responder: Responder,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("udp", &self.udp_addrs)
            .field("tcp", &self.tcp_addrs)
            .finish()
    }
}

impl RunningServer {
    /// The bound UDP addresses (in the order given).
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// The bound TCP addresses (in the order given).
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The responder being served.
    pub fn responder(&self) -> &Responder {
        &self.responder
    }

    /// Stops every listener and the sync task.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.sync.abort();
        if let Some(mut tcp) = self.tcp.take()
            && let Err(e) = tcp.shutdown_gracefully().await
        {
            tracing::debug!(error = %e, "tcp listener shutdown");
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.sync.abort();
        if let Some(tcp) = self.tcp.as_ref() {
            tcp.shutdown_token().cancel();
        }
    }
}

async fn udp_loop(sock: Arc<UdpSocket>, responder: Responder) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let (n, src) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors from earlier sends surface here (ECONNREFUSED): keep going.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        if src.port() == 0 {
            continue;
        }
        let Some(request) = responder.parse(&buf[..n], src, Protocol::Udp) else {
            continue;
        };
        let max = request
            .edns()
            .map_or(PLAIN_UDP, |e| e.max_payload().max(PLAIN_UDP));
        let handle = UdpResponse {
            sock: Arc::clone(&sock),
            dst: src,
            max,
        };
        responder.handle_request(&request, handle).await;
    }
}

/// Sends one response datagram; a response over the client's size limit is
/// sent truncated (header only, `TC` set) so the client retries over TCP.
#[derive(Clone)]
struct UdpResponse {
    sock: Arc<UdpSocket>,
    dst: SocketAddr,
    max: u16,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponse {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> io::Result<ResponseInfo> {
        let mut tc = *response.header();
        let mut buf = Vec::with_capacity(512);
        let encoded = {
            let mut enc = BinEncoder::new(&mut buf);
            enc.set_max_size(self.max);
            response.destructive_emit(&mut enc)
        };
        let info = match encoded {
            Ok(info) => info,
            Err(_) => {
                buf.clear();
                tc.set_truncated(true);
                tc.set_query_count(0)
                    .set_answer_count(0)
                    .set_name_server_count(0)
                    .set_additional_count(0);
                let mut enc = BinEncoder::new(&mut buf);
                tc.emit(&mut enc).map_err(io::Error::other)?;
                ResponseInfo::from(tc)
            }
        };
        self.sock.send_to(&buf, self.dst).await?;
        Ok(info)
    }
}
