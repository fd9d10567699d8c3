//! The crate's one error type.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CrdtError {
    /// A remote timestamp is further in the future than the clock tolerates.
    #[error("remote timestamp {remote_ms} ms is {ahead_ms} ms ahead of the local clock (max drift {max_drift_ms} ms)")]
    ClockDrift {
        /// Physical part of the remote timestamp, in ms since the Unix epoch.
        remote_ms: u64,
        /// How far ahead of the local wall clock it is, in ms.
        ahead_ms: u64,
        /// The tolerated drift, in ms.
        max_drift_ms: u64,
    },
    /// A wire message is empty.
    #[error("empty message")]
    Empty,
    /// A wire message carries a version byte this build does not know.
    #[error("unknown wire version {0}")]
    UnknownVersion(u8),
    /// A wire message could not be decoded.
    #[error("corrupt message: {0}")]
    Corrupt(String),
    /// A value could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
    /// A delta's kind does not match the stored object's kind.
    #[error("object {object:?} is a {stored}, the delta is for a {delta}")]
    KindMismatch {
        /// The object id.
        object: String,
        /// Kind of the stored object.
        stored: &'static str,
        /// Kind of the delta.
        delta: &'static str,
    },
    /// Invalid configuration.
    #[error("invalid config: {0}")]
    Config(String),
    /// A message lacks a header the replicator needs, or the header is malformed.
    #[error("bad header {0}")]
    BadHeader(&'static str),
    /// The SQL outbox failed.
    #[cfg(feature = "sql")]
    #[error("outbox: {0}")]
    Sql(#[from] sqlx::Error),
    /// Kafka failed.
    #[cfg(feature = "kafka")]
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Redis failed.
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}
