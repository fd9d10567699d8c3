//! The run's child processes other than the cells (controllers, probers, the
//! gateway), all started from this binary's subcommands, each with its log
//! in the run directory; killed when the run ends; the fault campaign
//! restarts one that died (with the arguments of its first start), pauses
//! and resumes them
//! by name. The cells have their own [`crate::cells::Cells`].

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
    /// Mount `POST /admin/clock` on every role and log the ids the cells
    /// issue (the fault campaign).
    pub(crate) clock_admin: bool,
}

impl RoleLaunch {
    /// `demo <role> <args>` with the run's config and id and these
    /// environment variables, exiting with this process, its stderr appended
    /// to `log`.
    pub(crate) fn spawn_with_env(&self, role: &str, args: &[String], log: &Path, env: &[(&str, &str)]) -> Result<Child, DemoError> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg(role).arg("--config").arg(&self.config).args(["--run-id", &self.run_id, "--exit-with-parent"]).args(args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        if self.clock_admin {
            cmd.env(crate::clock_admin::ENV, "1");
            // the campaign's checker reads every id the cells issued
            cmd.env(crate::cell::issued::ENV, crate::cell::issued::dir(&self.run_dir));
        }
        cmd.envs(env.iter().copied());
        Ok(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?)
    }
}

/// One role process; `child` is `None` while it is killed.
#[derive(Debug)]
struct RoleProc {
    name: String,
    role: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    paused: bool,
}

/// The control plane's and the gateway's processes.
#[derive(Debug)]
pub(crate) struct Roles {
    launch: RoleLaunch,
    procs: Vec<RoleProc>,
}

impl Roles {
    /// No process yet.
    pub(crate) fn new(launch: RoleLaunch) -> Self {
        Roles { launch, procs: Vec::new() }
    }

    /// The run's directory.
    pub(crate) fn run_dir(&self) -> &Path {
        &self.launch.run_dir
    }

    /// Starts `demo <role> <args>` as `name` (its log: `<run dir>/<name>.log`).
    pub(crate) fn spawn(&mut self, name: &str, role: &str, args: &[String]) -> Result<(), DemoError> {
        self.spawn_with_env(name, role, args, &[])
    }

    /// [`spawn`](Self::spawn) with these environment variables set (at restarts too).
    pub(crate) fn spawn_with_env(&mut self, name: &str, role: &str, args: &[String], env: &[(String, String)]) -> Result<(), DemoError> {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let child = self.launch.spawn_with_env(role, args, &self.log(name), &pairs)?;
        let (name, role, args, env) = (name.to_string(), role.to_string(), args.to_vec(), env.to_vec());
        self.procs.push(RoleProc { name, role, args, env, child: Some(child), paused: false });
        Ok(())
    }

    /// The log file of `name`.
    pub(crate) fn log(&self, name: &str) -> PathBuf {
        self.launch.run_dir.join(format!("{name}.log"))
    }

    fn proc_mut(&mut self, name: &str) -> Result<&mut RoleProc, DemoError> {
        self.procs.iter_mut().find(|p| p.name == name).ok_or_else(|| DemoError::Other(format!("no role process {name:?}")))
    }

    /// Starts a killed `name` again with the arguments of its first start.
    pub(crate) fn restart(&mut self, name: &str) -> Result<(), DemoError> {
        let launch = self.launch.clone();
        let log = self.log(name);
        let p = self.proc_mut(name)?;
        if p.child.is_some() {
            return Err(DemoError::CellAlready { cell: name.to_string(), state: "running" });
        }
        let env: Vec<(&str, &str)> = p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        p.child = Some(launch.spawn_with_env(&p.role, &p.args, &log, &env)?);
        Ok(())
    }

    /// SIGSTOP (`stop`) or SIGCONT of a running `name`.
    pub(crate) fn pause(&mut self, name: &str, stop: bool) -> Result<(), DemoError> {
        let p = self.proc_mut(name)?;
        let child = p.child.as_ref().ok_or_else(|| DemoError::CellAlready { cell: name.to_string(), state: "down" })?;
        let sig = if stop { rustix::process::Signal::STOP } else { rustix::process::Signal::CONT };
        crate::cells::signal(child, sig)?;
        p.paused = stop;
        Ok(())
    }

    /// Whether `name` has exited on its own (a kill it armed itself); it is
    /// then reaped and counts as killed, to be restarted.
    pub(crate) fn reap(&mut self, name: &str) -> Result<bool, DemoError> {
        let p = self.proc_mut(name)?;
        let exited = p.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some());
        if exited {
            p.child = None;
            p.paused = false;
        }
        Ok(exited)
    }

    /// Resumes every paused process and restarts every killed one, or one
    /// that exited (the end of a campaign's schedule); the first error is
    /// returned after all were tried.
    pub(crate) fn heal_all(&mut self) -> Result<(), DemoError> {
        let names: Vec<String> = self.procs.iter().map(|p| p.name.clone()).collect();
        for name in &names {
            self.reap(name)?;
        }
        let mut first = Ok(());
        let names: Vec<(String, bool, bool)> = self.procs.iter().map(|p| (p.name.clone(), p.child.is_none(), p.paused)).collect();
        for (name, dead, paused) in names {
            let r = if dead { self.restart(&name) } else if paused { self.pause(&name, false) } else { Ok(()) };
            if first.is_ok() {
                first = r;
            }
        }
        first
    }

    /// The first process that exited, with its status (a role must not).
    pub(crate) fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        self.procs.iter_mut().find_map(|p| p.child.as_mut()?.try_wait().ok().flatten().map(|s| (p.name.clone(), s)))
    }

    /// Kills every process.
    pub(crate) fn shutdown(&mut self) {
        for p in &mut self.procs {
            if let Some(mut c) = p.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.procs.clear();
    }
}

impl Drop for Roles {
    fn drop(&mut self) {
        self.shutdown();
    }
}
