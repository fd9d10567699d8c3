//! Worker leases in etcd: an etcd lease with the TTL, a create-if-absent
//! transaction on the worker's key attached to it, keep-alives at a third of
//! the TTL, and a persistent high-water-mark key written only while the
//! holder's token is in the worker's key.
//!
//! Keys, for prefix `p`, datacenter `d`, worker `w`: `p/d/w/lease` (value:
//! holder token, attached to the etcd lease) and `p/d/w/hwm` (decimal Unix ms).

use std::sync::Arc;

use etcd_client::{
    Client, Compare, CompareOp, LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse,
};

use super::{Acquired, Backend, LeaseOptions, WorkerLease, token};
use crate::clock::Clock;
use crate::Error;

pub(crate) struct EtcdBackend {
    client: Client,
    prefix: String,
    datacenter: u32,
    token: String,
    ttl_ms: u64,
    ttl_s: i64,
    clock: Arc<dyn Clock>,
    /// The etcd lease (granted on the first acquire attempt) and when it was asked for.
    lease: Option<(i64, u64)>,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
}

impl EtcdBackend {
    fn keys(&self, worker: u32) -> (String, String) {
        let base = format!("{}/{}/{}", self.prefix, self.datacenter, worker);
        (format!("{base}/lease"), format!("{base}/hwm"))
    }

    async fn keep_alive(&mut self, id: i64) -> Result<bool, Error> {
        if self.keeper.is_none() {
            self.keeper = Some(self.client.lease_keep_alive(id).await?);
        }
        let Some((keeper, stream)) = self.keeper.as_mut() else { return Ok(false) };
        let result = async {
            keeper.keep_alive().await?;
            stream.message().await
        }
        .await;
        match result {
            Ok(Some(resp)) => Ok(resp.ttl() > 0),
            Ok(None) => {
                self.keeper = None;
                Err(Error::CorruptRecord("etcd keep-alive stream closed".into()))
            }
            Err(e) => {
                self.keeper = None;
                Err(e.into())
            }
        }
    }
}

fn parse_ms(raw: &[u8]) -> Result<u64, Error> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(|| Error::CorruptRecord(format!("high-water mark {:?}", String::from_utf8_lossy(raw))))
}

impl Backend for EtcdBackend {
    async fn acquire(&mut self, worker: u32) -> Result<Option<Acquired>, Error> {
        let (id, granted_at) = match self.lease {
            Some(l) => l,
            None => {
                let at = self.clock.now_ms();
                let id = self.client.lease_grant(self.ttl_s, None).await?.id();
                self.lease = Some((id, at));
                (id, at)
            }
        };
        let (lease_key, hwm_key) = self.keys(worker);
        let txn = Txn::new()
            .when([Compare::create_revision(lease_key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(lease_key.clone(), self.token.clone(), Some(PutOptions::new().with_lease(id))),
                TxnOp::get(hwm_key.clone(), None),
            ]);
        let resp = self.client.txn(txn).await?;
        if !resp.succeeded() {
            return Ok(None);
        }
        let mut prior_ms = 0;
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                prior_ms = parse_ms(kv.value())?;
            }
        }
        // Record the ceiling before any id can be issued.
        let ceiling = prior_ms.saturating_add(1).max(granted_at).saturating_add(self.ttl_ms);
        if !self.write_hwm(&lease_key, &hwm_key, ceiling, false).await? {
            return Ok(None);
        }
        Ok(Some(Acquired { prior_ms, valid_from_ms: granted_at }))
    }

    async fn renew(&mut self, worker: u32, ceiling_ms: u64) -> Result<bool, Error> {
        let Some((id, _)) = self.lease else { return Ok(false) };
        let (lease_key, hwm_key) = self.keys(worker);
        if !self.write_hwm(&lease_key, &hwm_key, ceiling_ms, false).await? {
            return Ok(false);
        }
        self.keep_alive(id).await
    }

    async fn release(&mut self, worker: u32, record_ms: u64) -> Result<(), Error> {
        let (lease_key, hwm_key) = self.keys(worker);
        self.write_hwm(&lease_key, &hwm_key, record_ms, true).await?;
        if let Some((id, _)) = self.lease.take() {
            self.keeper = None;
            self.client.lease_revoke(id).await?;
        }
        Ok(())
    }

    async fn give_up(&mut self) {
        if let Some((id, _)) = self.lease.take() {
            let _ = self.client.lease_revoke(id).await;
        }
    }
}

impl EtcdBackend {
    /// Writes the high-water mark if the worker key still holds our token
    /// (and deletes the worker key when `delete`); false when it does not.
    async fn write_hwm(&mut self, lease_key: &str, hwm_key: &str, ms: u64, delete: bool) -> Result<bool, Error> {
        let mut ops = vec![TxnOp::put(hwm_key, ms.to_string(), None)];
        if delete {
            ops.push(TxnOp::delete(lease_key, None));
        }
        let txn = Txn::new()
            .when([Compare::value(lease_key, CompareOp::Equal, self.token.clone())])
            .and_then(ops);
        Ok(self.client.txn(txn).await?.succeeded())
    }
}

impl WorkerLease {
    /// Leases a free worker id of `opts`' datacenter from etcd.
    ///
    /// The TTL is rounded up to whole seconds and must be at least 2 s (etcd's
    /// minimum lease TTL); the local deadline uses the exact TTL. Errors with
    /// [`Error::NoWorkerAvailable`] when every worker id is held,
    /// [`Error::Etcd`] when etcd fails. Must be called inside a tokio runtime.
    pub async fn etcd(client: Client, opts: LeaseOptions) -> Result<WorkerLease, Error> {
        let ttl_ms = opts.ttl_ms()?;
        if ttl_ms < 2_000 {
            return Err(Error::InvalidLease("etcd lease TTL must be at least 2 s"));
        }
        let ttl_s = i64::try_from(ttl_ms.div_ceil(1_000)).unwrap_or(i64::MAX);
        let backend = EtcdBackend {
            client,
            prefix: opts.prefix.clone(),
            datacenter: opts.datacenter,
            token: token(),
            ttl_ms,
            ttl_s,
            clock: Arc::clone(&opts.clock),
            lease: None,
            keeper: None,
        };
        WorkerLease::acquire_with(backend, opts).await
    }
}
