//! [`Relay`]: outbox rows to Kafka.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::headers;
use crate::error::CrdtError;
use crate::hlc::{Clock, SystemClock};
use crate::outbox::{Outbox, OutboxRow, Retention};
use crate::replica::Replica;

/// How often a relay with a retention prunes its outbox.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// Publishes a cell's outbox rows to Kafka and marks them sent.
pub struct Relay {
    outbox: Outbox,
    producer: FutureProducer,
    topic: String,
    batch: u32,
    poll_interval: Duration,
    send_timeout: Duration,
    heartbeat: Option<(Arc<Replica>, Duration)>,
    retention: Option<(Retention, Arc<Replica>)>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("outbox", &self.outbox).field("topic", &self.topic).finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay from `outbox` to `topic` on `bootstrap_servers`.
    pub fn new(outbox: Outbox, bootstrap_servers: &str, topic: &str) -> Result<Self, CrdtError> {
        if topic.is_empty() {
            return Err(CrdtError::Config("empty topic".into()));
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap_servers)
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            // a produce unanswered for 10 s is on a dead connection: give up on
            // it and retry (the default, 60 s, held replication that long after
            // a broker outage)
            .set("socket.timeout.ms", "10000")
            .set("request.timeout.ms", "10000")
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .create()?;
        Ok(Relay {
            outbox,
            producer,
            topic: topic.to_string(),
            batch: 500,
            poll_interval: Duration::from_millis(20),
            send_timeout: Duration::from_secs(30),
            heartbeat: None,
            retention: None,
        })
    }

    /// Sends a heartbeat into every partition every `every` (from
    /// [`run`](Self::run)): a timestamp taken under `replica`'s lock, sent after
    /// all rows committed before it were published, plus the cell's own
    /// watermark. Replicas configured with
    /// [`Replica::with_cells`] use them to collect tombstones.
    pub fn with_heartbeat(mut self, replica: Arc<Replica>, every: Duration) -> Self {
        self.heartbeat = Some((replica, every));
        self
    }

