//! The crate's one error type.

/// A boxed error, as step actions and compensations return it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong defining, logging or running a saga.
///
/// A step's own failure is not an [`Error`]: it is recorded in the log and turns
/// the saga around (see [`Outcome`](crate::Outcome)). These are failures of the
/// machinery: bad configuration, the log, a lost lease, a corrupt row.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A constructor or setter got an invalid value.
    #[error("invalid saga config: {0}")]
    InvalidConfig(String),

    /// The database URL's scheme is not `mysql:`, `mariadb:`, `postgres:`/`postgresql:` or `sqlite:`.
    #[error("unsupported saga log url scheme: {0:?} (expected mysql, mariadb, postgres or sqlite)")]
    UnsupportedUrl(String),

    /// No saga definition of this name is registered with the executor.
    #[error("no saga definition named {0:?} is registered")]
    UnknownSaga(String),

    /// No saga with this XID is in the log.
    #[error("saga {0} is not in the log")]
    NotFound(String),

    /// A row of the saga log could not be read back: an unknown state, bad JSON,
    /// step rows that do not match the definition. The row is left untouched for
    /// an operator; recovery reports it and moves on.
    #[error("malformed saga log row for xid {xid}: {reason}")]
    MalformedRow {
        /// The saga's XID (as stored).
        xid: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Another executor holds the saga's lease (or took it over after ours expired);
    /// this executor stopped driving it.
    #[error("the lease on saga {xid} is held by another executor")]
    LeaseLost {
        /// The saga's XID.
        xid: String,
    },

    /// The saga is not in a state that allows the operation (e.g. resuming a saga
    /// that is not stuck).
    #[error("saga {xid} is {state}, expected {expected}")]
    WrongState {
        /// The saga's XID.
        xid: String,
        /// Its state in the log.
        state: String,
        /// The state the operation needs.
        expected: &'static str,
    },

    /// The XID source failed (e.g. the id generator's clock went back too far).
    #[error("cannot make an xid: {0}")]
    Xid(#[source] BoxError),

    /// The saga input or a step output could not be (de)serialized as JSON.
    #[error("saga json: {0}")]
    Json(#[from] serde_json::Error),

    /// The database rejected a statement or could not be reached.
    #[error("saga log database: {0}")]
    Db(#[from] sqlx::Error),
}
