//! [`Watcher`]: a background task that lists and watches one service's prefix
//! in etcd and publishes [`Snapshot`]s; callers read the latest one lock-free.
//!
//! The task lists the prefix, then watches from the listing's revision. When the
//! watch fails (etcd down, stream closed, silent for three progress intervals) it
//! reconnects with exponential backoff and lists again; when etcd says the watch
//! revision was compacted it lists again at once. While etcd is unreachable the
//! last known instances stay published.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use cellctx::CellId;
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use futures_util::StreamExt;
use opentelemetry::metrics::Meter;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::error::Error;
use crate::instance::{DEFAULT_ROOT, Instance, check_segment, service_prefix};
use crate::metrics::{Stats, WatchMetrics};
use crate::snapshot::Snapshot;
use crate::state::{Outcome, State};

/// How a [`Watcher`] talks to etcd.
#[derive(Debug, Clone)]
pub struct WatcherConfig {
    root: String,
    op_timeout: Duration,
    backoff_min: Duration,
    backoff_max: Duration,
    progress_interval: Duration,
    resync_interval: Option<Duration>,
    meter: Option<Meter>,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        WatcherConfig {
            root: DEFAULT_ROOT.to_string(),
            op_timeout: Duration::from_secs(3),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            progress_interval: Duration::from_secs(1),
            resync_interval: Some(Duration::from_secs(60)),
            meter: None,
        }
    }
}

impl WatcherConfig {
    /// The defaults: root [`DEFAULT_ROOT`], 3 s per etcd call, backoff 100 ms
    /// doubling to 5 s, a progress request every second, a full re-list every 60 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The key root the instances live under.
    pub fn with_root(mut self, root: impl Into<String>) -> Self {
        self.root = root.into();
        self
    }

    /// How long one etcd call (list, watch creation) may take.
    pub fn with_op_timeout(mut self, t: Duration) -> Self {
        self.op_timeout = t;
        self
    }

    /// The reconnect backoff: starts at `min`, doubles up to `max`.
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// How often the watcher asks etcd for a progress notification; it gives up
    /// on a watch that stays silent for three intervals (and that is what keeps
    /// `discovery.registry.staleness` honest).
    pub fn with_progress_interval(mut self, t: Duration) -> Self {
        self.progress_interval = t;
        self
    }

    /// How often to list the prefix again even when the watch is healthy
    /// (`None`: never). A re-list also replaces instances kept from a rejected
    /// empty listing once the registry shows instances again.
    pub fn with_resync_interval(mut self, t: Option<Duration>) -> Self {
        self.resync_interval = t;
        self
    }

    /// The meter for the watcher's instruments (default: the global meter `discovery`).
    pub fn with_meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    fn validate(&self) -> Result<(), Error> {
        let zero = Duration::ZERO;
        if self.op_timeout == zero || self.backoff_min == zero || self.progress_interval == zero {
            return Err(Error::InvalidConfig("timeouts and intervals must be above zero".into()));
        }
        if self.backoff_max < self.backoff_min {
            return Err(Error::InvalidConfig("backoff max is below backoff min".into()));
        }
        if self.resync_interval == Some(zero) {
            return Err(Error::InvalidConfig("resync interval must be above zero".into()));
        }
        if !self.root.starts_with('/') {
            return Err(Error::InvalidConfig(format!("root {:?} must start with '/'", self.root)));
        }
        Ok(())
    }
}

/// What [`Watcher::stats`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct WatcherStats {
    /// The watch is established (etcd answered the last list and watch).
    pub connected: bool,
    /// At least one listing succeeded.
    pub synced: bool,
    /// Time since etcd last answered.
    pub staleness: Duration,
    /// Malformed values skipped so far.
    pub malformed: u64,
    /// Listings rejected as empty so far.
    pub rejected: u64,
    /// Reconnects after a failure so far.
    pub reconnects: u64,
    /// Listings done so far (the first one, reconnects, compactions, resyncs).
    pub relists: u64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    service: String,
    prefix: String,
    current: ArcSwap<Snapshot>,
    tx: watch::Sender<Arc<Snapshot>>,
    stats: Arc<Stats>,
    metrics: Option<WatchMetrics>,
}

/// Aborts the watch task when the last handle (watcher or discover stream) goes.
#[derive(Debug)]
pub(crate) struct TaskGuard(Option<AbortHandle>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}

/// The live set of one service's instances, kept up to date from etcd by a
/// background task. Cheap to clone; the task stops when the last clone (and
/// the last [`crate::CellDiscover`] made from it) is dropped.
///
/// Reading is lock-free: [`Watcher::snapshot`] loads an `Arc<Snapshot>`.
#[derive(Debug, Clone)]
pub struct Watcher {
    pub(crate) shared: Arc<Shared>,
    _guard: Arc<TaskGuard>,
}

