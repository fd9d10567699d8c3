//! The etcd leadership of [`AtomicSwitch`](crate::AtomicSwitch): an etcd
//! election (the v3 election API) tied to a lease. The leader key's create
//! revision is the [`Term`], checked in the switch's commit transaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio::task::JoinHandle;

use crate::backend::Term;
use crate::error::Error;

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One election: campaign, renew (the lease's keep-alive), resign.
#[derive(Clone)]
pub(crate) struct EtcdLeadership {
    client: Client,
    name: String,
    value: String,
    ttl: i64,
    held: Arc<Mutex<Option<LeaderKey>>>,
}

impl std::fmt::Debug for EtcdLeadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdLeadership").field("name", &self.name).field("ttl", &self.ttl).finish()
    }
}

impl EtcdLeadership {
    pub(crate) fn new(client: Client, name: String, value: String, ttl: i64) -> Self {
        EtcdLeadership { client, name, value, ttl, held: Arc::new(Mutex::new(None)) }
    }

    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl.max(1) as u64)
    }

    /// The leader key held, if any.
    pub(crate) fn held(&self) -> Option<LeaderKey> {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, key: Option<LeaderKey>) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = key;
    }

    /// The leader key of `term`, or [`Error::NotLeader`].
    pub(crate) fn key_of(&self, term: Term) -> Result<LeaderKey, Error> {
        match self.held() {
            Some(k) if k.rev() as u64 == term.get() => Ok(k),
            _ => Err(Error::NotLeader(format!("term {term} is not held"))),
        }
    }

    /// Grants a lease (kept alive while waiting) and campaigns with it;
    /// returns once elected.
    pub(crate) async fn campaign(&self) -> Result<Term, Error> {
        if let Some(k) = self.held() {
            return Ok(Term::new(k.rev() as u64));
        }
        let mut c = self.client.clone();
        let lease = c.lease_grant(self.ttl, None).await?.id();
        let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
        let every = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(300));
        let _keepalive = AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if keeper.keep_alive().await.is_err() || !matches!(stream.message().await, Ok(Some(_))) {
                    return;
                }
            }
        }));
        let resp = match c.campaign(self.name.as_str(), self.value.as_str(), lease).await {
            Ok(r) => r,
            Err(e) => {
                let _ = c.lease_revoke(lease).await;
                return Err(e.into());
            }
        };
        let key = resp.leader().cloned().ok_or_else(|| Error::NotLeader("campaign returned no leader key".into()))?;
        let term = Term::new(key.rev() as u64);
        tracing::info!(election = %self.name, %term, lease, "etcd leadership acquired");
        self.set(Some(key));
        Ok(term)
    }

    /// One keep-alive of the leader's lease; [`Error::NotLeader`] when the
    /// lease is gone (expired or revoked) or nothing is held.
    pub(crate) async fn renew(&self) -> Result<Term, Error> {
        let key = self.held().ok_or_else(|| Error::NotLeader("no leadership held".into()))?;
        let mut c = self.client.clone();
        let (mut keeper, mut stream) = c.lease_keep_alive(key.lease()).await?;
        keeper.keep_alive().await?;
        let ttl = stream.message().await?.map(|r| r.ttl()).unwrap_or(0);
        if ttl <= 0 {
            self.set(None);
            return Err(Error::NotLeader(format!("the lease of term {} expired", key.rev())));
        }
        Ok(Term::new(key.rev() as u64))
    }

    /// Resigns and revokes the lease.
    pub(crate) async fn resign(&self) -> Result<(), Error> {
        let Some(key) = self.held() else { return Ok(()) };
        self.set(None);
        let mut c = self.client.clone();
        let lease = key.lease();
        let _ = c.resign(Some(ResignOptions::new().with_leader(key))).await;
        c.lease_revoke(lease).await?;
        Ok(())
    }
}
