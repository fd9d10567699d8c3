//! [`GslbError`]: the crate's one error type.

use std::io;

/// What can go wrong configuring or starting the responder.
///
/// Nothing on the query path returns this: a query the responder cannot answer
/// gets a DNS response code (`NXDOMAIN`, `REFUSED`, `SERVFAIL`, `NOTIMP`,
/// `FORMERR`) and a malformed packet is dropped and counted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GslbError {
    /// The configuration is invalid (the message says which field and why).
    #[error("invalid gslb config: {0}")]
    InvalidConfig(String),
    /// A name in the configuration is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName {
        /// The name as written.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// Binding or using a socket failed.
    #[error("socket error on {what}: {source}")]
    Io {
        /// Which socket (`udp 127.0.0.1:5353`, ...).
        what: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl GslbError {
    pub(crate) fn config(msg: impl Into<String>) -> Self {
        GslbError::InvalidConfig(msg.into())
    }

    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        GslbError::Io {
            what: what.into(),
            source,
        }
    }
}
