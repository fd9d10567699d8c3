//! Helpers shared by the integration tests.

pub(crate) mod html;

use std::io::{BufRead, BufReader, Read};
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
