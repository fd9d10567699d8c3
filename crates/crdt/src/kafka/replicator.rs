//! [`Replicator`]: applies other cells' deltas from Kafka.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::headers::{self as hdr, event_from_message, heartbeat_from_message};
use crate::codec;
use crate::error::CrdtError;
use crate::parked::DeadLetter;
use crate::replica::Replica;
use crate::state::StateStore;

/// How often an idle replicator retries its parked events (and a paused one
/// persists local writes).
const PARKED_RETRY: Duration = Duration::from_millis(500);

/// How often a replicator reading no partition yet looks for them (the
/// topic may not exist at start); once it reads some, 15 times less often
/// (the topic may grow).
const ASSIGN_EVERY: Duration = Duration::from_secs(2);

/// Consumes the replication topic for one replica: apply, persist (with the
/// offsets read), then commit.
///
/// It reads every partition of the topic, assigned by itself rather than by
/// a consumer group's rebalance: each partition from the offset the
/// replica's restored state says it had read up to (kept in the snapshot
/// and its log, see [`Replica`]); a state from a build that kept no offsets
/// reads from the group's committed offset, and a replica with no state at
/// all from the beginning. So a replica restored from an older snapshot
/// reads again everything after it, and an outage of the brokers longer
/// than any session leaves no group membership to rejoin. The group's
/// offsets are still committed after each persisted batch (for lag
/// monitors, and as the fallback above); a failed commit is logged, not
/// retried.
pub struct Replicator<S> {
    replica: Arc<Replica>,
    consumer: Arc<StreamConsumer>,
    topic: String,
    /// Partitions read so far, and when partitions were last looked for.
    assigned: Mutex<(std::collections::BTreeSet<i32>, Option<tokio::time::Instant>)>,
    state: S,
    names: cellctx::HeaderNames,
    batch: usize,
    snapshot_every: usize,
    log: Mutex<LogSize>,
    snapshot_interval: Duration,
    last_snapshot: Mutex<tokio::time::Instant>,
}

/// The persisted log since the last snapshot, and that snapshot's size.
#[derive(Debug, Clone, Copy, Default)]
struct LogSize {
    records: usize,
    bytes: usize,
    snapshot: usize,
}

impl LogSize {
    /// Whether to write a compacting snapshot instead of appending `records`
    /// more records of `bytes` bytes. A snapshot replaces a log at least as
    /// large as itself (at least `every` records), or, when `interval_due`, at
    /// least an eighth of its size: amortised over the changes it compacts, a
    /// snapshot costs at most eight times their log records, whatever the
    /// size of the state.
    fn compact(&self, records: usize, bytes: usize, every: usize, interval_due: bool) -> bool {
        let (n, b) = (self.records + records, self.bytes + bytes);
        (n >= every && b >= self.snapshot) || (interval_due && b.saturating_mul(8) >= self.snapshot)
    }
}

impl<S> std::fmt::Debug for Replicator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").field("cell", self.replica.cell()).finish_non_exhaustive()
    }
}

/// The next offset to commit per (topic, partition) of a batch.
#[derive(Debug, Default)]
struct Offsets {
    next: BTreeMap<(String, i32), i64>,
    count: usize,
}

impl Offsets {
    fn note(&mut self, topic: &str, partition: i32, offset: i64) {
        let next = self.next.entry((topic.to_string(), partition)).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        self.count += 1;
    }
}

/// A consumed message kept verbatim as a [`DeadLetter`].
fn dead_letter(msg: &BorrowedMessage<'_>, error: &CrdtError) -> DeadLetter {
    use rdkafka::Message;
    use rdkafka::message::Headers;
    let headers = msg
        .headers()
        .map(|h| h.iter().map(|x| (x.key.to_string(), x.value.map(<[u8]>::to_vec))).collect())
        .unwrap_or_default();
    DeadLetter {
        source: format!("{}/{}@{}", msg.topic(), msg.partition(), msg.offset()),
        key: msg.key().map(<[u8]>::to_vec),
        headers,
        payload: msg.payload().unwrap_or_default().to_vec(),
        error: error.to_string(),
        reason: crate::replica::reason(error).to_string(),
    }
}

