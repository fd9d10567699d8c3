//! The crate's one error type.

/// Everything that can go wrong when building a layout, issuing, parsing or
/// leasing ids.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The bit widths of a [`Layout`](crate::Layout) are not valid.
    #[error("invalid layout: {0}")]
    InvalidLayout(&'static str),

    /// A field does not fit the bits the layout gives it.
    #[error("{field} {value} does not fit the layout (max {max})")]
    OutOfRange {
        /// `"datacenter"`, `"worker"`, `"logical"`, `"sequence"` or `"timestamp"`.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The largest value the layout allows.
        max: u64,
    },

    /// The id has bits set above the layout's width (for example the sign bit of
    /// a 63-bit layout): it was not made with this layout.
    #[error("id {0} has bits set above the layout's width")]
    ForeignId(u64),

    /// `try_next_id`: the sequence and the logical clock of the current
    /// millisecond are used up; an id is available once the clock reaches the
    /// next millisecond.
    #[error("ids of this millisecond are used up; retry after the next millisecond")]
    WouldBlock,

    /// The clock is further behind the last issued timestamp than the configured
    /// bound. No id is issued (it could not be unique and increasing); the
    /// generator recovers once the clock catches up.
    #[error("clock is {behind_ms} ms behind the last issued id (bound {max_ms} ms)")]
    ClockMovedBackwards {
        /// How far the clock is behind the last issued timestamp.
        behind_ms: u64,
        /// The configured bound.
        max_ms: u64,
    },

    /// `next_id_async`: the clock did not pass the held millisecond while the
    /// generator waited on the timer for twice the bound plus a second (the
    /// clock is frozen, or far slower than the timer).
    #[error("clock did not move past the held millisecond in {waited_ms} ms of waiting")]
    ClockStalled {
        /// How long the generator waited (timer time).
        waited_ms: u64,
    },

    /// The clock reads earlier than the layout's epoch.
    #[error("clock reads {now_ms} ms, before the layout's epoch {epoch_ms} ms")]
    BeforeEpoch {
        /// The clock's reading (Unix ms).
        now_ms: u64,
        /// The layout's epoch (Unix ms).
        epoch_ms: u64,
    },

    /// The timestamp no longer fits the layout's timestamp bits.
    #[error("timestamp overflow: the layout's timestamp bits are exhausted")]
    TimestampOverflow,

    /// The generator's worker lease ran out (renewal failed for a whole TTL) or
    /// was released: it refuses to issue rather than share a worker id.
    #[error("worker lease expired: renewals failed for a whole TTL, refusing to issue ids")]
    LeaseExpired,

    /// The worker lease is held by someone else now (taken over or deleted);
    /// the generator refuses to issue.
    #[error("worker lease lost: the lease record is no longer ours, refusing to issue ids")]
    LeaseLost,

    /// Every worker id of the datacenter is leased by someone else.
    #[error("no free worker id in datacenter {datacenter} ({workers} ids all leased)")]
    NoWorkerAvailable {
        /// The datacenter asked for.
        datacenter: u32,
        /// How many worker ids the layout has.
        workers: u64,
    },

    /// The [`CachedClock`](crate::CachedClock) refresh thread could not start.
    #[error("cannot start the clock thread: {0}")]
    ClockThread(#[source] std::io::Error),

    /// Invalid lease configuration (TTL, key prefix).
    #[error("invalid lease config: {0}")]
    InvalidLease(&'static str),

    /// A string is not a decimal id.
    #[error("not an id: {0:?}")]
    Parse(String),

    /// Redis failed (lease backend).
    #[cfg(feature = "redis")]
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),

    /// The database failed (SQL lease backend).
    #[cfg(feature = "sql")]
    #[error("sql: {0}")]
    Sql(#[from] sqlx::Error),

    /// etcd failed (lease backend).
    #[cfg(feature = "etcd")]
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),

    /// The lease record in the backend is malformed.
    #[error("corrupt lease record: {0}")]
    CorruptRecord(String),
}
