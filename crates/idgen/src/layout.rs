//! Bit layouts: how a 64-bit id splits into timestamp, datacenter, logical
//! clock, worker and sequence.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Error;

/// 2020-01-01T00:00:00Z in Unix milliseconds: the default epoch.
pub const DEFAULT_EPOCH_MS: u64 = 1_577_836_800_000;

/// The id widths a layout may add up to.
///
/// - **64**: the full `u64` (the seed layout). Ids above `i64::MAX` appear once
///   the timestamp's top bit is set (after ~34.8 years with 41 bits), so store
///   them as `u64`/`NUMERIC(20)`, or as strings in JSON.
/// - **63**: ids stay positive as `i64` (the classic Twitter layout, Java/SQL
///   `BIGINT`).
/// - **53**: ids stay below 2^53 and survive a JavaScript `Number`.
pub const ALLOWED_TOTAL_BITS: [u32; 3] = [64, 63, 53];

/// How a 64-bit id splits, most significant field first:
///
/// ```text
/// | timestamp | datacenter | logical clock | worker | sequence |
/// ```
///
/// The timestamp counts milliseconds since the layout's epoch (default
/// 2020-01-01 UTC, [`DEFAULT_EPOCH_MS`]). Because the datacenter and the worker
/// are fixed for one generator, its ids order by (timestamp, logical clock,
/// sequence): the logical clock and the sequence together form one counter of
/// `2^(logical + sequence)` ids per millisecond.
///
/// The widths must add up to 64, 63 or 53 bits ([`ALLOWED_TOTAL_BITS`]):
/// [`Layout::try_new`] checks it, along with: timestamp 30..=63 bits, sequence
/// at least 1 bit, each other field at most 22 bits.
///
/// Serialized (serde) as its widths plus `epoch_ms`; deserializing validates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "LayoutConfig", into = "LayoutConfig")]
pub struct Layout {
    timestamp_bits: u8,
    datacenter_bits: u8,
    logical_bits: u8,
    worker_bits: u8,
    sequence_bits: u8,
    epoch_ms: u64,
}

/// The decoded fields of an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdParts {
    /// Unix time of the id in milliseconds (the layout's epoch already added).
    pub timestamp_ms: u64,
    /// Datacenter (home region) bits.
    pub datacenter: u32,
    /// Logical clock: advances when the sequence of a millisecond runs out or
    /// while the wall clock is behind the last issued timestamp.
    pub logical: u32,
    /// Worker id bits.
    pub worker: u32,
    /// Sequence within (timestamp, logical clock).
    pub sequence: u32,
}

/// A layout as written in a config file (serde form of [`Layout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutConfig {
    /// Timestamp bits.
    pub timestamp_bits: u8,
    /// Datacenter bits.
    #[serde(default)]
    pub datacenter_bits: u8,
    /// Logical clock bits.
    #[serde(default)]
    pub logical_bits: u8,
    /// Worker bits.
    #[serde(default)]
    pub worker_bits: u8,
    /// Sequence bits.
    pub sequence_bits: u8,
    /// Epoch in Unix milliseconds (default 2020-01-01 UTC).
    #[serde(default = "default_epoch")]
    pub epoch_ms: u64,
}

fn default_epoch() -> u64 {
    DEFAULT_EPOCH_MS
}

impl TryFrom<LayoutConfig> for Layout {
    type Error = Error;
    fn try_from(c: LayoutConfig) -> Result<Self, Error> {
        Ok(Layout::try_new(
            c.timestamp_bits,
            c.datacenter_bits,
            c.logical_bits,
            c.worker_bits,
            c.sequence_bits,
        )?
        .with_epoch_ms(c.epoch_ms))
    }
}

impl From<Layout> for LayoutConfig {
    fn from(l: Layout) -> Self {
        LayoutConfig {
            timestamp_bits: l.timestamp_bits,
            datacenter_bits: l.datacenter_bits,
            logical_bits: l.logical_bits,
            worker_bits: l.worker_bits,
            sequence_bits: l.sequence_bits,
            epoch_ms: l.epoch_ms,
        }
    }
}

const fn mask(bits: u8) -> u64 {
    if bits >= 64 { u64::MAX } else { (1u64 << bits) - 1 }
}

