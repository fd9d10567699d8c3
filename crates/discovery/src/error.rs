//! The crate's error type.

use std::time::Duration;

use cellctx::CellId;

/// Everything that can go wrong in registration, discovery and the cell client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value or an instance description is invalid.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A registration value read from etcd could not be decoded or validated.
    #[error("malformed registration at {key}: {reason}")]
    Malformed {
        /// The etcd key.
        key: String,
        /// Why it was rejected.
        reason: String,
    },
    /// An etcd call failed.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// An etcd call did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// An etcd stream (the watch or a lease keep-alive) closed or was canceled.
    #[error("etcd stream: {0}")]
    Stream(String),
    /// The lease backing a registration is gone (expired or revoked).
    #[error("lease {0} is gone")]
    LeaseLost(i64),
    /// The request carries no cell: neither `cellctx::current()` nor the
    /// request's `Arc<CellContext>` extension names one.
    #[error("the request carries no cell")]
    NoCell,
    /// Neither the request's cell nor any of its failover cells has an instance.
    #[error("no instance of {service} in cell {cell} or its failover cells")]
    NoInstance {
        /// The service.
        service: String,
        /// The request's cell.
        cell: CellId,
    },
}
