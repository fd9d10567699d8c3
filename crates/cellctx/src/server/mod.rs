//! The server layer: reads the context from request headers, enforces the trust
//! boundary, and makes the context current for the inner service.

mod admit;
mod body;
mod future;
mod layer;
mod service;

pub use admit::{Admitted, Refusal};
pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::{CellContextLayer, TrustMode};
pub use service::CellContextService;