impl Layout {
    /// A layout with the given widths and the default epoch.
    ///
    /// Errors with [`Error::InvalidLayout`] unless the widths add up to 64, 63 or
    /// 53, the timestamp has 30..=63 bits, the sequence at least 1 bit and every
    /// other field at most 22 bits.
    pub fn try_new(
        timestamp_bits: u8,
        datacenter_bits: u8,
        logical_bits: u8,
        worker_bits: u8,
        sequence_bits: u8,
    ) -> Result<Self, Error> {
        if !(30..=63).contains(&timestamp_bits) {
            return Err(Error::InvalidLayout("timestamp must have 30..=63 bits"));
        }
        if sequence_bits == 0 {
            return Err(Error::InvalidLayout("sequence must have at least 1 bit"));
        }
        if [datacenter_bits, logical_bits, worker_bits, sequence_bits].iter().any(|&b| b > 22) {
            return Err(Error::InvalidLayout(
                "datacenter, logical, worker and sequence have at most 22 bits each",
            ));
        }
        let total = u32::from(timestamp_bits)
            + u32::from(datacenter_bits)
            + u32::from(logical_bits)
            + u32::from(worker_bits)
            + u32::from(sequence_bits);
        if !ALLOWED_TOTAL_BITS.contains(&total) {
            return Err(Error::InvalidLayout(
                "widths must add up to 64 (u64), 63 (positive i64) or 53 (JavaScript-safe) bits",
            ));
        }
        Ok(Layout {
            timestamp_bits,
            datacenter_bits,
            logical_bits,
            worker_bits,
            sequence_bits,
            epoch_ms: DEFAULT_EPOCH_MS,
        })
    }

    /// The seed layout (section 3.2): 41-bit timestamp, 3-bit datacenter, 5-bit
    /// logical clock, 10-bit worker, 5-bit sequence = 64 bits. 8 datacenters,
    /// 1,024 workers each, 1,024 ids per millisecond per worker, ~69.7 years.
    pub const fn seed() -> Self {
        Layout {
            timestamp_bits: 41,
            datacenter_bits: 3,
            logical_bits: 5,
            worker_bits: 10,
            sequence_bits: 5,
            epoch_ms: DEFAULT_EPOCH_MS,
        }
    }

    /// Classic Twitter snowflake: 41-bit timestamp, 5-bit datacenter, 5-bit
    /// worker, 12-bit sequence = 63 bits (ids positive as `i64`), no logical
    /// clock. 4,096 ids per millisecond per worker.
    pub const fn twitter() -> Self {
        Layout {
            timestamp_bits: 41,
            datacenter_bits: 5,
            logical_bits: 0,
            worker_bits: 5,
            sequence_bits: 12,
            epoch_ms: DEFAULT_EPOCH_MS,
        }
    }

    /// Ids below 2^53, exact in a JavaScript `Number`: 41-bit timestamp, 3-bit
    /// datacenter, 2-bit logical clock, 5-bit worker, 2-bit sequence = 53 bits.
    /// 8 datacenters, 32 workers each, 16 ids per millisecond per worker.
    pub const fn js_safe() -> Self {
        Layout {
            timestamp_bits: 41,
            datacenter_bits: 3,
            logical_bits: 2,
            worker_bits: 5,
            sequence_bits: 2,
            epoch_ms: DEFAULT_EPOCH_MS,
        }
    }

    /// Replaces the epoch (Unix milliseconds).
    #[must_use]
    pub const fn with_epoch_ms(mut self, epoch_ms: u64) -> Self {
        self.epoch_ms = epoch_ms;
        self
    }

