//! [`Relay`]: outbox rows to Kafka.

use std::future::Future;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::headers;
use crate::error::CrdtError;
use crate::outbox::{Outbox, OutboxRow};

/// Publishes a cell's outbox rows to Kafka and marks them sent.
pub struct Relay {
    outbox: Outbox,
    producer: FutureProducer,
    topic: String,
    batch: u32,
    poll_interval: Duration,
    send_timeout: Duration,
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
            .set("linger.ms", "0")
            .create()?;
        Ok(Relay {
            outbox,
            producer,
            topic: topic.to_string(),
            batch: 500,
            poll_interval: Duration::from_millis(20),
            send_timeout: Duration::from_secs(30),
        })
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

    fn headers(row: &OutboxRow) -> OwnedHeaders {
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
    /// the ids published (in order). Stops at the first failed send and returns
    /// what was published before it, with the error.
    pub async fn publish_pending(&self) -> (Vec<i64>, Option<CrdtError>) {
        let rows = match self.outbox.pending(self.batch).await {
            Ok(rows) => rows,
            Err(e) => return (Vec::new(), Some(e)),
        };
        let mut sent = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = FutureRecord::to(&self.topic)
                .key(row.aggregate_id.as_bytes())
                .payload(&row.payload)
                .headers(Self::headers(row));
            if let Err((e, _)) = self.producer.send(record, self.send_timeout).await {
                return (sent, Some(e.into()));
            }
            sent.push(row.id);
        }
        (sent, None)
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
        loop {
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
