//! [`AtomicSwitch`]: one controller at a time changes the routing table of a
//! flow, without lost updates, and every switch leaves an audit row.
//!
//! The steps of [`AtomicSwitch::switch`]:
//!
//! 1. **lock**: grant a lease (TTL, kept alive in the background) and take the
//!    etcd lock `<prefix>/lock/<flow>` with it. A dead controller's lease
//!    expires, and its lock with it.
//! 2. **prepare**: read the routing table (the key `cellrouter`'s `EtcdSource`
//!    watches), apply the change, validate; a change that is already in force
//!    is [`SwitchOutcome::NoChange`] (nothing written, no audit row). Otherwise
//!    write the audit row as an **intent** first.
//! 3. **commit**: one etcd transaction: *if* our lock key still exists *and* the
//!    table's `mod_revision` is the one read, put the new table and a
//!    transaction marker `<prefix>/tx/<tx_id>`. A failed compare writes nothing
//!    (the concurrent writer's table stays) and rolls the intent back.
//! 4. **record**: the intent becomes `committed` (on the leader's path the
//!    marker is then deleted, as reconcile does once it settled a row); later
//!    [`mark_applied`](AtomicSwitch::mark_applied) stamps when routers run it.
//!
//! That is the operator path (the inherent [`AtomicSwitch::switch`]). The
//! [`Controller`](crate::Controller) drives the [`SwitchBackend`] path
//! instead: the election `<prefix>/leader` (campaign, lease kept alive by
//! [`SwitchBackend::renew`], resign) replaces the per-flow lock, and the
//! commit transaction compares the leader key's create revision (the
//! [`Term`]) instead of the lock key, so a deposed leader's late commit
//! writes nothing. Both paths check the drain cap
//! ([`with_max_drained`](AtomicSwitch::with_max_drained)) against the table
//! read, which the compare on its revision keeps true at the write.
//!
//! A crash between 2 and 4 leaves an intent; [`reconcile`](AtomicSwitch::reconcile)
//! (run by the leader on election, periodically and after a failed switch)
//! takes each such flow's lock, which waits for the dead holder's lease to
//! expire, and settles the row from the marker: present ->
//! `committed`, absent -> `rolled_back`. So no switch exists without its row,
//! and no row claims a switch that did not happen.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use cellrouter::{RoutingTable, TableStore};
use etcd_client::{Client, Compare, CompareOp, LockOptions, Txn, TxnOp};
use futures_util::future::BoxFuture;
use tokio::task::JoinHandle;

use crate::audit::{AuditLog, AuditRecord, AuditStatus, epoch_ms};
use crate::backend::{Prepare, Prepared as Step, Term, intent_record, next_table};
pub use crate::backend::{DryRun, ReconcileReport, SwitchBackend, SwitchOutcome};
pub use crate::change::{Change, SwitchRequest};
use crate::error::Error;
use crate::etcd_leader::EtcdLeadership;

/// The default key prefix of locks and transaction markers.
pub const DEFAULT_PREFIX: &str = "/cellsdk/failover";

/// A prepared switch: the intent row is written, the table not yet.
#[derive(Debug, Clone)]
pub struct Prepared {
    record: AuditRecord,
    table: RoutingTable,
    mod_revision: i64,
}

impl Prepared {
    /// The intent row.
    pub fn record(&self) -> &AuditRecord {
        &self.record
    }
}

/// A held switch lock: an etcd lock tied to a lease kept alive in the
/// background. Dropping it revokes the lease (which releases the lock); if the
/// process dies, the lease expires after its TTL.
pub struct SwitchLock {
    client: Client,
    flow: String,
    key: Vec<u8>,
    lease: i64,
    keepalive: Option<JoinHandle<()>>,
    released: bool,
}

impl std::fmt::Debug for SwitchLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchLock")
            .field("flow", &self.flow)
            .field("key", &String::from_utf8_lossy(&self.key))
            .field("lease", &self.lease)
            .finish()
    }
}

impl SwitchLock {
    /// The lock's key (exists while the lock is held).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The lease id.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// Unlocks and revokes the lease.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        let mut c = self.client.clone();
        let _ = c.unlock(self.key.clone()).await;
        c.lease_revoke(self.lease).await?;
        Ok(())
    }
}

