//! [`LocalSwitch`]: the audited switch over an in-process
//! `cellrouter::TableStore`, for a single-process control plane (tests,
//! demos, embedded routers) that has no etcd.
//!
//! See [`LocalSwitch`].

use std::sync::Arc;
use std::time::SystemTime;

use cellrouter::{RoutingTable, TableStore};
use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

use crate::audit::{AuditLog, AuditRecord, AuditStatus, epoch_ms};
use crate::backend::{DryRun, ReconcileReport, SwitchBackend, SwitchOutcome};
use crate::change::{Change, SwitchRequest, state_name};
use crate::error::Error;

/// The audited switch over an in-process table store.
///
/// The same steps as [`AtomicSwitch`](crate::AtomicSwitch), with a process
/// mutex in place of the etcd lock and the store's version check in place of
/// the compare-on-revision transaction:
///
/// 1. **lock**: one switch at a time in this process.
/// 2. **prepare**: read the table in force, apply the change, validate; a change
///    already in force is [`SwitchOutcome::NoChange`]. Otherwise write the
///    audit row as an **intent**.
/// 3. **commit**: store the new table (version + 1). The store refuses a version
///    that is not above the one in force, so a concurrent writer's table is never
///    overwritten: the intent is rolled back and the call fails with
///    [`Error::Conflict`].
/// 4. **record**: the intent becomes `committed`.
///
/// [`reconcile`](LocalSwitch::reconcile) settles intents left by a crash: the
/// switch happened when the table in force is at the row's version or later
/// and shows the row's target state; otherwise it is rolled back. Give each
/// local control plane its own audit table: reconcile settles every intent in it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use cellctx::CellId;
/// use cellrouter::{Cell, RoutingTable, TableStore};
/// use failover::audit::AuditLog;
/// use failover::{Change, LocalSwitch, SwitchOutcome, SwitchRequest};
///
/// let (a, b, eu): (CellId, CellId, CellId) = ("a".parse()?, "b".parse()?, "eu".parse()?);
/// let mut cell_a = Cell::new(a.clone(), eu.clone(), "http://127.0.0.1:1");
/// cell_a.failover = vec![b.clone()];
/// let table = RoutingTable::uniform(eu.clone(), vec![cell_a, Cell::new(b, eu, "http://127.0.0.1:2")], 64);
/// let store = TableStore::with_table(table)?;
/// let dir = tempfile::tempdir()?;
/// let url = format!("sqlite://{}?mode=rwc", dir.path().join("audit.db").display());
/// let audit = AuditLog::connect(&url, "failover_audit").await?;
/// let switch = LocalSwitch::new(store.clone(), audit, idgen::Generator::try_new(idgen::Layout::seed(), 0, 1)?);
///
/// let SwitchOutcome::Committed(row) = switch.switch(SwitchRequest::new(Change::Drain(a))).await? else {
///     unreachable!()
/// };
/// assert_eq!((row.from.as_str(), row.to.as_str()), ("state=active", "state=down"));
/// assert_eq!((row.version_before, row.version_after), (1, 2));
/// assert_eq!(store.version(), Some(2));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LocalSwitch {
    store: TableStore,
    audit: AuditLog,
    ids: Arc<idgen::Generator>,
    actor: String,
    lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for LocalSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSwitch")
            .field("store", &self.store)
            .field("audit", &self.audit.table())
            .field("actor", &self.actor)
            .finish()
    }
}

impl LocalSwitch {
    /// A switch writing `store`, auditing into `audit`, with tx ids from `ids`
    /// (actor `failover`).
    pub fn new(store: TableStore, audit: AuditLog, ids: idgen::Generator) -> Self {
        LocalSwitch { store, audit, ids: Arc::new(ids), actor: "failover".into(), lock: Arc::new(Mutex::new(())) }
    }