impl<S: StateStore> Replicator<S> {
    /// Restores `replica` from `state` (when a state was saved and the replica
    /// was not restored already, e.g. by `Replica::recover`), then reads every
    /// partition of `topic` from where the restored state had read up to
    /// (see [`Replicator`]); `group_id` names the consumer group its progress
    /// is also committed to (one group per replica: each reads every
    /// partition; a new group with no state starts from the earliest offset).
    ///
    /// A restarted cell must also replay its own outbox before taking local
    /// writes: call `Replica::recover` before this (feature `sql`), or
    /// `Outbox::replay_into` after it and before spawning the replicator.
    pub async fn start(
        replica: Arc<Replica>,
        bootstrap_servers: &str,
        topic: &str,
        group_id: &str,
        state: S,
    ) -> Result<Self, CrdtError> {
        let (since_snapshot, snapshot_bytes) = replica.restore_and_journal(&state).await?;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "10")
            // a fetch waits 10 ms at most: a request unanswered for 10 s is on a
            // dead connection (a broker that went away), not a slow one; the
            // default (60 s) left the replicator reading nothing for a minute
            // after a broker outage
            .set("socket.timeout.ms", "10000")
            .create()?;
        let replicator = Replicator {
            replica,
            consumer: Arc::new(consumer),
            topic: topic.to_string(),
            assigned: Mutex::new((std::collections::BTreeSet::new(), None)),
            state,
            names: cellctx::HeaderNames::default(),
            batch: 500,
            snapshot_every: 10_000,
            log: Mutex::new(LogSize { records: since_snapshot, bytes: 0, snapshot: snapshot_bytes.unwrap_or(0) }),
            snapshot_interval: Duration::from_secs(60),
            last_snapshot: Mutex::new(tokio::time::Instant::now()),
        };
        if snapshot_bytes.is_none() {
            // what the replica holds (restored elsewhere, or written before the
            // journal started) may be in no snapshot: the log starts from one
            replicator.snapshot().await?;
        }
        // the brokers may be away at start: the run loop (or `step`) looks again
        if let Err(e) = replicator.assign_new_partitions().await {
            tracing::warn!(cell = %replicator.replica.cell(), error = %e, "crdt replicator: no partitions yet; looking again");
        }
        Ok(replicator)
    }

    /// Starts reading the partitions of the topic not read yet, each from
    /// the offset the state had read up to, else the group's committed
    /// offset, else the beginning; at most every [`ASSIGN_EVERY`]. Returns how
    /// many partitions were added.
    async fn assign_new_partitions(&self) -> Result<usize, CrdtError> {
        {
            let mut a = self.assigned.lock();
            // every few seconds until the topic has partitions, then seldom (it may grow)
            let every = if a.0.is_empty() { ASSIGN_EVERY } else { ASSIGN_EVERY * 15 };
            if a.1.is_some_and(|at| at.elapsed() < every) {
                return Ok(0);
            }
            a.1 = Some(tokio::time::Instant::now());
        }
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        let known = self.assigned.lock().0.clone();
        let restored = self.replica.consumed().await;
        // a replica with no state at all reads from the beginning; one
        // restored from a snapshot that kept no offsets (written by an older
        // build) trusts the group's commits
        let has_state = self.replica.replay_after() != crate::hlc::Timestamp::ZERO;
        // metadata and committed offsets are blocking calls of librdkafka
        let added = tokio::task::spawn_blocking(move || -> Result<Vec<i32>, CrdtError> {
            let timeout = Duration::from_secs(2);
            let meta = consumer.fetch_metadata(Some(&topic), timeout)?;
            let new: Vec<i32> = meta
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .filter(|p| !known.contains(p))
                .collect();
            if new.is_empty() {
                return Ok(new);
            }
            let mut ask = TopicPartitionList::new();
            for p in &new {
                ask.add_partition(&topic, *p);
            }
            let committed = consumer.committed_offsets(ask, timeout).ok();
            let mut tpl = TopicPartitionList::new();
            for p in &new {
                let from = match restored.get(&(topic.clone(), *p)) {
                    Some(next) => Offset::Offset(*next),
                    None if has_state => committed
                        .as_ref()
                        .and_then(|c| c.find_partition(&topic, *p))
                        .map(|e| e.offset())
                        .filter(|o| matches!(o, Offset::Offset(_)))
                        .unwrap_or(Offset::Beginning),
                    None => Offset::Beginning,
                };
                tpl.add_partition_offset(&topic, *p, from)?;
            }
            consumer.incremental_assign(&tpl)?;
            Ok(new)
        })
        .await
        .map_err(|e| CrdtError::Config(format!("partition assignment task: {e}")))??;
        if !added.is_empty() {
            tracing::info!(cell = %self.replica.cell(), topic = %self.topic, partitions = ?added, "crdt replicator reads new partitions");
        }
        let n = added.len();
        self.assigned.lock().0.extend(added);
        Ok(n)
    }

    /// Messages applied per batch at most (default 500): one log append and
    /// one offset commit per batch.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// A compacting snapshot at least this often once the log holds an
    /// eighth of the snapshot's size (default 60 s): it bounds the time a
    /// restore replays. Every persisted batch, local writes included, moves
    /// the replica's durable point (`Replica::durable_ts`), up to which
    /// outbox retention may prune.
    pub fn with_snapshot_interval(mut self, every: Duration) -> Self {
        self.snapshot_interval = every;
        self
    }

    /// A compacting snapshot once the log holds at least this many records
    /// (default 10 000) and at least as many bytes as the last snapshot, so
    /// what is persisted per change stays the same whatever the state's size.
    pub fn with_snapshot_every(mut self, records: usize) -> Self {
        self.snapshot_every = records.max(1);
        self
    }

    /// The replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    async fn handle(&self, msg: &BorrowedMessage<'_>) {
        if hdr::header(msg, hdr::TYPE).is_ok_and(|t| t == hdr::TYPE_HEARTBEAT) {
            return self.handle_heartbeat(msg).await;
        }
        let event = match event_from_message(msg) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "crdt message without valid replication headers: dead letter");
                self.replica.metrics().rejected("corrupt");
                self.replica.dead_letter(dead_letter(msg, &e)).await;
                return;
            }
        };
        let ctx = match cellctx::kafka::extract_message(msg, &self.names) {
            Ok(ctx) => ctx,
            Err(e) => {
                // the context is advisory: apply without it rather than lose the delta
                tracing::debug!(error = %e, "malformed cell context in crdt message");
                cellctx::CellContext::new()
            }
        };
        let replica = self.replica.clone();
        // applied or parked: recorded in the journal, persisted by the batch
        if let Err(e) = cellctx::scope(Arc::new(ctx), async move { replica.apply_event(&event).await }).await {
            // counted and logged by `apply_event`; kept, never dropped
            self.replica.dead_letter(dead_letter(msg, &e)).await;
        }
    }

    async fn handle_heartbeat(&self, msg: &BorrowedMessage<'_>) {
        use rdkafka::Message;
        let hb = match heartbeat_from_message(msg) {
            Ok(hb) => hb,
            Err(e) => {
                tracing::warn!(error = %e, "malformed crdt heartbeat");
                self.replica.metrics().rejected("corrupt");
                self.replica.dead_letter(dead_letter(msg, &e)).await;
                return;
            }
        };
        // a collection is recorded in the journal, persisted by the batch
        if let Err(e) = self.replica.on_heartbeat(&hb.origin, msg.partition(), hb.partitions, hb.ts, hb.ack).await {
            // a heartbeat carries no write, and the next one supersedes it
            tracing::warn!(error = %e, origin = %hb.origin, "crdt heartbeat rejected");
            self.replica.metrics().rejected("clock_drift");
        }
    }

    /// Persists what changed since the last flush: the journal's records
    /// appended to the log in one write, or a compacting snapshot instead
    /// (see [`with_snapshot_every`](Self::with_snapshot_every)). On failure the
    /// records go back to the journal, so a later flush persists them.
    async fn flush(&self) -> Result<(), CrdtError> {
        let (records, covered) = self.replica.take_journal().await;
        if records.is_empty() {
            return Ok(());
        }
        let result = match records.iter().map(codec::encode).collect::<Result<Vec<_>, _>>() {
            Err(e) => Err(e),
            Ok(encoded) => {
                let bytes = encoded.iter().map(Vec::len).sum();
                let due = self.last_snapshot.lock().elapsed() >= self.snapshot_interval;
                let compact = self.log.lock().compact(encoded.len(), bytes, self.snapshot_every, due);
                if compact { self.snapshot().await } else { self.append(&encoded, bytes, covered).await }
            }
        };
        if result.is_err() {
            self.replica.unjournal(records).await;
        }
        result
    }

    async fn append(&self, encoded: &[Vec<u8>], bytes: usize, covered: crate::hlc::Timestamp) -> Result<(), CrdtError> {
        self.state.append(self.replica.state_key(), encoded).await?;
        self.replica.note_persisted(covered);
        let mut log = self.log.lock();
        log.records += encoded.len();
        log.bytes += bytes;
        Ok(())
    }

    async fn snapshot(&self) -> Result<(), CrdtError> {
        let size = self.replica.save_to(&self.state).await?;
        *self.log.lock() = LogSize { records: 0, bytes: 0, snapshot: size };
        *self.last_snapshot.lock() = tokio::time::Instant::now();
        Ok(())
    }

    /// Receives and processes one batch: waits at most `timeout` for a first
    /// message, then takes the ones already there (up to the batch size).
    /// Returns how many messages were processed (0: none arrived).
    ///
    /// Each message is applied, parked (its HLC time too far ahead: applied
    /// once the clock allows, see `Replica::retry_parked`) or, when it can
    /// never apply as it stands, kept as a dead letter (`Replica::dead_letters`);
    /// parked events the clock now allows are applied too. Then what changed
    /// is persisted, and only then are the batch's offsets committed.
    pub async fn step(&self, timeout: Duration) -> Result<usize, CrdtError> {
        if let Err(e) = self.assign_new_partitions().await {
            tracing::warn!(cell = %self.replica.cell(), error = %e, "crdt replicator: looking for partitions failed");
        }
        let first = match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Err(_) => None,
            Ok(m) => Some(m?),
        };
        let offsets = self.gather(first).await;
        self.finish(&offsets).await?;
        Ok(offsets.count)
    }

    /// Applies `first` and the messages already received after it, up to the batch size.
    async fn gather(&self, first: Option<BorrowedMessage<'_>>) -> Offsets {
        let mut offsets = Offsets::default();
        let Some(msg) = first else { return offsets };
        self.take(&msg, &mut offsets).await;
        while offsets.count < self.batch {
            match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                Ok(Ok(msg)) => self.take(&msg, &mut offsets).await,
                Ok(Err(e)) => {
                    tracing::warn!(cell = %self.replica.cell(), error = %e, "crdt replicator: receive failed");
                    break;
                }
                Err(_) => break,
            }
        }
        offsets
    }

    /// Applies the parked events the clock allows, persists what changed,
    /// then commits the offsets.
    async fn finish(&self, offsets: &Offsets) -> Result<(), CrdtError> {
        self.replica.retry_parked().await;
        // the offsets go into the state with what the batch changed
        self.replica.note_consumed(&offsets.next).await;
        self.flush().await?;
        // advisory: the state holds the offsets; the group's serve lag monitors
        if let Err(e) = self.commit(offsets) {
            tracing::debug!(cell = %self.replica.cell(), error = %e, "crdt replicator: offset commit failed (the state holds the offsets)");
        }
        Ok(())
    }

    async fn take(&self, msg: &BorrowedMessage<'_>, offsets: &mut Offsets) {
        use rdkafka::Message;
        self.handle(msg).await;
        offsets.note(msg.topic(), msg.partition(), msg.offset());
    }

    fn commit(&self, offsets: &Offsets) -> Result<(), CrdtError> {
        if offsets.next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), next) in &offsets.next {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        }
        self.consumer.commit(&tpl, CommitMode::Async)?;
        Ok(())
    }

    /// [`finish`](Self::finish) for the run loop: a failed save or commit is
    /// retried until it succeeds or the replicator stops (the batch's offsets
    /// are committed only once what it changed is saved; the unsaved changes
    /// wait in the journal).
    async fn finish_retrying(&self, offsets: &Offsets, stop: &mut watch::Receiver<bool>) -> Result<(), CrdtError> {
        let mut result = self.finish(offsets).await;
        while let Err(e) = &result {
            if *stop.borrow() {
                break;
            }
            tracing::warn!(cell = %self.replica.cell(), error = %e, "crdt replicator: retrying save/commit");
            tokio::time::sleep(Duration::from_millis(200)).await;
            result = self.finish(offsets).await;
        }
        result
    }

    /// Runs in a background task; the handle pauses, resumes and stops it.
    pub fn spawn(self) -> ReplicatorHandle {
        let (paused_tx, paused_rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(self.run(paused_rx, stop_rx));
        ReplicatorHandle { paused: paused_tx, stop: stop_tx, task }
    }

    async fn run(self, mut paused: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            if *paused.borrow() {
                // paused (a partitioned cell): local writes are still persisted
                tokio::select! {
                    _ = paused.changed() => {}
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(PARKED_RETRY) => {
                        if let Err(e) = self.flush().await {
                            tracing::warn!(cell = %self.replica.cell(), error = %e, "crdt replicator: saving local writes failed");
                        }
                    }
                }
                continue;
            }
            if let Err(e) = self.assign_new_partitions().await {
                tracing::warn!(cell = %self.replica.cell(), error = %e, "crdt replicator: looking for partitions failed");
            }
            // only the receive is raced against pause/stop: a received batch
            // is always processed to the end (applied, persisted, committed);
            // when idle, parked events are retried as the clock moves
            let received = tokio::select! {
                m = self.consumer.recv() => Some(m),
                _ = paused.changed() => continue,
                _ = stop.changed() => continue,
                _ = tokio::time::sleep(PARKED_RETRY) => None,
            };
            let result = match received {
                Some(Err(e)) => Err(CrdtError::from(e)),
                Some(Ok(msg)) => {
                    let offsets = self.gather(Some(msg)).await;
                    self.finish_retrying(&offsets, &mut stop).await
                }
                None => self.finish_retrying(&Offsets::default(), &mut stop).await,
            };
            if let Err(e) = result {
                tracing::warn!(cell = %self.replica.cell(), error = %e, "crdt replicator error");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Controls a spawned [`Replicator`].
#[derive(Debug)]
pub struct ReplicatorHandle {
    paused: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ReplicatorHandle {
    /// Stops consuming (a partitioned cell); messages wait in Kafka.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Consumes again.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }

    /// Stops the replicator and waits for it (the consumer is closed).
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }

    /// Kills the task at once, as a crash would (nothing more is committed).
    pub fn abort(self) {
        self.task.abort();
    }
}
