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
    /// A cell's own `--kafka` instead of `kafka` (the campaign's proxy on its link).
    pub(crate) kafka_by_cell: std::collections::BTreeMap<String, String>,
    pub(crate) topic: String,
    /// The key the cells verify the gateway's signed hops with.
    pub(crate) hop_key_file: PathBuf,
    /// The cells' `DEMO_REDIS_URL` instead of this process's (the campaign's
    /// proxy in front of Redis).
    pub(crate) redis_url: Option<String>,
}

impl Launch {
    fn spawn(&self, id: &str, p: &Proc) -> Result<Child, DemoError> {
        let dir = self.role.run_dir.join(id);
        std::fs::create_dir_all(&dir)?;
        let ports: Vec<String> = p.ports.iter().map(u16::to_string).collect();
        let path = |p: &Path| p.display().to_string();
        let mut args = vec![
            "--id".to_string(),
            id.to_string(),
            "--dir".into(),
            path(&dir),
            "--ports".into(),
            ports.join(","),
            "--kafka".into(),
            self.kafka_by_cell.get(id).unwrap_or(&self.kafka).clone(),
            "--topic".into(),
            self.topic.clone(),
            "--hop-key-file".into(),
            path(&self.hop_key_file),
            "--worker".into(),
            p.worker.to_string(),
        ];
        if let Some(t) = &self.table_url {
            args.extend(["--table-url".to_string(), t.clone()]);
        }
        let env: Vec<(&str, &str)> = self.redis_url.iter().map(|u| ("DEMO_REDIS_URL", u.as_str())).collect();
        self.role.spawn_with_env("cell", &args, &dir.join(log_name(p.index)), &env)
    }
}

/// The log file of a cell's process `index` in the cell's directory.
pub(crate) fn log_name(index: usize) -> String {
    match index {
        0 => "cell.log".into(),
        i => format!("cell-{i}.log"),
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
    /// The process of the cell acted on, when not all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) process: Option<usize>,
}

/// One process of a cell: its share of the cell's instance ports and its
/// idgen worker id.
#[derive(Debug)]
struct Proc {
    index: usize,
    ports: Vec<u16>,
    worker: u32,
    child: Option<Child>,
    paused: bool,
}

/// One cell: its instance ports, served by its processes (port `i` by
/// process `i % processes`), all sharing the cell's storage.
#[derive(Debug)]
struct Cell {
    id: String,
    ports: Vec<u16>,
    procs: Vec<Proc>,
}

/// Sends `signal` to `child`.
pub(crate) fn signal(child: &Child, signal: rustix::process::Signal) -> Result<(), DemoError> {
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| DemoError::Other(format!("pid {} out of range", child.id())))?;
    rustix::process::kill_process(pid, signal).map_err(|e| DemoError::Io(e.into()))
}

/// Every cell's processes.
#[derive(Debug)]
pub(crate) struct Cells {
    launch: Launch,
    cells: Vec<Cell>,
    t0: Instant,
    events: Vec<CellEvent>,
}

/// Which processes of a cell an act is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    All,
    One(usize),
}

impl Which {
    fn event(self) -> Option<usize> {
        match self {
            Which::All => None,
            Which::One(i) => Some(i),
        }
    }
}

impl Cells {
    /// Starts every cell (`(id, ports)`) as `processes` processes each (at
    /// least 1, at most the cell's instance count); process `k` of the cell
    /// at position `n` in the list takes idgen worker id `n * processes + k`.
    pub(crate) fn spawn(launch: Launch, cells: Vec<(String, Vec<u16>)>, processes: usize) -> Result<Self, DemoError> {
        if processes == 0 || cells.iter().any(|(_, ports)| ports.len() < processes) {
            return Err(DemoError::Config(format!("{processes} processes per cell: at least 1, and at most the instances of every cell")));
        }
        let mut this = Cells { launch, cells: Vec::new(), t0: Instant::now(), events: Vec::new() };
        for (n, (id, ports)) in cells.into_iter().enumerate() {
            let procs = (0..processes)
                .map(|index| Proc {
                    index,
                    ports: ports.iter().skip(index).step_by(processes).copied().collect(),
                    worker: u32::try_from(n * processes + index).unwrap_or(u32::MAX),
                    child: None,
                    paused: false,
                })
                .collect();
            // pushed first: a failed spawn still leaves the earlier ones to shut down
            this.cells.push(Cell { id, ports, procs });
            let c = this.cells.len() - 1;
            for k in 0..processes {
                let child = this.launch.spawn(&this.cells[c].id, &this.cells[c].procs[k])?;
                this.cells[c].procs[k].child = Some(child);
            }
        }
        Ok(this)
    }

