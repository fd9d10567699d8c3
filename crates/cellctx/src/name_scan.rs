//! [`NameScan`]: the context header names prepared once for the extraction's
//! one pass over a request's headers.

use http::HeaderName;

use crate::headers::{FIELDS, HeaderNames};
use crate::swar::short_word;

/// One wanted name: its length and, up to 16 bytes, its first and last eight
/// bytes as words (compared in two word compares); longer names in full.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    len: usize,
    head: u64,
    tail: u64,
    name: HeaderName,
}

impl Wanted {
    fn new(name: &HeaderName) -> Self {
        Self::of(name.as_str().as_bytes(), name.clone())
    }

    /// The words of `bytes`; `name` is what names past 16 bytes are compared with.
    fn of(bytes: &[u8], name: HeaderName) -> Self {
        let n = bytes.len();
        let tail = if n > 8 { short_word(&bytes[n - 8..], 0) } else { 0 };
        Wanted { len: n, head: short_word(bytes, 0), tail, name }
    }

    /// Whether `name` is this name.
    #[inline]
    fn is(&self, name: &[u8]) -> bool {
        let n = self.len;
        if name.len() != n {
            return false;
        }
        match n {
            0..=8 => short_word(name, 0) == self.head,
            9..=16 => short_word(name, 0) == self.head && short_word(&name[n - 8..], 0) == self.tail,
            _ => name == self.name.as_str().as_bytes(),
        }
    }
}

/// The names of the context fields in [`HeaderNames::field`] order, with a bit
/// per name length: made once per configuration (the server layer) rather than
/// on every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NameScan {
    wanted: [Wanted; FIELDS],
    /// Bit `len % 64` set for each wanted name's length: most other headers
    /// are passed over on their length alone.
    lengths: u64,
}

impl NameScan {
    /// The scan of `names`.
    pub(crate) fn new(names: &HeaderNames) -> Self {
        let wanted: [Wanted; FIELDS] = std::array::from_fn(|i| Wanted::new(names.field(i)));
        let lengths = wanted.iter().fold(0u64, |m, w| m | 1 << (w.len & 63));
        NameScan { wanted, lengths }
    }

    /// Calls `found` with the index of every field named `name` (two fields
    /// may share a name).
    #[inline]
    pub(crate) fn each_field(&self, name: &[u8], mut found: impl FnMut(usize)) {
        if self.lengths & (1 << (name.len() & 63)) == 0 {
            return;
        }
        for (i, want) in self.wanted.iter().enumerate() {
            if want.is(name) {
                found(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// A `Wanted` for `bytes` compared as given (the name itself is only read past 16 bytes).
    fn wanted(bytes: &[u8]) -> Wanted {
        // Names past 16 bytes are compared in full: lowercase letters keep them valid header names.
        let text: String = bytes.iter().map(|b| char::from(b'a' + b % 26)).collect();
        let name = if bytes.len() > 16 { HeaderName::from_bytes(text.as_bytes()).unwrap() } else { HeaderName::from_static("x") };
        Wanted::of(bytes, name)
    }

    /// The same bytes spelled as the `wanted` helper spells long names.
    fn spelled(bytes: &[u8]) -> Vec<u8> {
        if bytes.len() > 16 { bytes.iter().map(|b| b'a' + b % 26).collect() } else { bytes.to_vec() }
    }

    #[test]
    fn finds_each_default_name_at_its_field() {
        let names = HeaderNames::default();
        let scan = NameScan::new(&names);
        for i in 0..FIELDS {
            let mut hits = Vec::new();
            scan.each_field(names.field(i).as_str().as_bytes(), |j| hits.push(j));
            assert_eq!(hits, vec![i], "field {i}");
        }
        let mut hits = Vec::new();
        scan.each_field(b"x-cell-ie", |j| hits.push(j));
        scan.each_field(b"host", |j| hits.push(j));
        assert!(hits.is_empty());
    }

    #[test]
    fn a_shared_name_finds_both_fields() {
        let names = HeaderNames::default().with_tenant(HeaderName::from_static("x-cell-id"));
        let mut hits = Vec::new();
        NameScan::new(&names).each_field(b"x-cell-id", |j| hits.push(j));
        assert_eq!(hits, vec![0, 2]);
    }

    /// Every length class, every byte position: one differing byte makes the names differ.
    #[test]
    fn wanted_is_byte_equality_at_every_length_and_position() {
        for n in 0..=24usize {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(wanted(&a).is(&spelled(&a)), "{n}");
            for i in 0..n {
                let mut b = a.clone();
                b[i] = b[i].wrapping_add(1);
                assert!(!wanted(&a).is(&spelled(&b)), "length {n}, byte {i}");
            }
            assert!(!wanted(&a).is(&spelled(&[a.as_slice(), b"x"].concat())), "lengths differ");
        }
    }

    proptest! {
        #[test]
        fn wanted_is_slice_equality(a in proptest::collection::vec(0u8..4, 0..40), flip in proptest::option::of(0usize..40)) {
            // Equal-length pairs, equal or differing in one byte (small alphabet: many collisions).
            let mut b = a.clone();
            if let Some(i) = flip.filter(|i| *i < b.len()) {
                b[i] ^= 1;
            }
            prop_assert_eq!(wanted(&a).is(&spelled(&b)), a == b);
        }

        /// The scan agrees with comparing the names byte by byte, for names of
        /// every length class (short, two words, long).
        #[test]
        fn agrees_with_byte_equality(want in "[a-z-]{1,24}", other in "[a-z-]{1,24}") {
            let names = HeaderNames::default().with_xid(HeaderName::from_bytes(want.as_bytes()).unwrap());
            let scan = NameScan::new(&names);
            let mut hits = Vec::new();
            scan.each_field(other.as_bytes(), |j| hits.push(j));
            let expected: Vec<usize> = (0..FIELDS).filter(|&i| names.field(i).as_str().as_bytes() == other.as_bytes()).collect();
            prop_assert_eq!(hits, expected);
        }
    }
}