    /// The epoch in Unix milliseconds.
    pub const fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }
    /// Timestamp bits.
    pub const fn timestamp_bits(&self) -> u8 {
        self.timestamp_bits
    }
    /// Datacenter bits.
    pub const fn datacenter_bits(&self) -> u8 {
        self.datacenter_bits
    }
    /// Logical clock bits.
    pub const fn logical_bits(&self) -> u8 {
        self.logical_bits
    }
    /// Worker bits.
    pub const fn worker_bits(&self) -> u8 {
        self.worker_bits
    }
    /// Sequence bits.
    pub const fn sequence_bits(&self) -> u8 {
        self.sequence_bits
    }
    /// Width of the ids: 64, 63 or 53.
    pub const fn total_bits(&self) -> u32 {
        self.timestamp_bits as u32
            + self.datacenter_bits as u32
            + self.logical_bits as u32
            + self.worker_bits as u32
            + self.sequence_bits as u32
    }
    /// Largest datacenter value.
    pub const fn max_datacenter(&self) -> u32 {
        mask(self.datacenter_bits) as u32
    }
    /// Largest worker value.
    pub const fn max_worker(&self) -> u32 {
        mask(self.worker_bits) as u32
    }
    /// Number of worker ids per datacenter.
    pub const fn workers(&self) -> u64 {
        1u64 << self.worker_bits
    }
    /// Ids one generator can issue per millisecond: `2^(logical + sequence)`.
    /// This is the layout's ceiling (1,024 for the seed layout).
    pub const fn ids_per_ms(&self) -> u64 {
        1u64 << (self.logical_bits + self.sequence_bits)
    }
    /// The last representable timestamp (Unix ms).
    pub const fn max_timestamp_ms(&self) -> u64 {
        self.epoch_ms.saturating_add(mask(self.timestamp_bits))
    }

    pub(crate) const fn worker_shift(&self) -> u32 {
        self.sequence_bits as u32
    }
    pub(crate) const fn logical_shift(&self) -> u32 {
        self.worker_shift() + self.worker_bits as u32
    }
    pub(crate) const fn datacenter_shift(&self) -> u32 {
        self.logical_shift() + self.logical_bits as u32
    }
    pub(crate) const fn timestamp_shift(&self) -> u32 {
        self.datacenter_shift() + self.datacenter_bits as u32
    }
    /// Width of the generator's counter (logical clock + sequence).
    pub(crate) const fn counter_bits(&self) -> u32 {
        self.logical_bits as u32 + self.sequence_bits as u32
    }
    pub(crate) const fn max_timestamp_rel(&self) -> u64 {
        mask(self.timestamp_bits)
    }

    /// Packs the parts into an id.
    ///
    /// Errors with [`Error::OutOfRange`] when a field does not fit (a timestamp
    /// before the epoch or past [`max_timestamp_ms`](Self::max_timestamp_ms)
    /// included).
    pub fn encode(&self, parts: &IdParts) -> Result<u64, Error> {
        let rel = parts.timestamp_ms.checked_sub(self.epoch_ms).ok_or(Error::OutOfRange {
            field: "timestamp",
            value: parts.timestamp_ms,
            max: self.max_timestamp_ms(),
        })?;
        check("timestamp", parts.timestamp_ms, rel, self.timestamp_bits, self.max_timestamp_ms())?;
        check_small("datacenter", parts.datacenter, self.datacenter_bits)?;
        check_small("logical", parts.logical, self.logical_bits)?;
        check_small("worker", parts.worker, self.worker_bits)?;
        check_small("sequence", parts.sequence, self.sequence_bits)?;
        Ok(self.pack(rel, parts.datacenter, parts.logical, parts.worker, parts.sequence))
    }

    pub(crate) const fn pack(&self, rel_ts: u64, dc: u32, logical: u32, worker: u32, seq: u32) -> u64 {
        (rel_ts << self.timestamp_shift())
            | ((dc as u64) << self.datacenter_shift())
            | ((logical as u64) << self.logical_shift())
            | ((worker as u64) << self.worker_shift())
            | seq as u64
    }

    /// Splits an id into its parts. Bits above the layout's width are ignored;
    /// use [`try_decode`](Self::try_decode) to reject ids not made with this
    /// layout.
    ///
    /// The home region of an id is `layout.decode(id).datacenter`.
    pub fn decode(&self, id: impl Into<u64>) -> IdParts {
        let id = id.into();
        let field = |shift: u32, bits: u8| ((id >> shift) & mask(bits)) as u32;
        IdParts {
            timestamp_ms: self
                .epoch_ms
                .saturating_add((id >> self.timestamp_shift()) & mask(self.timestamp_bits)),
            datacenter: field(self.datacenter_shift(), self.datacenter_bits),
            logical: field(self.logical_shift(), self.logical_bits),
            worker: field(self.worker_shift(), self.worker_bits),
            sequence: field(0, self.sequence_bits),
        }
    }

    /// Like [`decode`](Self::decode), but errors with [`Error::ForeignId`] when
    /// the id has bits set above the layout's width.
    pub fn try_decode(&self, id: impl Into<u64>) -> Result<IdParts, Error> {
        let id = id.into();
        if self.total_bits() < 64 && id >> self.total_bits() != 0 {
            return Err(Error::ForeignId(id));
        }
        Ok(self.decode(id))
    }
}

fn check(field: &'static str, value: u64, rel: u64, bits: u8, max: u64) -> Result<(), Error> {
    if rel > mask(bits) { Err(Error::OutOfRange { field, value, max }) } else { Ok(()) }
}

