//! The id type, its text form and its JSON (string) form.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

use crate::Error;

/// A 64-bit id issued by a [`Generator`](crate::Generator).
///
/// `Display`/`FromStr` use the decimal form. Serde writes it as a JSON
/// **string** (JavaScript loses precision above 2^53) and reads a string or a
/// number. For plain `u64` fields use [`serde_str`](crate::serde_str).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[repr(transparent)]
pub struct Id(u64);

impl Id {
    /// Wraps a raw id.
    pub const fn new(raw: u64) -> Self {
        Id(raw)
    }
    /// The raw id.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl From<Id> for u64 {
    fn from(id: Id) -> u64 {
        id.0
    }
}

impl From<u64> for Id {
    fn from(raw: u64) -> Id {
        Id(raw)
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.0)
    }
}

impl FromStr for Id {
    type Err = Error;
    /// Parses the decimal form (no sign, no spaces).
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Parse(s.to_string()));
        }
        s.parse::<u64>().map(Id).map_err(|_| Error::Parse(s.to_string()))
    }
}

impl serde::Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serde_str::serialize(&self.0, s)
    }
}

impl<'de> serde::Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_str::deserialize(d).map(Id)
    }
}

/// Serde helper that writes a `u64` id as a JSON string and reads a string or a
/// number: `#[serde(with = "idgen::serde_str")]`.
///
/// ```
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Order {
///     #[serde(with = "idgen::serde_str")]
///     id: u64,
/// }
/// let json = serde_json::to_string(&Order { id: 18_014_398_509_481_985 }).unwrap();
/// assert_eq!(json, r#"{"id":"18014398509481985"}"#);
/// let back: Order = serde_json::from_str(r#"{"id":7}"#).unwrap();
/// assert_eq!(back.id, 7);
/// ```
pub mod serde_str {
    use super::*;

    /// Writes the id as a decimal string.
    pub fn serialize<S: Serializer>(id: &u64, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 20];
        s.serialize_str(format_u64(*id, &mut buf))
    }

    /// Reads a decimal string or a non-negative integer.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        d.deserialize_any(IdVisitor)
    }

    fn format_u64(mut v: u64, buf: &mut [u8; 20]) -> &str {
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        std::str::from_utf8(&buf[i..]).unwrap_or("0")
    }

    struct IdVisitor;

    impl Visitor<'_> for IdVisitor {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an id as a decimal string or a non-negative integer")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("negative id"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            v.parse::<Id>().map(Id::get).map_err(E::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn display_and_from_str_round_trip() {
        for raw in [0, 1, 42, u64::MAX, 1 << 53] {
            let id = Id::new(raw);
            assert_eq!(id.to_string().parse::<Id>().unwrap(), id);
        }
        for bad in ["", "-1", "+1", " 1", "1a", "18446744073709551616"] {
            assert!(matches!(bad.parse::<Id>(), Err(Error::Parse(_))), "{bad}");
        }
    }

    #[test]
    fn json_is_a_string_and_reads_both_forms() {
        let id = Id::new(u64::MAX);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"18446744073709551615\"");
        assert_eq!(serde_json::from_str::<Id>("\"18446744073709551615\"").unwrap(), id);
        assert_eq!(serde_json::from_str::<Id>("12").unwrap(), Id::new(12));
        assert!(serde_json::from_str::<Id>("-1").is_err());
        assert!(serde_json::from_str::<Id>("\"x\"").is_err());
    }
}
