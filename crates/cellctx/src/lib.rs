//! The request's cell context, read from and written to HTTP/gRPC headers and
//! Kafka message headers, with a trust boundary at the edge.
//!
//! (Work in progress: layers, trust boundary and carriers land with issue 2.)

mod baggage;
mod cell_id;
mod context;
mod error;
pub mod request_id;
mod scope;

pub use baggage::{Baggage, MAX_BAGGAGE_BYTES, MAX_BAGGAGE_ENTRIES};
pub use cell_id::{CellId, MAX_CELL_ID_LEN};
pub use context::{CellContext, HintSource, MAX_TOKEN_LEN, RegionHint, validate_token};
pub use error::InvalidValue;
pub use scope::{current, scope, with_current};
