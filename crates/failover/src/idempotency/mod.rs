//! Durable deduplication of retried writes (feature `sql`).
//!
//! A gateway that retries a write on another instance or cell
//! (`cellrouter::retry`) sends it with an `Idempotency-Key` (the client's, or
//! the request id). The cell that receives it checks the key in its own
//! database ([`IdempotencyStore`]) through [`IdempotencyLayer`]: a key already
//! answered gets the stored response back and the write is not applied again.
//!
//! The key is recorded in the cell that applied the write. A duplicate that
//! lands on another cell (the first one died after applying the write)
//! finds no row there: writes that must also be safe across cells take their
//! identity from the key (for example a CRDT element id derived from it), so
//! the two applications merge into one when the cells replicate.

mod layer;
mod store;

pub use layer::{IdempotencyKey, IdempotencyLayer, Idempotency, IdempotentBody, REPLAYED_HEADER, ResponseFuture};
pub use sqldialect::Dialect;
pub use store::{IdempotencyStats, IdempotencyStore, MAX_KEY_LEN, StoredResponse};
