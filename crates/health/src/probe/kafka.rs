//! [`KafkaProbe`]: metadata round trip and consumer-group lag.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use super::{Probe, ProbeFuture, ProbeKind, ProbeOutcome};
use crate::error::HealthError;

/// Fetches cluster metadata (a broker round trip) and, when a consumer group is
/// set, sums the group's lag over the given topics as the message backlog:
/// per partition, high watermark minus the committed offset (minus the low
/// watermark when nothing is committed).
///
/// librdkafka calls block, so each run happens on tokio's blocking pool, bounded
/// by the request timeout.
#[derive(Clone)]
pub struct KafkaProbe {
    consumer: Arc<BaseConsumer>,
    lag_topics: Arc<[String]>,
    request_timeout: Duration,
}

impl std::fmt::Debug for KafkaProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaProbe")
            .field("lag_topics", &self.lag_topics)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

fn config_err(e: KafkaError) -> HealthError {
    HealthError::InvalidConfig(format!("kafka client: {e}"))
}

impl KafkaProbe {
    /// A metadata-only probe of `bootstrap_servers`.
    pub fn try_new(bootstrap_servers: &str) -> Result<Self, HealthError> {
        Self::build(bootstrap_servers, None, Vec::new())
    }

    /// A probe that also reports the lag of consumer group `group` on `topics`.
    pub fn with_consumer_lag(
        bootstrap_servers: &str,
        group: &str,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self, HealthError> {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        if group.is_empty() || topics.is_empty() {
            return Err(HealthError::InvalidConfig("kafka lag probe needs a group and at least one topic".into()));
        }
        Self::build(bootstrap_servers, Some(group), topics)
    }

    fn build(bootstrap: &str, group: Option<&str>, topics: Vec<String>) -> Result<Self, HealthError> {
        if bootstrap.trim().is_empty() {
            return Err(HealthError::InvalidConfig("empty bootstrap.servers".into()));
        }
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", bootstrap)
            .set("enable.auto.commit", "false")
            .set("socket.timeout.ms", "2000")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500");
        if let Some(g) = group {
            cfg.set("group.id", g);
        }
        let consumer: BaseConsumer = cfg.create().map_err(config_err)?;
        Ok(KafkaProbe { consumer: Arc::new(consumer), lag_topics: topics.into(), request_timeout: Duration::from_secs(2) })
    }

    /// Timeout of each librdkafka request (default 2 s); keep it below the probe's timeout.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    fn run_blocking(&self) -> Result<Option<u64>, KafkaError> {
        let t = self.request_timeout;
        let md = self.consumer.fetch_metadata(None, t)?;
        if md.brokers().is_empty() {
            return Err(KafkaError::MetadataFetch(rdkafka::types::RDKafkaErrorCode::AllBrokersDown));
        }
        if self.lag_topics.is_empty() {
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        for topic in self.lag_topics.iter() {
            if let Some(mt) = md.topics().iter().find(|mt| mt.name() == topic) {
                for p in mt.partitions() {
                    tpl.add_partition(topic, p.id());
                }
            }
        }
        let committed = self.consumer.committed_offsets(tpl, t)?;
        let mut lag: u64 = 0;
        for el in committed.elements() {
            let (low, high) = self.consumer.fetch_watermarks(el.topic(), el.partition(), t)?;
            let from = match el.offset() {
                Offset::Offset(o) => o,
                _ => low,
            };
            lag = lag.saturating_add(u64::try_from(high.saturating_sub(from)).unwrap_or(0));
        }
        Ok(Some(lag))
    }
}

impl Probe for KafkaProbe {
    fn kind(&self) -> ProbeKind {
        ProbeKind::Kafka
    }

    fn check(&self) -> ProbeFuture<'_> {
        let this = self.clone();
        Box::pin(async move {
            match tokio::task::spawn_blocking(move || this.run_blocking()).await {
                Ok(Ok(Some(lag))) => ProbeOutcome::up().with_backlog(lag),
                Ok(Ok(None)) => ProbeOutcome::up(),
                Ok(Err(e)) => ProbeOutcome::down(format!("kafka: {e}")),
                Err(e) => ProbeOutcome::down(format!("kafka probe task: {e}")),
            }
        })
    }
}
