//! [`Baggage`]: bounded W3C baggage entries.

use crate::error::InvalidValue;

/// Most baggage entries a context may carry.
pub const MAX_BAGGAGE_ENTRIES: usize = 64;
/// Most bytes of baggage (keys plus values) a context may carry.
pub const MAX_BAGGAGE_BYTES: usize = 8 * 1024;

/// Bounded key/value baggage: at most 64 entries and 8 KiB in all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baggage {
    entries: Vec<(String, String)>,
    bytes: usize,
}

impl Baggage {
    /// Empty baggage.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces `key`; an entry that would break a bound is an error
    /// and leaves the baggage as it was.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) -> Result<(), InvalidValue> {
        let (key, value) = (key.into(), value.into());
        if key.is_empty() {
            return Err(InvalidValue::Empty);
        }
        let old = self.entries.iter().position(|(k, _)| *k == key);
        let old_len = old.map(|i| self.entries[i].0.len() + self.entries[i].1.len()).unwrap_or(0);
        let new_bytes = self.bytes - old_len + key.len() + value.len();
        if new_bytes > MAX_BAGGAGE_BYTES {
            return Err(InvalidValue::TooLong { max: MAX_BAGGAGE_BYTES });
        }
        match old {
            Some(i) => self.entries[i].1 = value,
            None => {
                if self.entries.len() >= MAX_BAGGAGE_ENTRIES {
                    return Err(InvalidValue::TooMany { max: MAX_BAGGAGE_ENTRIES });
                }
                self.entries.push((key, value));
            }
        }
        self.bytes = new_bytes;
        Ok(())
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Entries in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
