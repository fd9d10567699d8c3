//! [`SwitchBackend`]: where a switch is carried out, and who may carry it out.
//! Two backends share the audited path (leadership, intent row, fenced table
//! write, outcome, reconcile):
//! [`AtomicSwitch`](crate::AtomicSwitch) over etcd (features `etcd` + `sql`)
//! and [`LocalSwitch`](crate::LocalSwitch) over an in-process
//! `cellrouter::TableStore` (feature `sql`), for a single-process control
//! plane. The [`Controller`](crate::Controller) drives either.

use std::num::NonZeroUsize;
use std::time::Duration;

use cellrouter::{CellState, RoutingTable};
use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::audit::{AuditLog, AuditRecord, AuditStatus, epoch_ms};
use crate::change::{Change, SwitchRequest};
use crate::error::Error;

/// A leadership term: the fencing token of one tenure. Terms only grow in a
/// given store (a new leader always holds a greater term), and a switch
/// commits only while its term is the store's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Term(u64);

impl Term {
    /// A term from its number.
    pub fn new(n: u64) -> Self {
        Term(n)
    }

    /// The term's number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A prepared switch: its intent row is written, the table not yet.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub(crate) record: AuditRecord,
    pub(crate) table: RoutingTable,
    /// What the store must still hold at the write: the etcd mod revision of
    /// the table key, or the local table version.
    pub(crate) expected: i64,
    pub(crate) term: Term,
    /// The drain cap is not applied (a forced switch).
    pub(crate) forced: bool,
}

impl Prepared {
    /// The intent row.
    pub fn record(&self) -> &AuditRecord {
        &self.record
    }

    /// The table the write will store.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }

    /// The leadership term the write is fenced with.
    pub fn term(&self) -> Term {
        self.term
    }
}

/// The result of [`SwitchBackend::prepare`].
#[derive(Debug, Clone)]
pub enum Prepare {
    /// The change is already in force: nothing written, no audit row.
    InForce {
        /// The table version in force.
        version: u64,
    },
    /// The intent row is written.
    Intent(Box<Prepared>),
}

/// Cells not `active` in `table`.
pub(crate) fn drained_cells(table: &RoutingTable) -> usize {
    table.cells.iter().filter(|c| c.state != CellState::Active).count()
}

/// Refuses a change that takes `after` above `cap` drained cells when it
/// drains more than `before` had (failbacks always pass).
pub(crate) fn check_cap(before: &RoutingTable, after: &RoutingTable, cap: Option<NonZeroUsize>) -> Result<(), Error> {
    let Some(cap) = cap else { return Ok(()) };
    let (was, now) = (drained_cells(before), drained_cells(after));
    if now > was && now > cap.get() {
        return Err(Error::DrainCap { drained: was, cap: cap.get() });
    }
    Ok(())
}

/// A change's `(from, to)` states, as `Change::apply` reports them.
pub(crate) type FromTo = (String, String);

/// The table `req` makes of `stored` (version + 1, validated, within `cap`
/// drained cells) and the change's `(from, to)`; `None` when the change is
/// already in force. Every backend's prepare step starts here.
pub(crate) fn next_table(
    stored: &RoutingTable,
    req: &SwitchRequest,
    cap: Option<NonZeroUsize>,
) -> Result<Option<(RoutingTable, FromTo)>, Error> {
    let mut table = stored.clone();
    let change = req.change.apply(&mut table)?;
    if change.0 == change.1 {
        return Ok(None);
    }
    table.version = stored.version + 1;
    table.validate().map_err(cellrouter::Error::from)?;
    check_cap(stored, &table, if req.force { None } else { cap })?;
    Ok(Some((table, change)))
}

