//! The run's child processes other than the cells (controllers, probers, the
//! gateway), all started from this binary's subcommands, each with its log
//! in the run directory; killed when the run ends. The cells have their own
//! [`crate::cells::Cells`] (kill, restart, pause).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::DemoError;

/// What every role process of a run is started with.
#[derive(Debug, Clone)]
pub(crate) struct RoleLaunch {
    /// This binary.
    pub(crate) exe: PathBuf,
    /// The run's config file.
    pub(crate) config: PathBuf,
    /// The run id.
    pub(crate) run_id: String,
    /// Where the logs go.
    pub(crate) run_dir: PathBuf,
}

impl RoleLaunch {
    /// `demo <role> <args>` with the run's config and id, exiting with this
    /// process, its stderr appended to `log`.
    pub(crate) fn spawn(&self, role: &str, args: &[String], log: &Path) -> Result<Child, DemoError> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg(role).arg("--config").arg(&self.config).args(["--run-id", &self.run_id, "--exit-with-parent"]).args(args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        Ok(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?)
    }
}

/// The control plane's and the gateway's processes.
#[derive(Debug)]
pub(crate) struct Roles {
    launch: RoleLaunch,
    procs: Vec<(String, Child)>,
}

impl Roles {
    /// No process yet.
    pub(crate) fn new(launch: RoleLaunch) -> Self {
        Roles { launch, procs: Vec::new() }
    }

    /// Starts `demo <role> <args>` as `name` (its log: `<run dir>/<name>.log`).
    pub(crate) fn spawn(&mut self, name: &str, role: &str, args: &[String]) -> Result<(), DemoError> {
        let child = self.launch.spawn(role, args, &self.log(name))?;
        self.procs.push((name.to_string(), child));
        Ok(())
    }

    /// The log file of `name`.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.launch.run_dir.join(format!("{name}.log"))
    }

    /// The first process that exited, with its status (a role must not).
    pub(crate) fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.procs.iter_mut().find_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (n.clone(), s)))
    }

    /// Kills every process.
    pub(crate) fn shutdown(&mut self) {
        for (_, mut c) in self.procs.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        self.shutdown();
    }
}
