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
    /// The MySQL/MariaDB binlog source failed (connection, protocol, SQL).
    #[cfg(feature = "binlog")]
    #[error("binlog source: {0}")]
    Mysql(#[from] mysql_async::Error),
    /// The source server does not log row events: `binlog_format` is not `ROW`
    /// (or the binary log is off), so row changes cannot be captured.
    #[error("binlog format is {found}, not ROW: set `binlog_format=ROW` (and `binlog_row_image=FULL`) globally, reconnect the writers, then restart the relay")]
    BinlogFormat {
        /// What the server reported (or the statement logged in another format).
        found: String,
    },
    /// The relay's database user lacks a privilege change data capture needs.
    #[error("binlog privilege missing ({detail}): `GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO` the relay's user")]
    BinlogPrivilege {
        /// The server's message.
        detail: String,
    },
    /// The stored position is no longer in the server's binary logs (purged):
    /// changes after it are lost to the relay.
    #[error("binlog position {file}:{position} was purged from the server: re-seed the replicas from the tables, restart the relay under a new `origin` and `name` (it starts at the current end; counter totals start afresh), and keep binlogs longer (`expire_logs_days`)")]
    BinlogPurged {
        /// The stored binlog file.
        file: String,
        /// The stored offset in it.
        position: u64,
    },
    /// A DDL statement changed a mapped table: the column mapping may no longer hold.
    #[error("DDL on mapped table {table} at {file}:{position} ({statement}): check the table mapping, then restart the relay with `BinlogRelay::skip_ddl` to continue after it")]
    BinlogDdl {
        /// `schema.table`.
        table: String,
        /// The statement.
        statement: String,
        /// Binlog file of the statement.
        file: String,
        /// Offset just after the statement.
        position: u64,
    },
    /// A row of a mapped table cannot be turned into a change (a NULL or
    /// non-numeric column, a transaction without a GTID).
    #[error("binlog row: {0}")]
    BinlogRow(String),
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
