//! Change data capture from the tables a service already has (feature
//! `binlog`): [`BinlogRelay`] reads a MySQL/MariaDB binary log (row format,
//! GTIDs), turns the row changes of mapped tables ([`TableMapping`]) into CRDT
//! changes and publishes them to the replication topic exactly as
//! [`Relay`](crate::kafka::Relay) publishes outbox rows: same key (the object
//! id), payload (the encoded delta) and headers, so a
//! [`Replicator`](crate::kafka::Replicator) cannot tell the two sources apart.
//!
//! ```no_run
//! use crdt::binlog::{BinlogConfig, BinlogRelay, PositionStore, RowKind, TableMapping};
//!
//! # async fn run() -> Result<(), crdt::CrdtError> {
//! // `likes(post_id, user_id, deleted)`: who liked a post, soft-deleted
//! let likes = TableMapping {
//!     schema: "shop".into(),
//!     table: "likes".into(),
//!     aggregate_type: "post".into(),
//!     object: "post_id".into(),
//!     object_prefix: "likes:".into(),
//!     lww_column: None,
//!     kind: RowKind::LwwSet { element: "user_id".into(), tombstone: Some("deleted".into()) },
//! };
//! let config = BinlogConfig::try_new("sh-cdc", "sh-cdc", 4001, vec![likes])?;
//! let positions = PositionStore::try_new("mysql://cdc:pw@127.0.0.1:3306/cdc", "cdc_positions")?;
//! positions.migrate().await?;
//! let mut relay = BinlogRelay::try_new(
//!     config,
//!     "mysql://cdc:pw@127.0.0.1:3306",
//!     positions,
//!     "kafka:9092",
//!     "crdt-replication",
//! )?;
//! // runs until shutdown, or returns the error an operator must act on
//! relay.run(tokio::signal::ctrl_c().map(|_| ())).await?;
//! # Ok(())
//! # }
//! # use futures_util::FutureExt;
//! ```
//!
//! # Mapping
//! [`RowKind::LwwSet`]: each row is an element of the LWW set named by the
//! object column (insert/update add, delete or a non-zero tombstone column
//! removes). [`RowKind::Counter`]: each row adds its delta column to the
//! counter named by the object column (delete subtracts, update adds the
//! difference). The HLC time is the mapping's `lww_column` (ms since the
//! epoch) or, without one, the event's time (seconds, then GTID order, then
//! row order in the transaction).
//!
//! # Positions and delivery
//! The position (binlog file and offset after the last published
//! transaction, its GTID) is stored in a table ([`PositionStore`]) of a
//! database the relay is given, together with the counters' running totals,
//! and only after Kafka acknowledged the whole batch. A crash replays from
//! the stored position: at least once. Each change's sequence number is
//! `gtid_seq << 20 | index in the transaction`, so a replayed change has the
//! sequence it had the first time and replicas skip it as a duplicate
//! (their dedup by origin and sequence, as for the outbox). Counter totals
//! restart from the stored ones, so replayed counter deltas are identical too.
//! A relay without a stored position starts at the server's current end and
//! stores it at once.
//!
//! Give the binlog source its own origin if the cell also runs an outbox
//! relay (sequences and counter sites of the two would collide), and one GTID
//! domain (MariaDB) or server UUID (MySQL) per source.
//!
//! # No loops
//! Rows written by a cell's replicated-state applier (the code that writes
//! what other cells changed into this cell's tables) must not be captured
//! again. The applier runs [`MARK_REPLICATED_SQL`] (`SET SESSION
//! skip_replication = 1`, MariaDB) on its connection: the server flags every
//! event it writes with `LOG_EVENT_SKIP_REPLICATION_F`, and the relay skips
//! flagged events and transactions (as MariaDB replicas do with
//! `replicate_events_marked_for_skip`). It needs the `SUPER` or
//! `BINLOG ADMIN` privilege. MySQL has no such flag: there, write applied rows
//! through a connection to a table that is not mapped.
//!
//! # Metrics
//! Through the `opentelemetry` global meter `crdt` (attribute `relay`), see
//! [`BinlogMetrics`]: `crdt.binlog.published`, `crdt.binlog.skipped`,
//! `crdt.binlog.errors` (attribute `reason`).
//!
//! # Errors that stop the relay
//! Never skipped silently; each says what to do:
//! [`CrdtError::BinlogFormat`] (`binlog_format` not `ROW`, the binlog off, or a
//! write to a mapped table logged as a statement), [`CrdtError::BinlogPrivilege`]
//! (no `REPLICATION SLAVE`/`REPLICATION CLIENT`), [`CrdtError::BinlogPurged`]
//! (the stored position's file is gone), [`CrdtError::BinlogDdl`] (a DDL
//! statement on a mapped table: check the mapping, then
//! [`BinlogRelay::skip_ddl`]), [`CrdtError::BinlogRow`] (a row that does not
//! map, e.g. a NULL object id).
//!
//! [`CrdtError::BinlogFormat`]: crate::CrdtError::BinlogFormat
//! [`CrdtError::BinlogPrivilege`]: crate::CrdtError::BinlogPrivilege
//! [`CrdtError::BinlogPurged`]: crate::CrdtError::BinlogPurged
//! [`CrdtError::BinlogDdl`]: crate::CrdtError::BinlogDdl
//! [`CrdtError::BinlogRow`]: crate::CrdtError::BinlogRow

mod checks;
mod config;
mod mapper;
mod metrics;
mod position;
mod relay;

pub use config::{BinlogConfig, RowKind, TableMapping};
pub use metrics::{BinlogMetrics, BinlogStats};
pub use position::{BinlogPosition, Checkpoint, PositionStore};
pub use relay::{BinlogBatch, BinlogRelay};

/// Run this on the connection that writes replicated state into a cell's
/// tables: its writes are flagged and no binlog relay re-publishes them
/// (MariaDB's `skip_replication`; see the module docs, "No loops").
pub const MARK_REPLICATED_SQL: &str = "SET SESSION skip_replication = 1";