fn check_small(field: &'static str, value: u32, bits: u8) -> Result<(), Error> {
    check(field, u64::from(value), u64::from(value), bits, mask(bits))
}

impl Default for Layout {
    /// The seed layout.
    fn default() -> Self {
        Layout::seed()
    }
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Layout({}/{}/{}/{}/{}, epoch_ms={})",
            self.timestamp_bits,
            self.datacenter_bits,
            self.logical_bits,
            self.worker_bits,
            self.sequence_bits,
            self.epoch_ms
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn presets_are_valid_and_have_their_widths() {
        for (l, total) in [(Layout::seed(), 64), (Layout::twitter(), 63), (Layout::js_safe(), 53)] {
            let again = Layout::try_new(
                l.timestamp_bits(),
                l.datacenter_bits(),
                l.logical_bits(),
                l.worker_bits(),
                l.sequence_bits(),
            )
            .unwrap();
            assert_eq!(again, l);
            assert_eq!(l.total_bits(), total);
        }
        assert_eq!(Layout::seed().ids_per_ms(), 1024);
        assert_eq!(Layout::twitter().ids_per_ms(), 4096);
        assert_eq!(Layout::seed().max_worker(), 1023);
        assert_eq!(Layout::seed().max_datacenter(), 7);
    }

    #[test]
    fn invalid_widths_are_rejected() {
        assert!(matches!(Layout::try_new(41, 3, 5, 10, 3), Err(Error::InvalidLayout(_))));
        assert!(matches!(Layout::try_new(41, 3, 5, 10, 0), Err(Error::InvalidLayout(_))));
        assert!(matches!(Layout::try_new(20, 10, 12, 12, 10), Err(Error::InvalidLayout(_))));
        assert!(matches!(Layout::try_new(30, 0, 0, 10, 24), Err(Error::InvalidLayout(_))));
    }

    #[test]
    fn seed_bit_positions() {
        let l = Layout::seed();
        let p = IdParts {
            timestamp_ms: DEFAULT_EPOCH_MS + 1,
            datacenter: 7,
            logical: 31,
            worker: 1023,
            sequence: 31,
        };
        assert_eq!(l.encode(&p).unwrap(), (1u64 << 23) | ((1u64 << 23) - 1));
        let region = IdParts { datacenter: 5, ..p };
        assert_eq!(l.decode(l.encode(&region).unwrap()).datacenter, 5);
    }

    #[test]
    fn encode_rejects_out_of_range_fields() {
        let l = Layout::seed();
        let ok = IdParts { timestamp_ms: DEFAULT_EPOCH_MS, datacenter: 0, logical: 0, worker: 0, sequence: 0 };
        assert!(matches!(
            l.encode(&IdParts { worker: 1024, ..ok }),
            Err(Error::OutOfRange { field: "worker", .. })
        ));
        assert!(matches!(
            l.encode(&IdParts { datacenter: 8, ..ok }),
            Err(Error::OutOfRange { field: "datacenter", .. })
        ));
        assert!(matches!(
            l.encode(&IdParts { timestamp_ms: DEFAULT_EPOCH_MS - 1, ..ok }),
            Err(Error::OutOfRange { field: "timestamp", .. })
        ));
        assert!(matches!(
            l.encode(&IdParts { timestamp_ms: l.max_timestamp_ms() + 1, ..ok }),
            Err(Error::OutOfRange { field: "timestamp", .. })
        ));
    }

    #[test]
    fn try_decode_rejects_bits_above_the_width() {
        assert!(matches!(Layout::twitter().try_decode(1u64 << 63), Err(Error::ForeignId(_))));
        assert!(matches!(Layout::js_safe().try_decode(1u64 << 53), Err(Error::ForeignId(_))));
        assert!(Layout::seed().try_decode(u64::MAX).is_ok());
    }

    #[test]
    fn serde_validates() {
        let json = serde_json::to_string(&Layout::twitter()).unwrap();
        let back: Layout = serde_json::from_str(&json).unwrap();
        assert_eq!(back, Layout::twitter());
        let bad = r#"{"timestamp_bits":41,"worker_bits":10,"sequence_bits":5}"#;
        assert!(serde_json::from_str::<Layout>(bad).is_err());
        let custom = r#"{"timestamp_bits":41,"worker_bits":10,"sequence_bits":12,"epoch_ms":5}"#;
        let l: Layout = serde_json::from_str(custom).unwrap();
        assert_eq!((l.epoch_ms(), l.total_bits()), (5, 63));
    }
}
