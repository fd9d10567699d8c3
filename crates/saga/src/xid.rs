//! Where transaction ids come from.

use std::fmt;
use std::sync::Arc;

use crate::error::{BoxError, Error};

/// Longest XID the log stores, in bytes.
pub const MAX_XID_LEN: usize = 64;

/// A source of transaction ids (XIDs). [`idgen::Generator`] is one: its ids are
/// unique across cells (datacenter and worker bits), time-ordered, and short
/// decimal strings on the wire.
pub trait XidSource: Send + Sync + fmt::Debug + 'static {
    /// A new, globally unique XID: 1 to 64 visible ASCII bytes without spaces,
    /// commas or semicolons (it travels in the `X-Xid` header).
    fn next_xid(&self) -> Result<String, BoxError>;
}

impl XidSource for idgen::Generator {
    fn next_xid(&self) -> Result<String, BoxError> {
        Ok(self.next_id()?.to_string())
    }
}

impl<T: XidSource + ?Sized> XidSource for Arc<T> {
    fn next_xid(&self) -> Result<String, BoxError> {
        (**self).next_xid()
    }
}

impl<T: XidSource + ?Sized> XidSource for Box<T> {
    fn next_xid(&self) -> Result<String, BoxError> {
        (**self).next_xid()
    }
}

/// Checks an XID: a valid `cellctx` token of at most [`MAX_XID_LEN`] bytes.
pub(crate) fn validate_xid(xid: &str) -> Result<(), Error> {
    if xid.len() > MAX_XID_LEN {
        return Err(Error::Xid(
            format!("xid longer than {MAX_XID_LEN} bytes").into(),
        ));
    }
    cellctx::validate_token(xid).map_err(|e| Error::Xid(Box::new(e)))
}
