//! [`CellId`]: the validated name of a cell.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::error::InvalidValue;

/// Longest cell id, in bytes.
pub const MAX_CELL_ID_LEN: usize = 32;

/// The id of a cell: 1 to 32 bytes of lowercase ASCII letters, digits and `-`.
///
/// Cheap to clone (a shared string).
///
/// ```
/// use cellctx::CellId;
/// let id: CellId = "cn-shanghai-1".parse().unwrap();
/// assert_eq!(id.as_str(), "cn-shanghai-1");
/// assert!("Shanghai".parse::<CellId>().is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CellId(Arc<str>);

impl CellId {
    /// Validates `s` as a cell id.
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        if s.is_empty() {
            return Err(InvalidValue::Empty);
        }
        if s.len() > MAX_CELL_ID_LEN {
            return Err(InvalidValue::TooLong { max: MAX_CELL_ID_LEN });
        }
        if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(InvalidValue::BadCharacter);
        }
        Ok(CellId(Arc::from(s)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CellId {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CellId::new(s)
    }
}

impl TryFrom<&str> for CellId {
    type Error = InvalidValue;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        CellId::new(s)
    }
}

impl TryFrom<String> for CellId {
    type Error = InvalidValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CellId::new(&s)
    }
}

impl AsRef<str> for CellId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CellId({:?})", &*self.0)
    }
}

impl serde::Serialize for CellId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for CellId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        CellId::new(&s).map_err(serde::de::Error::custom)
    }
}
