//! The cells' child processes: spawn, kill (SIGKILL) and restart. The
//! scheduled run and the console's buttons both go through [`Cells`], so a
//! kill is the same act whoever asks for it, and every kill and restart is
//! kept as an event for the reports.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use serde::Serialize;

use crate::error::DemoError;

/// How a cell process is started.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    pub(crate) exe: PathBuf,
    pub(crate) config: PathBuf,
    pub(crate) run_dir: PathBuf,
    pub(crate) table_file: Option<PathBuf>,
    pub(crate) kafka: String,
    pub(crate) topic: String,
    pub(crate) run_id: String,
}

impl Launch {
    fn spawn(&self, id: &str, ports: &[u16]) -> Result<Child, DemoError> {
        let dir = self.run_dir.join(id);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("cell.log"))?;
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut cmd = Command::new(&self.exe);
        cmd.arg("cell")
            .args(["--id", id, "--dir"])
            .arg(&dir)
            .arg("--config")
            .arg(&self.config)
            .args(["--ports", &ports.join(","), "--kafka", &self.kafka, "--topic", &self.topic, "--run-id", &self.run_id]);
        if let Some(t) = &self.table_file {
            cmd.arg("--table-file").arg(t);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        Ok(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?)
    }
}

/// What was done to a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    /// SIGKILL.
    Kill,
    /// Started again on the same ports.
    Restart,
}

/// A kill or restart, `at_ms` since the run's clock started.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct CellEvent {
    pub(crate) at_ms: u64,
    pub(crate) cell: String,
    pub(crate) action: Action,
}

/// One cell's process.
#[derive(Debug)]
struct Proc {
    id: String,
    ports: Vec<u16>,
    child: Option<Child>,
}

/// Every cell's process.
#[derive(Debug)]
pub(crate) struct Cells {
    launch: Launch,
    procs: Vec<Proc>,
    t0: Instant,
    events: Vec<CellEvent>,
}

impl Cells {
    /// Starts every cell (`(id, ports)`).
    pub(crate) fn spawn(launch: Launch, cells: Vec<(String, Vec<u16>)>) -> Result<Self, DemoError> {
        let mut this = Cells { launch, procs: Vec::new(), t0: Instant::now(), events: Vec::new() };
        for (id, ports) in cells {
            // pushed first: a failed spawn still leaves the earlier ones to shut down
            this.procs.push(Proc { id, ports, child: None });
            let p = this.procs.len() - 1;
            let child = this.launch.spawn(&this.procs[p].id, &this.procs[p].ports)?;
            this.procs[p].child = Some(child);
        }
        Ok(this)
    }

    /// Event times count from `t0` (the start of the load).
    pub(crate) fn start_clock(&mut self, t0: Instant) {
        self.t0 = t0;
    }

    fn proc_mut(&mut self, id: &str) -> Result<&mut Proc, DemoError> {
        self.procs.iter_mut().find(|p| p.id == id).ok_or_else(|| DemoError::UnknownCell(id.to_string()))
    }

    fn event(&mut self, cell: &str, action: Action) -> u64 {
        let at_ms = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.events.push(CellEvent { at_ms, cell: cell.to_string(), action });
        at_ms
    }

    /// Kills `id` with SIGKILL; returns the event's time.
    pub(crate) fn kill(&mut self, id: &str) -> Result<u64, DemoError> {
        let p = self.proc_mut(id)?;
        let mut child = p.child.take().ok_or_else(|| DemoError::CellAlready { cell: id.to_string(), state: "down" })?;
        if let Err(e) = child.kill() {
            p.child = Some(child);
            return Err(e.into());
        }
        // the cell stops serving at the signal; reaping it may take longer
        let at_ms = self.event(id, Action::Kill);
        let _ = child.wait();
        Ok(at_ms)
    }

    /// Starts `id` again on its ports; returns the event's time.
    pub(crate) fn restart(&mut self, id: &str) -> Result<u64, DemoError> {
        let launch = self.launch.clone();
        let p = self.proc_mut(id)?;
        if p.child.is_some() {
            return Err(DemoError::CellAlready { cell: id.to_string(), state: "running" });
        }
        p.child = Some(launch.spawn(&p.id, &p.ports)?);
        Ok(self.event(id, Action::Restart))
    }

    /// Every cell: id, ports, running.
    pub(crate) fn list(&self) -> Vec<(String, Vec<u16>, bool)> {
        self.procs.iter().map(|p| (p.id.clone(), p.ports.clone(), p.child.is_some())).collect()
    }

    /// The kills and restarts so far.
    pub(crate) fn events(&self) -> &[CellEvent] {
        &self.events
    }

    /// The run directory (cell logs).
    pub(crate) fn run_dir(&self) -> &Path {
        &self.launch.run_dir
    }

    /// Kills every cell (end of the run).
    pub(crate) fn shutdown(&mut self) {
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Cells {
    fn drop(&mut self) {
        self.shutdown();
    }
}