/// The intent row of a switch from `before` to `after`.
pub(crate) fn intent_record(
    tx_id: String,
    req: &SwitchRequest,
    (from, to): FromTo,
    actor: &str,
    before: u64,
    after: u64,
) -> AuditRecord {
    AuditRecord {
        tx_id,
        flow: req.change.flow().to_string(),
        from,
        to,
        reason: if req.force { format!("{} {}", req.reason, crate::audit::FORCED) } else { req.reason.clone() },
        rule: req.rule.clone(),
        actor: actor.to_string(),
        status: AuditStatus::Intent,
        version_before: before,
        version_after: after,
        detected_at_ms: epoch_ms(req.detected_at),
        decided_at_ms: epoch_ms(req.decided_at),
        intent_at_ms: epoch_ms(cellclock::now()),
        committed_at_ms: None,
        applied_at_ms: None,
        note: None,
    }
}

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

/// A place that carries out audited routing-table switches, one leader at a
/// time.
///
/// Every implementation keeps the same contract:
///
/// - **leadership**: [`campaign`](Self::campaign) waits until this backend
///   holds the store's leadership and returns its [`Term`];
///   [`renew`](Self::renew) extends it (an error once it is lost);
///   [`resign`](Self::resign) gives it up. A leader that stops renewing loses
///   the leadership after [`lease_ttl`](Self::lease_ttl), and another
///   candidate takes over.
/// - **steps** ([`switch`](Self::switch) runs them in order):
///   [`prepare`](Self::prepare) writes the audit row as an intent before the
///   table is touched (a change already in force is [`Prepare::InForce`],
///   with no row; a drain beyond the cap of the *stored* table is
///   [`Error::DrainCap`], with no row); [`write_table`](Self::write_table)
///   writes the table only if the term is still the store's leadership and the
///   table is still the one read (compare on version plus term), else marks
///   the intent `rolled_back` and fails; [`record_outcome`](Self::record_outcome)
///   marks it `committed`.
/// - **reconcile**: settles intents left between the steps (a crash, a lost
///   connection): `committed` when the table write happened, `rolled_back`
///   when it did not. It needs the leadership ([`Error::NotLeader`]
///   otherwise): a follower could roll back the leader's intent in flight.
///   A deposed leader's intent is safe to settle, since its write is fenced.
///
/// Each switch leaves exactly one audit row: written once as the intent,
/// settled once (`committed`, then maybe `applied`, or `rolled_back`, by the
/// switch itself or by a reconcile); the committed rows' table versions grow
/// strictly, one step each.
///
/// The steps are the seam wrappers use (a metrics wrapper, a fault injector
/// in tests): a wrapper that implements them and leaves `switch` alone has
/// its steps run by `switch`. Object safe: `Arc<dyn SwitchBackend>` works.
pub trait SwitchBackend: Send + Sync + 'static {
    /// Waits until this backend holds the leadership; returns its term.
    fn campaign(&self) -> BoxFuture<'_, Result<Term, Error>>;

    /// Extends the leadership; [`Error::NotLeader`] once it is lost.
    fn renew(&self) -> BoxFuture<'_, Result<Term, Error>>;

    /// Gives the leadership up (no-op when not held).
    fn resign(&self) -> BoxFuture<'_, Result<(), Error>>;

    /// How long a leader that stops renewing keeps the leadership.
    fn lease_ttl(&self) -> Duration;

    /// Step 1: reads the stored table, applies the change, checks the drain
    /// cap and writes the intent row. Needs the leadership.
    fn prepare<'a>(&'a self, req: &'a SwitchRequest) -> BoxFuture<'a, Result<Prepare, Error>>;

    /// Step 2: the fenced table write; returns when it committed (ms since the
    /// Unix epoch). On a refusal the intent is rolled back.
    fn write_table<'a>(&'a self, prepared: &'a Prepared) -> BoxFuture<'a, Result<u64, Error>>;

    /// Step 3: the intent becomes `committed` at `committed_at_ms`.
    fn record_outcome(&self, prepared: Prepared, committed_at_ms: u64) -> BoxFuture<'_, Result<AuditRecord, Error>>;

    /// Performs the switch: [`prepare`](Self::prepare),
    /// [`write_table`](Self::write_table), [`record_outcome`](Self::record_outcome).
    fn switch(&self, req: SwitchRequest) -> BoxFuture<'_, Result<SwitchOutcome, Error>> {
        Box::pin(async move {
            let prepared = match self.prepare(&req).await? {
                Prepare::InForce { version } => return Ok(SwitchOutcome::NoChange { version }),
                Prepare::Intent(p) => *p,
            };
            let at = self.write_table(&prepared).await?;
            let record = self.record_outcome(prepared, at).await?;
            Ok(SwitchOutcome::Committed(Box::new(record)))
        })
    }

    /// What `change` would do, without writing anything.
    fn dry_run<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<DryRun, Error>>;

    /// Settles intents left by a crash: `committed` when the table write
    /// happened, `rolled_back` when it did not.
    fn reconcile(&self) -> BoxFuture<'_, Result<ReconcileReport, Error>>;

    /// The audit log rows go to.
    fn audit(&self) -> &AuditLog;
}

