//! CRDT sets and counters with hybrid logical clocks, replicated across cells
//! over Kafka from a transactional outbox.
//!
//! Comments and likes written in any cell converge everywhere: each cell
//! merges locally and ships small deltas to the others asynchronously; cells
//! never call each other synchronously.
//!
//! - Types: [`LwwElementSet`] (add/remove stamps, timestamp then site id break
//!   ties, explicit [`Bias`]), [`OrSet`] (observed-remove, no lost add: use it
//!   for comments), [`PnCounter`] (like counts). Every mutation returns a small
//!   delta; joining deltas or states is commutative, associative and idempotent.
//! - [`Hlc`]: a hybrid logical clock that rejects a remote timestamp more than
//!   its maximum drift ahead ([`CrdtError::ClockDrift`]).
//! - Tombstones are collected with `gc(watermark)` once every cell has
//!   acknowledged the watermark ([`Watermarks`]). Over Kafka this is automatic:
//!   relays send heartbeats (`Relay::with_heartbeat`) carrying an HLC time
//!   taken under the replica lock and the sender's own watermark; replicas that
//!   know all cells ([`Replica::with_cells`]) collect at the minimum every cell
//!   acknowledged, and from then on ignore stale adds at or below it.
//! - Wire form ([`codec`]): one version byte, then `postcard`; a corrupt or
//!   unknown-version message is an error, never a panic.
//! - [`Replica`]: one cell's objects; local writes produce a [`Change`] for the
//!   outbox, remote [`Event`]s are applied idempotently (de-duplicated by origin
//!   and sequence, never written back to the outbox).
//! - Feature `sql`: `outbox::Outbox`, a Debezium-shaped outbox table
//!   (`id, aggregatetype, aggregateid, type, payload` plus `origin, hlc,
//!   context, sent`) on MySQL/MariaDB, PostgreSQL or SQLite through `sqlx::Any`.
//! - Feature `kafka`: `kafka::Replicator` (consumer: apply, persist, then commit
//!   the offset) and, with `sql` too, `kafka::Relay` (outbox rows to Kafka,
//!   key = object id, then mark sent).
//! - Feature `binlog`: `binlog::BinlogRelay`, change data capture from the
//!   tables a service already has (MySQL/MariaDB row binlog), published like
//!   the outbox relay.
//! - Feature `redis`: `redis_state::RedisStateStore`, the replica state in Redis.
//! - Feature `sql`: `sql_state::SqlStateStore`, the replica state in a SQL
//!   table on the outbox's pool (beside the business rows).
//!
//! # Restarting a cell
//! A saved state ([`Replica::snapshot`] in a [`StateStore`]) is usually older
//! than the cell's last writes: they reached the outbox, the process died
//! before the next save. Those writes must be re-applied locally **before the
//! cell takes new local writes**: a [`PnCounter`] delta carries the cell's
//! running total, so an increment computed from the older state carries a
//! smaller total than one already sent, every replica joins by maximum, and
//! the increments in between are lost everywhere (sets do not lose data this
//! way, but the restarted cell would not see its own last writes).
//!
//! With feature `sql`, do it in one step before serving requests and before
//! `kafka::Replicator::start` (which then does not restore again):
//! `replica.recover(&state, &outbox).await?` loads and restores the snapshot,
//! then re-applies this cell's own outbox rows (sent or not) stamped after it,
//! holding the replica's lock throughout. `outbox.replay_into(&replica)` does
//! the replay alone (after `Replicator::start` restored, before spawning it).
//! Replaying is idempotent; nothing is written to the outbox again. The
//! outbox rows are the cell's durable log: do not prune own rows newer than
//! the last saved state.
//!
//! # Where it goes
//! Not a tower layer: the [`Replica`] lives beside your handlers (share it in an
//! `Arc`); the relay and the replicator run as background tasks of each cell.
//! The request path only takes the replica's lock for the local write.
//!
//! ```
//! use std::time::Duration;
//! use crdt::{Event, Replica};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), crdt::CrdtError> {
//! let sh = Replica::try_new("sh".parse().unwrap(), Duration::from_secs(5))?;
//! let fra = Replica::try_new("fra".parse().unwrap(), Duration::from_secs(5))?;
//!
//! // A like in Shanghai: compute the change, write it to the outbox in the same
//! // transaction as the business row (feature `sql`), then commit it locally.
//! let change = {
//!     let mut guard = sh.lock().await;
//!     let change = guard.counter_add("post", "post-1", 1)?;
//!     // outbox.enqueue(&mut tx, &change).await?; tx.commit().await?;
//!     guard.commit(&change)?;
//!     change
//! };
//!
//! // Frankfurt's replicator receives it (over Kafka) and applies it, once.
//! let event = Event {
//!     origin: change.origin.clone(),
//!     seq: 1,
//!     ts: change.ts,
//!     aggregate_id: change.aggregate_id.clone(),
//!     event_type: change.delta.event_type().to_string(),
//!     payload: change.payload()?,
//! };
//! fra.apply_event(&event).await?;
//! fra.apply_event(&event).await?; // a duplicate: skipped
//! assert_eq!(fra.get("post-1").await, sh.get("post-1").await);
//! assert_eq!(fra.metrics().stats().duplicates, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//! Through the `opentelemetry` global meter `crdt` (attributes `cell`, `origin`):
//! - `crdt.deltas.applied` (counter): remote deltas applied.
//! - `crdt.deltas.rejected` (counter, attribute `reason`: `corrupt`,
//!   `unknown_version`, `kind_mismatch`, `clock_drift`).
//! - `crdt.deltas.duplicates` (counter): duplicates skipped.
//! - `crdt.replication.lag` (histogram, ms): from a delta's HLC time to its
//!   application; p50/p99 per origin also from [`ReplicaMetrics::lag`].
//! - Feature `binlog` (attribute `relay`): `crdt.binlog.published`,
//!   `crdt.binlog.skipped` (rows marked as replicated), `crdt.binlog.errors`
//!   (attribute `reason`); see `binlog::BinlogMetrics`.

pub mod codec;
mod counter;
mod error;
mod hlc;
mod lww;
mod metrics;
mod orset;
mod replica;
mod state;
mod watermark;

#[cfg(feature = "binlog")]
pub mod binlog;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "sql")]
pub mod outbox;
#[cfg(feature = "redis")]
pub mod redis_state;
#[cfg(feature = "sql")]
pub mod sql_state;

pub use counter::{PnCounter, PnDelta, PnEntry};
pub use error::CrdtError;
pub use hlc::{Clock, Hlc, SiteId, Stamp, SystemClock, Timestamp};
pub use lww::{Bias, LwwDelta, LwwElementSet, LwwEntry};
pub use metrics::{LagSummary, ReplicaMetrics, ReplicaStats};
pub use orset::{OrEntry, OrSet, OrSetDelta};
pub use replica::{
    Applied, Change, DEDUP_WINDOW, Delta, Event, Replica, ReplicaGuard, Store, TYPE_LWW_SET, TYPE_OR_SET,
    TYPE_PN_COUNTER, Value,
};
pub use state::{MemoryStateStore, StateStore};
pub use watermark::Watermarks;
