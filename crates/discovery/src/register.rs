//! [`Registration`]: an instance's entry in etcd, tied to a lease a background
//! task keeps alive; graceful shutdown marks it draining, waits the grace
//! period, then revokes the lease.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, PutOptions};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Meter};

use crate::error::Error;
use crate::instance::{DEFAULT_ROOT, Instance, InstanceState};

/// How an instance registers.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    root: String,
    ttl: Duration,
    grace: Duration,
    op_timeout: Duration,
    retry: Duration,
    meter: Option<Meter>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        RegistrationConfig {
            root: DEFAULT_ROOT.to_string(),
            ttl: Duration::from_secs(5),
            grace: Duration::from_secs(5),
            op_timeout: Duration::from_secs(3),
            retry: Duration::from_millis(500),
            meter: None,
        }
    }
}

impl RegistrationConfig {
    /// The defaults: root [`DEFAULT_ROOT`], lease TTL 5 s, grace period 5 s,
    /// 3 s per etcd call, 500 ms between retries of the keep-alive.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key root (must match the watchers').
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// The lease TTL, in whole seconds (at least 1 s; etcd may raise very short
    /// TTLs to its minimum). A crashed instance disappears after about this long.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long [`Registration::shutdown`] keeps the instance registered as
    /// draining before revoking its lease.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long one etcd call may take.
    pub fn with_op_timeout(mut self, t: Duration) -> Self {
        self.op_timeout = t;
        self
    }

    /// The pause before retrying a failed keep-alive.
    pub fn with_retry(mut self, t: Duration) -> Self {
        self.retry = t;
        self
    }

