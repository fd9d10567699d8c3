//! The wire form: one version byte, then the value in `postcard`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::CrdtError;

/// The wire version this build writes and reads.
pub const WIRE_VERSION: u8 = 1;

/// Encodes `value` as `[WIRE_VERSION] ++ postcard(value)`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CrdtError> {
    postcard::to_extend(value, vec![WIRE_VERSION]).map_err(|e| CrdtError::Encode(e.to_string()))
}

/// Decodes a message written by [`encode`].
///
/// # Errors
/// [`CrdtError::Empty`], [`CrdtError::UnknownVersion`] or [`CrdtError::Corrupt`]
/// (including trailing bytes); never panics on any input.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CrdtError> {
    let (&version, body) = bytes.split_first().ok_or(CrdtError::Empty)?;
    if version != WIRE_VERSION {
        return Err(CrdtError::UnknownVersion(version));
    }
    let (value, rest) = postcard::take_from_bytes(body).map_err(|e| CrdtError::Corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CrdtError::Corrupt(format!("{} trailing bytes", rest.len())));
    }
    Ok(value)
}