impl Watcher {
    /// Starts watching `service` through `client`. Returns at once; the first
    /// listing happens in the background ([`Watcher::synced`] waits for it).
    /// Must be called inside a Tokio runtime.
    pub fn start(client: Client, service: &str, config: WatcherConfig) -> Result<Self, Error> {
        config.validate()?;
        check_segment("service", service).map_err(Error::InvalidConfig)?;
        let meter = config.meter.clone().unwrap_or_else(|| opentelemetry::global::meter("discovery"));
        let prefix = service_prefix(&config.root, service);
        let stats = Arc::new(Stats::new());
        let metrics = WatchMetrics::new(&meter, service, &stats);
        let empty = Arc::new(Snapshot::default());
        let (tx, _) = watch::channel(empty.clone());
        let shared = Arc::new(Shared {
            service: service.to_string(),
            prefix,
            current: ArcSwap::new(empty),
            tx,
            stats,
            metrics: Some(metrics),
        });
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::InvalidConfig("Watcher::start must be called inside a Tokio runtime".into()))?;
        let task = handle.spawn(run(shared.clone(), client, config));
        Ok(Watcher { shared, _guard: Arc::new(TaskGuard(Some(task.abort_handle()))) })
    }

    /// A watcher over a fixed set of instances, with no etcd behind it: for
    /// tests, examples and static deployments. Instances of other services are
    /// ignored.
    pub fn fixed(service: &str, instances: impl IntoIterator<Item = Instance>) -> Self {
        let prefix = service_prefix(DEFAULT_ROOT, service);
        let map: BTreeMap<Arc<str>, Arc<Instance>> = instances
            .into_iter()
            .filter(|i| i.service == service)
            .map(|i| (Arc::from(i.key(DEFAULT_ROOT)), Arc::new(i)))
            .collect();
        let snap = Arc::new(Snapshot::build(1, map));
        let (tx, _) = watch::channel(snap.clone());
        let stats = Arc::new(Stats::new());
        stats.synced.store(true, Ordering::Relaxed);
        let shared = Arc::new(Shared {
            service: service.to_string(),
            prefix,
            current: ArcSwap::new(snap),
            tx,
            stats,
            metrics: None,
        });
        Watcher { shared, _guard: Arc::new(TaskGuard(None)) }
    }

    /// The service watched.
    pub fn service(&self) -> &str {
        &self.shared.service
    }

    /// The etcd prefix watched, `<root>/<service>/`.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The latest snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.current.load_full()
    }

    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.shared.current.load()
    }

    /// A receiver that sees every published snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.shared.tx.subscribe()
    }

    #[cfg(test)]
    pub(crate) fn shared_publish(&self, snap: Arc<Snapshot>) {
        self.shared.tx.send_replace(snap.clone());
        self.shared.current.store(snap);
    }

    /// Counters and connection state.
    pub fn stats(&self) -> WatcherStats {
        let s = &self.shared.stats;
        WatcherStats {
            connected: s.connected.load(Ordering::Relaxed),
            synced: s.synced.load(Ordering::Relaxed),
            staleness: s.staleness(),
            malformed: s.malformed.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
            relists: s.relists.load(Ordering::Relaxed),
        }
    }

    /// Waits until the first listing succeeded; [`Error::Timeout`] after `timeout`.
    pub async fn synced(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.shared.tx.subscribe();
        let stats = self.shared.stats.clone();
        tokio::time::timeout(timeout, async move {
            while !stats.synced.load(Ordering::Acquire) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await
        .map_err(|_| Error::Timeout(timeout))
    }
}

/// Why a watch session ended.
enum End {
    /// The watch revision was compacted: list again now.
    Compacted,
    /// Time for the periodic re-list.
    Resync,
    /// etcd failed or went silent.
    Failed(Error),
}

struct Task {
    shared: Arc<Shared>,
    client: Client,
    config: WatcherConfig,
    state: State,
    version: u64,
    recorded_cells: HashSet<CellId>,
}

async fn run(shared: Arc<Shared>, client: Client, config: WatcherConfig) {
    let state = State::new(shared.prefix.clone());
    let mut task = Task { shared, client, config, state, version: 0, recorded_cells: HashSet::new() };
    let mut backoff = task.config.backoff_min;
    loop {
        let end = task.session(&mut backoff).await;
        let stats = &task.shared.stats;
        match end {
            End::Resync => continue,
            End::Compacted => {
                tracing::info!(prefix = %task.shared.prefix, "watch revision compacted; listing again");
                continue;
            }
            End::Failed(e) => {
                stats.connected.store(false, Ordering::Relaxed);
                stats.reconnects.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &task.shared.metrics {
                    m.reconnect();
                }
                tracing::warn!(prefix = %task.shared.prefix, error = %e, retry_in = ?backoff, "registry watch failed; keeping the last known instances");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(task.config.backoff_max);
            }
        }
    }
}

impl Task {
    async fn call<T>(&self, fut: impl Future<Output = Result<T, etcd_client::Error>>) -> Result<T, Error> {
        match tokio::time::timeout(self.config.op_timeout, fut).await {
            Ok(r) => r.map_err(Error::from),
            Err(_) => Err(Error::Timeout(self.config.op_timeout)),
        }
    }

    async fn session(&mut self, backoff: &mut Duration) -> End {
        let prefix = self.shared.prefix.clone();
        let mut kv = self.client.kv_client();
        let resp = match self.call(kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix()))).await {
            Ok(r) => r,
            Err(e) => return End::Failed(e),
        };
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let out = self.state.relist(resp.kvs().iter().map(|kv| (kv.key(), kv.value())));
        self.shared.stats.relists.fetch_add(1, Ordering::Relaxed);
        self.account(out);
        if out.changed || self.version == 0 {
            self.publish();
        }
        self.shared.stats.contact();
        self.shared.stats.synced.store(true, Ordering::Release);
        // wake `synced()` waiters even when nothing changed
        self.shared.tx.send_modify(|_| {});

        let mut wc = self.client.watch_client();
        let opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let stream = match self.call(wc.watch(prefix.as_str(), Some(opts))).await {
            Ok(s) => s,
            Err(e) => return End::Failed(e),
        };
        let (mut sender, mut responses) = stream.split();
        self.shared.stats.connected.store(true, Ordering::Relaxed);
        *backoff = self.config.backoff_min;

        let mut progress = tokio::time::interval(self.config.progress_interval);
        progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let resync_at = self.config.resync_interval.map(|d| tokio::time::Instant::now() + d);
        let resync = async {
            match resync_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::pin!(resync);
        let silent_limit = self.config.progress_interval * 3;
        loop {
            tokio::select! {
                msg = responses.next() => {
                    let resp = match msg {
                        Some(Ok(r)) => r,
                        Some(Err(e)) => return End::Failed(e.into()),
                        None => return End::Failed(Error::Stream("stream closed by etcd".into())),
                    };
                    self.shared.stats.contact();
                    if resp.compact_revision() > 0 {
                        return End::Compacted;
                    }
                    if resp.canceled() {
                        return End::Failed(Error::Stream(format!("canceled: {}", resp.cancel_reason())));
                    }
                    let mut changed = false;
                    let mut malformed = 0;
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        match ev.event_type() {
                            EventType::Put => match self.state.put(kv.key(), kv.value()) {
                                Ok(c) => changed |= c,
                                Err(e) => {
                                    malformed += 1;
                                    tracing::warn!(error = %e, "skipping malformed registration");
                                }
                            },
                            EventType::Delete => changed |= self.state.delete(kv.key()),
                        }
                    }
                    self.account(Outcome { changed, malformed, rejected: false });
                    if changed {
                        self.publish();
                    }
                }
                _ = progress.tick() => {
                    if self.shared.stats.staleness() > silent_limit {
                        return End::Failed(Error::Timeout(silent_limit));
                    }
                    if let Err(e) = sender.request_progress().await {
                        return End::Failed(e.into());
                    }
                }
                _ = &mut resync => return End::Resync,
            }
        }
    }

    fn account(&self, out: Outcome) {
        let stats = &self.shared.stats;
        if out.malformed > 0 {
            stats.malformed.fetch_add(out.malformed, Ordering::Relaxed);
            if let Some(m) = &self.shared.metrics {
                m.malformed(out.malformed);
            }
        }
        if out.rejected {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.shared.metrics {
                m.rejected();
            }
        }
    }

    fn publish(&mut self) {
        self.version += 1;
        let snap = Arc::new(Snapshot::build(self.version, self.state.entries().clone()));
        if let Some(m) = &self.shared.metrics {
            let cells: HashSet<CellId> = snap.cells().into_iter().collect();
            for cell in &cells {
                m.instances(cell.as_str(), snap.serving(cell).count() as u64);
            }
            for gone in self.recorded_cells.difference(&cells) {
                m.instances(gone.as_str(), 0);
            }
            self.recorded_cells = cells;
        }
        tracing::debug!(prefix = %self.shared.prefix, version = self.version, instances = snap.len(), "registry snapshot");
        // the channel first: whoever sees the new snapshot through `snapshot()`
        // finds the discover streams already notified
        self.shared.tx.send_replace(snap.clone());
        self.shared.current.store(snap);
    }
}
