//! The cells' child processes: spawn, kill (SIGKILL) and restart. The
//! scheduled run and the console's buttons both go through [`Cells`], so a
//! kill is the same act whoever asks for it, and every kill and restart is
//! kept as an event for the reports.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Instant;

use serde::Serialize;

use crate::children::RoleLaunch;
use crate::error::DemoError;

/// How a cell process is started.
#[derive(Debug, Clone)]
pub(crate) struct Launch {
    /// The run's role launcher (binary, config, run id, run directory).
    pub(crate) role: RoleLaunch,
    /// A controller's table URL (`None` with etcd).
    pub(crate) table_url: Option<String>,
    pub(crate) kafka: String,
    pub(crate) topic: String,
    /// The key the cells verify the gateway's signed hops with.
    pub(crate) hop_key_file: PathBuf,
}

impl Launch {
    fn spawn(&self, id: &str, ports: &[u16]) -> Result<Child, DemoError> {
        let dir = self.role.run_dir.join(id);
        std::fs::create_dir_all(&dir)?;
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let path = |p: &Path| p.display().to_string();
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--dir".into(),
            path(&dir),
            "--ports".into(),
            ports.join(","),
            "--kafka".into(),
            self.kafka.clone(),
            "--topic".into(),
            self.topic.clone(),
            "--hop-key-file".into(),
            path(&self.hop_key_file),
        ];
        if let Some(t) = &self.table_url {
            args.extend(["--table-url".to_string(), t.clone()]);
        }
        self.role.spawn("cell", &args, &dir.join("cell.log"))
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
    /// SIGSTOP: the process hangs, its sockets still accept connections.
    Pause,
    /// SIGCONT.
    Resume,
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
    paused: bool,
}

/// Sends `signal` to `child`.
pub(crate) fn signal(child: &Child, signal: rustix::process::Signal) -> Result<(), DemoError> {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| DemoError::Other(format!("pid {} out of range", child.id())))?;
    rustix::process::kill_process(pid, signal).map_err(|e| DemoError::Io(e.into()))
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
            this.procs.push(Proc { id, ports, child: None, paused: false });
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
        p.paused = false;
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
        p.paused = false;
        Ok(self.event(id, Action::Restart))
    }

    /// Stops `id` (SIGSTOP) without killing it; returns the event's time.
    pub(crate) fn pause(&mut self, id: &str) -> Result<u64, DemoError> {
        let p = self.proc_mut(id)?;
        let already = if p.child.is_none() { Some("down") } else if p.paused { Some("paused") } else { None };
        if let Some(state) = already {
            return Err(DemoError::CellAlready { cell: id.to_string(), state });
        }
        if let Some(c) = &p.child {
            signal(c, rustix::process::Signal::STOP)?;
        }
        p.paused = true;
        Ok(self.event(id, Action::Pause))
    }

    /// Lets a paused `id` run again (SIGCONT); returns the event's time.
    pub(crate) fn resume(&mut self, id: &str) -> Result<u64, DemoError> {
        let p = self.proc_mut(id)?;
        let child = p.child.as_ref().filter(|_| p.paused);
        let Some(c) = child else {
            let state = if p.child.is_none() { "down" } else { "running" };
            return Err(DemoError::CellAlready { cell: id.to_string(), state });
        };
        signal(c, rustix::process::Signal::CONT)?;
        p.paused = false;
        Ok(self.event(id, Action::Resume))
    }

    /// Resumes every paused cell (end of the run: they must converge).
    pub(crate) fn resume_all(&mut self) -> Result<(), DemoError> {
        let paused: Vec<String> = self.procs.iter().filter(|p| p.paused).map(|p| p.id.clone()).collect();
        for id in paused {
            self.resume(&id)?;
        }
        Ok(())
    }

    /// Whether `id` is paused.
    pub(crate) fn paused(&self, id: &str) -> bool {
        self.procs.iter().any(|p| p.id == id && p.paused)
    }

    /// Every cell: id, ports, running.
    pub(crate) fn list(&self) -> Vec<(String, Vec<u16>, bool)> {
        self.procs.iter().map(|p| (p.id.clone(), p.ports.clone(), p.child.is_some())).collect()
    }

    /// The kills and restarts so far.
    pub(crate) fn events(&self) -> &[CellEvent] {
        &self.events
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// The process state letter in `/proc/<pid>/stat` (`T` stopped, `S` sleeping).
    fn state(child: &Child) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap();
        stat.rsplit_once(") ").unwrap().1.chars().next().unwrap()
    }

    fn one_sleeping_cell() -> Cells {
        let child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep runs");
        let role = RoleLaunch { exe: "/nonexistent".into(), config: "/nonexistent".into(), run_id: String::new(), run_dir: std::env::temp_dir(), clock_admin: false };
        let launch = Launch { role, table_url: None, kafka: String::new(), topic: String::new(), hop_key_file: "/nonexistent".into() };
        let proc = Proc { id: "a".into(), ports: vec![1], child: Some(child), paused: false };
        Cells { launch, procs: vec![proc], t0: Instant::now(), events: Vec::new() }
    }

    fn wait_for_state(cells: &Cells, want: char) {
        let child = cells.procs[0].child.as_ref().unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while state(child) != want {
            assert!(Instant::now() < deadline, "process never reached state {want}");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn pause_stops_the_process_and_resume_continues_it() {
        let mut cells = one_sleeping_cell();
        cells.pause("a").unwrap();
        wait_for_state(&cells, 'T');
        assert!(cells.paused("a"));
        assert!(matches!(cells.pause("a"), Err(DemoError::CellAlready { state: "paused", .. })));
        cells.resume("a").unwrap();
        wait_for_state(&cells, 'S');
        assert!(matches!(cells.resume("a"), Err(DemoError::CellAlready { state: "running", .. })));
        let actions: Vec<Action> = cells.events().iter().map(|e| e.action).collect();
        assert_eq!(actions, [Action::Pause, Action::Resume]);
    }

    #[test]
    fn a_paused_cell_can_be_killed_and_a_dead_one_not_again() {
        let mut cells = one_sleeping_cell();
        cells.pause("a").unwrap();
        cells.kill("a").unwrap();
        assert!(!cells.paused("a"));
        assert!(!cells.list()[0].2, "no process left");
        assert!(matches!(cells.kill("a"), Err(DemoError::CellAlready { state: "down", .. })));
        assert!(matches!(cells.pause("a"), Err(DemoError::CellAlready { state: "down", .. })));
        assert!(matches!(cells.kill("b"), Err(DemoError::UnknownCell(_))));
    }
}