    /// Event times count from `t0` (the start of the load).
    pub(crate) fn start_clock(&mut self, t0: Instant) {
        self.t0 = t0;
    }

    fn cell_mut(&mut self, id: &str) -> Result<&mut Cell, DemoError> {
        self.cells.iter_mut().find(|c| c.id == id).ok_or_else(|| DemoError::UnknownCell(id.to_string()))
    }

    fn event(&mut self, cell: &str, action: Action, which: Which) -> u64 {
        let at_ms = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.events.push(CellEvent { at_ms, cell: cell.to_string(), action, process: which.event() });
        at_ms
    }

    /// The processes `which` of cell `id` (an unknown process index is an unknown cell).
    fn procs_mut(&mut self, id: &str, which: Which) -> Result<Vec<&mut Proc>, DemoError> {
        let c = self.cell_mut(id)?;
        let procs: Vec<&mut Proc> = c.procs.iter_mut().filter(|p| which == Which::All || which == Which::One(p.index)).collect();
        if procs.is_empty() {
            return Err(DemoError::UnknownCell(format!("{id}/{}", which.event().unwrap_or(0))));
        }
        Ok(procs)
    }

    fn kill_which(&mut self, id: &str, which: Which) -> Result<u64, DemoError> {
        let mut procs = self.procs_mut(id, which)?;
        if procs.iter().all(|p| p.child.is_none()) {
            return Err(DemoError::CellAlready { cell: id.to_string(), state: "down" });
        }
        let mut reap = Vec::new();
        for p in procs.iter_mut() {
            if let Some(mut child) = p.child.take() {
                if let Err(e) = child.kill() {
                    p.child = Some(child);
                    return Err(e.into());
                }
                p.paused = false;
                reap.push(child);
            }
        }
        // the cell stops serving at the signal; reaping it may take longer
        let at_ms = self.event(id, Action::Kill, which);
        for mut child in reap {
            let _ = child.wait();
        }
        Ok(at_ms)
    }

    fn restart_which(&mut self, id: &str, which: Which) -> Result<u64, DemoError> {
        let launch = self.launch.clone();
        let mut procs = self.procs_mut(id, which)?;
        if procs.iter().all(|p| p.child.is_some()) {
            return Err(DemoError::CellAlready { cell: id.to_string(), state: "running" });
        }
        for p in procs.iter_mut().filter(|p| p.child.is_none()) {
            p.child = Some(launch.spawn(id, p)?);
            p.paused = false;
        }
        Ok(self.event(id, Action::Restart, which))
    }

    fn pause_which(&mut self, id: &str, which: Which) -> Result<u64, DemoError> {
        let mut procs = self.procs_mut(id, which)?;
        let already = if procs.iter().any(|p| p.child.is_none()) {
            Some("down")
        } else if procs.iter().any(|p| p.paused) {
            Some("paused")
        } else {
            None
        };
        if let Some(state) = already {
            return Err(DemoError::CellAlready { cell: id.to_string(), state });
        }
        for p in procs.iter_mut() {
            if let Some(c) = &p.child {
                signal(c, rustix::process::Signal::STOP)?;
            }
            p.paused = true;
        }
        Ok(self.event(id, Action::Pause, which))
    }

