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
//! - Sites are per writer: [`Replica::try_new`] takes the process's writer id
//!   within the cell (its leased `idgen` worker id) and derives the site from
//!   both ([`SiteId::for_writer`]), so two processes of one cell keep separate
//!   counter totals and mint distinct OR-set tags. Each writer is a replica
//!   of its own: its state is kept under [`Replica::state_key`]
//!   (`{cell}/{writer}`) and it reads every partition of the topic itself:
//!   the offsets it read are kept in that state with what they produced, so
//!   a replica restored from any snapshot, an older one included, reads on
//!   right after it (the consumer group only gets the offsets committed, for
//!   lag monitors).
//! - [`Hlc`]: a hybrid logical clock that does not adopt a remote timestamp
//!   more than its maximum drift ahead ([`CrdtError::ClockDrift`]). A
//!   replicated event stamped that far ahead is **parked**, never dropped: it
//!   waits in the persisted state ([`Replica::parked`]) and is applied by
//!   [`Replica::retry_parked`] once the local wall clock is within the drift
//!   of it. (Applying it at once without adopting its time would let this
//!   cell's next writes be stamped before a write it has already seen, so a
//!   later LWW remove could lose to an add it observed; adopting it would let
//!   one bad clock drag every cell's clock ahead.) This cell's watermark stays
//!   below its oldest parked event, so no collection outruns it.
//! - Messages that can never apply as they stand (missing or malformed
//!   headers, corrupt payload, unknown wire version, a delta of another kind
//!   than the stored object) are skipped, counted (`crdt.deltas.rejected`),
//!   logged, and kept verbatim as [`DeadLetter`]s in the persisted state
//!   ([`Replica::dead_letters`]) for an operator to inspect and re-publish.
//! - Tombstones are collected with `gc(watermark)` once every cell has
//!   acknowledged the watermark ([`Watermarks`]). Over Kafka this is automatic:
//!   relays send heartbeats (`Relay::with_heartbeat`) carrying an HLC time
//!   taken under the replica lock and the sender's own watermark; replicas that
//!   know all cells ([`Replica::with_cells`]) collect at the minimum every cell
//!   acknowledged, and from then on ignore stale adds at or below it (objects
//!   created later start at that floor too). The floor travels in each set's
//!   state and `merge` is a join on (floor, tags): at or below the higher
//!   floor only the replicas that collected there say what is live, so a
//!   merge with a replica that is behind (fresh, or restored from an older
//!   snapshot) is still commutative, associative and idempotent and cannot
//!   resurrect a collected element.
//! - Wire form ([`codec`]): one version byte, then `postcard`; a corrupt or
//!   unknown-version message is an error, never a panic.
//! - [`Replica`]: one cell's objects; local writes produce a [`Change`] for the
//!   outbox, remote [`Event`]s are applied idempotently (de-duplicated by origin
//!   and sequence, never written back to the outbox).
//! - Feature `sql`: `outbox::Outbox`, a Debezium-shaped outbox table
//!   (`id, aggregatetype, aggregateid, type, payload` plus `origin, hlc,
//!   context, sent`) on MySQL/MariaDB, PostgreSQL or SQLite through `sqlx::Any`.
//! - Feature `kafka`: `kafka::Replicator` (consumer, in batches: apply, park
//!   or dead-letter each message, persist what the batch changed, then commit
//!   the batch's offsets) and, with `sql` too, `kafka::Relay` (outbox rows to
//!   Kafka, key = object id, then mark sent; with `Relay::with_retention`,
//!   prune sent rows by age and/or count, never past the replica's last
//!   durable snapshot, [`Replica::durable_ts`]).
//! - Persistence ([`StateStore`]): a snapshot plus a log of changes. The
//!   replicator appends one small record per change (an applied event, a
//!   local write, a parked event, a dead letter, a collection) in one write
//!   per batch, and each append moves the durable point outbox retention
//!   prunes up to. A compacting snapshot replaces the log once it holds at
//!   least `with_snapshot_every` records (default 10 000) and as many bytes as
//!   the last snapshot (or an eighth of them after `with_snapshot_interval`,
//!   default 60 s), so what is persisted per change, snapshots amortised,
//!   does not grow with the state. [`Replica::restore_from`] loads the
//!   snapshot and replays the log. Stores: [`MemoryStateStore`], `redis_state::RedisStateStore`
//!   (feature `redis`: a key and a list), `sql_state::SqlStateStore` (feature
//!   `sql`: a table and its `_log` table on the outbox's pool, beside the
//!   business rows).
//! - Feature `binlog`: `binlog::BinlogRelay`, change data capture from the
//!   tables a service already has (MySQL/MariaDB row binlog), published like
//!   the outbox relay.
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
//! outbox rows are the cell's durable log: own rows newer than the last saved
//! snapshot must stay, which is what outbox retention
//! (`outbox::Retention`, `Relay::with_retention`) respects.
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
//! let sh = Replica::try_new("sh".parse().unwrap(), 1, Duration::from_secs(5))?;
//! let fra = Replica::try_new("fra".parse().unwrap(), 1, Duration::from_secs(5))?;
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
//!   `unknown_version`, `kind_mismatch`; `clock_drift` for a heartbeat from
//!   a clock too far ahead, which the next heartbeat supersedes): messages
//!   kept as dead letters.
//! - `crdt.deltas.parked` (counter): deltas parked because their HLC time was
//!   beyond the drift bound (applied later, then counted as applied).
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
mod journal;
mod lww;
mod metrics;
mod orset;
mod parked;
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
mod retention;
#[cfg(feature = "sql")]
pub mod sql_state;

pub use counter::{PnCounter, PnDelta, PnEntry};
pub use error::CrdtError;
pub use hlc::{Clock, Hlc, SiteId, Stamp, SystemClock, Timestamp};
pub use lww::{Bias, LwwDelta, LwwElementSet, LwwEntry};
pub use metrics::{LagSummary, ReplicaMetrics, ReplicaStats};
pub use orset::{OrEntry, OrSet, OrSetDelta};
pub use parked::{DeadLetter, ParkedEvent};
pub use replica::{
    Applied, Change, DEDUP_WINDOW, Delta, Event, Replica, ReplicaGuard, Store, TYPE_LWW_SET, TYPE_OR_SET,
    TYPE_PN_COUNTER, Value,
};
pub use state::{MemoryStateStore, StateStore};
pub use watermark::Watermarks;
