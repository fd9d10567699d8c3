//! Test support: a fault-injecting [`SwitchBackend`] wrapper. It implements
//! the backend's steps by delegating to the wrapped backend and leaves
//! `switch` to the trait, so the production sequence of steps runs through
//! it; at a chosen step it fails once, crashes (the step and every later
//! renewal never return: the process is gone) or pauses (the step and the
//! renewals wait until released, as a stopped process would).
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;
use std::time::Duration;

use failover::audit::{AuditLog, AuditRecord};
use failover::{Change, DryRun, Error, Prepare, Prepared, ReconcileReport, SwitchBackend, SwitchRequest, Term};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

/// A step of a switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Before the table write (the intent row exists).
    WriteTable,
    /// After the table write, before the outcome row.
    RecordOutcome,
}

/// What happens at the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The step fails once, without running.
    FailOnce(At),
    /// The process dies at the step: it never returns, renewals stop.
    Crash(At),
    /// The process stops at the step until [`Faulty::release`]; renewals too.
    Pause(At),
}

/// The wrapper.
pub struct Faulty<B> {
    inner: B,
    fault: Mutex<Option<Fault>>,
    stopped: watch::Sender<Option<bool>>, // None: running; Some(true): paused; Some(false): crashed
}

impl<B: SwitchBackend> Faulty<B> {
    pub fn new(inner: B, fault: Fault) -> Self {
        Faulty { inner, fault: Mutex::new(Some(fault)), stopped: watch::channel(None).0 }
    }

    /// Ends a pause.
    pub fn release(&self) {
        self.stopped.send_replace(None);
    }

    /// Whether the fault has struck (and the process is stopped).
    pub fn stopped(&self) -> watch::Receiver<Option<bool>> {
        self.stopped.subscribe()
    }

    async fn wait_running(&self) {
        let mut rx = self.stopped.subscribe();
        loop {
            let state = *rx.borrow_and_update();
            match state {
                None => return,
                Some(false) => std::future::pending::<()>().await,
                Some(true) => {}
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Runs the fault planned for `at`: `Err` for a one-off failure.
    async fn strike(&self, at: At) -> Result<(), Error> {
        let fault = {
            let mut f = self.fault.lock().unwrap();
            match *f {
                Some(Fault::FailOnce(a) | Fault::Crash(a) | Fault::Pause(a)) if a == at => f.take(),
                _ => None,
            }
        };
        match fault {
            Some(Fault::FailOnce(_)) => Err(Error::Config(format!("injected failure at {at:?}"))),
            Some(Fault::Crash(_)) => {
                self.stopped.send_replace(Some(false));
                std::future::pending().await
            }
            Some(Fault::Pause(_)) => {
                self.stopped.send_replace(Some(true));
                self.wait_running().await;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl<B: SwitchBackend> SwitchBackend for Faulty<B> {
    fn campaign(&self) -> BoxFuture<'_, Result<Term, Error>> {
        Box::pin(async move {
            self.wait_running().await;
            self.inner.campaign().await
        })
    }

    fn renew(&self) -> BoxFuture<'_, Result<Term, Error>> {
        Box::pin(async move {
            self.wait_running().await;
            self.inner.renew().await
        })
    }

    fn resign(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.inner.resign()
    }

    fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl()
    }

    fn prepare<'a>(&'a self, req: &'a SwitchRequest) -> BoxFuture<'a, Result<Prepare, Error>> {
        self.inner.prepare(req)
    }

    fn write_table<'a>(&'a self, prepared: &'a Prepared) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(async move {
            self.strike(At::WriteTable).await?;
            self.inner.write_table(prepared).await
        })
    }

    fn record_outcome(&self, prepared: Prepared, committed_at_ms: u64) -> BoxFuture<'_, Result<AuditRecord, Error>> {
        Box::pin(async move {
            self.strike(At::RecordOutcome).await?;
            self.inner.record_outcome(prepared, committed_at_ms).await
        })
    }

    fn dry_run<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<DryRun, Error>> {
        self.inner.dry_run(change)
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<ReconcileReport, Error>> {
        Box::pin(async move {
            self.wait_running().await;
            self.inner.reconcile().await
        })
    }

    fn audit(&self) -> &AuditLog {
        self.inner.audit()
    }
}