impl<B: SwitchBackend + ?Sized> SwitchBackend for std::sync::Arc<B> {
    fn campaign(&self) -> BoxFuture<'_, Result<Term, Error>> {
        (**self).campaign()
    }

    fn renew(&self) -> BoxFuture<'_, Result<Term, Error>> {
        (**self).renew()
    }

    fn resign(&self) -> BoxFuture<'_, Result<(), Error>> {
        (**self).resign()
    }

    fn lease_ttl(&self) -> Duration {
        (**self).lease_ttl()
    }

    fn prepare<'a>(&'a self, req: &'a SwitchRequest) -> BoxFuture<'a, Result<Prepare, Error>> {
        (**self).prepare(req)
    }

    fn write_table<'a>(&'a self, prepared: &'a Prepared) -> BoxFuture<'a, Result<u64, Error>> {
        (**self).write_table(prepared)
    }

    fn record_outcome(&self, prepared: Prepared, committed_at_ms: u64) -> BoxFuture<'_, Result<AuditRecord, Error>> {
        (**self).record_outcome(prepared, committed_at_ms)
    }

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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use cellrouter::Cell;
    use proptest::prelude::*;

    use super::*;

    fn table(n: usize) -> RoutingTable {
        let eu: cellctx::CellId = "eu".parse().unwrap();
        let cells = (0..n).map(|i| Cell::new(format!("c{i}").parse().unwrap(), eu.clone(), "http://127.0.0.1:1")).collect();
        RoutingTable::uniform(eu, cells, 64)
    }

    proptest! {
        /// Whatever the order of drains and failbacks, the accepted tables
        /// never hold more drained cells than the cap, and a failback is
        /// never refused.
        #[test]
        fn the_cap_holds_over_any_sequence_of_changes(
            n in 2usize..6,
            cap in 1usize..4,
            steps in proptest::collection::vec((any::<bool>(), 0usize..6), 0..40),
        ) {
            let cap = NonZeroUsize::new(cap).unwrap();
            let mut stored = table(n);
            for (drain, i) in steps {
                let cell: cellctx::CellId = format!("c{}", i % n).parse().unwrap();
                let change = if drain { Change::Drain(cell) } else { Change::Failback(cell) };
                let mut next = stored.clone();
                change.apply(&mut next).unwrap();
                match check_cap(&stored, &next, Some(cap)) {
                    Ok(()) => stored = next,
                    Err(e) => {
                        prop_assert!(drain, "a failback was refused: {e}");
                        let refused = matches!(e, Error::DrainCap { drained, cap: c } if drained == c && c == cap.get());
                        prop_assert!(refused, "unexpected refusal: {}", e);
                    }
                }
                prop_assert!(drained_cells(&stored) <= cap.get());
            }
        }
    }
}
