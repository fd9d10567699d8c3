//! `EtcdSource`: the routing table as one etcd key, watched live.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Txn, TxnOp, WatchOptions};

use super::TableSource;
use crate::error::{Error, InvalidTable};
use crate::store::TableStore;
use crate::table::RoutingTable;

/// The default etcd key of the routing table. Its value is the table encoded by
/// [`encode`](super::encode) (compact JSON; YAML is accepted on read).
pub const DEFAULT_ETCD_KEY: &str = "/cellsdk/routing/table";

/// Watches one etcd key and feeds every table written there into the store.
///
/// - reads the key, then watches it from the next revision with progress
///   notifications; events are applied in revision order;
/// - reconnects by itself with exponential backoff (the etcd-client watch does
///   not) and asks for progress every `progress_interval`; a stream silent for
///   three intervals is treated as dead;
/// - re-reads the key when the watch revision was compacted (counted in
///   `cellrouter.source.compactions`); [`with_start_revision`](Self::with_start_revision)
///   resumes from a known revision without a first read;
/// - keeps the last-known-good table while etcd is unreachable, and persists
///   every applied table to `last_known_good` (when set) so a restarting service
///   starts from it with etcd down;
/// - an empty, undecodable or invalid value is rejected (counted in
///   `cellrouter.source.errors`, `source = etcd`) and the table in force stays;
///   staleness is recorded in `cellrouter.table.staleness`.
#[derive(Debug, Clone)]
pub struct EtcdSource {
    endpoints: Vec<String>,
    key: String,
    last_known_good: Option<PathBuf>,
    backoff_min: Duration,
    backoff_max: Duration,
    progress_interval: Duration,
    connect_timeout: Duration,
    start_revision: Option<i64>,
}

impl EtcdSource {
    /// A source watching [`DEFAULT_ETCD_KEY`] on `endpoints`.
    pub fn try_new(endpoints: Vec<String>) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Config("no etcd endpoint".into()));
        }
        Ok(EtcdSource {
            endpoints,
            key: DEFAULT_ETCD_KEY.to_string(),
            last_known_good: None,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            progress_interval: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(2),
            start_revision: None,
        })
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Persists every applied table to `path`, and starts from it when the store
    /// is empty.
    pub fn with_last_known_good(mut self, path: impl Into<PathBuf>) -> Self {
        self.last_known_good = Some(path.into());
        self
    }

    /// Sets the reconnect backoff bounds (default 100 ms to 5 s).
    pub fn with_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min.max(Duration::from_millis(1));
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// Sets how often progress is requested (default 1 s).
    pub fn with_progress_interval(mut self, every: Duration) -> Self {
        self.progress_interval = every.max(Duration::from_millis(10));
        self
    }

    /// Resumes from etcd revision `revision` instead of reading the key first:
    /// the first session watches from `revision` directly, for a store that
    /// already holds the table as of `revision - 1` (from the last-known-good
    /// file, say). Events from `revision` on are applied in order; if etcd has
    /// compacted that revision away, the watch answers "compacted" and the
    /// source re-reads the key, then watches from the revision it read at.
    /// Later sessions (after a reconnect) always read the key first.
    pub fn with_start_revision(mut self, revision: i64) -> Self {
        self.start_revision = Some(revision.max(1));
        self
    }

    /// Loads the last-known-good file into `store` if the store is empty.
    pub fn load_last_known_good(&self, store: &TableStore) -> Result<bool, Error> {
        let Some(path) = &self.last_known_good else { return Ok(false) };
        if store.version().is_some() || !path.exists() {
            return Ok(false);
        }
        let t = super::read_file(path)?;
        store.store(t).map(|_| true)
    }

    fn apply(&self, store: &TableStore, value: &[u8]) {
        let res = if value.is_empty() {
            store.source_error("etcd");
            Err(Error::Decode("empty value".into()))
        } else {
            match super::decode(value) {
                Ok(t) => super::apply(store, t, "etcd"),
                Err(e) => {
                    store.source_error("etcd");
                    Err(e)
                }
            }
        };
        match res {
            Ok(true) => {
                if let (Some(path), Some(t)) = (&self.last_known_good, store.current())
                    && let Err(e) = super::persist(t.table(), path)
                {
                    tracing::warn!(error = %e, "cannot persist the last-known-good routing table");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(key = %self.key, error = %e, "routing table from etcd rejected"),
        }
    }

    /// One session: connect, read, watch until the stream fails.
    ///
    /// `resume`: watch from this revision without reading first (taken on use).
    async fn session(&self, store: &TableStore, connected: &mut bool, resume: &mut Option<i64>) -> Result<(), Error> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.connect_timeout)
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2));
        let mut client = Client::connect(&self.endpoints, Some(opts)).await?;
        loop {
            let start = match resume.take() {
                Some(rev) => rev,
                None => {
                    let resp = client.get(self.key.as_str(), None).await?;
                    *connected = true;
                    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
                    match resp.kvs().first() {
                        Some(kv) => self.apply(store, kv.value()),
                        None => store.mark_fresh(),
                    }
                    rev + 1
                }
            };
            let wopts = WatchOptions::new().with_start_revision(start).with_progress_notify();
            let mut stream = client.watch(self.key.as_str(), Some(wopts)).await?;
            *connected = true;
            let mut tick = tokio::time::interval(self.progress_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_msg = Instant::now();
            let compacted = loop {
                tokio::select! {
                    msg = stream.message() => {
                        let Some(msg) = msg? else {
                            return Err(Error::Config("etcd watch stream closed".into()));
                        };
                        last_msg = Instant::now();
                        if msg.compact_revision() > 0 {
                            break true;
                        }
                        if msg.canceled() {
                            return Err(Error::Config(format!("etcd watch canceled: {}", msg.cancel_reason())));
                        }
                        for ev in msg.events() {
                            match (ev.event_type(), ev.kv()) {
                                (EventType::Put, Some(kv)) => self.apply(store, kv.value()),
                                _ => {
                                    store.source_error("etcd");
                                    tracing::warn!(key = %self.key, "routing table key deleted in etcd; keeping the table in force");
                                }
                            }
                        }
                        store.mark_fresh();
                    }
                    _ = tick.tick() => {
                        store.record_staleness();
                        if last_msg.elapsed() > self.progress_interval * 3 {
                            return Err(Error::Config("etcd watch silent".into()));
                        }
                        stream.request_progress().await?;
                    }
                }
            };
            if compacted {
                store.compaction_reread();
                tracing::info!(key = %self.key, start, "etcd watch revision compacted; re-reading the table");
            }
        }
    }
}

