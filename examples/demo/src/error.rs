//! The demo's error type.

/// Everything that can stop the demo.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DemoError {
    /// The campaign armed the leader to die in a switch and no switch came.
    #[error("no switch passed the armed point")]
    NoSwitchWhileArmed,
    /// The configuration file is invalid.
    #[error("invalid config: {0}")]
    Config(String),
    /// A database error.
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    /// A replication error.
    #[error("crdt: {0}")]
    Crdt(#[from] crdt::CrdtError),
    /// A routing error.
    #[error("routing: {0}")]
    Router(#[from] cellrouter::Error),
    /// A failover error.
    #[error("failover: {0}")]
    Failover(#[from] failover::Error),
    /// A health error.
    #[error("health: {0}")]
    Health(#[from] health::HealthError),
    /// An id error.
    #[error("idgen: {0}")]
    Id(#[from] idgen::Error),
    /// A Kafka error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// An I/O error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// No cell has this id.
    #[error("no cell {0:?}")]
    UnknownCell(String),
    /// A kill of a dead cell, or a restart of a live one.
    #[error("cell {cell} is already {state}")]
    CellAlready {
        /// The cell.
        cell: String,
        /// `"down"` or `"running"`.
        state: &'static str,
    },
    /// `--replication binlog` in a demo built without the `binlog` feature.
    #[error("--replication binlog needs a demo built with `--features binlog` (cargo run -p demo --features binlog -- --replication binlog)")]
    BinlogNotBuilt,
    /// `--replication binlog` without a MySQL/MariaDB database for the cells.
    #[error(
        "--replication binlog reads the cells' tables from a MySQL/MariaDB binary log: set DEMO_DATABASE_URL to a MySQL/MariaDB server with log_bin on, binlog_format=ROW and GTIDs (e.g. mysql://root@127.0.0.1:3306/test); found {}",
        found.as_deref().map_or_else(|| "no DEMO_DATABASE_URL (SQLite)".to_string(), |s| format!("a {s}: URL"))
    )]
    BinlogNeedsMysql {
        /// The scheme of the URL given, if any.
        found: Option<String>,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}
