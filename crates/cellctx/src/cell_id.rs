//! [`CellId`]: the validated name of a cell.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use arrayvec::ArrayString;

use crate::error::InvalidValue;

/// Longest cell id, in bytes.
pub const MAX_CELL_ID_LEN: usize = 32;

/// The id of a cell: 1 to 32 bytes of lowercase ASCII letters, digits and `-`.
///
/// Held inline (at most 32 bytes, no heap allocation): cheap to build and to
/// clone, and read as a `&str` without a UTF-8 check. Equality, ordering and
/// hashing are those of the string.
///
/// ```
/// use cellctx::CellId;
/// let id: CellId = "cn-shanghai-1".parse().unwrap();
/// assert_eq!(id.as_str(), "cn-shanghai-1");
/// assert!("Shanghai".parse::<CellId>().is_err());
/// ```
#[derive(Clone)]
pub struct CellId {
    /// 1 to [`MAX_CELL_ID_LEN`] bytes of ASCII (checked in [`CellId::new`]).
    id: ArrayString<MAX_CELL_ID_LEN>,
}

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
        // At most 32 bytes, checked above.
        let id = ArrayString::from(s).map_err(|_| InvalidValue::TooLong { max: MAX_CELL_ID_LEN })?;
        Ok(CellId { id })
    }

    /// The id's bytes (ASCII).
    #[inline]
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.id.as_bytes()
    }

    /// The id as a string slice.
    #[inline]
    pub fn as_str(&self) -> &str {
        self.id.as_str()
    }
}

impl PartialEq for CellId {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for CellId {}

impl PartialOrd for CellId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for CellId {
    fn cmp(&self, other: &Self) -> Ordering {
        // Byte order is `str` order.
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Hash for CellId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Hashes like the `str` (as the shared-string representation did).
        self.as_str().hash(state);
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
        self.as_str()
    }
}

impl fmt::Display for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CellId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CellId({:?})", self.as_str())
    }
}

impl serde::Serialize for CellId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for CellId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        CellId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::hash_map::DefaultHasher;

    use super::*;

    fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
        let mut h = DefaultHasher::new();
        v.hash(&mut h);
        h.finish()
    }

    #[test]
    fn behaves_like_its_string() {
        let ids = ["a", "a-1", "b", "eu-west-1", "eu-west-10", "0123456789abcdefghijklmnopqrstuv"];
        for a in ids {
            let ca = CellId::new(a).unwrap();
            assert_eq!(ca.as_str(), a);
            assert_eq!(ca.to_string(), a);
            assert_eq!(format!("{ca:?}"), format!("CellId({a:?})"));
            assert_eq!(hash_of(&ca), hash_of(a));
            for b in ids {
                let cb = CellId::new(b).unwrap();
                assert_eq!(ca == cb, a == b);
                assert_eq!(ca.cmp(&cb), a.cmp(b), "{a} vs {b}");
            }
        }
        assert_eq!(CellId::new(&"a".repeat(33)), Err(InvalidValue::TooLong { max: MAX_CELL_ID_LEN }));
        assert_eq!(CellId::new(""), Err(InvalidValue::Empty));
        assert!(std::mem::size_of::<CellId>() <= MAX_CELL_ID_LEN + 4, "held inline");
    }
}
