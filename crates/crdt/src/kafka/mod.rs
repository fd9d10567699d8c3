//! Replication over Kafka (feature `kafka`).
//!
//! - [`Relay`] (features `kafka` + `sql`): publishes outbox rows (key = object
//!   id, so one object's deltas stay in one partition, in order) and then marks
//!   them sent. A crash between publish and mark re-publishes: harmless, the
//!   replicas skip the duplicate by (origin, sequence) and joining is idempotent.
//! - [`Replicator`]: one consumer group per replica (per writer process);
//!   messages are taken in batches: each is applied, parked (HLC time beyond
//!   the drift bound) or kept as a dead letter (can never apply as it
//!   stands), what the batch changed is appended to the state store's log
//!   (compacting snapshots now and then), and only then are its offsets
//!   committed, so a restarted cell resumes from its persisted state and
//!   committed offsets and loses nothing it consumed.
//!
//! Every message carries its origin and sequence in headers ([`headers`]) and
//! the writer's `cellctx` context (`x-cell-id`, `x-request-id`, `traceparent`,
//! ...) in the carrier's header names; the replicator applies each delta inside
//! that context (`cellctx::scope`).

pub mod headers;
#[cfg(feature = "sql")]
mod relay;
mod replicator;

#[cfg(feature = "sql")]
pub use relay::{PRUNE_EVERY, Relay};
pub use replicator::{Replicator, ReplicatorHandle};