    /// The meter for the `discovery.registration.lease_regrants` counter
    /// (default: the global meter `discovery`).
    pub fn with_meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.ttl < Duration::from_secs(1) || self.ttl.subsec_nanos() != 0 {
            return Err(Error::InvalidConfig("lease TTL must be a whole number of seconds, at least 1".into()));
        }
        if self.op_timeout.is_zero() || self.retry.is_zero() {
            return Err(Error::InvalidConfig("op timeout and retry must be above zero".into()));
        }
        if !self.root.starts_with('/') {
            return Err(Error::InvalidConfig(format!("root {:?} must start with '/'", self.root)));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Shared {
    key: String,
    instance: Mutex<Instance>,
    lease: AtomicI64,
    regrants: AtomicU64,
    regrant_counter: Counter<u64>,
    attrs: [KeyValue; 2],
}

impl Shared {
    fn value(&self) -> Vec<u8> {
        match self.instance.lock() {
            Ok(i) => i.to_json(),
            Err(poisoned) => poisoned.into_inner().to_json(),
        }
    }

    fn set_state(&self, state: InstanceState) {
        match self.instance.lock() {
            Ok(mut i) => i.state = state,
            Err(poisoned) => poisoned.into_inner().state = state,
        }
    }
}

/// A registered instance. Its lease is kept alive by a background task until
/// [`Registration::shutdown`] (graceful: draining, grace period, revoke) or
/// until it is dropped or [`abandoned`](Registration::abandon) (the lease then
/// expires after its TTL, exactly as when the process crashes).
pub struct Registration {
    shared: Arc<Shared>,
    client: Client,
    config: RegistrationConfig,
    task: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// Grants a lease, writes `instance` under its key with the lease, and starts
    /// keeping the lease alive. Must be called inside a Tokio runtime.
    pub async fn register(client: Client, instance: Instance, config: RegistrationConfig) -> Result<Self, Error> {
        config.validate()?;
        instance.validate().map_err(Error::InvalidConfig)?;
        let key = instance.key(&config.root);
        let meter = config.meter.clone().unwrap_or_else(|| opentelemetry::global::meter("discovery"));
        let attrs = [
            KeyValue::new("service", instance.service.clone()),
            KeyValue::new("cell", instance.cell.to_string()),
        ];
        let shared = Arc::new(Shared {
            key,
            instance: Mutex::new(instance),
            lease: AtomicI64::new(0),
            regrants: AtomicU64::new(0),
            regrant_counter: meter.u64_counter(crate::metrics::LEASE_REGRANTS).build(),
            attrs,
        });
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::InvalidConfig("Registration::register must run inside a Tokio runtime".into()))?;
        let lease = grant_and_put(&client, &shared, &config).await?;
        tracing::info!(key = %shared.key, lease, "registered");
        let task = handle.spawn(keep_alive(client.clone(), shared.clone(), config.clone()));
        Ok(Registration { shared, client, config, task })
    }

    /// The etcd key of the registration.
    pub fn key(&self) -> &str {
        &self.shared.key
    }

    /// The current lease id (it changes when a lost lease is granted again).
    pub fn lease_id(&self) -> i64 {
        self.shared.lease.load(Ordering::Relaxed)
    }

    /// How many times the lease was lost and granted again.
    pub fn regrants(&self) -> u64 {
        self.shared.regrants.load(Ordering::Relaxed)
    }

    /// The instance as registered now.
    pub fn instance(&self) -> Instance {
        match self.shared.instance.lock() {
            Ok(i) => i.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Graceful shutdown: writes the instance as draining (callers stop sending
    /// it new requests), waits the grace period while keeping the lease alive,
    /// then revokes the lease (the key disappears). The lease is revoked even if
    /// marking it draining failed; the first error is returned.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.shared.set_state(InstanceState::Draining);
        let marked = self.put_current().await;
        if let Err(e) = &marked {
            tracing::warn!(key = %self.shared.key, error = %e, "could not mark the instance draining");
        } else {
            tracing::info!(key = %self.shared.key, grace = ?self.config.grace, "draining");
        }
        tokio::time::sleep(self.config.grace).await;
        self.task.abort();
        let lease = self.lease_id();
        let mut lc = self.client.lease_client();
        let revoked = match tokio::time::timeout(self.config.op_timeout, lc.revoke(lease)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Error::from(e)),
            Err(_) => Err(Error::Timeout(self.config.op_timeout)),
        };
        tracing::info!(key = %self.shared.key, lease, ok = revoked.is_ok(), "deregistered");
        marked.and(revoked)
    }

    /// Stops keeping the lease alive without revoking it: the registration
    /// disappears when the lease expires (what a crash looks like to others).
    pub fn abandon(self) {
        self.task.abort();
    }

    async fn put_current(&self) -> Result<(), Error> {
        let opts = PutOptions::new().with_lease(self.lease_id());
        let mut kv = self.client.kv_client();
        match tokio::time::timeout(
            self.config.op_timeout,
            kv.put(self.shared.key.as_str(), self.shared.value(), Some(opts)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(Error::Timeout(self.config.op_timeout)),
        }
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.shared.key)
            .field("lease", &self.lease_id())
            .field("config", &self.config)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn timed<T>(t: Duration, fut: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, Error> {
    match tokio::time::timeout(t, fut).await {
        Ok(r) => r.map_err(Error::from),
        Err(_) => Err(Error::Timeout(t)),
    }
}

async fn grant_and_put(client: &Client, shared: &Shared, config: &RegistrationConfig) -> Result<i64, Error> {
    let mut lc = client.lease_client();
    let ttl = i64::try_from(config.ttl.as_secs()).unwrap_or(i64::MAX);
    let lease = timed(config.op_timeout, lc.grant(ttl, None)).await?.id();
    let mut kv = client.kv_client();
    let opts = PutOptions::new().with_lease(lease);
    if let Err(e) = timed(config.op_timeout, kv.put(shared.key.as_str(), shared.value(), Some(opts))).await {
        // do not leak the fresh lease
        let _ = timed(config.op_timeout, lc.revoke(lease)).await;
        return Err(e);
    }
    shared.lease.store(lease, Ordering::Relaxed);
    Ok(lease)
}

/// Keeps the lease alive: a keep-alive every third of the TTL over one stream;
/// on a stream failure, opens a new one; when etcd says the lease is gone
/// (expired while etcd was unreachable), grants a new one and writes the
/// registration again.
async fn keep_alive(client: Client, shared: Arc<Shared>, config: RegistrationConfig) {
    let period = (config.ttl / 3).max(Duration::from_millis(300));
    loop {
        match keep_alive_session(&client, &shared, &config, period).await {
            Err(Error::LeaseLost(lease)) => {
                tracing::warn!(key = %shared.key, lease, "lease lost; registering again");
                match grant_and_put(&client, &shared, &config).await {
                    Ok(new) => {
                        shared.regrants.fetch_add(1, Ordering::Relaxed);
                        shared.regrant_counter.add(1, &shared.attrs);
                        tracing::info!(key = %shared.key, lease = new, "registered again");
                        continue;
                    }
                    Err(e) => tracing::warn!(key = %shared.key, error = %e, "registering again failed"),
                }
            }
            Err(e) => tracing::warn!(key = %shared.key, error = %e, "lease keep-alive failed; retrying"),
            Ok(()) => {}
        }
        tokio::time::sleep(config.retry).await;
    }
}

async fn keep_alive_session(
    client: &Client,
    shared: &Shared,
    config: &RegistrationConfig,
    period: Duration,
) -> Result<(), Error> {
    let lease = shared.lease.load(Ordering::Relaxed);
    let mut lc = client.lease_client();
    let (mut keeper, mut stream) = match timed(config.op_timeout, lc.keep_alive(lease)).await {
        Ok(pair) => pair,
        Err(Error::Etcd(etcd_client::Error::LeaseKeepAliveError(msg))) if msg.contains("not found") => {
            return Err(Error::LeaseLost(lease));
        }
        Err(e) => return Err(e),
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first keep-alive went with the stream
    loop {
        tick.tick().await;
        timed(config.op_timeout, keeper.keep_alive()).await?;
        match timed(config.op_timeout, stream.message()).await? {
            Some(resp) if resp.ttl() <= 0 => return Err(Error::LeaseLost(lease)),
            Some(_) => {}
            None => return Err(Error::Stream("keep-alive stream closed".into())),
        }
    }
}