    /// Sets the actor written in audit rows.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// The table store written.
    pub fn store(&self) -> &TableStore {
        &self.store
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    fn read_table(&self) -> Result<RoutingTable, Error> {
        self.store.current().map(|t| t.table().clone()).ok_or_else(|| Error::NoTable("local table store".into()))
    }

    /// What `change` would do, without writing anything.
    pub async fn dry_run(&self, change: &Change) -> Result<DryRun, Error> {
        let mut table = self.read_table()?;
        let before = table.version;
        let (from, to) = change.apply(&mut table)?;
        let changes = from != to;
        if changes {
            table.version = before + 1;
        }
        table.validate().map_err(cellrouter::Error::from)?;
        Ok(DryRun {
            flow: change.flow().to_string(),
            from,
            to,
            changes,
            version_before: before,
            version_after: table.version,
            table,
        })
    }

    /// Lock, intent, store, commit: the whole switch.
    pub async fn switch(&self, req: SwitchRequest) -> Result<SwitchOutcome, Error> {
        let _guard = self.lock.lock().await;
        let mut table = self.read_table()?;
        let before = table.version;
        let (from, to) = req.change.apply(&mut table)?;
        if from == to {
            return Ok(SwitchOutcome::NoChange { version: before });
        }
        table.version = before + 1;
        table.validate().map_err(cellrouter::Error::from)?;
        let mut record = AuditRecord {
            tx_id: self.ids.next_id()?.to_string(),
            flow: req.change.flow().to_string(),
            from,
            to,
            reason: req.reason.clone(),
            rule: req.rule.clone(),
            actor: self.actor.clone(),
            status: AuditStatus::Intent,
            version_before: before,
            version_after: table.version,
            detected_at_ms: epoch_ms(req.detected_at),
            decided_at_ms: epoch_ms(req.decided_at),
            intent_at_ms: epoch_ms(SystemTime::now()),
            committed_at_ms: None,
            applied_at_ms: None,
            note: None,
        };
        self.audit.insert_intent(&record).await?;
        if let Err(e) = self.store.store(table) {
            let moved = self.store.version() != Some(before);
            let note = if moved {
                "routing table changed concurrently; nothing written".to_string()
            } else {
                format!("table store refused the table: {e}")
            };
            self.audit.mark_rolled_back(&record.tx_id, &note).await?;
            tracing::warn!(tx = %record.tx_id, flow = %record.flow, %note, "switch not committed");
            return Err(if moved { Error::Conflict { expected: before as i64 } } else { e.into() });
        }
        let at = epoch_ms(SystemTime::now());
        self.audit.mark_committed(&record.tx_id, at, None).await?;
        tracing::info!(tx = %record.tx_id, flow = %record.flow, from = %record.from, to = %record.to, version = record.version_after, "switch committed");
        record.status = AuditStatus::Committed;
        record.committed_at_ms = Some(at);
        Ok(SwitchOutcome::Committed(Box::new(record)))
    }

    /// Settles every intent of the audit table against the table in force
    /// (see [`LocalSwitch`]). Run it on start, after the store holds
    /// its first table.
    pub async fn reconcile(&self) -> Result<ReconcileReport, Error> {
        let _guard = self.lock.lock().await;
        let mut report = ReconcileReport::default();
        let current = self.store.current();
        for row in self.audit.pending().await? {
            let happened = current.as_ref().is_some_and(|t| {
                t.version() >= row.version_after
                    && row.flow.parse().ok().and_then(|c| t.cell(&c)).is_some_and(|cell| {
                        let state = format!("state={}", state_name(cell.state));
                        let weight = format!("weight={}", cell.weight);
                        row.to == state || row.to == weight
                    })
            });
            let committed_at = happened.then_some(row.intent_at_ms);
            report.settle(&self.audit, &self.actor, &row.tx_id, committed_at).await?;
        }
        Ok(report)
    }
}

impl SwitchBackend for LocalSwitch {
    fn switch(&self, req: SwitchRequest) -> BoxFuture<'_, Result<SwitchOutcome, Error>> {
        Box::pin(LocalSwitch::switch(self, req))
    }

    fn dry_run<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<DryRun, Error>> {
        Box::pin(LocalSwitch::dry_run(self, change))
    }

    fn reconcile(&self) -> BoxFuture<'_, Result<ReconcileReport, Error>> {
        Box::pin(LocalSwitch::reconcile(self))
    }

    fn audit(&self) -> &AuditLog {
        &self.audit
    }
}