    async fn partitions(&self) -> Result<i32, CrdtError> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let md = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(Some(&topic), Duration::from_secs(10))
        })
        .await
        .map_err(|e| CrdtError::Config(format!("metadata task: {e}")))??;
        let n = md.topics().iter().find(|t| t.name() == self.topic).map_or(0, |t| t.partitions().len());
        i32::try_from(n).ok().filter(|n| *n > 0).ok_or(CrdtError::Config(format!("topic {} has no partitions", self.topic)))
    }

    /// Publishes everything pending, then a heartbeat into every partition.
    pub async fn heartbeat(&self, replica: &Replica) -> Result<(), CrdtError> {
        let ts = replica.heartbeat_ts().await;
        // every row stamped before `ts` is committed: drain the outbox
        while self.run_once().await? >= self.batch as usize {}
        let partitions = self.partitions().await?;
        let hlc = ts.0.to_string();
        let n = partitions.to_string();
        let ack = replica.local_watermark().map(|w| w.0.to_string());
        let origin = replica.cell().as_str();
        for p in 0..partitions {
            let mut h = OwnedHeaders::new_with_capacity(5)
                .insert(Header { key: headers::ORIGIN, value: Some(origin.as_bytes()) })
                .insert(Header { key: headers::HLC, value: Some(hlc.as_bytes()) })
                .insert(Header { key: headers::TYPE, value: Some(headers::TYPE_HEARTBEAT.as_bytes()) })
                .insert(Header { key: headers::PARTITIONS, value: Some(n.as_bytes()) });
            if let Some(ack) = &ack {
                h = h.insert(Header { key: headers::ACK, value: Some(ack.as_bytes()) });
            }
            let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).partition(p).headers(h);
            self.producer.send(record, self.send_timeout).await.map_err(|(e, _)| CrdtError::from(e))?;
        }
        Ok(())
    }

    /// Prunes sent rows as `retention` allows (from [`run`](Self::run), every
    /// [`PRUNE_EVERY`]), never past `replica`'s last durable snapshot
    /// ([`Replica::durable_ts`]): the rows a restart replays stay. Without it
    /// rows are kept for ever.
    pub fn with_retention(mut self, retention: Retention, replica: Arc<Replica>) -> Self {
        self.retention = Some((retention, replica));
        self
    }

    /// One pruning pass (see [`with_retention`](Self::with_retention));
    /// returns how many rows were deleted (0 without a retention).
    pub async fn prune(&self) -> Result<u64, CrdtError> {
        let Some((retention, replica)) = &self.retention else { return Ok(0) };
        self.outbox.prune(retention, replica.durable_ts(), SystemClock.now_ms()).await
    }

    /// Rows per round (default 500).
    pub fn with_batch(mut self, batch: u32) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Pause between rounds when the outbox is empty (default 20 ms).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.poll_interval = every;
        self
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    pub(crate) fn headers(row: &OutboxRow) -> OwnedHeaders {
        let seq = row.id.to_string();
        let hlc = row.hlc.0.to_string();
        let mut h = OwnedHeaders::new_with_capacity(5 + row.context.len())
            .insert(Header { key: headers::ORIGIN, value: Some(row.origin.as_bytes()) })
            .insert(Header { key: headers::SEQ, value: Some(seq.as_bytes()) })
            .insert(Header { key: headers::HLC, value: Some(hlc.as_bytes()) })
            .insert(Header { key: headers::TYPE, value: Some(row.event_type.as_bytes()) })
            .insert(Header { key: headers::AGGREGATE_TYPE, value: Some(row.aggregate_type.as_bytes()) });
        for (k, v) in &row.context {
            if !k.starts_with("x-crdt-") {
                h = h.insert(Header { key: k.as_str(), value: Some(v.as_bytes()) });
            }
        }
        h
    }

    /// Publishes up to one batch of pending rows without marking them; returns
    /// the ids published (in order). The batch's records are all handed to the
    /// producer before the first acknowledgement is awaited (the idempotent
    /// producer keeps them in order within a partition, retries included);
    /// the acknowledgements are then read in order, and at the first failed
    /// one it returns the ids acknowledged before it, with the error (rows
    /// after it are published again by a later round: a replica skips the
    /// duplicates).
    pub async fn publish_pending(&self) -> (Vec<i64>, Option<CrdtError>) {
        let rows = match self.outbox.pending(self.batch).await {
            Ok(rows) => rows,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut sent = Vec::with_capacity(rows.len());
        let mut inflight: VecDeque<(i64, DeliveryFuture)> = VecDeque::with_capacity(rows.len());
        for row in &rows {
            let mut record = FutureRecord::to(&self.topic)
                .key(row.aggregate_id.as_bytes())
                .payload(&row.payload)
                .headers(Self::headers(row));
            let delivery = loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // the producer's queue is full: wait for the oldest acknowledgement
                        record = back;
                        match inflight.pop_front() {
                            Some((id, oldest)) => match acked(oldest).await {
                                Ok(()) => sent.push(id),
                                Err(e) => return (sent, Some(e)),
                            },
                            None => tokio::time::sleep(Duration::from_millis(1)).await,
                        }
                    }
                    Err((e, _)) => {
                        let err = drain(&mut inflight, &mut sent).await.unwrap_or_else(|| e.into());
                        return (sent, Some(err));
                    }
                }
            };
            inflight.push_back((row.id, delivery));
        }
        let err = drain(&mut inflight, &mut sent).await;
        (sent, err)
    }

    /// Marks rows sent.
    pub async fn mark_sent(&self, ids: &[i64]) -> Result<u64, CrdtError> {
        self.outbox.mark_sent(ids).await
    }

    /// One round: publish a batch, then mark what was published. Returns how
    /// many rows were published.
    pub async fn run_once(&self) -> Result<usize, CrdtError> {
        let (ids, err) = self.publish_pending().await;
        self.mark_sent(&ids).await?;
        match err {
            Some(e) => Err(e),
            None => Ok(ids.len()),
        }
    }

    /// Runs rounds until `shutdown` completes: after each round it waits for
    /// the poll interval or [`Outbox::wake`], whichever comes first. Errors are
    /// logged and retried.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut next_heartbeat = Instant::now();
        let mut next_prune = Instant::now();
        loop {
            if self.retention.is_some() && Instant::now() >= next_prune {
                next_prune = Instant::now() + PRUNE_EVERY;
                if let Err(e) = self.prune().await {
                    tracing::warn!(error = %e, table = self.outbox.table(), "outbox pruning failed");
                }
            }
            if let Some((replica, every)) = &self.heartbeat
                && Instant::now() >= next_heartbeat
            {
                next_heartbeat = Instant::now() + *every;
                if let Err(e) = self.heartbeat(replica).await {
                    tracing::warn!(error = %e, "outbox relay heartbeat failed");
                }
            }
            let wait = match self.run_once().await {
                Ok(n) if n >= self.batch as usize => Duration::ZERO,
                Ok(_) => self.poll_interval,
                Err(e) => {
                    tracing::warn!(error = %e, table = self.outbox.table(), "outbox relay round failed");
                    self.poll_interval.max(Duration::from_millis(100))
                }
            };
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(wait) => {}
                _ = self.outbox.woken() => {}
            }
        }
    }
}

/// The outcome of one delivery.
async fn acked(delivery: DeliveryFuture) -> Result<(), CrdtError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(CrdtError::Kafka(KafkaError::Canceled)),
    }
}

/// Awaits the deliveries in order, moving each acknowledged id to `sent`;
/// stops at the first failure and returns it.
async fn drain(inflight: &mut VecDeque<(i64, DeliveryFuture)>, sent: &mut Vec<i64>) -> Option<CrdtError> {
    while let Some((id, delivery)) = inflight.pop_front() {
        if let Err(e) = acked(delivery).await {
            return Some(e);
        }
        sent.push(id);
    }
    None
}
