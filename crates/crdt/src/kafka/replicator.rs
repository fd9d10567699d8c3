//! [`Replicator`]: applies other cells' deltas from Kafka.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::BorrowedMessage;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::headers::{self as hdr, event_from_message, heartbeat_from_message};
use crate::error::CrdtError;
use crate::parked::DeadLetter;
use crate::replica::{Applied, Replica};
use crate::state::StateStore;

/// How often an idle replicator retries its parked events.
const PARKED_RETRY: Duration = Duration::from_millis(500);

/// Consumes the replication topic for one cell: apply, persist, then commit.
pub struct Replicator<S> {
    replica: Arc<Replica>,
    consumer: StreamConsumer,
    state: S,
    names: cellctx::HeaderNames,
}

impl<S> std::fmt::Debug for Replicator<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator").field("cell", self.replica.cell()).finish_non_exhaustive()
    }
}

/// Whether one consumed message changed the persisted state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Applied, parked, or kept as a dead letter: persist before committing.
    Changed,
    /// A duplicate, a heartbeat that collected nothing, or one rejected (a heartbeat is never kept: the next one supersedes it).
    Unchanged,
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
    /// was not restored already, e.g. by `Replica::recover`), then subscribes
    /// to `topic` in consumer group `group_id` (one group per cell; a new group
    /// starts from the earliest offset).
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
        if !replica.is_restored()
            && let Some(saved) = state.load(replica.cell()).await?
        {
            replica.restore(&saved).await?;
        }
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        consumer.subscribe(&[topic])?;
        Ok(Replicator { replica, consumer, state, names: cellctx::HeaderNames::default() })
    }

    /// The replica.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    async fn handle(&self, msg: &BorrowedMessage<'_>) -> Outcome {
        if hdr::header(msg, hdr::TYPE).is_ok_and(|t| t == hdr::TYPE_HEARTBEAT) {
            return self.handle_heartbeat(msg).await;
        }
        let event = match event_from_message(msg) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "crdt message without valid replication headers: dead letter");
                self.replica.metrics().rejected("corrupt");
                self.replica.dead_letter(dead_letter(msg, &e)).await;
                return Outcome::Changed;
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
        match cellctx::scope(Arc::new(ctx), async move { replica.apply_event(&event).await }).await {
            Ok(Applied::Applied | Applied::Parked) => Outcome::Changed,
            Ok(Applied::Duplicate) => Outcome::Unchanged,
            Err(e) => {
                // counted and logged by `apply_event`; kept, never dropped
                self.replica.dead_letter(dead_letter(msg, &e)).await;
                Outcome::Changed
            }
        }
    }

    async fn handle_heartbeat(&self, msg: &BorrowedMessage<'_>) -> Outcome {
        use rdkafka::Message;
        let hb = match heartbeat_from_message(msg) {
            Ok(hb) => hb,
            Err(e) => {
                tracing::warn!(error = %e, "malformed crdt heartbeat");
                self.replica.metrics().rejected("corrupt");
                self.replica.dead_letter(dead_letter(msg, &e)).await;
                return Outcome::Changed;
            }
        };
        match self.replica.on_heartbeat(&hb.origin, msg.partition(), hb.partitions, hb.ts, hb.ack).await {
            // collected tombstones change the state: persist it
            Ok(n) if n > 0 => Outcome::Changed,
            Ok(_) => Outcome::Unchanged,
            Err(e) => {
                // a heartbeat carries no write, and the next one supersedes it
                tracing::warn!(error = %e, origin = %hb.origin, "crdt heartbeat rejected");
                self.replica.metrics().rejected("clock_drift");
                Outcome::Unchanged
            }
        }
    }

    async fn persist(&self) -> Result<(), CrdtError> {
        let snapshot = self.replica.snapshot().await?;
        self.state.save(self.replica.cell(), &snapshot).await
    }

    /// Receives and processes one message, waiting at most `timeout`; `Ok(false)`
    /// when none arrived. The offset is committed only after the outcome is
    /// saved: the delta applied, parked (its HLC time too far ahead: applied
    /// once the clock allows, see `Replica::retry_parked`) or, when it can never
    /// apply as it stands, kept as a dead letter (`Replica::dead_letters`).
    /// Parked events the clock now allows are applied too.
    pub async fn step(&self, timeout: Duration) -> Result<bool, CrdtError> {
        let msg = match tokio::time::timeout(timeout, self.consumer.recv()).await {
            Err(_) => {
                self.retry_parked().await?;
                return Ok(false);
            }
            Ok(m) => m?,
        };
        self.process(&msg).await?;
        Ok(true)
    }

    /// Applies, persists, commits: never cancelled half-way by the run loop.
    async fn process(&self, msg: &BorrowedMessage<'_>) -> Result<(), CrdtError> {
        let mut outcome = self.handle(msg).await;
        if self.replica.retry_parked().await > 0 {
            outcome = Outcome::Changed;
        }
        if outcome == Outcome::Changed {
            self.persist().await?;
        }
        self.consumer.commit_message(msg, CommitMode::Async)?;
        Ok(())
    }

    /// Applies the parked events the clock now allows, and persists them.
    async fn retry_parked(&self) -> Result<usize, CrdtError> {
        let n = self.replica.retry_parked().await;
        if n > 0 {
            self.persist().await?;
        }
        Ok(n)
    }

    /// Processes `msg`, retrying a failed save or commit until it succeeds or
    /// the replicator stops (so no later commit skips over it).
    async fn process_retrying(&self, msg: &BorrowedMessage<'_>, stop: &mut watch::Receiver<bool>) -> Result<(), CrdtError> {
        let mut result = self.process(msg).await;
        while let Err(e) = &result {
            if *stop.borrow() {
                break;
            }
            tracing::warn!(cell = %self.replica.cell(), error = %e, "crdt replicator: retrying save/commit");
            tokio::time::sleep(Duration::from_millis(200)).await;
            // re-applying is a duplicate (skipped); this retries the save and commit
            result = self.process(msg).await;
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
                tokio::select! {
                    _ = paused.changed() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            // only the receive is raced against pause/stop: a received message
            // is always processed to the end (applied, persisted, committed)
            let received = tokio::select! {
                m = self.consumer.recv() => Some(m),
                _ = paused.changed() => None,
                _ = stop.changed() => None,
                _ = tokio::time::sleep(PARKED_RETRY) => {
                    // idle: parked events become applicable as the clock moves
                    if let Err(e) = self.retry_parked().await {
                        tracing::warn!(cell = %self.replica.cell(), error = %e, "crdt replicator: parked retry not saved");
                    }
                    None
                }
            };
            let result = match received {
                None => continue,
                Some(Err(e)) => Err(CrdtError::from(e)),
                Some(Ok(msg)) => self.process_retrying(&msg, &mut stop).await,
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