    fn resume_which(&mut self, id: &str, which: Which) -> Result<u64, DemoError> {
        let mut procs = self.procs_mut(id, which)?;
        if !procs.iter().any(|p| p.paused && p.child.is_some()) {
            let state = if procs.iter().all(|p| p.child.is_none()) { "down" } else { "running" };
            return Err(DemoError::CellAlready { cell: id.to_string(), state });
        }
        for p in procs.iter_mut().filter(|p| p.paused) {
            if let Some(c) = &p.child {
                signal(c, rustix::process::Signal::CONT)?;
            }
            p.paused = false;
        }
        Ok(self.event(id, Action::Resume, which))
    }

    /// Kills every process of `id` with SIGKILL; returns the event's time.
    pub(crate) fn kill(&mut self, id: &str) -> Result<u64, DemoError> {
        self.kill_which(id, Which::All)
    }

    /// Kills process `index` of `id` with SIGKILL.
    pub(crate) fn kill_process(&mut self, id: &str, index: usize) -> Result<u64, DemoError> {
        self.kill_which(id, Which::One(index))
    }

    /// Starts every dead process of `id` again on its ports; returns the event's time.
    pub(crate) fn restart(&mut self, id: &str) -> Result<u64, DemoError> {
        self.restart_which(id, Which::All)
    }

    /// Starts process `index` of `id` again.
    pub(crate) fn restart_process(&mut self, id: &str, index: usize) -> Result<u64, DemoError> {
        self.restart_which(id, Which::One(index))
    }

    /// Stops every process of `id` (SIGSTOP) without killing it; returns the event's time.
    pub(crate) fn pause(&mut self, id: &str) -> Result<u64, DemoError> {
        self.pause_which(id, Which::All)
    }

    /// Stops process `index` of `id`.
    pub(crate) fn pause_process(&mut self, id: &str, index: usize) -> Result<u64, DemoError> {
        self.pause_which(id, Which::One(index))
    }

    /// Lets the paused processes of `id` run again (SIGCONT); returns the event's time.
    pub(crate) fn resume(&mut self, id: &str) -> Result<u64, DemoError> {
        self.resume_which(id, Which::All)
    }

    /// Lets a paused process `index` of `id` run again.
    pub(crate) fn resume_process(&mut self, id: &str, index: usize) -> Result<u64, DemoError> {
        self.resume_which(id, Which::One(index))
    }

    /// Resumes every paused process (end of the run: they must converge).
    pub(crate) fn resume_all(&mut self) -> Result<(), DemoError> {
        let paused: Vec<String> = self.cells.iter().filter(|c| c.procs.iter().any(|p| p.paused)).map(|c| c.id.clone()).collect();
        for id in paused {
            self.resume(&id)?;
        }
        Ok(())
    }

    /// Whether a process of `id` is paused.
    pub(crate) fn paused(&self, id: &str) -> bool {
        self.cells.iter().any(|c| c.id == id && c.procs.iter().any(|p| p.paused))
    }

    /// Every cell: id, ports, every process running.
    pub(crate) fn list(&self) -> Vec<(String, Vec<u16>, bool)> {
        self.cells.iter().map(|c| (c.id.clone(), c.ports.clone(), c.procs.iter().all(|p| p.child.is_some()))).collect()
    }

    /// Every process: its replica name (`cell/index`), its first port, running.
    pub(crate) fn processes(&self) -> Vec<(String, u16, bool)> {
        self.cells
            .iter()
            .flat_map(|c| c.procs.iter().filter_map(move |p| p.ports.first().map(|port| (replica_name(&c.id, p.index), *port, p.child.is_some()))))
            .collect()
    }

    /// Where process `name` (`cell/index`) keeps its replica's state.
    pub(crate) fn state_location(&self, name: &str) -> Result<StateLocation, DemoError> {
        let (id, index) = name.split_once('/').ok_or_else(|| DemoError::UnknownCell(name.to_string()))?;
        let cell = self.cells.iter().find(|c| c.id == id).ok_or_else(|| DemoError::UnknownCell(name.to_string()))?;
        let p = cell.procs.iter().find(|p| p.index.to_string() == index).ok_or_else(|| DemoError::UnknownCell(name.to_string()))?;
        let prefix = crate::cell::table_prefix(&self.launch.role.run_id, id);
        Ok(StateLocation {
            url: crate::cell::database_url(&self.launch.role.run_dir.join(id)),
            table: crate::cell::state_table(&prefix),
            // `crdt::Replica::state_key`: the cell and the process's worker id
            key: format!("{id}/{}", p.worker),
        })
    }

