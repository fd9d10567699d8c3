//! [`LocalSwitch`]: the audited switch over an in-process
//! `cellrouter::TableStore`, for a single-process control plane (tests,
//! demos, embedded routers) that has no etcd.
//!
//! See [`LocalSwitch`].

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cellrouter::{RoutingTable, TableStore};
use futures_util::future::BoxFuture;

use crate::audit::{AuditLog, AuditRecord, AuditStatus};
use crate::backend::{DryRun, Prepare, Prepared, ReconcileReport, SwitchBackend, Term, intent_record, next_table};
use crate::change::{Change, SwitchRequest, state_name};
use crate::error::Error;
use crate::local_store::LocalStore;

/// The audited switch over an in-process table store.
///
/// The steps of [`SwitchBackend`], over a [`LocalStore`] shared by the
/// switches that take turns:
///
/// 1. **leadership**: [`campaign`](SwitchBackend::campaign) takes the store's
///    lease (TTL 10 s by default, [`with_lease_ttl`](Self::with_lease_ttl))
///    when it is free or expired, else waits for its expiry;
///    [`renew`](SwitchBackend::renew) extends it.
/// 2. **prepare**: read the table in force, apply the change, validate, check
///    the drain cap ([`with_max_drained`](Self::with_max_drained)) against it;
///    a change already in force is [`Prepare::InForce`]. Otherwise write the
///    audit row as an **intent**.
/// 3. **write**: the fenced store write (term, lease, version and cap checked
///    under the store's lock, see [`LocalStore`]) plus a commit marker; a
///    refusal rolls the intent back and fails ([`Error::NotLeader`],
///    [`Error::Conflict`], [`Error::DrainCap`]).
/// 4. **record**: the intent becomes `committed`.
///
/// [`reconcile`](LocalSwitch::reconcile) settles intents left by a crash: a
/// marker in the store means the write happened (`committed`), none means it
/// did not (`rolled_back`). Intents older than the store (a restarted
/// process) are judged from the table in force: at the row's version or later
/// and showing its target state. Give each local control plane its own audit
/// table: reconcile settles every intent in it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use cellctx::CellId;
/// use cellrouter::{Cell, RoutingTable, TableStore};
/// use failover::audit::AuditLog;
/// use failover::{Change, LocalSwitch, SwitchBackend, SwitchOutcome, SwitchRequest};
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
/// switch.campaign().await?; // one leader per store
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
    store: LocalStore,
    audit: AuditLog,
    ids: Arc<idgen::Generator>,
    actor: String,
    candidate: u64,
    ttl: Duration,
    cap: Option<NonZeroUsize>,
    held: Arc<Mutex<Option<Term>>>,
}

impl std::fmt::Debug for LocalSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSwitch")
            .field("store", &self.store.table())
            .field("audit", &self.audit.table())
            .field("actor", &self.actor)
            .field("candidate", &self.candidate)
            .field("lease_ttl", &self.ttl)
            .field("max_drained", &self.cap)
            .finish()
    }
}

impl LocalSwitch {
    /// A switch writing `store` (a [`LocalStore`] shared with the other
    /// switches of the table, or a `TableStore` for a lone controller),
    /// auditing into `audit`, with tx ids from `ids`. Defaults: actor
    /// `failover`, lease TTL 10 s, no drain cap.
    pub fn new(store: impl Into<LocalStore>, audit: AuditLog, ids: idgen::Generator) -> Self {
        let store = store.into();
        let candidate = store.candidate();
        LocalSwitch {
            store,
            audit,
            ids: Arc::new(ids),
            actor: "failover".into(),
            candidate,
            ttl: Duration::from_secs(10),
            cap: None,
            held: Arc::new(Mutex::new(None)),
        }
    }

