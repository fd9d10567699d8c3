//! Test support for the SDK's own tests (not published).
//!
//! - URLs of the real services the tests talk to, read from the variables that
//!   `scripts/test` exports (`CELL_TEST_REDIS_URL`, `CELL_TEST_MYSQL_URL`,
//!   `CELL_TEST_POSTGRES_URL`, `CELL_TEST_ETCD_ENDPOINTS`), with the machine's
//!   defaults when a test is run by plain `cargo test`.
//! - [`EtcdServer`]: a private etcd on free loopback ports with a temporary data
//!   dir, for tests that stop and restart etcd (so they do not disturb the shared
//!   one). It is killed on drop.
//! - [`FaultProxy`]: a loopback TCP proxy whose link can be cut, blackholed or
//!   slowed while connections are open (see [`proxy`]).
//! - [`KafkaFaultProxy`]: the same for one client's link to a Kafka cluster,
//!   every broker included (see [`kafka_proxy`]).
//! - [`MariaDbServer`]: a private MariaDB with the binary log on (row format,
//!   GTIDs), for change-data-capture tests; killed on drop.
//!
//! A service that cannot be reached or started is a test failure with a clear
//! message, never a silent skip: the functions here panic with one.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod kafka_proxy;
pub mod proxy;
pub use kafka_proxy::KafkaFaultProxy;
pub use proxy::{FaultProxy, LinkMode};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod mariadb;
pub use mariadb::MariaDbServer;

/// Redis URL for tests (`CELL_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`).
pub fn redis_url() -> String {
    env_or("CELL_TEST_REDIS_URL", "redis://127.0.0.1:6379")
}

/// MariaDB/MySQL URL for tests (`CELL_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`).
pub fn mysql_url() -> String {
    env_or("CELL_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
}

/// PostgreSQL URL for tests (`CELL_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
pub fn postgres_url() -> String {
    env_or("CELL_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
}

/// Endpoints of the shared etcd started by `scripts/test` (`CELL_TEST_ETCD_ENDPOINTS`,
/// comma separated).
///
/// # Panics
/// When the variable is not set: run the tests through `scripts/test`, or use
/// [`EtcdServer::start`] for a private server.
pub fn etcd_endpoints() -> Vec<String> {
    let v = std::env::var("CELL_TEST_ETCD_ENDPOINTS").unwrap_or_else(|_| {
        panic!(
            "CELL_TEST_ETCD_ENDPOINTS is not set: run the tests through scripts/test, \
             which starts a private etcd and exports its endpoint"
        )
    });
    v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

/// A unique name for keys, tables and topics of one test: `prefix-<pid>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000_000)
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// A free TCP port on 127.0.0.1 (bound once and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind a free loopback port")
}

/// Waits until `addr` accepts TCP connections; false after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A private etcd server on free loopback ports; killed on drop.
///
/// `stop` and `start` kill and restart the same member on the same ports and data
/// dir, so clients see the registry blink and come back with its data.
#[derive(Debug)]
pub struct EtcdServer {
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts a private etcd.
    ///
    /// # Panics
    /// When the `etcd` binary is missing (install Debian's `etcd-server`, as
    /// `scripts/test` does) or the server does not answer within 20 s.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for etcd");
        let mut server = EtcdServer { dir, client_port: free_port(), peer_port: free_port(), child: None };
        server.restart();
        server
    }

    /// The client endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.client_port))
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same ports and data dir (no-op if running).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            return;
        }
        let data: PathBuf = self.dir.path().join("data");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("etcd log file");
        let child = Command::new("etcd")
            .arg("--name")
            .arg("testkit")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("testkit={peer}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start etcd ({e}): install Debian's etcd-server (scripts/test does)")
            });
        self.child = Some(child);
        if !wait_for_port(self.addr(), Duration::from_secs(20)) {
            let log = std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default();
            panic!("etcd did not answer on {} within 20 s; its log:\n{log}", self.addr());
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