impl Drop for SwitchLock {
    fn drop(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        if !self.released
            && let Ok(h) = tokio::runtime::Handle::try_current()
        {
            let mut c = self.client.clone();
            let lease = self.lease;
            h.spawn(async move {
                let _ = c.lease_revoke(lease).await;
            });
        }
    }
}


/// The atomic, audited routing-table switch (see the [module docs](self)).
#[derive(Clone)]
pub struct AtomicSwitch {
    client: Client,
    table_key: String,
    prefix: String,
    lease_ttl: i64,
    lock_timeout: Duration,
    audit: AuditLog,
    ids: Arc<idgen::Generator>,
    actor: String,
    cap: Option<NonZeroUsize>,
    leader: EtcdLeadership,
}

impl std::fmt::Debug for AtomicSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicSwitch")
            .field("table_key", &self.table_key)
            .field("prefix", &self.prefix)
            .field("lease_ttl", &self.lease_ttl)
            .field("audit", &self.audit.table())
            .field("actor", &self.actor)
            .field("max_drained", &self.cap)
            .field("leader", &self.leader)
            .finish()
    }
}

impl AtomicSwitch {
    /// A switch on `endpoints`, writing the table at
    /// `cellrouter::source::DEFAULT_ETCD_KEY`, auditing into `audit`, with tx ids
    /// from `ids`. Defaults: lease TTL 10 s, lock wait 30 s, actor `failover`.
    pub async fn connect(endpoints: &[String], audit: AuditLog, ids: idgen::Generator) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Config("no etcd endpoint".into()));
        }
        let opts = etcd_client::ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        let client = Client::connect(endpoints, Some(opts)).await?;
        let leader = EtcdLeadership::new(client.clone(), format!("{DEFAULT_PREFIX}/leader"), "failover".into(), 10);
        Ok(AtomicSwitch {
            client,
            table_key: cellrouter::source::DEFAULT_ETCD_KEY.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            lease_ttl: 10,
            lock_timeout: Duration::from_secs(30),
            audit,
            ids: Arc::new(ids),
            actor: "failover".into(),
            cap: None,
            leader,
        })
    }

    /// The election follows the prefix, actor and TTL (set before campaigning).
    fn elect(mut self) -> Self {
        self.leader =
            EtcdLeadership::new(self.client.clone(), format!("{}/leader", self.prefix), self.actor.clone(), self.lease_ttl);
        self
    }

    /// Refuses a drain that would leave more than `cap` cells not `active`
    /// in the stored table ([`Error::DrainCap`]); the commit's compare on the
    /// table's revision makes the check hold at the write.
    pub fn with_max_drained(mut self, cap: NonZeroUsize) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Sets the routing table key.
    pub fn with_table_key(mut self, key: impl Into<String>) -> Self {
        self.table_key = key.into();
        self
    }

    /// Sets the prefix of lock and marker keys.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().trim_end_matches('/').to_string();
        self.elect()
    }

    /// Sets the lease TTL (at least 2 s): how long a dead controller blocks a flow.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl.as_secs().max(2) as i64;
        self.elect()
    }

    /// Sets how long to wait for the lock.
    pub fn with_lock_timeout(mut self, wait: Duration) -> Self {
        self.lock_timeout = wait;
        self
    }

    /// Sets the actor written in audit rows.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self.elect()
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    fn lock_name(&self, flow: &str) -> String {
        format!("{}/lock/{flow}", self.prefix)
    }

    fn marker(&self, tx_id: &str) -> String {
        format!("{}/tx/{tx_id}", self.prefix)
    }

    /// Step 1: takes the flow's lock (waits at most the lock timeout).
    pub async fn lock(&self, flow: &str) -> Result<SwitchLock, Error> {
        let mut c = self.client.clone();
        let lease = c.lease_grant(self.lease_ttl, None).await?.id();
        let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
        let every = Duration::from_millis((self.lease_ttl as u64 * 1000 / 3).max(500));
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if keeper.keep_alive().await.is_err() {
                    return;
                }
                match stream.message().await {
                    Ok(Some(_)) => {}
                    _ => return,
                }
            }
        });
        let name = self.lock_name(flow);
        let res = tokio::time::timeout(self.lock_timeout, c.lock(name.clone(), Some(LockOptions::new().with_lease(lease)))).await;
        let key = match res {
            Ok(Ok(r)) => r.key().to_vec(),
            Ok(Err(e)) => {
                keepalive.abort();
                let _ = c.lease_revoke(lease).await;
                return Err(e.into());
            }
            Err(_) => {
                keepalive.abort();
                let _ = c.lease_revoke(lease).await;
                return Err(Error::LockTimeout(name));
            }
        };
        tracing::debug!(flow, lease, "switch lock acquired");
        Ok(SwitchLock { client: c, flow: flow.to_string(), key, lease, keepalive: Some(keepalive), released: false })
    }

    async fn read_table(&self) -> Result<(RoutingTable, i64), Error> {
        let mut c = self.client.clone();
        let resp = c.get(self.table_key.as_str(), None).await?;
        let kv = resp.kvs().first().ok_or_else(|| Error::NoTable(self.table_key.clone()))?;
        Ok((cellrouter::source::decode(kv.value())?, kv.mod_revision()))
    }

    /// What `change` would do, without locking or writing anything.
    pub async fn dry_run(&self, change: &Change) -> Result<DryRun, Error> {
        let (mut table, _) = self.read_table().await?;
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

    /// Step 2: reads the table, applies the change and writes the intent row.
    /// `Ok(None)` when the change is already in force.
    pub async fn prepare(&self, lock: &SwitchLock, req: &SwitchRequest) -> Result<Option<Prepared>, Error> {
        if lock.flow != req.change.flow().as_str() {
            return Err(Error::Config(format!("lock is for flow {}, change for {}", lock.flow, req.change.flow())));
        }
        let (stored, mod_revision) = self.read_table().await?;
        let before = stored.version;
        let Some((table, change)) = next_table(&stored, req, self.cap)? else {
            return Ok(None);
        };
        // the lock's flow is the change's (checked above)
        let record = intent_record(self.ids.next_id()?.to_string(), req, change, &self.actor, before, table.version);
        self.audit.insert_intent(&record).await?;
        Ok(Some(Prepared { record, table, mod_revision }))
    }

    /// Step 3a: the compare-on-version etcd transaction (table + marker). On a
    /// failed compare nothing is written and the intent is rolled back.
    pub async fn write_table(&self, lock: &SwitchLock, p: &Prepared) -> Result<u64, Error> {
        let mut c = self.client.clone();
        let committed_at = epoch_ms(cellclock::now());
        let marker = serde_json::json!({ "flow": p.record.flow, "version": p.table.version, "committed_at_ms": committed_at });
        let txn = Txn::new()
            .when([
                Compare::create_revision(lock.key.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(self.table_key.as_str(), CompareOp::Equal, p.mod_revision),
            ])
            .and_then([
                TxnOp::put(self.table_key.as_str(), cellrouter::source::encode(&p.table)?, None),
                TxnOp::put(self.marker(&p.record.tx_id), marker.to_string(), None),
            ]);
        let ok = c.txn(txn).await?.succeeded();
        if ok {
            return Ok(committed_at);
        }
        let lock_held = !c.get(lock.key.clone(), None).await?.kvs().is_empty();
        let (err, note) = if lock_held {
            (Error::Conflict { expected: p.mod_revision }, "routing table changed concurrently; nothing written")
        } else {
            (Error::LockLost(lock.flow.clone()), "switch lock lost before the write; nothing written")
        };
        self.audit.mark_rolled_back(&p.record.tx_id, note).await?;
        tracing::warn!(tx = %p.record.tx_id, flow = %lock.flow, note, "switch not committed");
        Err(err)
    }

    /// Step 3: [`write_table`](Self::write_table), then the intent becomes `committed`.
    pub async fn commit(&self, lock: &SwitchLock, p: Prepared) -> Result<AuditRecord, Error> {
        let at = self.write_table(lock, &p).await?;
        self.audit.mark_committed(&p.record.tx_id, at, None).await?;
        tracing::info!(tx = %p.record.tx_id, flow = %p.record.flow, from = %p.record.from, to = %p.record.to, version = p.table.version, "switch committed");
        let mut r = p.record;
        r.status = AuditStatus::Committed;
        r.committed_at_ms = Some(at);
        Ok(r)
    }

    /// Lock, prepare, commit, release: the whole switch.
    pub async fn switch(&self, req: SwitchRequest) -> Result<SwitchOutcome, Error> {
        let lock = self.lock(req.change.flow().as_str()).await?;
        let res = async {
            match self.prepare(&lock, &req).await? {
                None => Ok(SwitchOutcome::NoChange { version: self.read_table().await?.0.version }),
                Some(p) => self.commit(&lock, p).await.map(|r| SwitchOutcome::Committed(Box::new(r))),
            }
        }
        .await;
        let _ = lock.release().await;
        res
    }

    /// Waits until `store` (a router's table store) runs `record`'s version or
    /// later, then stamps the row `applied`. Returns the updated record.
    pub async fn mark_applied(&self, record: &AuditRecord, store: &TableStore, wait: Duration) -> Result<AuditRecord, Error> {
        let mut rx = store.subscribe();
        let target = record.version_after;
        let reached = tokio::time::timeout(wait, async {
            loop {
                if store.version().is_some_and(|v| v >= target) {
                    return true;
                }
                if rx.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await
        .unwrap_or(false);
        if !reached {
            return Err(Error::Config(format!("routers did not apply version {target} within {wait:?}")));
        }
        let at = epoch_ms(cellclock::now());
        self.audit.mark_applied(&record.tx_id, at).await?;
        let mut r = record.clone();
        r.status = AuditStatus::Applied;
        r.applied_at_ms = Some(at);
        Ok(r)
    }

    /// Settles every intent left by a controller that died mid-switch: takes the
    /// flow's lock (waiting out a dead holder's lease), then marks the row
    /// `committed` if its marker exists, else `rolled_back`. The
    /// [`Controller`](crate::Controller) runs it on election, periodically
    /// and after a failed switch.
    pub async fn reconcile(&self) -> Result<ReconcileReport, Error> {
        let mut report = ReconcileReport::default();
        for row in self.audit.pending().await? {
            let lock = self.lock(&row.flow).await?;
            let res = async {
                let fresh = self.audit.get(&row.tx_id).await?;
                if fresh.map(|r| r.status) != Some(AuditStatus::Intent) {
                    return Ok::<_, Error>(());
                }
                let mut c = self.client.clone();
                let marker = c.get(self.marker(&row.tx_id), None).await?;
                let committed_at = marker.kvs().first().map(|kv| {
                    serde_json::from_slice::<serde_json::Value>(kv.value())
                        .ok()
                        .and_then(|v| v.get("committed_at_ms").and_then(|x| x.as_u64()))
                        .unwrap_or_else(|| epoch_ms(cellclock::now()))
                });
                report.settle(&self.audit, &self.actor, &row.tx_id, committed_at).await?;
                // the row is settled: its marker has served
                c.delete(self.marker(&row.tx_id), None).await?;
                Ok(())
            }
            .await;
            let _ = lock.release().await;
            res?;
        }
        Ok(report)
    }
}

/// The leader's steps (the [`SwitchBackend`] path the
/// [`Controller`](crate::Controller) drives): fenced by the election's term
/// instead of a flow lock.
impl AtomicSwitch {
    async fn leader_prepare(&self, req: &SwitchRequest) -> Result<Prepare, Error> {
        let key = self.leader.held().ok_or_else(|| Error::NotLeader("no leadership held".into()))?;
        let (stored, mod_revision) = self.read_table().await?;
        let before = stored.version;
        let Some((table, change)) = next_table(&stored, req, self.cap)? else {
            return Ok(Prepare::InForce { version: before });
        };
        let record = intent_record(self.ids.next_id()?.to_string(), req, change, &self.actor, before, table.version);
        self.audit.insert_intent(&record).await?;
        Ok(Prepare::Intent(Box::new(Step { record, table, expected: mod_revision, term: Term::new(key.rev() as u64) })))
    }

    async fn leader_write(&self, p: &Step) -> Result<u64, Error> {
        let refused = |e: Error| async move {
            let note = format!("not written: {e}");
            self.audit.mark_rolled_back(&p.record.tx_id, &note).await?;
            tracing::warn!(tx = %p.record.tx_id, flow = %p.record.flow, %note, "switch not committed");
            Err(e)
        };
        let key = match self.leader.key_of(p.term) {
            Ok(k) => k,
            Err(e) => return refused(e).await,
        };
        let mut c = self.client.clone();
        let committed_at = epoch_ms(cellclock::now());
        let marker = serde_json::json!({ "flow": p.record.flow, "version": p.table.version, "committed_at_ms": committed_at, "term": p.term.get() });
        let txn = Txn::new()
            .when([
                Compare::create_revision(key.key().to_vec(), CompareOp::Equal, key.rev()),
                Compare::mod_revision(self.table_key.as_str(), CompareOp::Equal, p.expected),
            ])
            .and_then([
                TxnOp::put(self.table_key.as_str(), cellrouter::source::encode(&p.table)?, None),
                TxnOp::put(self.marker(&p.record.tx_id), marker.to_string(), None),
            ]);
        if c.txn(txn).await?.succeeded() {
            return Ok(committed_at);
        }
        let leading = c.get(key.key().to_vec(), None).await?.kvs().first().is_some_and(|kv| kv.create_revision() == key.rev());
        if leading {
            refused(Error::Conflict { expected: p.expected }).await
        } else {
            refused(Error::NotLeader(format!("term {} superseded (leader key gone)", p.term))).await
        }
    }

    async fn leader_record(&self, p: Step, at: u64) -> Result<AuditRecord, Error> {
        let marked = self.audit.mark_committed(&p.record.tx_id, at, None).await?;
        // the row is settled: the marker (read only by reconcile) goes; if
        // this fails, the next reconcile of a settled row never reads it
        if let Err(e) = self.client.clone().delete(self.marker(&p.record.tx_id), None).await {
            tracing::warn!(tx = %p.record.tx_id, error = %e, "switch marker not deleted");
        }
        if !marked {
            return self.audit.get(&p.record.tx_id).await?.ok_or_else(|| Error::Config(format!("audit row {} vanished", p.record.tx_id)));
        }
        tracing::info!(tx = %p.record.tx_id, flow = %p.record.flow, from = %p.record.from, to = %p.record.to, version = p.table.version, term = %p.term, "switch committed");
        let mut r = p.record;
        r.status = AuditStatus::Committed;
        r.committed_at_ms = Some(at);
        Ok(r)
    }
}

impl SwitchBackend for AtomicSwitch {
    fn campaign(&self) -> BoxFuture<'_, Result<Term, Error>> {
        Box::pin(self.leader.campaign())
    }

    fn renew(&self) -> BoxFuture<'_, Result<Term, Error>> {
        Box::pin(self.leader.renew())
    }

    fn resign(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.leader.resign())
    }

    fn lease_ttl(&self) -> Duration {
        self.leader.ttl()
    }

    fn prepare<'a>(&'a self, req: &'a SwitchRequest) -> BoxFuture<'a, Result<Prepare, Error>> {
        Box::pin(self.leader_prepare(req))
    }

    fn write_table<'a>(&'a self, prepared: &'a Step) -> BoxFuture<'a, Result<u64, Error>> {
        Box::pin(self.leader_write(prepared))
    }

    fn record_outcome(&self, prepared: Step, committed_at_ms: u64) -> BoxFuture<'_, Result<AuditRecord, Error>> {
        Box::pin(self.leader_record(prepared, committed_at_ms))
    }

    fn dry_run<'a>(&'a self, change: &'a Change) -> BoxFuture<'a, Result<DryRun, Error>> {
        Box::pin(AtomicSwitch::dry_run(self, change))
    }

    /// The leader's reconcile: [`Error::NotLeader`] without the leadership
    /// (a follower could race the leader's switch in flight, which holds no
    /// flow lock); else [`AtomicSwitch::reconcile`].
    fn reconcile(&self) -> BoxFuture<'_, Result<ReconcileReport, Error>> {
        Box::pin(async move {
            if self.leader.held().is_none() {
                return Err(Error::NotLeader("reconcile needs the leadership".into()));
            }
            AtomicSwitch::reconcile(self).await
        })
    }

    fn audit(&self) -> &AuditLog {
        &self.audit
    }
}
