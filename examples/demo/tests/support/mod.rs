//! Helpers shared by the integration tests.

pub(crate) mod html;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::sync::mpsc;

/// The demo binary with `args`, on its embedded defaults: every variable that
/// would point it at real servers is removed.
pub(crate) fn demo(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_demo"));
    cmd.args(args);
    for var in ["KAFKA_BOOTSTRAP", "ETCD_ENDPOINTS", "DEMO_DATABASE_URL", "DEMO_REDIS_URL", "DEMO_AUDIT_URL", "OTEL_EXPORTER_OTLP_ENDPOINT"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Each line `from` prints, on a channel (read in a thread of its own).
pub(crate) fn lines(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// An HTTP/1.0 answer.
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The header lines, lower-cased names.
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Answer {
    /// The value of header `name` (lower case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
    }
}

/// One HTTP/1.0 request to `url` (`http://host:port`) with an empty body.
pub(crate) fn http(url: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let host = url.strip_prefix("http://").unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Answer { status, head: head.to_string(), body: body.to_string() }
}

/// `GET {base}{path}` as JSON, `None` while the process does not answer (or not 200).
pub(crate) fn get_json(base: &str, path: &str) -> Option<serde_json::Value> {
    std::net::TcpStream::connect(base.strip_prefix("http://")?).ok()?;
    let a = http(base, "GET", path, &[]);
    (a.status == 200).then(|| serde_json::from_str(&a.body).ok()).flatten()
}
