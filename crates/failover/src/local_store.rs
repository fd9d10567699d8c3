//! [`LocalStore`]: what local control planes share: the routing table store
//! they switch, the leadership lease over it and the commit markers.
//!
//! See [`LocalStore`].

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cellrouter::{RoutingTable, TableStore};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::audit::epoch_ms;
use crate::backend::{Term, check_cap};
use crate::error::Error;

#[derive(Debug)]
struct Holder {
    candidate: u64,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    term: u64,
    holder: Option<Holder>,
    next_candidate: u64,
    markers: HashMap<String, u64>,
}

/// The shared state of the [`LocalSwitch`](crate::LocalSwitch)es of one
/// process: the `cellrouter::TableStore` they switch, a leadership lease held
/// in the same place (Kubernetes `Lease` semantics: a holder, a term that
/// grows with every new holder, an expiry extended by renewals) and the
/// commit markers reconcile reads.
///
/// The table write is fenced: under one lock, it checks that the writer's
/// term is the current one and its lease has not expired, that the stored
/// table is still the version it read, and that the drain cap holds against
/// the stored table; then it stores the table and the switch's marker. A
/// paused old leader that wakes up after another took over cannot write.
///
/// Build one per table and give a clone to every `LocalSwitch` that must
/// take turns (a `TableStore` converts into a fresh one, for a single
/// controller).
#[derive(Debug, Clone)]
pub struct LocalStore {
    table: TableStore,
    inner: Arc<Mutex<Inner>>,
    released: Arc<Notify>,
    created_ms: u64,
}

impl From<TableStore> for LocalStore {
    fn from(table: TableStore) -> Self {
        LocalStore::new(table)
    }
}

impl LocalStore {
    /// Shared state over `table`; nobody leads yet.
    pub fn new(table: TableStore) -> Self {
        LocalStore {
            table,
            inner: Arc::new(Mutex::new(Inner::default())),
            released: Arc::new(Notify::new()),
            created_ms: epoch_ms(cellclock::now()),
        }
    }

    /// The table store.
    pub fn table(&self) -> &TableStore {
        &self.table
    }

    /// The current term and whether its lease is still live (`None` before
    /// anyone led).
    pub fn leadership(&self) -> Option<(Term, bool)> {
        let g = self.lock();
        g.holder.as_ref().map(|h| (Term::new(g.term), Instant::now() < h.expires))
    }

    /// When this store was created (ms since the Unix epoch): intents older
    /// than that cannot have a marker here.
    pub(crate) fn created_ms(&self) -> u64 {
        self.created_ms
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh candidate id.
    pub(crate) fn candidate(&self) -> u64 {
        let mut g = self.lock();
        g.next_candidate += 1;
        g.next_candidate
    }

    /// Takes the lease when it is free or expired (a new, greater term), or
    /// keeps it when `candidate` holds it. `Err(expiry)` when another holds
    /// a live lease.
    pub(crate) fn try_acquire(&self, candidate: u64, ttl: Duration) -> Result<Term, Instant> {
        let now = Instant::now();
        let mut g = self.lock();
        match &g.holder {
            Some(h) if h.candidate == candidate => {}
            Some(h) if now < h.expires => return Err(h.expires),
            _ => g.term += 1,
        }
        g.holder = Some(Holder { candidate, expires: now + ttl });
        Ok(Term::new(g.term))
    }

    /// Extends `candidate`'s lease of `term`. A holder whose lease expired
    /// may still renew while nobody else took it (as a Kubernetes lease).
    pub(crate) fn renew(&self, candidate: u64, term: Term, ttl: Duration) -> Result<Term, Error> {
        let mut g = self.lock();
        let current = g.term;
        match &mut g.holder {
            Some(h) if h.candidate == candidate && current == term.get() => {
                h.expires = Instant::now() + ttl;
                Ok(term)
            }
            _ => Err(Error::NotLeader(format!("term {term} superseded by term {current}"))),
        }
    }

    /// Gives the lease of `term` up and wakes the waiting candidates.
    pub(crate) fn resign(&self, candidate: u64, term: Term) {
        let mut g = self.lock();
        if g.term == term.get() && g.holder.as_ref().is_some_and(|h| h.candidate == candidate) {
            g.holder = None;
            self.released.notify_waiters();
        }
    }

    /// Waits until the lease expires at `expires` or is given up.
    pub(crate) async fn wait_free(&self, expires: Instant) {
        let released = self.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if self.lock().holder.is_none() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(expires) => {}
            _ = released => {}
        }
    }

    /// Whether `candidate` holds a live lease of `term`.
    pub(crate) fn check(&self, candidate: u64, term: Term) -> Result<(), Error> {
        Self::fence(&self.lock(), candidate, term)
    }

    fn fence(g: &Inner, candidate: u64, term: Term) -> Result<(), Error> {
        match &g.holder {
            Some(h) if h.candidate == candidate && g.term == term.get() && Instant::now() < h.expires => Ok(()),
            Some(h) if h.candidate == candidate && g.term == term.get() => {
                Err(Error::NotLeader(format!("the lease of term {term} expired")))
            }
            _ => Err(Error::NotLeader(format!("term {term} superseded by term {}", g.term))),
        }
    }

    /// The fenced write (see [`LocalStore`]): returns when it committed.
    pub(crate) fn commit(
        &self,
        candidate: u64,
        term: Term,
        expected: u64,
        table: RoutingTable,
        tx_id: &str,
        cap: Option<NonZeroUsize>,
    ) -> Result<u64, Error> {
        let mut g = self.lock();
        Self::fence(&g, candidate, term)?;
        let current = self.table.current().ok_or_else(|| Error::NoTable("local table store".into()))?;
        if current.version() != expected {
            return Err(Error::Conflict { expected: expected as i64 });
        }
        check_cap(current.table(), &table, cap)?;
        self.table.store(table)?;
        let at = epoch_ms(cellclock::now());
        g.markers.insert(tx_id.to_string(), at);
        Ok(at)
    }

    /// When `tx_id`'s table write committed, if it did through this store.
    pub(crate) fn marker(&self, tx_id: &str) -> Option<u64> {
        self.lock().markers.get(tx_id).copied()
    }

    /// Drops the marker of a settled switch.
    pub(crate) fn forget(&self, tx_id: &str) {
        self.lock().markers.remove(tx_id);
    }
}