    /// Sets the actor written in audit rows.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Sets the lease TTL: how long a leader that stopped renewing blocks the
    /// others. Invalid below 10 ms.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Result<Self, Error> {
        if ttl < Duration::from_millis(10) {
            return Err(Error::Config(format!("lease TTL {ttl:?} is below 10 ms")));
        }
        self.ttl = ttl;
        Ok(self)
    }

    /// Refuses a drain that would leave more than `cap` cells not `active`
    /// in the stored table ([`Error::DrainCap`]).
    pub fn with_max_drained(mut self, cap: NonZeroUsize) -> Self {
        self.cap = Some(cap);
        self
    }

    /// The table store written.
    pub fn store(&self) -> &TableStore {
        self.store.table()
    }

    /// The shared state (table, lease, markers).
    pub fn shared(&self) -> &LocalStore {
        &self.store
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    fn held(&self) -> Option<Term> {
        *self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_held(&self, term: Option<Term>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = term;
    }

    fn leading(&self) -> Result<Term, Error> {
        let term = self.held().ok_or_else(|| Error::NotLeader("no leadership held".into()))?;
        self.store.check(self.candidate, term)?;
        Ok(term)
    }

    fn read_table(&self) -> Result<RoutingTable, Error> {
        self.store.table().current().map(|t| t.table().clone()).ok_or_else(|| Error::NoTable("local table store".into()))
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

    async fn campaign(&self) -> Result<Term, Error> {
        loop {
            match self.store.try_acquire(self.candidate, self.ttl) {
                Ok(term) => {
                    self.set_held(Some(term));
                    tracing::info!(actor = %self.actor, %term, "local leadership acquired");
                    return Ok(term);
                }
                Err(expires) => self.store.wait_free(expires).await,
            }
        }
    }

    async fn renew(&self) -> Result<Term, Error> {
        let term = self.held().ok_or_else(|| Error::NotLeader("no leadership held".into()))?;
        let res = self.store.renew(self.candidate, term, self.ttl);
        if res.is_err() {
            self.set_held(None);
        }
        res
    }

    async fn prepare(&self, req: &SwitchRequest) -> Result<Prepare, Error> {
        let term = self.leading()?;
        let stored = self.read_table()?;
        let before = stored.version;
        let Some((table, change)) = next_table(&stored, req, self.cap)? else {
            return Ok(Prepare::InForce { version: before });
        };
        let record = intent_record(self.ids.next_id()?.to_string(), req, change, &self.actor, before, table.version);
        self.audit.insert_intent(&record).await?;
        Ok(Prepare::Intent(Box::new(Prepared { record, table, expected: before as i64, term, forced: req.force })))
    }

    async fn write_table(&self, p: &Prepared) -> Result<u64, Error> {
        let expected = u64::try_from(p.expected).unwrap_or_default();
        match self.store.commit(self.candidate, p.term, expected, p.table.clone(), &p.record.tx_id, if p.forced { None } else { self.cap }) {
            Ok(at) => Ok(at),
            Err(e) => {
                let note = format!("not written: {e}");
                self.audit.mark_rolled_back(&p.record.tx_id, &note).await?;
                tracing::warn!(tx = %p.record.tx_id, flow = %p.record.flow, %note, "switch not committed");
                Err(e)
            }
        }
    }

    async fn record_outcome(&self, p: Prepared, at: u64) -> Result<AuditRecord, Error> {
        let marked = self.audit.mark_committed(&p.record.tx_id, at, None).await?;
        self.store.forget(&p.record.tx_id);
        if !marked {
            // settled meanwhile (by a reconcile): report the stored row
            return self.audit.get(&p.record.tx_id).await?.ok_or_else(|| Error::Config(format!("audit row {} vanished", p.record.tx_id)));
        }
        tracing::info!(tx = %p.record.tx_id, flow = %p.record.flow, from = %p.record.from, to = %p.record.to, version = p.record.version_after, "switch committed");
        let mut r = p.record;
        r.status = AuditStatus::Committed;
        r.committed_at_ms = Some(at);
        Ok(r)
    }

    /// Settles every intent of the audit table (see [`LocalSwitch`]). Needs
    /// the leadership (a follower could race the leader's switch in flight);
    /// run it from the leader's task, between its switches.
    pub async fn reconcile(&self) -> Result<ReconcileReport, Error> {
        self.leading()?;
        let mut report = ReconcileReport::default();
        let current = self.store.table().current();
        for row in self.audit.pending().await? {
            let committed_at = match self.store.marker(&row.tx_id) {
                Some(at) => Some(at),
                None if row.intent_at_ms < self.store.created_ms() => {
                    let happened = current.as_ref().is_some_and(|t| {
                        t.version() >= row.version_after
                            && row.flow.parse().ok().and_then(|c| t.cell(&c)).is_some_and(|cell| {
                                row.to == format!("state={}", state_name(cell.state)) || row.to == format!("weight={}", cell.weight)
                            })
                    });
                    happened.then_some(row.intent_at_ms)
                }
                None => None,
            };
            report.settle(&self.audit, &self.actor, &row.tx_id, committed_at).await?;
            self.store.forget(&row.tx_id);
        }
        Ok(report)
    }
}

impl SwitchBackend for LocalSwitch {
    fn campaign(&self) -> BoxFuture<'_, Result<Term, Error>> {
        Box::pin(LocalSwitch::campaign(self))
    }

    fn renew(&self) -> BoxFuture<'_, Result<Term, Error>> {
        Box::pin(LocalSwitch::renew(self))
    }

    fn resign(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if let Some(term) = self.held() {
                self.store.resign(self.candidate, term);
                self.set_held(None);
            }
            Ok(())
        })
    }

    fn lease_ttl(&self) -> Duration {
        self.ttl
    }

    fn prepare<'a>(&'a self, req: &'a SwitchRequest) -> BoxFuture<'a, Result<Prepare, Error>> {
        Box::pin(LocalSwitch::prepare(self, req))
    }

    fn write_table<'a>(&'a self, prepared: &'a Prepared) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(LocalSwitch::write_table(self, prepared))
    }

    fn record_outcome(&self, prepared: Prepared, committed_at_ms: u64) -> BoxFuture<'_, Result<AuditRecord, Error>> {
        Box::pin(LocalSwitch::record_outcome(self, prepared, committed_at_ms))
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