    /// The kills and restarts so far.
    pub(crate) fn events(&self) -> &[CellEvent] {
        &self.events
    }

    /// Kills every process (end of the run).
    pub(crate) fn shutdown(&mut self) {
        for p in self.cells.iter_mut().flat_map(|c| c.procs.iter_mut()) {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Where a cell process keeps its replica's state.
#[derive(Debug, Clone)]
pub(crate) struct StateLocation {
    /// The cell's database.
    pub(crate) url: String,
    /// The state table (`crdt::SqlStateStore`).
    pub(crate) table: String,
    /// The replica's key in it.
    pub(crate) key: String,
}

/// The name of process `index` of `cell` in the checker's views.
pub(crate) fn replica_name(cell: &str, index: usize) -> String {
    format!("{cell}/{index}")
}

/// The cell of a replica name (`cell/index`, or a bare cell id).
pub(crate) fn cell_of(replica: &str) -> &str {
    replica.split_once('/').map_or(replica, |(c, _)| c)
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
        let launch = Launch { role, table_url: None, kafka: String::new(), kafka_by_cell: Default::default(), topic: String::new(), hop_key_file: "/nonexistent".into(), redis_url: None };
        let proc = Proc { index: 0, ports: vec![1], worker: 0, child: Some(child), paused: false };
        Cells { launch, cells: vec![Cell { id: "a".into(), ports: vec![1], procs: vec![proc] }], t0: Instant::now(), events: Vec::new() }
    }

    fn wait_for_state(cells: &Cells, want: char) {
        let child = cells.cells[0].procs[0].child.as_ref().unwrap();
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

    /// Cell "a" as two sleeping processes on ports 1 and 2.
    fn two_process_cell() -> Cells {
        let mut cells = one_sleeping_cell();
        let child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep runs");
        cells.cells[0].ports = vec![1, 2];
        cells.cells[0].procs.push(Proc { index: 1, ports: vec![2], worker: 1, child: Some(child), paused: false });
        cells
    }

    #[test]
    fn one_process_of_a_cell_is_killed_paused_and_named_on_its_own() {
        let mut cells = two_process_cell();
        assert_eq!(cells.processes(), [("a/0".to_string(), 1, true), ("a/1".to_string(), 2, true)]);
        cells.pause_process("a", 1).unwrap();
        assert!(cells.paused("a"));
        assert!(matches!(cells.pause("a"), Err(DemoError::CellAlready { state: "paused", .. })));
        cells.kill_process("a", 1).unwrap();
        assert!(!cells.paused("a"), "a killed process is not paused");
        assert_eq!(cells.processes(), [("a/0".to_string(), 1, true), ("a/1".to_string(), 2, false)]);
        assert!(!cells.list()[0].2, "a cell with a dead process is not all up");
        assert!(matches!(cells.kill_process("a", 1), Err(DemoError::CellAlready { state: "down", .. })));
        assert!(matches!(cells.kill_process("a", 2), Err(DemoError::UnknownCell(_))));
        // the whole cell: the process left
        cells.kill("a").unwrap();
        assert!(cells.processes().iter().all(|(_, _, alive)| !alive));
        let acts: Vec<(Action, Option<usize>)> = cells.events().iter().map(|e| (e.action, e.process)).collect();
        assert_eq!(acts, [(Action::Pause, Some(1)), (Action::Kill, Some(1)), (Action::Kill, None)]);
        assert_eq!((replica_name("a", 1), cell_of("a/1"), cell_of("a")), ("a/1".to_string(), "a", "a"));
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
