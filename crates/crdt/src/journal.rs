//! What a replicator persists between snapshots: one [`Record`] per change to
//! the replica state, appended to the state store's log (`StateStore::append`)
//! and replayed over the last snapshot on restore.

use serde::{Deserialize, Serialize};

use crate::hlc::Timestamp;
use crate::parked::{DeadLetter, ParkedEvent};
use crate::replica::{Delta, Event};

/// One change to a replica's persisted state. Its size depends on the change,
/// never on the size of the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Record {
    /// A remote event was applied (and, if it was parked, left the parked set).
    Applied(Event),
    /// A remote event was parked.
    Parked(ParkedEvent),
    /// A parked event left the parked set without being applied (it became a dead letter).
    Unparked(String, u64),
    /// A message became a dead letter.
    Dead(DeadLetter),
    /// Tombstones were collected at this watermark.
    Gc(Timestamp),
    /// A local change was committed (its outbox row is then no longer needed
    /// to recover once this record is persisted).
    Local {
        /// The object id.
        object: String,
        /// The change's HLC time.
        ts: Timestamp,
        /// The delta.
        delta: Delta,
    },
    /// A replicator consumed up to these offsets (topic, partition, next
    /// offset to read): persisted with the changes they produced.
    Consumed(Vec<(String, i32, i64)>),
}