impl TableSource for EtcdSource {
    async fn run(self, store: TableStore) {
        match self.load_last_known_good(&store) {
            Ok(true) => tracing::info!(version = ?store.version(), "started from the last-known-good routing table"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "last-known-good routing table not loaded"),
        }
        let mut backoff = self.backoff_min;
        let mut resume = self.start_revision;
        loop {
            let mut connected = false;
            let res = self.session(&store, &mut connected, &mut resume).await;
            resume = None;
            if connected {
                backoff = self.backoff_min;
            }
            if let Err(e) = res {
                store.source_error("etcd");
                store.record_staleness();
                tracing::warn!(error = %e, retry_in = ?backoff, "etcd routing table watch failed; keeping the table in force");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.backoff_max);
        }
    }
}

/// Writes `table` to `key` only if its version is above the one stored there,
/// as one etcd transaction comparing the key's `mod_revision` (so two writers
/// cannot both win). Returns `Ok(false)` when another writer got there first.
///
/// The table is validated first; the failover crate uses this for its atomic
/// switch.
pub async fn publish(client: &mut Client, key: &str, table: &RoutingTable) -> Result<bool, Error> {
    table.validate()?;
    let cur = client.get(key, Some(GetOptions::new())).await?;
    let (cmp, current) = match cur.kvs().first() {
        Some(kv) => (Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision()), super::decode(kv.value()).ok()),
        None => (Compare::version(key, CompareOp::Equal, 0), None),
    };
    if let Some(c) = current
        && c.version >= table.version
    {
        return Err(InvalidTable::StaleVersion { current: c.version, offered: table.version }.into());
    }
    let txn = Txn::new().when([cmp]).and_then([TxnOp::put(key, super::encode(table)?, None)]);
    Ok(client.txn(txn).await?.succeeded())
}
