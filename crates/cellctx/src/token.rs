//! [`Token`]: a cheap, validated context value (request id, tenant, user, ...).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;

use bytes::Bytes;
use http::HeaderValue;

use crate::error::InvalidValue;

/// A context value: a request id, tenant, user, routing key, saga xid or W3C
/// trace header.
///
/// It is backed by an [`http::HeaderValue`], so a value read from a header is a
/// reference-count bump of the incoming bytes, and writing it out again reuses
/// them: a request that carries its context costs no allocation per field.
///
/// A `Token` always holds 1 or more bytes of visible ASCII, space or tab (so it
/// is valid text and a valid header value). The stricter rules of each field
/// (token rules for ids, W3C rules for `traceparent`, see [`crate::validate_token`])
/// are checked by the `CellContext::with_*` setters, by [`crate::extract`] and again
/// by [`crate::inject`], so the next hop accepts what this one sends.
///
/// ```
/// use cellctx::Token;
///
/// let t = Token::try_from("acme").unwrap();
/// assert_eq!(t, "acme");
/// assert_eq!(t.len(), 4); // derefs to `str`
/// assert_eq!(t.to_string(), "acme");
/// assert!(Token::try_from("").is_err());
/// assert!(Token::try_from("caf\u{e9}").is_err());
/// ```
#[derive(Clone)]
pub struct Token {
    value: HeaderValue,
    /// Which field rules the value is known to pass ([`Token::TOKEN`],
    /// [`Token::TRACEPARENT`]), so that injection does not check them again.
    /// The value never changes, so the marks never go stale.
    checked: u8,
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Token {}

impl PartialOrd for Token {
    fn partial_cmp(&self, other: &Token) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Token {
    fn cmp(&self, other: &Token) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// Visible ASCII, space or tab.
#[inline]
fn is_text_byte(b: u8) -> bool {
    b == b'\t' || (0x20..0x7f).contains(&b)
}

fn check_text(raw: &[u8]) -> Result<(), InvalidValue> {
    if raw.is_empty() {
        return Err(InvalidValue::Empty);
    }
    if !raw.iter().all(|&b| is_text_byte(b)) {
        return Err(InvalidValue::BadCharacter);
    }
    Ok(())
}

impl Token {
    /// Mark: the value passes [`crate::validate_token`].
    pub(crate) const TOKEN: u8 = 1;
    /// Mark: the value is a usable W3C `traceparent`.
    pub(crate) const TRACEPARENT: u8 = 2;

    /// A token holding a copy of `s`.
    pub fn new(s: &str) -> Result<Self, InvalidValue> {
        check_text(s.as_bytes())?;
        HeaderValue::from_str(s).map(Token::from_checked).map_err(|_| InvalidValue::BadCharacter)
    }

    /// A token sharing the bytes of a header value (no copy).
    pub fn from_header_value(value: HeaderValue) -> Result<Self, InvalidValue> {
        check_text(value.as_bytes())?;
        Ok(Token::from_checked(value))
    }

    /// A token from a header value already checked to be text (no copy).
    #[inline]
    pub(crate) fn from_checked(value: HeaderValue) -> Self {
        Token { value, checked: 0 }
    }

    /// The token, marked as passing the rules `mark` stands for.
    #[inline]
    pub(crate) fn marked(mut self, mark: u8) -> Self {
        self.checked |= mark;
        self
    }

    /// Whether the value is known to pass the rules `mark` stands for.
    #[inline]
    pub(crate) fn is_marked(&self, mark: u8) -> bool {
        self.checked & mark == mark
    }

    /// The value as text.
    #[inline]
    pub fn as_str(&self) -> &str {
        // Always visible ASCII (checked on construction), so this never falls back.
        std::str::from_utf8(self.value.as_bytes()).unwrap_or("")
    }

    /// The value's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.value.as_bytes()
    }

    /// The value as a header value (cloning it is a reference-count bump).
    #[inline]
    pub fn as_header_value(&self) -> &HeaderValue {
        &self.value
    }

    /// The value as a header value.
    #[inline]
    pub fn into_header_value(self) -> HeaderValue {
        self.value
    }
}

impl Deref for Token {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Token {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Token {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl Borrow<str> for Token {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl Hash for Token {
    // Hashes like `str`, as `Borrow<str>` requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<str> for Token {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Token {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<String> for Token {
    fn eq(&self, other: &String) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Token> for str {
    fn eq(&self, other: &Token) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Token> for &str {
    fn eq(&self, other: &Token) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<Token> for String {
    fn eq(&self, other: &Token) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl TryFrom<&str> for Token {
    type Error = InvalidValue;
    fn try_from(s: &str) -> Result<Self, InvalidValue> {
        Token::new(s)
    }
}

impl TryFrom<&String> for Token {
    type Error = InvalidValue;
    fn try_from(s: &String) -> Result<Self, InvalidValue> {
        Token::new(s)
    }
}

impl TryFrom<String> for Token {
    type Error = InvalidValue;
    /// Takes the string's buffer (no copy).
    fn try_from(s: String) -> Result<Self, InvalidValue> {
        check_text(s.as_bytes())?;
        HeaderValue::from_maybe_shared(Bytes::from(s)).map(Token::from_checked).map_err(|_| InvalidValue::BadCharacter)
    }
}

impl TryFrom<HeaderValue> for Token {
    type Error = InvalidValue;
    fn try_from(v: HeaderValue) -> Result<Self, InvalidValue> {
        Token::from_header_value(v)
    }
}

impl std::str::FromStr for Token {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        Token::new(s)
    }
}

impl From<Token> for String {
    fn from(t: Token) -> String {
        t.as_str().to_owned()
    }
}

impl From<&Token> for String {
    fn from(t: &Token) -> String {
        t.as_str().to_owned()
    }
}

impl From<Token> for HeaderValue {
    fn from(t: Token) -> HeaderValue {
        t.value
    }
}

impl serde::Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Token::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn validates_and_compares_as_text() {
        for bad in ["", "a\u{e9}", "a\nb", "\u{7f}"] {
            assert!(Token::try_from(bad).is_err(), "{bad:?}");
            assert!(Token::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        let t = Token::try_from(String::from("acme-1")).unwrap();
        assert_eq!(t, "acme-1");
        assert_eq!("acme-1", t);
        assert_eq!(t, String::from("acme-1"));
        assert_eq!(&*t, "acme-1");
        assert_eq!(format!("{t} {t:?}"), "acme-1 \"acme-1\"");
        let mut set = std::collections::HashSet::new();
        set.insert(t.clone());
        assert!(set.contains("acme-1"));
        assert_eq!(String::from(t.clone()), "acme-1");
        // Marks are not part of equality, ordering or hashing.
        let marked = t.clone().marked(Token::TOKEN);
        assert!(marked.is_marked(Token::TOKEN) && !t.is_marked(Token::TOKEN));
        assert_eq!(marked, t);
        assert_eq!(marked.cmp(&t), std::cmp::Ordering::Equal);
        assert!(set.contains(&marked));
    }

    #[test]
    fn shares_header_bytes() {
        let hv = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let t = Token::from_header_value(hv.clone()).unwrap();
        assert_eq!(t.as_bytes().as_ptr(), hv.as_bytes().as_ptr());
        assert_eq!(t.as_header_value().as_bytes().as_ptr(), hv.as_bytes().as_ptr());
    }

    #[test]
    fn serde_round_trip() {
        let t = Token::try_from("a=1, b=2").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"a=1, b=2\"");
        assert_eq!(serde_json::from_str::<Token>(&json).unwrap(), t);
        assert!(serde_json::from_str::<Token>("\"\"").is_err());
    }
}
