//! [`MariaDbServer`]: a private MariaDB with the binary log on.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for_port};

const INSTALL_DB: &str = "/usr/bin/mariadb-install-db";
const MARIADBD: &str = "/usr/sbin/mariadbd";

/// A private MariaDB on a free loopback port with a temporary data dir and the
/// binary log on (row format, GTIDs, a unique `server_id`), for tests of
/// change data capture (the shared MariaDB runs with the binlog off). Root has
/// no password; the server is killed on drop.
#[derive(Debug)]
pub struct MariaDbServer {
    dir: tempfile::TempDir,
    port: u16,
    server_id: u32,
    child: Option<Child>,
}

impl MariaDbServer {
    /// Initialises a data dir and starts the server.
    ///
    /// # Panics
    /// When `mariadb-install-db` or `mariadbd` is missing (install Debian's
    /// `mariadb-server`) or fails, or the server does not answer within 30 s.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for mariadb");
        let data = dir.path().join("data");
        // a private tmpdir: concurrent bootstraps collide on temporary table names in /tmp
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("tmpdir for mariadb");
        let out = Command::new(INSTALL_DB)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(root_user())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {INSTALL_DB} ({e}): install Debian's mariadb-server")
            });
        assert!(
            out.status.success(),
            "{INSTALL_DB} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let server_id = 10_000 + u32::from(port);
        let mut server = MariaDbServer {
            dir,
            port,
            server_id,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let log = d.join("error.log");
        let child = Command::new(MARIADBD)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()))
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("mysqld.sock").display()))
            .arg(format!("--pid-file={}", d.join("mysqld.pid").display()))
            .arg(format!("--log-error={}", log.display()))
            .arg(format!(
                "--log-bin={}",
                d.join("data").join("binlog").display()
            ))
            .arg("--binlog-format=ROW")
            .arg(format!("--server-id={}", self.server_id))
            .arg("--skip-name-resolve")
            .arg("--innodb-buffer-pool-size=16M")
            .arg("--innodb-log-file-size=8M")
            .arg("--performance-schema=OFF")
            .args(root_user())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {MARIADBD} ({e}): install Debian's mariadb-server")
            });
        self.child = Some(child);
        if !wait_for_port(self.addr(), Duration::from_secs(30)) {
            let log = read(&log);
            panic!(
                "mariadbd did not answer on {} within 30 s; its log:\n{log}",
                self.addr()
            );
        }
    }

    /// `mysql://root@127.0.0.1:PORT` (no default database).
    pub fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// The server address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's `server_id` (unique per running test server).
    pub fn server_id(&self) -> u32 {
        self.server_id
    }

    /// The server's error log so far (for failure messages).
    pub fn log(&self) -> String {
        read(&self.dir.path().join("error.log"))
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `--user=root` when running as root (mariadbd refuses root without it).
fn root_user() -> Vec<String> {
    let root = std::env::var("USER").map(|u| u == "root").unwrap_or(false)
        || Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if root {
        vec!["--user=root".to_string()]
    } else {
        Vec::new()
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
