//! Events that could not be applied yet ([`ParkedEvent`]) or ever
//! ([`DeadLetter`]): both are kept in the replica's persisted state, so the
//! replicator can commit past them without losing them.

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::replica::Event;

/// A decoded event whose HLC time was too far ahead of the local clock when
/// it arrived; it is applied as soon as the local wall clock is within the
/// maximum drift of it (see `Replica::retry_parked`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEvent {
    /// The event, as received.
    pub event: Event,
    /// Why it waits (the error it met).
    pub reason: String,
}

impl ParkedEvent {
    /// The event's HLC time.
    pub fn ts(&self) -> Timestamp {
        self.event.ts
    }
}

/// A message that can never be applied as it stands: missing or malformed
/// headers, a payload that does not decode, an unknown wire version, or a
/// delta whose kind differs from the stored object's. Kept verbatim (counted
/// in `crdt.deltas.rejected` and logged) for an operator to inspect and
/// re-publish, e.g. after upgrading to a build that knows its wire version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where it was read, e.g. `topic/partition@offset`.
    pub source: String,
    /// The message key, if any.
    pub key: Option<Vec<u8>>,
    /// The message headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// The message payload.
    pub payload: Vec<u8>,
    /// The error that made it undeliverable.
    pub error: String,
    /// The metric `reason` it was counted under (`corrupt`, `unknown_version`, `kind_mismatch`).
    pub reason: String,
}
