//! [`SwitchBackend`]: where a switch is carried out. Two backends share the
//! audited path (intent row, table write, commit row, reconcile on start):
//! [`AtomicSwitch`](crate::AtomicSwitch) over etcd (features `etcd` + `sql`)
//! and [`LocalSwitch`](crate::LocalSwitch) over an in-process
//! `cellrouter::TableStore` (feature `sql`), for a single-process control
//! plane. The [`Controller`](crate::Controller) drives either.

use cellrouter::RoutingTable;
use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::audit::{AuditLog, AuditRecord};
use crate::change::{Change, SwitchRequest};
use crate::error::Error;

/// What a dry run would do.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    /// The flow.
    pub flow: String,
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
    /// Whether anything would change.
    pub changes: bool,
    /// Table version now.
    pub version_before: u64,
    /// Table version after the switch.
    pub version_after: u64,
    /// The table that would be written (validated).
    pub table: RoutingTable,
}

/// The result of a switch.
#[derive(Debug, Clone, PartialEq)]
pub enum SwitchOutcome {
    /// The table was written; the audit row is `committed`.
    Committed(Box<AuditRecord>),
    /// The change was already in force: nothing written, no audit row.
    NoChange {
        /// The table version in force.
        version: u64,
    },
}

/// What a backend's `reconcile` settled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Intents whose table write had happened: now `committed`.
    pub committed: Vec<String>,
    /// Intents whose table write had not happened: now `rolled_back`.
    pub rolled_back: Vec<String>,
}

impl ReconcileReport {
    /// Settles one intent row: `committed` at `committed_at_ms` when its table
    /// write is found, else `rolled_back`, with a note naming `actor`; records
    /// the row in this report when this call changed it.
    pub(crate) async fn settle(
        &mut self,
        audit: &AuditLog,
        actor: &str,
        tx_id: &str,
        committed_at_ms: Option<u64>,
    ) -> Result<(), Error> {
        match committed_at_ms {
            Some(at) => {
                let note = format!("reconciled by {actor}: table write found");
                if audit.mark_committed(tx_id, at, Some(&note)).await? {
                    self.committed.push(tx_id.to_string());
                }
            }
            None => {
                let note = format!("reconciled by {actor}: table never written");
                if audit.mark_rolled_back(tx_id, &note).await? {
                    self.rolled_back.push(tx_id.to_string());
                }
            }
        }
        Ok(())
    }
}

/// A place that carries out audited routing-table switches.
///
/// Every implementation keeps the same contract: the audit row is written as
/// an intent before the table is touched, becomes `committed` once the table
/// write succeeded (or `rolled_back` when it did not), a change already in
/// force is [`SwitchOutcome::NoChange`] with no row, and
/// [`reconcile`](Self::reconcile) (run on start) settles intents left by a
/// crash between the steps. Object safe: `Arc<dyn SwitchBackend>` works.
pub trait SwitchBackend: Send + Sync + 'static {
    /// Performs the switch (intent, table write, commit).
    fn switch(&self, req: SwitchRequest) -> BoxFuture<'_, Result<SwitchOutcome, Error>>;

    /// What `change` would do, without writing anything.
    fn dry_run<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<DryRun, Error>>;

    /// Settles intents left by a crash: `committed` when the table write
    /// happened, `rolled_back` when it did not.
    fn reconcile(&self) -> BoxFuture<'_, Result<ReconcileReport, Error>>;

    /// The audit log rows go to.
    fn audit(&self) -> &AuditLog;
}

impl<B: SwitchBackend + ?Sized> SwitchBackend for std::sync::Arc<B> {
    fn switch(&self, req: SwitchRequest) -> BoxFuture<'_, Result<SwitchOutcome, Error>> {
        (**self).switch(req)
    }

    fn dry_run<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<DryRun, Error>> {
        (**self).dry_run(change)
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<ReconcileReport, Error>> {
        (**self).reconcile()
    }

    fn audit(&self) -> &AuditLog {
        (**self).audit()
    }
}
