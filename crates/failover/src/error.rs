//! The crate's error type.

use cellctx::CellId;

/// Everything the failover crate can report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A cell is not known to the engine or the routing table.
    #[error("unknown cell {0}")]
    UnknownCell(CellId),
    /// A rule set was rejected; the rule set in force is unchanged.
    #[error("rule set rejected: {0}")]
    InvalidRules(String),
    /// A rule failed to evaluate.
    #[error("rule {rule}: {message}")]
    RuleEval {
        /// The rule's name.
        rule: String,
        /// What went wrong.
        message: String,
    },
    /// The routing table could not be read, decoded, changed or validated.
    #[error("routing table: {0}")]
    Table(#[from] cellrouter::Error),
    /// No routing table is stored under the key.
    #[error("no routing table at {0}")]
    NoTable(String),
    /// The table changed between read and write (compare on version failed):
    /// nothing was written, the other writer's table stays.
    #[error("routing table changed concurrently (expected mod revision {expected})")]
    Conflict {
        /// The mod revision read before the write.
        expected: i64,
    },
    /// The switch lock was not acquired in time.
    #[error("switch lock {0} not acquired in time")]
    LockTimeout(String),
    /// The switch lock (or its lease) was lost before the write.
    #[error("switch lock {0} lost (lease expired or revoked)")]
    LockLost(String),
    /// This controller does not hold the leadership (it never won it, lost its
    /// lease, or its term was superseded): nothing was written.
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// The drain would leave more cells drained in the stored routing table
    /// than the cap allows: nothing was written.
    #[error("drain cap reached: {drained} cells drained, cap {cap}")]
    DrainCap {
        /// Cells not `active` in the stored table.
        drained: usize,
        /// The cap.
        cap: usize,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An alert batch could not be delivered (connection, timeout, encoding).
    #[error("alert delivery: {0}")]
    AlertDelivery(String),
    /// The alert receiver answered with a non-success status.
    #[error("alert receiver answered {status}: {body}")]
    AlertRejected {
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// Id generation failed.
    #[error("id generation: {0}")]
    Id(#[from] idgen::Error),
    /// The etcd client failed.
    #[cfg(feature = "etcd")]
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The audit database failed.
    #[cfg(feature = "sql")]
    #[error("audit database: {0}")]
    Sql(#[from] sqlx::Error),
}
